//! The privileged, uWSGI-independent core of the container manager.
//!
//! The `unbit_containers` plugin calls it at four points of a container's life:
//!
//! 1. In the Emperor (host namespaces, root), before spawning: [`prepare_home`] creates or
//!    repairs `/containers/<uid>` symlink-safely and applies the disk quota;
//!    [`write_authorized_keys`] handles key-only changes without a restart;
//!    [`append_to_customer_log`] tells the customer what the node did or refused.
//! 2. In the cloned child (new mount/pid/ipc/uts/net namespaces, root): [`enter_jail`] joins
//!    the container's cgroup, builds the rootfs view and pivots into it.
//! 3. Right before exec: [`drop_privileges`] switches to the container uid for good and
//!    [`replace_environment`] leaves only what the platform sets.
//! 4. Back in the Emperor: [`oom_kill_count`] each cycle, [`release`] on stop.
//!
//! Every privileged call goes through [`Syscalls`]; the `*_with` variants take one so the
//! sequences can be checked against the recording [`fake::Fake`] without root.

pub mod cgroup;
pub mod enter;
mod error;
pub mod fake;
pub mod fdpass;
mod home;
pub mod linux;
pub mod loopbox;
pub mod loopdev;
mod mounts;
mod privileges;
pub mod quota;
mod rootfs;
pub mod safefs;
pub mod syscalls;

use container_spec::ContainerSpec;
use std::path::PathBuf;

pub use cgroup::{CgroupManager, CgroupSetup, Limits};
pub use error::{JailError, Result};
pub use home::{
    append_to_customer_log_with, ensure_distros_dir_with, prepare_home_with, revoke_authorized_keys_with,
    write_authorized_keys_with, ETC_FILES, HOME_DIRS,
};
pub use privileges::{drop_privileges_with, PrivilegeReport};
pub use quota::{detect_quota_backend, QuotaBackend};
pub use rootfs::{check_custom_distro_with, enter_jail_with, CUSTOM_DISTRO_DIRS, JAIL_MOUNTPOINTS};
pub use safefs::Displaced;
pub use syscalls::Syscalls;

use linux::Linux;

/// Where things live on a node. Every path here is host-controlled (root-owned); nothing in
/// it comes from a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// Parent of the homes, `<containers>/<uid>`.
    pub containers: PathBuf,
    /// Parent of the platform distros, `<distros>/<distro.path>`.
    pub distros: PathBuf,
    /// The platform's plugins and `shortcuts.ini`, mounted read-only at `/opt/unbit`.
    pub platform_dir: PathBuf,
    /// The routers' subscription sockets, mounted at `/run/subscribe` (not mounted if None).
    pub subscribe_dir: Option<PathBuf>,
    /// An empty root-owned directory the container root is assembled on. Each container
    /// mounts on it inside its own private mount namespace, so they never collide and the
    /// host never sees those mounts.
    pub jail_root: PathBuf,
    /// The platform's cgroup subtree, `<hierarchy>/<cgroup_name>/<uid>`.
    pub cgroup_name: String,
}

impl Default for NodePaths {
    fn default() -> Self {
        NodePaths {
            containers: "/containers".into(),
            distros: "/distros".into(),
            platform_dir: "/opt/unbit".into(),
            subscribe_dir: Some("/subscribe".into()),
            jail_root: "/run/unbit/jail".into(),
            cgroup_name: "unbit".into(),
        }
    }
}

/// Creates or repairs `<containers>/<uid>` (idempotent; Emperor, host namespaces, root):
/// `vassals logs etc run tmp .ssh`, `run/{subscribe,shm,spool}`, `etc/hosts` and
/// `etc/resolv.conf` seeded when missing, `etc/hostname`, `etc/uwsgi.key` (0400) and
/// `etc/uwsgi.pubkey` (0444), `.ssh/uwsgi_authorized_keys`, `logs/emperor.log`, all owned by
/// the container uid, then the quota. Symlinks planted by the customer in place of files are
/// replaced, never followed; whatever the customer put in place of one of the platform's
/// directories is moved aside (returned, so the customer can be told), never deleted; what
/// cannot be repaired safely is reported with its path.
pub fn prepare_home(paths: &NodePaths, spec: &ContainerSpec, quota: &dyn QuotaBackend) -> Result<Vec<Displaced>> {
    prepare_home_with(&Linux, paths, spec, quota)
}

