//! cgroups: one [`CgroupManager`] trait, a v1 and a v2 backend, and detection. Only the
//! platform's own subtree `<hierarchy>/<name>/<uid>` is ever created, limited or removed.

pub mod detect;
pub mod v1;
pub mod v2;

pub use detect::{detect_setup, CgroupSetup};

use crate::error::{IoContext, JailError, Result};
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

/// Moves the calling process into every cgroup process `pid` is in (host view): an ssh session
/// joins the cgroups of its container's pid 1, whatever the hierarchy layout (v1, hybrid, v2)
/// and the platform's cgroup name. The paths come from the kernel (`/proc/<pid>/cgroup`) and a
/// container cannot move its pid 1 out of the cgroups root made for it.
pub fn join_cgroups_of(sys: &dyn Syscalls, pid: i32) -> Result<()> {
    let listing = PathBuf::from(format!("/proc/{pid}/cgroup"));
    let text = sys.read_file(&listing).ctx("read", &listing)?;
    let mi = Path::new("/proc/self/mountinfo");
    let mounts = detect::parse_mountinfo(&sys.read_file(mi).ctx("read", mi)?);
    for dir in cgroup_dirs_of(&text, &mounts)? {
        let procs = dir.join("cgroup.procs");
        sys.write_file(&procs, b"0").ctx("write", &procs)?;
    }
    Ok(())
}

/// The directories of the cgroups a `/proc/<pid>/cgroup` listing names, on the hierarchies
/// mounted here (one per mount: co-mounted v1 controllers share a line).
fn cgroup_dirs_of(listing: &str, mounts: &detect::CgroupMounts) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for line in listing.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let mount = if id == "0" && controllers.is_empty() {
            mounts.unified.as_ref()
        } else {
            controllers.split(',').find_map(|c| mounts.v1.get(c))
        };
        let Some(mount) = mount else { continue };
        let relative = path.strip_prefix('/').unwrap_or(path);
        if !path.starts_with('/') || relative.split('/').any(|c| c == ".." || c == ".") {
            return Err(JailError::verify(format!("cgroup path {path:?} is not a plain absolute path")));
        }
        let dir = if relative.is_empty() { mount.clone() } else { mount.join(relative) };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod join_tests {
    use super::*;

    #[test]
    fn a_process_listing_maps_to_one_directory_per_mounted_hierarchy() {
        let mounts = detect::CgroupMounts {
            v1: [
                ("memory", "/sys/fs/cgroup/memory"),
                ("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
                ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
            ]
            .into_iter()
            .map(|(c, m)| (c.to_string(), PathBuf::from(m)))
            .collect(),
            unified: Some("/sys/fs/cgroup/unified".into()),
        };
        let listing = "12:memory:/unbit/30009\n4:cpu,cpuacct:/unbit/30009\n1:name=systemd:/\n0::/\n";
        assert_eq!(
            cgroup_dirs_of(listing, &mounts).unwrap(),
            [
                PathBuf::from("/sys/fs/cgroup/memory/unbit/30009"),
                "/sys/fs/cgroup/cpu,cpuacct/unbit/30009".into(),
                "/sys/fs/cgroup/unified".into()
            ]
        );
        let v2 = detect::CgroupMounts { v1: Default::default(), unified: Some("/sys/fs/cgroup".into()) };
        assert_eq!(cgroup_dirs_of("0::/unbit/30009\n", &v2).unwrap(), [PathBuf::from("/sys/fs/cgroup/unbit/30009")]);
        assert!(cgroup_dirs_of("0::/unbit/../x\n", &v2).is_err());
    }
}
