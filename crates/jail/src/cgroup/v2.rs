//! cgroup v2: one directory `<root>/<name>/<uid>`; the controllers have to be enabled in
//! `cgroup.subtree_control` of every ancestor first.

use super::detect::{v2_controllers, V2_ACCOUNTING, V2_CONTROLLERS};
use super::{mkdir_p, read_counter, remove_dir, remove_if_empty, write, CgroupManager, Limits};
use crate::error::{JailError, Result};
use crate::syscalls::Syscalls;
use std::path::{Path, PathBuf};

pub struct V2<'a> {
    sys: &'a dyn Syscalls,
    /// The cgroup2 mountpoint.
    mount: PathBuf,
    /// `<mount>/<name>`.
    root: PathBuf,
}

impl<'a> V2<'a> {
    pub fn new(sys: &'a dyn Syscalls, mount: &Path, name: &str) -> V2<'a> {
        V2 { sys, mount: mount.to_path_buf(), root: mount.join(name) }
    }

    fn dir(&self, uid: u32) -> PathBuf {
        self.root.join(uid.to_string())
    }

    /// Enables our controllers for the children of `dir`, writing only what is missing (a
    /// write to the mount root is then a no-op on hosts where systemd already did it).
    fn enable_controllers(&self, dir: &Path) -> Result<()> {
        let available = v2_controllers(self.sys, dir)?;
        if let Some(c) = V2_CONTROLLERS.iter().find(|c| !available.iter().any(|a| a == *c)) {
            return Err(JailError::unsupported(format!(
                "cgroup v2 controller '{c}' is not available in {}",
                dir.join("cgroup.controllers").display()
            )));
        }
        let control = dir.join("cgroup.subtree_control");
        let enabled = self.sys.read_file(&control).map_err(|e| JailError::io("read", &control, e))?;
        // `io` is only read (disk I/O per container, docs/metrics.md): enabled where offered.
        let offered = V2_ACCOUNTING.iter().filter(|c| available.iter().any(|a| a == *c));
        let missing: Vec<String> = V2_CONTROLLERS
            .iter()
            .chain(offered)
            .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        write(self.sys, &control, &missing.join(" "))
    }
}

impl CgroupManager for V2<'_> {
    fn version(&self) -> &'static str {
        "v2"
    }

    fn dirs(&self, uid: u32) -> Vec<PathBuf> {
        vec![self.dir(uid)]
    }

    fn ensure(&self, uid: u32, limits: &Limits) -> Result<()> {
        self.enable_controllers(&self.mount)?;
        mkdir_p(self.sys, &self.root)?;
        self.enable_controllers(&self.root)?;
        let dir = self.dir(uid);
        mkdir_p(self.sys, &dir)?;
        write(self.sys, &dir.join("memory.max"), &limits.memory_bytes.to_string())?;
        // Absent when the kernel runs without swap accounting: then there is no swap to use.
        let swap = dir.join("memory.swap.max");
        if self.sys.read_file(&swap).is_ok() {
            write(self.sys, &swap, "0")?;
        }
        write(self.sys, &dir.join("cpu.weight"), &limits.cpu_weight.to_string())?;
        write(self.sys, &dir.join("pids.max"), &limits.pids_max.to_string())
    }

    fn join(&self, uid: u32) -> Result<()> {
        write(self.sys, &self.dir(uid).join("cgroup.procs"), "0")
    }

    fn oom_kill_count(&self, uid: u32) -> Result<u64> {
        read_counter(self.sys, &self.dir(uid).join("memory.events"), "oom_kill")
    }

    fn remove(&self, uid: u32) -> Result<()> {
        let dir = self.dir(uid);
        let kill = dir.join("cgroup.kill");
        remove_dir(self.sys, &dir, Some(&kill))
    }

    fn remove_root_if_empty(&self) -> Result<()> {
        remove_if_empty(self.sys, &self.root)
    }
}