/// Rewrites `.ssh/uwsgi_authorized_keys` atomically when the keys changed; nothing restarts.
/// Returns what had to be moved out of the way of `.ssh`.
pub fn write_authorized_keys(paths: &NodePaths, spec: &ContainerSpec) -> Result<Vec<Displaced>> {
    write_authorized_keys_with(&Linux, paths, spec)
}

/// Removes `.ssh/uwsgi_authorized_keys` (fail closed when the new keys cannot be written).
pub fn revoke_authorized_keys(paths: &NodePaths, uid: u32) -> Result<()> {
    revoke_authorized_keys_with(&Linux, paths, uid)
}

/// Appends `text` to the customer's `~/logs/emperor.log`, symlink-safely, as root.
pub fn append_to_customer_log(paths: &NodePaths, uid: u32, text: &str) -> Result<()> {
    append_to_customer_log_with(&Linux, paths, uid, text)
}

/// Creates `~/distros/` (containers that store custom distro images).
pub fn ensure_distros_dir(paths: &NodePaths, spec: &ContainerSpec) -> Result<Vec<Displaced>> {
    ensure_distros_dir_with(&Linux, paths, spec)
}

/// Whether a custom distro image can be booted (see [`check_custom_distro_with`]); the Emperor
/// asks before starting a container on one, and falls back to its default distro otherwise.
pub fn check_custom_distro(paths: &NodePaths, distro: &container_spec::Distro) -> Result<()> {
    rootfs::check_custom_distro_with(&Linux, paths, distro)
}

/// Creates (or updates) the container's cgroup with its limits. [`enter_jail`] does it too;
/// calling it from the Emperor first reports a cgroup problem before anything is spawned.
pub fn prepare_cgroup(paths: &NodePaths, spec: &ContainerSpec) -> Result<()> {
    let cg = cgroup::manager(&Linux, &paths.cgroup_name)?;
    cg.ensure(spec.uid, &Limits::from_spec(spec)).map_err(|e| e.for_container(spec.uid))
}

/// In the cloned child (new mount/pid/ipc/uts/net namespaces, root, host mount view):
/// joins the container's cgroup and builds its root filesystem, then pivots into it.
/// Never executes anything.
pub fn enter_jail(paths: &NodePaths, spec: &ContainerSpec) -> Result<()> {
    let cg = cgroup::manager(&Linux, &paths.cgroup_name).map_err(|e| e.for_container(spec.uid))?;
    enter_jail_with(&Linux, paths, spec, cg.as_ref())
}

/// Right before exec: no supplementary groups, uid/gid = `uid`, no capabilities in any set,
/// `PR_SET_NO_NEW_PRIVS`, every fd above 2 closed.
pub fn drop_privileges(uid: u32) -> Result<()> {
    drop_privileges_with(&Linux, uid, &[]).map(drop)
}

/// Like [`drop_privileges`] but keeps the listed fds open (e.g. the Emperor pipe uWSGI's
/// vassal protocol needs). Each kept fd must be `O_CLOEXEC`-free on purpose and trusted.
pub fn drop_privileges_keeping(uid: u32, keep: &[std::os::fd::RawFd]) -> Result<()> {
    drop_privileges_with(&Linux, uid, keep).map(drop)
}

/// Right before exec, after [`drop_privileges_keeping`]: replaces the whole environment with
/// `vars`. `clearenv(3)` first, so nothing inherited survives, not even an entry std cannot
/// name or remove (one without `=`, an empty name).
pub fn replace_environment(vars: &[(&str, String)]) -> Result<()> {
    Linux.clear_environment().map_err(|e| JailError::io("clearenv", "(the process environment)", e))?;
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    Ok(())
}

/// On stop or removal (Emperor): removes the container's cgroups, killing what is left in
/// them. The home stays.
pub fn release(paths: &NodePaths, uid: u32) -> Result<()> {
    let cg = cgroup::manager(&Linux, &paths.cgroup_name).map_err(|e| e.for_container(uid))?;
    cg.remove(uid).map_err(|e| e.for_container(uid))
}

/// How many times the kernel's OOM killer has killed a process of this container's cgroup
/// (0 if the cgroup does not exist).
pub fn oom_kill_count(paths: &NodePaths, uid: u32) -> Result<u64> {
    let cg = cgroup::manager(&Linux, &paths.cgroup_name).map_err(|e| e.for_container(uid))?;
    cg.oom_kill_count(uid).map_err(|e| e.for_container(uid))
}
