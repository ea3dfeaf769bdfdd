//! What an idle container costs in memory: the sum over its processes (the members of its
//! memory cgroup: the container master and its sub-Emperor) of, from
//! `/proc/<pid>/smaps_rollup`:
//!
//! * RSS: every resident page the process maps, including the uWSGI binary and libraries
//!   shared with every other container (counted in full in each process);
//! * anonymous memory (`Anonymous:`): heap, stacks, copy-on-write data, the part that grows
//!   with what the process itself does. Pages the master and its sub-Emperor still share
//!   after `fork` are counted in both, the same way for both chains.
//!
//! Neither depends on how many other containers happen to run (PSS and USS both do, through
//! the number of processes sharing each library page), so chains running different numbers
//! of containers compare.

use std::path::Path;

#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    pub processes: usize,
    pub rss_kib: u64,
    pub anon_kib: u64,
}

/// Sums the processes of the cgroup `dir`. A process that exits meanwhile is skipped.
pub fn of_cgroup(dir: &Path) -> Footprint {
    let mut total = Footprint::default();
    for pid in crate::cgroups::procs(dir) {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        total.processes += 1;
        total.rss_kib += field_kib(&text, "Rss:");
        total.anon_kib += field_kib(&text, "Anonymous:");
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
