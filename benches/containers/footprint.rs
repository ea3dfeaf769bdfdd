//! What an idle container costs in memory: the sum over its processes (the members of its
//! memory cgroup: the container master and its sub-Emperor) of RSS and USS from
//! `/proc/<pid>/smaps_rollup`. RSS counts every page a process maps, shared ones (the uWSGI
//! binary, libc) in full. USS (`Private_Clean + Private_Dirty`) counts only the pages no
//! other process maps: what stopping the container gives back. USS, unlike PSS, does not
//! depend on how many other processes happen to share the libraries, so it compares chains
//! that run different numbers of containers.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub processes: usize,
    pub rss_kib: u64,
    pub uss_kib: u64,
}

/// Sums the processes of the cgroup `dir`. A process that exits meanwhile is skipped.
pub fn of_cgroup(dir: &Path) -> Footprint {
    let mut total = Footprint::default();
    for pid in crate::cgroups::procs(dir) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        total.processes += 1;
        total.rss_kib += field_kib(&text, "Rss:");
        total.uss_kib += field_kib(&text, "Private_Clean:") + field_kib(&text, "Private_Dirty:");
    }
    total
}

/// `Rss:     1234 kB` -> 1234.
fn field_kib(smaps_rollup: &str, key: &str) -> u64 {
    smaps_rollup
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
