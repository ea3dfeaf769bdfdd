//! The quota alarm: every `--quota-interval`, each container's disk usage against
//! `quota_threshold` % of its `storage_mb`.
//!
//! Usage is read from the home's own filesystem when the home is one (the `image` quota
//! backend: an ext4 image mounted on the home), with `fstatvfs` on a descriptor of the home
//! opened by the jail's symlink-safe lookups. Homes on the containers' filesystem (btrfs
//! qgroups, uid quotas) are not measured yet: the relay says so once per container.

use super::{log, Relay};
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
    loop {
        tokio::time::sleep(relay.cfg.quota_interval).await;
        for uid in container_uids(&relay.cfg.specs) {
            let Ok(spec) = relay.spec(uid) else { continue };
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
            let quota = spec.storage_mb * 1024 * 1024;
            if quota > 0 && used * 100 >= quota * threshold {
                let msg = format!(
                    "container {uid}: disk usage {} MB of {} MB ({}%), over the {threshold}% alarm threshold",
                    used / (1024 * 1024),
                    spec.storage_mb,
                    used * 100 / quota
                );
                relay.raise(uid, "quota", &msg).await;
            }
        }
    }
}
