//! The quota and memory alarms: every `--quota-interval`, each container's disk usage against
//! `quota_threshold` % of its `storage_mb`, and its working set against `--memory-threshold` %
//! of its `memory_mb` (see [`super::memory`]).
//!
//! Disk usage is what the node's quota backend counts against the limit
//! (`jail::QuotaBackend::usage`, the backend detected the way the containers plugin and
//! `unbit-metrics` detect it): the used blocks of the home's own filesystem for the `image`
//! backend, the referenced bytes of the home subvolume's qgroup for `btrfs`, the uid's
//! `dqb_curspace` for `quotactl`. A home the backend has no figure for (not mounted, not a
//! subvolume) is said once per container in the relay's log.

use super::memory::MemoryFiles;
use super::{log, Relay};
use container_spec::ContainerSpec;
use jail::linux::Linux;
use jail::safefs::open_trusted_dir;
use std::collections::BTreeSet;
use std::sync::Arc;

/// One home's usage: bytes, `None` where the backend has no figure, or why it could not be read.
pub type HomeUsage = Result<Option<u64>, String>;

/// Bytes each home of `uids` uses against its quota, by the node's quota backend: `Ok(None)`
/// where the backend has no figure. One detection for all (a few system calls).
pub fn disk_usage(containers: &std::path::Path, uids: &[u32]) -> Result<Vec<(u32, HomeUsage)>, String> {
    let backend = jail::detect_quota_backend(containers).map_err(|e| e.to_string())?;
    let sys = Linux;
    let dir = open_trusted_dir(&sys, containers).map_err(|e| e.to_string())?;
    Ok(uids.iter().map(|&uid| (uid, backend.usage(&sys, &dir, uid).map_err(|e| e.to_string()))).collect())
}

fn container_uids(specs: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(specs) else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json")?.parse().ok()).collect()
}

pub async fn watch(relay: Arc<Relay>) {
    let (mut unmeasured, mut backend_problem) = (BTreeSet::new(), None::<String>);
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
        let mut disk = Vec::new();
        for uid in container_uids(&relay.cfg.specs) {
            let Ok(spec) = relay.spec(uid) else { continue };
            if let (Some(m), true) = (&memory, spec.is_deployable()) {
                check_memory(&relay, m, &spec).await;
            }
            if spec.alarms.quota_threshold > 0 && spec.is_deployable() {
                disk.push(spec);
            }
        }
        if disk.is_empty() {
            continue;
        }
        let containers = relay.cfg.containers.clone();
        let uids: Vec<u32> = disk.iter().map(|s| s.uid).collect();
        let usage = match tokio::task::spawn_blocking(move || disk_usage(&containers, &uids)).await {
            Ok(Ok(usage)) => usage,
            Ok(Err(e)) => {
                if backend_problem.as_deref() != Some(e.as_str()) {
                    log(&format!("quota alarms: no disk usage: {e}"));
                    backend_problem = Some(e);
                }
                continue;
            }
            // The reader panicked or was cancelled: this round is skipped, and said.
            Err(e) => {
                log(&format!("quota alarms: the disk usage reader failed ({e}); skipping this check"));
                continue;
            }
        };
        backend_problem = None;
        for (spec, (uid, used)) in disk.iter().zip(usage) {
            let used = match used {
                Ok(Some(used)) => used,
                Ok(None) => {
                    if unmeasured.insert(uid) {
                        log(&format!(
                            "container {uid}: the quota backend has no disk usage for its home; not measured"
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    log(&format!("container {uid}: disk usage: {e}"));
                    continue;
                }
            };
            unmeasured.remove(&uid);
            let threshold = u64::from(spec.alarms.quota_threshold);
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
