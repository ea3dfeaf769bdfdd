//! The quota and memory alarms: every `--quota-interval`, each container's disk usage against
//! `quota_threshold` % of its `storage_mb`, and its working set against `--memory-threshold` %
//! of its `memory_mb` (see [`super::memory`]).
//!
//! Usage is read from the home's own filesystem when the home is one (the `image` quota
//! backend: an ext4 image mounted on the home), with `fstatvfs` on a descriptor of the home
//! opened by the jail's symlink-safe lookups. Homes on the containers' filesystem (btrfs
//! qgroups, uid quotas) are not measured yet: the relay says so once per container.

use super::memory::MemoryFiles;
use super::{log, Relay};
use container_spec::ContainerSpec;
use jail::linux::Linux;
use jail::safefs::{open_dir, open_trusted_dir};
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Bytes used and the filesystem's size, when the home is a filesystem of its own.
pub fn home_usage(containers: &std::path::Path, uid: u32) -> Result<Option<(u64, u64)>, String> {
    let sys = Linux;
    let dir = open_trusted_dir(&sys, containers).map_err(|e| e.to_string())?;
    let home = open_dir(&sys, &dir, uid.to_string()).map_err(|e| e.to_string())?;
    let outer =
        nix::sys::stat::fstat(dir.as_fd().as_raw_fd()).map_err(|e| format!("fstat {}: {e}", containers.display()))?;
    let inner = nix::sys::stat::fstat(home.as_fd().as_raw_fd()).map_err(|e| format!("fstat home of {uid}: {e}"))?;
    if outer.st_dev == inner.st_dev {
        return Ok(None);
    }
    let vfs = nix::sys::statvfs::fstatvfs(home.as_fd()).map_err(|e| format!("fstatvfs home of {uid}: {e}"))?;
    let frsize = vfs.fragment_size() as u64;
    let used = (vfs.blocks() as u64).saturating_sub(vfs.blocks_free() as u64) * frsize;
    Ok(Some((used, vfs.blocks() as u64 * frsize)))
}

fn container_uids(specs: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(specs) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok()).collect()
}

pub async fn watch(relay: Arc<Relay>) {
    let mut unmeasured = BTreeSet::new();
    let memory = match relay.cfg.memory_threshold {
        0 => None,
        _ => match MemoryFiles::detect(&relay.cfg.cgroup_name) {
            Ok(m) => Some(m),
            Err(e) => {
                log(&format!("memory alarms off: cannot find the memory cgroups: {e}"));
                None
            }
        },
    };
    loop {
        tokio::time::sleep(relay.cfg.quota_interval).await;
        for uid in container_uids(&relay.cfg.specs) {
            let Ok(spec) = relay.spec(uid) else { continue };
            if let (Some(m), true) = (&memory, spec.is_deployable()) {
                check_memory(&relay, m, &spec).await;
            }
            let threshold = u64::from(spec.alarms.quota_threshold);
            if threshold == 0 || !spec.is_deployable() {
                continue;
            }
            let containers = relay.cfg.containers.clone();
            let usage = tokio::task::spawn_blocking(move || home_usage(&containers, uid)).await;
            let (used, _size) = match usage {
                Ok(Ok(Some(u))) => u,
                Ok(Ok(None)) => {
                    if unmeasured.insert(uid) {
                        log(&format!(
                            "container {uid}: its home is not a filesystem of its own; disk usage not measured"
                        ));
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    log(&format!("container {uid}: disk usage: {e}"));
                    continue;
                }
                Err(_) => continue,
            };
            let over = Over { kind: "quota", what: "disk usage", used, limit_mb: spec.storage_mb, threshold };
            over.raise(&relay, uid).await;
        }
    }
}

/// A usage against a limit in MB and a threshold in %.
struct Over {
    kind: &'static str,
    what: &'static str,
    used: u64,
    limit_mb: u64,
    threshold: u64,
}

impl Over {
    /// Raises the alarm when the usage is at or over the threshold.
    async fn raise(&self, relay: &Arc<Relay>, uid: u32) {
        let limit = self.limit_mb * 1024 * 1024;
        if limit == 0 || self.used * 100 < limit * self.threshold {
            return;
        }
        let msg = format!(
            "container {uid}: {} {} MB of {} MB ({}%), over the {}% alarm threshold",
            self.what,
            self.used / (1024 * 1024),
            self.limit_mb,
            self.used * 100 / limit,
            self.threshold
        );
        relay.raise(uid, self.kind, &msg).await;
    }
}

async fn check_memory(relay: &Arc<Relay>, files: &MemoryFiles, spec: &ContainerSpec) {
    let Some(used) = files.working_set(spec.uid) else { return };
    let threshold = relay.cfg.memory_threshold;
    let over = Over { kind: "memory", what: "memory use", used, limit_mb: spec.memory_mb, threshold };
    over.raise(relay, spec.uid).await;
}
