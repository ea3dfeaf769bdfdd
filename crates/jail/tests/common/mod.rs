//! Shared by the test binaries: a valid spec, node paths under a base directory, and the
//! fake node used by the no-root tests.
#![allow(dead_code)]

use container_spec::{AlarmSettings, ContainerSpec, Distro, KeyPair};
use jail::fake::Fake;
use jail::NodePaths;
use std::path::Path;

pub const UID: u32 = 30001;
pub const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
pub const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----\n";

pub fn spec(uid: u32) -> ContainerSpec {
    ContainerSpec {
        uid,
        name: "my app".into(),
        memory_mb: 64,
        storage_mb: 20,
        cpu_weight: 100,
        pids_limit: 64,
        distro: Distro::Platform { path: "bookworm".into() },
        ssh_keys: vec!["ssh-ed25519 AAAA one@example".into(), "ssh-ed25519 BBBB two@example".into()],
        subscription_key: KeyPair { private_pem: PRIVATE_PEM.into(), public_pem: PUBLIC_PEM.into() },
        alarms: AlarmSettings { freq: 60, quota_threshold: 90, ..Default::default() },
        links: vec![],
        nofollow: false,
        dmz: false,
        reboot_generation: 0,
        etc_hosts: vec!["127.0.0.1 localhost".into(), "10.0.0.1 gateway".into()],
        etc_resolv_conf: vec!["nameserver 10.0.0.1".into()],
        custom_distros_storage: false,
        customer: 0,
    }
}

pub fn paths_under(base: &Path) -> NodePaths {
    NodePaths {
        containers: base.join("containers"),
        distros: base.join("distros"),
        platform_dir: base.join("platform"),
        subscribe_dir: Some(base.join("subscribe")),
        jail_root: base.join("jail"),
        cgroup_name: "unbit".into(),
    }
}

/// The fake node: the host directories a real node has, a distro with every jail
/// mountpoint, and v1 cgroup hierarchies for memory, cpu and pids.
pub fn fake_node() -> (Fake, NodePaths) {
    let f = Fake::new();
    let paths = NodePaths::default();
    f.dir(&paths.containers, 0, 0o755)
        .dir(&paths.platform_dir, 0, 0o755)
        .file(paths.platform_dir.join("shortcuts.ini"), 0, b"[uwsgi]\n")
        .dir(paths.subscribe_dir.as_ref().unwrap(), 33, 0o755)
        .dir(&paths.jail_root, 0, 0o755);
    let distro = paths.distros.join("bookworm");
    for m in jail::JAIL_MOUNTPOINTS {
        if m.starts_with("etc/") {
            f.file(distro.join(m), 0, b"");
        } else {
            f.dir(distro.join(m), 0, 0o755);
        }
    }
    f.file(distro.join("bin/sh"), 0, b"\x7fELF");
    f.file("/etc/shadow", 0, b"root:secret");
    f.file("/etc/passwd", 0, b"root:x:0:0");
    f.file("/root/.ssh/authorized_keys", 0, b"ssh-ed25519 ROOT");
    for c in ["memory", "cpu", "pids"] {
        let files: &[(&str, &str)] = match c {
            "memory" => &[
                ("cgroup.procs", ""),
                ("memory.limit_in_bytes", ""),
                ("memory.memsw.limit_in_bytes", ""),
                ("memory.swappiness", ""),
                ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
            ],
            "cpu" => &[("cgroup.procs", ""), ("cpu.shares", "")],
            _ => &[("cgroup.procs", ""), ("pids.max", "")],
        };
        f.cgroupfs(format!("/sys/fs/cgroup/{c}"), files);
    }
    f.file(
        "/proc/self/mountinfo",
        0,
        b"35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
          32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
          39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
          41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
    );
    f.file("/proc/sys/kernel/shmmax", 0, b"18446744073692774399");
    (f, paths)
}

/// The privileged tests run as root (here and in CI); without it they fail loudly instead
/// of passing vacuously.
pub fn require_root() {
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "this test needs root (real mounts, cgroups, loop devices, chown)");
}

/// Fails with the package to install when a host tool is missing.
pub fn require_tool(tool: &str, package: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists())).unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).exists()
            || Path::new("/sbin").join(tool).exists();
    assert!(found, "{tool} not found: install {package} (scripts/install-deps.sh)");
}

/// A random suffix so two runs (or two tests) never share a name.
pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("/dev/urandom");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// Builds the minimal busybox distro with the project's own script.
pub fn build_minimal_distro(dest: &Path) {
    require_tool("busybox", "busybox-static");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-distro.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(dest)
        .arg("--minimal")
        .output()
        .expect("run build-distro.sh");
    assert!(
        out.status.success(),
        "build-distro.sh --minimal failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
