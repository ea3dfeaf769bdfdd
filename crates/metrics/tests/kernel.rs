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

/// Runs `ip` (iproute2) with `args`, failing the test with its stderr.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn network_bytes_from_the_host_end_of_a_real_veth_swapped() {
    if !root() {
        return;
    }
    let uid = 30704;
    let host_if = container_spec::host_interface(uid);
    let name = format!("unbit-metrics-net-test-{}", std::process::id());
    let tree = Subtree { manager: cgroup::manager(&Linux, &name).unwrap(), uid };
    tree.manager.ensure(uid, &Limits { memory_bytes: 64 << 20, cpu_weight: 100, pids_max: 32 }).unwrap();
    // The container's init: a process in a network namespace of its own, in the cgroups.
    let init = Busy(Command::new("unshare").args(["--net", "sleep", "600"]).stdin(Stdio::null()).spawn().unwrap());
    let pid = init.0.id().to_string();
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    wait_for("the namespace", || std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n != own));
    for dir in tree.manager.dirs(uid) {
        std::fs::write(dir.join("cgroup.procs"), &pid).unwrap();
    }
    struct Link(String);
    impl Drop for Link {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
    // A /30 at the far end of the containers' 10/8 (no uid maps there), on this pair only.
    ip(&["link", "add", &host_if, "type", "veth", "peer", "name", "uwsgi0", "netns", &pid]);
    let _link = Link(host_if.clone());
    ip(&["addr", "add", "10.255.255.253/30", "dev", &host_if]);
    ip(&["link", "set", &host_if, "up"]);
    let inside = |args: &[&str]| {
        let out = Command::new("nsenter").args(["-t", &pid, "-n", "ip"]).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    inside(&["addr", "add", "10.255.255.254/30", "dev", "uwsgi0"]);
    inside(&["link", "set", "uwsgi0", "up"]);
    // Traffic from the node to the container: 5 datagrams of 1000 bytes (answered, if at
    // all, by the container's kernel with ICMP errors: its transmit side).
    let udp = std::net::UdpSocket::bind("10.255.255.253:0").unwrap();
    for _ in 0..5 {
        udp.send_to(&[7u8; 1000], "10.255.255.254:9").unwrap();
    }
    let mut collector = Collector::new(Layout::detect(&name).unwrap(), None).unwrap();
    wait_for("the datagrams delivered", || collector.container(uid).0.values.get(&Metric::NetRx) >= Some(&5000));
    let (sample, source) = collector.container(uid);
    assert_eq!(source, Some(metrics::collect::NetSource::HostInterface));
    let read = |f: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{host_if}/statistics/{f}")).unwrap().trim().parse().unwrap()
    };
    // What the container received is what the host end sent (at least the 5 datagrams); what
    // it sent (ARP, ICMP) the host end received.
    let (rx, tx) = (sample.values[&Metric::NetRx], sample.values[&Metric::NetTx]);
    assert!(rx >= 5 * 1000 && tx > 0, "rx {rx} tx {tx}");
    assert!(rx <= read("tx_bytes") && tx <= read("rx_bytes"), "host end read swapped");
    drop(init);
}
