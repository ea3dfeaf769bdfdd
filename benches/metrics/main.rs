//! What a metrics cycle costs the node: CPU time of `unbit-metrics`' collection (every
//! container's cgroup files, network counters, the router's domain table with one domain per
//! container, attribution, and the API batch serialised) for 10, 100 and 1 000 containers,
//! in one run.
//!
//! ```sh
//! sudo cargo bench --bench metrics
//! ```
//!
//! The containers are real cgroups made by the jail's own manager under a subtree of their own
//! (`unbit-bench-metrics-<pid>`, every controller the containers plugin uses, accounting ones
//! included), each holding one `sleep` in a network namespace of its own (so the network
//! counters are read as for a running container), up to `BENCH_PROCESSES` (default 1 000);
//! the others are cgroups without processes. The router's domain table is one its
//! processes could have written, one domain per container. Quota is not
//! read (no homes: one `fstatvfs` per container where it is). Knobs: `BENCH_CYCLES` (20),
//! `BENCH_PROCESSES` (1000). Needs root. Every process and cgroup it makes is removed at the
//! end, also on failure.

use jail::cgroup::{self, CgroupManager, Limits};
use jail::linux::Linux;
use metrics::collect::{Collector, Layout};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BASE: u32 = 40_000;

struct Node<'a> {
    manager: Box<dyn CgroupManager + 'a>,
    uids: Vec<u32>,
    sleepers: Vec<Child>,
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        for c in &mut self.sleepers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for uid in &self.uids {
            if let Err(e) = self.manager.remove(*uid) {
                eprintln!("bench: removing the cgroups of {uid}: {e}");
            }
        }
        if let Err(e) = self.manager.remove_root_if_empty() {
            eprintln!("bench: removing the subtree: {e}");
        }
    }
}

fn thread_cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
    let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// The router's domain table as its processes leave it: one domain per container, and what
/// each counted (a file in `dir`).
fn router_table(dir: &std::path::Path, uids: &[u32]) -> std::path::PathBuf {
    let path = dir.join("domain-counters");
    let table = domain_counters::Table::create(&path, domain_counters::DEFAULT_CAPACITY).unwrap();
    for u in uids {
        let slot = table.slot(*u, format!("site{u}.example.com").as_bytes()).unwrap();
        table.add(slot, domain_counters::Counts { hits: 5, rx: 500, tx: 5000 });
    }
    path
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the metrics benchmark needs root (it makes cgroups and network namespaces)");
        std::process::exit(2);
    }
    let cycles = env("BENCH_CYCLES", 20);
    let with_processes = env("BENCH_PROCESSES", 1000);
    let name = format!("unbit-bench-metrics-{}", std::process::id());
    let manager = cgroup::manager(&Linux, &name).expect("cgroup layout");
    let layout = Layout::detect(&name).unwrap();
    let mut node = Node { manager, uids: Vec::new(), sleepers: Vec::new() };
    let limits = Limits { memory_bytes: 256 << 20, cpu_weight: 100, pids_max: 64 };
    println!(
        "metrics collection cost: cgroup {} ({}), {} cycles per size, a process in its own network namespace in the first {} containers\n",
        layout.version(),
        node.manager.dirs(BASE).first().map(|d| d.parent().unwrap().display().to_string()).unwrap_or_default(),
        cycles,
        with_processes,
    );
    println!(
        "{:>10}  {:>16}  {:>16}  {:>14}  {:>12}  {:>8}",
        "containers", "CPU/cycle (ms)", "wall/cycle (ms)", "µs/container", "batch (KB)", "requests"
    );
    for size in [10usize, 100, 1000] {
        while node.uids.len() < size {
            let uid = BASE + node.uids.len() as u32;
            node.manager.ensure(uid, &limits).expect("cgroup");
            node.uids.push(uid);
            if node.sleepers.len() < with_processes {
                let child = Command::new("unshare")
                    .args(["--net", "sleep", "3600"])
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("unshare --net sleep");
                // unshare execs sleep in place: the pid is the sleeper's.
                for dir in node.manager.dirs(uid) {
                    std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).expect("cgroup.procs");
                }
                node.sleepers.push(child);
            }
        }
        // The sleepers must be in their namespaces (unshare done) before measuring.
        for c in &node.sleepers {
            let own = std::fs::read_link("/proc/self/ns/net").unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::read_link(format!("/proc/{}/ns/net", c.id())).is_ok_and(|n| n == own) {
                assert!(Instant::now() < deadline, "unshare did not make its namespace");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let table_dir = tempfile::tempdir().unwrap();
        let table = router_table(table_dir.path(), &node.uids);
        let mut collector = Collector::new(layout.clone(), None).unwrap();
        let (mut cpu, mut wall, mut batch_len, mut requests) = (Duration::ZERO, Duration::ZERO, 0, 0);
        for _ in 0..cycles {
            let (c0, w0) = (thread_cpu(), Instant::now());
            let (samples, _) = collector.cycle();
            let uids: BTreeSet<u32> = samples.iter().map(|s| s.uid).collect();
            let reading = metrics::router::collect(&table, &uids).expect("router counters");
            let (domains, unknown) = (reading.domains, reading.unknown);
            let parts: Vec<String> =
                metrics::batches(0, &samples, &domains, metrics::MAX_REQUEST).iter().map(|p| p.to_string()).collect();
            cpu += thread_cpu() - c0;
            wall += w0.elapsed();
            assert_eq!(samples.len(), size);
            assert_eq!((domains.len(), unknown), (size, 0));
            assert!(samples.iter().all(|s| s.values.len() >= 5), "every container read: {:?}", samples.first());
            batch_len = parts.iter().map(String::len).sum();
            requests = parts.len();
        }
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / cycles as f64;
        println!(
            "{:>10}  {:>16.2}  {:>16.2}  {:>14.1}  {:>12.1}  {:>8}",
            size,
            per(cpu),
            per(wall),
            per(cpu) * 1000.0 / size as f64,
            batch_len as f64 / 1024.0,
            requests
        );
        let _ = std::io::stdout().flush();
    }
    println!("\nThe batch is cut into requests of at most {} KiB (the API's body bound).", metrics::MAX_REQUEST / 1024);
}
