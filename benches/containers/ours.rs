//! Our chain: the node Emperor with `unbit_containers` (the test kit's `TestNode`: its own
//! temp dirs and cgroup subtree), fed by renaming `<uid>.json` into its spec folder, as the
//! API fetcher does.

use crate::footprint::{self, Footprint};
use crate::readiness::Readiness;
use std::path::PathBuf;
use std::time::Instant;
use uwsgi_it::node::{spec_json, TestNode};

/// Memory and pids limits of every benchmarked container (the anchors get the same).
pub const MEMORY_MB: u64 = 256;
pub const PIDS_LIMIT: u32 = 128;
pub const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchmarkKeyForTheContainersBench bench@node";

pub struct OursNode {
    node: TestNode,
    staging: PathBuf,
    pub readiness: Readiness,
    keys: (String, String),
}

impl OursNode {
    pub fn start(keys: &(String, String)) -> Result<OursNode, String> {
        let node = TestNode::start(&["--unbit-quota", "none"]);
        // Specs are written here first, so the spec folder only ever sees the rename.
        let staging = node.root.path().join("bench-staging");
        std::fs::create_dir(&staging).map_err(|e| format!("mkdir {}: {e}", staging.display()))?;
        let readiness = Readiness::watch(&node.root.path().join("containers"))?;
        Ok(OursNode { node, staging, readiness, keys: keys.clone() })
    }

    /// Drops the specs of `uids` into the spec folder; returns the instant just before the
    /// first rename.
    pub fn launch(&mut self, uids: &[u32]) -> Result<Instant, String> {
        for &uid in uids {
            let spec = spec_json(uid, "bench", MEMORY_MB, PIDS_LIMIT, &[SSH_KEY], &self.keys);
            let path = self.staging.join(format!("{uid}.json"));
            std::fs::write(&path, spec).map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        let specs = self.node.root.path().join("specs");
        let t0 = Instant::now();
        for &uid in uids {
            let name = format!("{uid}.json");
            std::fs::rename(self.staging.join(&name), specs.join(&name)).map_err(|e| format!("rename {name}: {e}"))?;
        }
        Ok(t0)
    }

    /// The container's memory cgroup (`<memory>/<node's subtree>/<uid>`).
    pub fn footprint(&self, uid: u32) -> Footprint {
        let dir = PathBuf::from(crate::cgroups::CGROUP_ROOT)
            .join("memory")
            .join(&self.node.cgroup_name)
            .join(uid.to_string());
        footprint::of_cgroup(&dir)
    }

    /// The last lines of the node Emperor's log, for an error report.
    pub fn log_tail(&self) -> String {
        tail(&self.node.emperor().log(), 15)
    }
}

pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
