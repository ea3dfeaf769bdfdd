//! cgroup v1: one directory per controller hierarchy (`memory`, `cpu`, `pids`), each
//! `<mountpoint>/<name>/<uid>`.

use super::{mkdir_p, read_counter, remove_dir, remove_if_empty, write, CgroupManager, Limits};
use crate::error::{JailError, Result};
use crate::syscalls::Syscalls;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct V1<'a> {
    sys: &'a dyn Syscalls,
    /// Controller -> `<mountpoint>/<name>`, for memory, cpu and pids, and the accounting
    /// controllers that are mounted (one entry per hierarchy).
    roots: Vec<(&'static str, PathBuf)>,
}

/// v1 `cpu.shares` for a v2-scale weight: 100 (the default weight) is 1024 shares, the
/// v1 default; the kernel's minimum is 2.
pub fn cpu_shares(weight: u32) -> u64 {
    (weight as u64 * 1024 / 100).max(2)
}

impl<'a> V1<'a> {
    pub fn new(sys: &'a dyn Syscalls, mounts: &BTreeMap<String, PathBuf>, name: &str) -> Result<V1<'a>> {
        let mut roots = Vec::new();
        for c in super::detect::V1_CONTROLLERS {
            let m = mounts
                .get(*c)
                .ok_or_else(|| JailError::unsupported(format!("the cgroup v1 '{c}' controller is not mounted")))?;
            roots.push((*c, m.join(name)));
        }
        // Not limited, only read (CPU time, disk I/O: docs/metrics.md); a hierarchy co-mounted
        // with a limited controller (`cpu,cpuacct`) is already there.
        for c in super::detect::V1_ACCOUNTING {
            if let Some(m) = mounts.get(*c).map(|m| m.join(name)) {
                if !roots.iter().any(|(_, r)| *r == m) {
                    roots.push((*c, m));
                }
            }
        }
        Ok(V1 { sys, roots })
    }

    fn dir(&self, controller: &str, uid: u32) -> PathBuf {
        let root = &self.roots.iter().find(|(c, _)| *c == controller).expect("controller listed in V1_CONTROLLERS").1;
        root.join(uid.to_string())
    }

    /// memory.limit_in_bytes and, with swap accounting, memory.memsw.limit_in_bytes equal to
    /// it (swap off). memsw must never be below the limit, so the order depends on whether
    /// the limit goes up or down.
    fn set_memory(&self, dir: &Path, bytes: u64) -> Result<()> {
        let limit = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let has_memsw = self.sys.read_file(&memsw).is_ok();
        let value = bytes.to_string();
        match self.sys.write_file(&limit, value.as_bytes()) {
            Ok(()) => {}
            // Raising the limit above the current memsw: raise memsw first.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && has_memsw => {
                write(self.sys, &memsw, &value)?;
                write(self.sys, &limit, &value)?;
            }
            Err(e) => return Err(JailError::io("write", limit, e)),
        }
        if has_memsw {
            write(self.sys, &memsw, &value)?;
        }
        write(self.sys, &dir.join("memory.swappiness"), "0")
    }
}

impl CgroupManager for V1<'_> {
    fn version(&self) -> &'static str {
        "v1"
    }

    fn dirs(&self, uid: u32) -> Vec<PathBuf> {
        self.roots.iter().map(|(_, r)| r.join(uid.to_string())).collect()
    }

    fn ensure(&self, uid: u32, limits: &Limits) -> Result<()> {
        for (_, root) in &self.roots {
            mkdir_p(self.sys, root)?;
            mkdir_p(self.sys, &root.join(uid.to_string()))?;
        }
        self.set_memory(&self.dir("memory", uid), limits.memory_bytes)?;
        write(self.sys, &self.dir("cpu", uid).join("cpu.shares"), &cpu_shares(limits.cpu_weight).to_string())?;
        write(self.sys, &self.dir("pids", uid).join("pids.max"), &limits.pids_max.to_string())
    }

    fn join(&self, uid: u32) -> Result<()> {
        for dir in self.dirs(uid) {
            write(self.sys, &dir.join("cgroup.procs"), "0")?;
        }
        Ok(())
    }

    fn oom_kill_count(&self, uid: u32) -> Result<u64> {
        read_counter(self.sys, &self.dir("memory", uid).join("memory.oom_control"), "oom_kill")
    }

    fn remove(&self, uid: u32) -> Result<()> {
        for dir in self.dirs(uid) {
            remove_dir(self.sys, &dir, None)?;
        }
        Ok(())
    }

    fn remove_root_if_empty(&self) -> Result<()> {
        for (_, root) in &self.roots {
            remove_if_empty(self.sys, root)?;
        }
        Ok(())
    }
}
