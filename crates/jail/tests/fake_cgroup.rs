//! cgroup v1 and v2 logic against the fake cgroupfs (no root). The v2 backend cannot run for
//! real on the development machines (their cgroup2 mount has no memory/cpu/pids), so its
//! exact write sequence is pinned down here.

mod common;

use jail::cgroup::{detect_setup, manager, manager_for, v1::cpu_shares, CgroupSetup, Limits};
use jail::fake::{Call, Fake};
use jail::JailError;
use std::path::PathBuf;

const LIMITS: Limits = Limits { memory_bytes: 64 << 20, cpu_weight: 200, pids_max: 64 };

const V2_FILES: &[(&str, &str)] = &[
    ("cgroup.controllers", "cpuset cpu io memory pids"),
    ("cgroup.subtree_control", ""),
    ("cgroup.procs", ""),
    ("cgroup.kill", ""),
    ("memory.max", "max"),
    ("memory.swap.max", "max"),
    ("memory.events", "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n"),
    ("cpu.weight", "100"),
    ("pids.max", "max"),
];

fn v2_fake() -> Fake {
    let f = Fake::new();
    f.cgroupfs("/sys/fs/cgroup", V2_FILES);
    f.file("/proc/self/mountinfo", 0, b"29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n");
    f
}

fn writes(f: &Fake) -> Vec<(String, String)> {
    f.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::WriteFile { path, data } => Some((path.display().to_string(), data)),
            _ => None,
        })
        .collect()
}

#[test]
fn detection_picks_v1_on_hybrid_and_v2_on_unified_hosts() {
    let (f, _) = common::fake_node();
    let setup = detect_setup(&f).unwrap();
    assert!(matches!(setup, CgroupSetup::Hybrid { .. }), "{setup:?}");
    assert_eq!(manager(&f, "unbit").unwrap().version(), "v1");

    let f = v2_fake();
    assert_eq!(detect_setup(&f).unwrap(), CgroupSetup::Unified { root: "/sys/fs/cgroup".into() });
    assert_eq!(manager(&f, "unbit").unwrap().version(), "v2");

    // The subtree name is one path component, never a way out of the hierarchy.
    assert!(manager(&f, "../escape").is_err());
    assert!(manager(&f, "").is_err());
}

#[test]
fn v2_enables_controllers_on_every_ancestor_then_limits() {
    let f = v2_fake();
    let cg = manager(&f, "unbit").unwrap();
    cg.ensure(30001, &LIMITS).unwrap();
    let w = writes(&f);
    assert_eq!(
        w,
        vec![
            // io is offered by this host: enabled too, for the metrics' disk I/O (no limit set).
            ("/sys/fs/cgroup/cgroup.subtree_control".into(), "+memory +cpu +pids +io".into()),
            ("/sys/fs/cgroup/unbit/cgroup.subtree_control".into(), "+memory +cpu +pids +io".into()),
            ("/sys/fs/cgroup/unbit/30001/memory.max".into(), "67108864".into()),
            ("/sys/fs/cgroup/unbit/30001/memory.swap.max".into(), "0".into()),
            ("/sys/fs/cgroup/unbit/30001/cpu.weight".into(), "200".into()),
            ("/sys/fs/cgroup/unbit/30001/pids.max".into(), "64".into()),
        ]
    );
    // The directories were made in order: ours, then the container's.
    let dirs: Vec<PathBuf> = f
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::MkdirAbs { path } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(dirs, vec![PathBuf::from("/sys/fs/cgroup/unbit"), PathBuf::from("/sys/fs/cgroup/unbit/30001")]);

    // Already enabled: nothing is written to subtree_control again.
    f.clear_calls();
    f.file("/sys/fs/cgroup/cgroup.subtree_control", 0, b"cpu io memory pids");
    f.file("/sys/fs/cgroup/unbit/cgroup.subtree_control", 0, b"cpu io memory pids");
    cg.ensure(30001, &LIMITS).unwrap();
    assert!(writes(&f).iter().all(|(p, _)| !p.ends_with("subtree_control")));

    cg.join(30001).unwrap();
    assert_eq!(writes(&f).last().unwrap(), &("/sys/fs/cgroup/unbit/30001/cgroup.procs".to_string(), "0".to_string()));
}

