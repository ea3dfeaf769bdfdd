//! The collector against the real kernel (root): a busy process in cgroups made by the jail's
//! own manager, read through the host's layout (v1 on hybrid machines); and the v2 reading
//! through the host's cgroup2 mount, whatever controllers it has (`cpu.stat` is there on every
//! v2 cgroup). Each test makes its own uniquely named subtree and removes it, also on failure.

use jail::cgroup::{self, CgroupManager, Limits};
use jail::linux::Linux;
use metrics::collect::{Collector, Layout, Metric};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process that, once told to go (after it was moved into its cgroups, so what it allocates
/// is charged there), takes 2 MB and burns CPU; killed when dropped.
struct Busy(Child);

impl Busy {
    fn start() -> Busy {
        Busy(
            Command::new("sh")
                .args(["-c", "read go; x=$(head -c 2000000 /dev/zero | tr '\\0' a); while :; do :; done"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn go(&mut self) {
        use std::io::Write;
        self.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (cgroups)");
    false
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Subtree<'a> {
    manager: Box<dyn CgroupManager + 'a>,
    uid: u32,
}

impl Drop for Subtree<'_> {
    fn drop(&mut self) {
        let _ = self.manager.remove(self.uid);
        let _ = self.manager.remove_root_if_empty();
    }
}

#[test]
fn a_busy_container_in_the_hosts_layout() {
    if !root() {
        return;
    }
    let name = format!("unbit-metrics-test-{}", std::process::id());
    let uid = 30702;
    let tree = Subtree { manager: cgroup::manager(&Linux, &name).unwrap(), uid };
    tree.manager.ensure(uid, &Limits { memory_bytes: 64 << 20, cpu_weight: 100, pids_max: 32 }).unwrap();
    let mut busy = Busy::start();
    for dir in tree.manager.dirs(uid) {
        std::fs::write(dir.join("cgroup.procs"), busy.0.id().to_string()).unwrap();
    }
    let mut collector = Collector::new(Layout::detect(&name).unwrap(), None).unwrap();
    let first = collector.container(uid).0.values;
    busy.go();
    wait_for("CPU time growing", || collector.container(uid).0.values.get(&Metric::Cpu) > first.get(&Metric::Cpu));
    wait_for("2 MB charged", || collector.container(uid).0.values.get(&Metric::Mem) > Some(&(2 << 20)));
    let (sample, net) = collector.container(uid);
    assert!(sample.values.contains_key(&Metric::MemRss) && sample.values.contains_key(&Metric::MemCache));
    assert!(sample.values.contains_key(&Metric::IoRead), "blkio/io accounting: {sample:?}");
    // The process is in the host's network namespace here: its counters are read all the same.
    assert!(net.is_some() && sample.values.contains_key(&Metric::NetRx), "{sample:?}");
    assert_eq!(collector.cycle().0.len(), 1, "the subtree holds one container");
}

#[test]
fn cpu_time_from_a_real_v2_cgroup() {
    if !root() {
        return;
    }
    let Some(unified) =
        jail::cgroup::detect::parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap()).unified
    else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let base: PathBuf = unified.join(format!("unbit-metrics-v2-test-{}", std::process::id()));
    let dir = base.join("30703");
    std::fs::create_dir_all(&dir).unwrap();
    struct Remove(PathBuf, PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            // The process is gone by now (Busy drops first): the cgroups are empty.
            for _ in 0..50 {
                if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::fs::remove_dir(&self.1);
        }
    }
    let _remove = Remove(dir.clone(), base.clone());
    let mut busy = Busy::start();
    // On a hybrid host the v2 tree has no controllers, only its core files: a process may be
    // in it and in the v1 hierarchies at once.
    std::fs::write(dir.join("cgroup.procs"), busy.0.id().to_string()).unwrap();
    busy.go();
    let mut collector = Collector::new(Layout::V2 { root: base.clone() }, None).unwrap();
    wait_for("v2 CPU time", || {
        collector.container(30703).0.values.get(&Metric::Cpu).is_some_and(|ns| *ns > 10_000_000)
    });
    let (samples, _) = collector.cycle();
    assert_eq!(samples.iter().map(|s| s.uid).collect::<Vec<_>>(), [30703]);
    drop(busy);
}
