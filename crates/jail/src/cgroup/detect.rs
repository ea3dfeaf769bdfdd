//! Which cgroup layout the host has, from `/proc/self/mountinfo` and the unified
//! hierarchy's `cgroup.controllers` (youki's `CgroupSetup` idea): pure v2 ("unified"), v1
//! controllers plus a v2 mount ("hybrid", e.g. the development machines, where the v2 mount
//! has no useful controllers), or v1 only ("legacy").

use crate::error::{IoContext, JailError, Result};
use crate::syscalls::Syscalls;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The v1 controllers the platform limits.
pub const V1_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];
/// v1 controllers the platform only reads (the node's metrics), joined when mounted.
pub const V1_ACCOUNTING: &[&str] = &["cpuacct", "blkio"];
/// The same in v2 `cgroup.controllers` / `cgroup.subtree_control` spelling.
pub const V2_CONTROLLERS: &[&str] = &["memory", "cpu", "pids"];
/// v2 controllers the platform only reads, enabled when offered.
pub const V2_ACCOUNTING: &[&str] = &["io"];

const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "perf_event",
    "hugetlb",
    "rdma",
    "misc",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSetup {
    /// Only cgroup2, mounted at `root`.
    Unified { root: PathBuf },
    /// v1 controllers (controller -> mountpoint) and a cgroup2 mount.
    Hybrid { v1: BTreeMap<String, PathBuf>, unified: PathBuf },
    /// v1 controllers only.
    Legacy { v1: BTreeMap<String, PathBuf> },
}

/// What mountinfo says: v1 controller mountpoints and the cgroup2 mountpoint, if any.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CgroupMounts {
    pub v1: BTreeMap<String, PathBuf>,
    pub unified: Option<PathBuf>,
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

pub fn parse_mountinfo(text: &str) -> CgroupMounts {
    let mut m = CgroupMounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let rest: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || rest.len() < 3 {
            continue;
        }
        let mountpoint = unescape(fields[4]);
        match rest[0] {
            "cgroup2" => {
                m.unified.get_or_insert(mountpoint);
            }
            "cgroup" => {
                for opt in rest[2].split(',') {
                    if KNOWN_V1.contains(&opt) {
                        m.v1.entry(opt.to_string()).or_insert_with(|| mountpoint.clone());
                    }
                }
            }
            _ => {}
        }
    }
    m
}

/// Detects the layout of the calling process's view.
pub fn detect_setup(sys: &dyn Syscalls) -> Result<CgroupSetup> {
    let mi = Path::new("/proc/self/mountinfo");
    let text = sys.read_file(mi).ctx("read", mi)?;
    let mounts = parse_mountinfo(&text);
    match (mounts.v1.is_empty(), mounts.unified) {
        (true, Some(root)) => Ok(CgroupSetup::Unified { root }),
        (false, Some(unified)) => Ok(CgroupSetup::Hybrid { v1: mounts.v1, unified }),
        (false, None) => Ok(CgroupSetup::Legacy { v1: mounts.v1 }),
        (true, None) => {
            Err(JailError::unsupported("no cgroup filesystem is mounted (neither cgroup v1 controllers nor cgroup2)"))
        }
    }
}

/// The controllers a v2 cgroup directory offers.
pub fn v2_controllers(sys: &dyn Syscalls, dir: &Path) -> Result<Vec<String>> {
    let p = dir.join("cgroup.controllers");
    Ok(sys.read_file(&p).ctx("read", &p)?.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_layout_of_the_development_machines() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.unified, Some("/sys/fs/cgroup/unified".into()));
        assert_eq!(m.v1["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu"));
        assert!(!m.v1.contains_key("systemd"), "named hierarchies are not controllers");
    }

    #[test]
    fn combined_v1_mounts_and_escaped_mountpoints() {
        let m = parse_mountinfo(
            "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:11 - cgroup cgroup rw,cpu,cpuacct\n\
             31 25 0:27 / /mnt/with\\040space rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(m.v1["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.v1["memory"], PathBuf::from("/mnt/with space"));
        assert_eq!(m.unified, None);
    }

    #[test]
    fn pure_v2() {
        let m = parse_mountinfo(
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert!(m.v1.is_empty());
        assert_eq!(m.unified, Some("/sys/fs/cgroup".into()));
    }
}
