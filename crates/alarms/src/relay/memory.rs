//! The memory alarm: a container's working set (its cgroup's usage less the page cache it
//! could drop, `inactive_file`) over `--memory-threshold` % of its `memory_mb`, checked with the
//! quota every `--quota-interval`. The OOM alarm says the limit was hit; this one says it is
//! near.

use jail::cgroup::CgroupSetup;
use std::path::{Path, PathBuf};

/// Where a container's memory cgroup files are, and their names on this host.
#[derive(Debug, Clone)]
pub struct MemoryFiles {
    /// `<memory hierarchy>/<cgroup name>`
    pub parent: PathBuf,
    pub usage: &'static str,
    pub inactive_file: &'static str,
}

impl MemoryFiles {
    /// The v1 memory controller when it is mounted (as the jail uses it then), v2 otherwise.
    pub fn detect(cgroup_name: &str) -> Result<MemoryFiles, String> {
        let setup = jail::cgroup::detect_setup(&jail::linux::Linux).map_err(|e| e.to_string())?;
        let v1 = |v1: &std::collections::BTreeMap<String, PathBuf>| {
            v1.get("memory").map(|m| MemoryFiles {
                parent: m.join(cgroup_name),
                usage: "memory.usage_in_bytes",
                inactive_file: "total_inactive_file",
            })
        };
        let v2 = |root: &Path| MemoryFiles {
            parent: root.join(cgroup_name),
            usage: "memory.current",
            inactive_file: "inactive_file",
        };
        match &setup {
            CgroupSetup::Legacy { v1: m } => v1(m).ok_or_else(|| "no memory controller mounted".to_string()),
            CgroupSetup::Hybrid { v1: m, unified } => Ok(v1(m).unwrap_or_else(|| v2(unified))),
            CgroupSetup::Unified { root } => Ok(v2(root)),
        }
    }

    /// The container's working set in bytes, or `None` when its cgroup is not there.
    pub fn working_set(&self, uid: u32) -> Option<u64> {
        let dir = self.parent.join(uid.to_string());
        let usage: u64 = std::fs::read_to_string(dir.join(self.usage)).ok()?.trim().parse().ok()?;
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let inactive = stat
            .lines()
            .find_map(|l| l.strip_prefix(self.inactive_file)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Some(usage.saturating_sub(inactive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_working_set_leaves_out_inactive_file_pages() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("unbit/30601");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("memory.current"), "104857600\n").unwrap();
        std::fs::write(c.join("memory.stat"), "anon 50000000\nfile 54857600\ninactive_file 20971520\nactive_file 1\n")
            .unwrap();
        let f =
            MemoryFiles { parent: dir.path().join("unbit"), usage: "memory.current", inactive_file: "inactive_file" };
        assert_eq!(f.working_set(30601), Some(104_857_600 - 20_971_520));
        assert_eq!(f.working_set(30602), None, "no cgroup, no reading");
        let v1 = MemoryFiles {
            parent: dir.path().join("unbit"),
            usage: "memory.current",
            inactive_file: "total_inactive_file",
        };
        assert_eq!(v1.working_set(30601), Some(104_857_600), "another file's name is not a prefix match");
    }
}