#[test]
fn v2_without_a_controller_says_which_one_and_where() {
    let f = Fake::new();
    f.cgroupfs("/sys/fs/cgroup/unified", &[("cgroup.controllers", "hugetlb"), ("cgroup.subtree_control", "")]);
    let setup = CgroupSetup::Unified { root: "/sys/fs/cgroup/unified".into() };
    let cg = manager_for(&f, &setup, "unbit").unwrap();
    let e = cg.ensure(30001, &LIMITS).unwrap_err();
    assert!(matches!(e, JailError::Unsupported { .. }));
    let s = e.to_string();
    assert!(s.contains("'memory'"), "{s}");
    assert!(s.contains("/sys/fs/cgroup/unified/cgroup.controllers"), "{s}");
}

#[test]
fn v2_oom_count_and_removal() {
    let f = v2_fake();
    let cg = manager(&f, "unbit").unwrap();
    assert_eq!(cg.oom_kill_count(30001).unwrap(), 0, "no cgroup yet");
    cg.ensure(30001, &LIMITS).unwrap();
    assert_eq!(cg.oom_kill_count(30001).unwrap(), 2);

    // A straggler keeps the directory busy once: cgroup.kill, then SIGKILL what is listed.
    f.file("/sys/fs/cgroup/unbit/30001/cgroup.procs", 0, b"4242\n");
    f.fail("rmdir", "unbit/30001", libc::EBUSY);
    f.clear_calls();
    cg.remove(30001).unwrap();
    let calls = f.calls();
    assert!(
        calls.contains(&Call::WriteFile { path: "/sys/fs/cgroup/unbit/30001/cgroup.kill".into(), data: "1".into() })
    );
    assert!(calls.contains(&Call::Kill { pid: 4242, signal: libc::SIGKILL }));
    assert!(f.node("/sys/fs/cgroup/unbit/30001").is_none());
    assert!(f.node("/sys/fs/cgroup/unbit").is_some(), "the parent is shared");
    cg.remove_root_if_empty().unwrap();
    assert!(f.node("/sys/fs/cgroup/unbit").is_none());
    // Never anything outside our subtree.
    for c in f.calls() {
        if let Call::Rmdir { path } | Call::WriteFile { path, .. } = &c {
            assert!(path.starts_with("/sys/fs/cgroup/unbit"), "{c:?}");
        }
    }
}

#[test]
fn v1_limits_swap_off_and_scaled_shares() {
    let (f, _) = common::fake_node();
    let cg = manager(&f, "unbit").unwrap();
    cg.ensure(30001, &LIMITS).unwrap();
    let w = writes(&f);
    let m = "/sys/fs/cgroup/memory/unbit/30001";
    assert_eq!(
        w,
        vec![
            (format!("{m}/memory.limit_in_bytes"), "67108864".into()),
            (format!("{m}/memory.memsw.limit_in_bytes"), "67108864".into()),
            (format!("{m}/memory.swappiness"), "0".into()),
            ("/sys/fs/cgroup/cpu/unbit/30001/cpu.shares".into(), "2048".into()),
            ("/sys/fs/cgroup/pids/unbit/30001/pids.max".into(), "64".into()),
        ]
    );
    assert_eq!(cpu_shares(100), 1024);
    assert_eq!(cpu_shares(1), 10);
    assert_eq!(cpu_shares(10_000), 102_400);
}

#[test]
fn v1_raising_the_limit_above_memsw_raises_memsw_first() {
    let (f, _) = common::fake_node();
    let cg = manager(&f, "unbit").unwrap();
    cg.ensure(30001, &LIMITS).unwrap();
    f.clear_calls();
    // What the kernel answers when limit_in_bytes would exceed memsw.limit_in_bytes.
    f.fail("write_file", "memory.limit_in_bytes", libc::EINVAL);
    let bigger = Limits { memory_bytes: 128 << 20, ..LIMITS };
    cg.ensure(30001, &bigger).unwrap();
    let w: Vec<String> = writes(&f)
        .into_iter()
        .filter(|(p, _)| p.contains("/memory/"))
        .map(|(p, _)| p.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(
        w,
        [
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.swappiness"
        ]
    );
}

#[test]
fn v1_oom_count_reads_oom_control() {
    let (f, _) = common::fake_node();
    let cg = manager(&f, "unbit").unwrap();
    cg.ensure(30001, &LIMITS).unwrap();
    assert_eq!(cg.oom_kill_count(30001).unwrap(), 0);
    f.file("/sys/fs/cgroup/memory/unbit/30001/memory.oom_control", 0, b"oom_kill_disable 0\nunder_oom 0\noom_kill 7\n");
    assert_eq!(cg.oom_kill_count(30001).unwrap(), 7);
    cg.remove(30001).unwrap();
    assert_eq!(cg.oom_kill_count(30001).unwrap(), 0);
}
