//! cgroups: one [`CgroupManager`] trait, a v1 and a v2 backend, and detection. Only the
//! platform's own subtree `<hierarchy>/<name>/<uid>` is ever created, limited or removed.

pub mod detect;
pub mod v1;
pub mod v2;

pub use detect::{detect_setup, CgroupSetup};

use crate::error::{JailError, Result};
use crate::syscalls::Syscalls;
use container_spec::ContainerSpec;
use std::io;
use std::path::{Path, PathBuf};

/// The limits of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// v2 `cpu.weight` scale: 1..=10000, 100 is the default share.
    pub cpu_weight: u32,
    pub pids_max: u32,
}

impl Limits {
    pub fn from_spec(spec: &ContainerSpec) -> Limits {
        Limits { memory_bytes: spec.memory_mb << 20, cpu_weight: spec.cpu_weight, pids_max: spec.pids_limit }
    }
}

pub trait CgroupManager {
    /// "v1" or "v2".
    fn version(&self) -> &'static str;
    /// The container's cgroup directories (one per v1 controller, one on v2).
    fn dirs(&self, uid: u32) -> Vec<PathBuf>;
    /// Creates the container's cgroup(s) if missing and writes the limits. Idempotent.
    fn ensure(&self, uid: u32, limits: &Limits) -> Result<()>;
    /// Moves the calling process into the container's cgroup(s) (`0` to `cgroup.procs`).
    fn join(&self, uid: u32) -> Result<()>;
    /// OOM kills so far (0 when the cgroup does not exist).
    fn oom_kill_count(&self, uid: u32) -> Result<u64>;
    /// Kills what is left in the container's cgroup(s) and removes them.
    fn remove(&self, uid: u32) -> Result<()>;
    /// Removes `<hierarchy>/<name>` if no container cgroup is left in it.
    fn remove_root_if_empty(&self) -> Result<()>;
}

/// The manager for the calling process's view of the host: the v1 backend when the memory
/// controller is mounted as v1 (legacy and hybrid hosts), v2 otherwise.
pub fn manager<'a>(sys: &'a dyn Syscalls, name: &str) -> Result<Box<dyn CgroupManager + 'a>> {
    manager_for(sys, &detect_setup(sys)?, name)
}

pub fn manager_for<'a>(sys: &'a dyn Syscalls, setup: &CgroupSetup, name: &str) -> Result<Box<dyn CgroupManager + 'a>> {
    check_name(name)?;
    match setup {
        CgroupSetup::Legacy { v1 } | CgroupSetup::Hybrid { v1, .. } if v1.contains_key("memory") => {
            Ok(Box::new(v1::V1::new(sys, v1, name)?))
        }
        CgroupSetup::Hybrid { unified, .. } | CgroupSetup::Unified { root: unified } => {
            Ok(Box::new(v2::V2::new(sys, unified, name)))
        }
        CgroupSetup::Legacy { .. } => {
            Err(JailError::unsupported("cgroup v1 without the memory controller and no cgroup2 mount"))
        }
    }
}

/// The subtree name is operator configuration, but it becomes a path component: keep it one.
fn check_name(name: &str) -> Result<()> {
    if container_spec::is_path_component(name) {
        Ok(())
    } else {
        Err(JailError::unsupported(format!("cgroup subtree name {name:?} is not a single path component")))
    }
}

/// mkdir that accepts an existing directory.
pub(crate) fn mkdir_p(sys: &dyn Syscalls, dir: &Path) -> Result<()> {
    match sys.mkdir(dir, 0o755) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(JailError::io("mkdir", dir, e)),
    }
}

pub(crate) fn write(sys: &dyn Syscalls, path: &Path, value: &str) -> Result<()> {
    sys.write_file(path, value.as_bytes()).map_err(|e| JailError::io("write", path, e))
}

/// Reads `key N` out of a flat-keyed file (`memory.events`, `memory.oom_control`).
pub(crate) fn read_counter(sys: &dyn Syscalls, path: &Path, key: &str) -> Result<u64> {
    let text = match sys.read_file(path) {
        Ok(t) => t,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(0),
        Err(e) => return Err(JailError::io("read", path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Removes one cgroup directory, SIGKILLing the processes still in it (they are the
/// container's by definition: nothing else is ever placed in our subtree). `kill_all` is the
/// v2 `cgroup.kill` shortcut when available.
pub(crate) fn remove_dir(sys: &dyn Syscalls, dir: &Path, kill_file: Option<&Path>) -> Result<()> {
    for attempt in 0..100 {
        match sys.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(JailError::io("rmdir", dir, e)),
        }
        if attempt == 0 {
            if let Some(k) = kill_file {
                let _ = sys.write_file(k, b"1");
            }
        }
        let procs = dir.join("cgroup.procs");
        match sys.read_file(&procs) {
            Ok(text) => {
                for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    match sys.kill(pid, libc::SIGKILL) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(e) => return Err(JailError::io("kill", &procs, e)),
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(JailError::io("read", procs, e)),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(JailError::io("rmdir", dir, io::Error::from_raw_os_error(libc::EBUSY)))
}

/// Removes `dir` if it is empty of child cgroups; a busy or non-empty one is left alone.
pub(crate) fn remove_if_empty(sys: &dyn Syscalls, dir: &Path) -> Result<()> {
    match sys.rmdir(dir) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => Ok(()),
        Err(e) => Err(JailError::io("rmdir", dir, e)),
    }
}
