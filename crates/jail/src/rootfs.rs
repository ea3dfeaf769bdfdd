//! The container's root filesystem view, built in the cloned child (new mount/pid/ipc/uts/net
//! namespaces, root) and entered with `pivot_root`. Replaces the original's pre-jail and
//! as-root hooks (§4.4 steps 13-31) without their weaknesses: the distro is read-only,
//! every customer-writable mount is really `nosuid,nodev` (remount after bind), `/dev` is a
//! private minimal tmpfs instead of the host's (WEAK-16), every lookup in a customer tree is
//! symlink-safe (WEAK-4), and nothing from the guest rootfs is executed (WEAK-2): no
//! `ifconfig`, no `rc.local` while privileged.
//!
//! `/etc/{hosts,hostname,resolv.conf}`: the home's files are bind-mounted over the distro's
//! (which must be regular files, `scripts/build-distro.sh` makes sure). This needs nothing
//! special from a distro, custom ones included; the cost is that a customer who *replaces*
//! `~/etc/hosts` (editor writing a new file and renaming) sees the change in `/etc/hosts` at
//! the next restart, while in-place edits show at once.
//!
//! `/etc/{passwd,group}`: the distro's with the container's user added, root's, read-only
//! (see [`users`]).

use crate::cgroup::{CgroupManager, Limits};
use crate::error::{IoContext, JailError, Result};
use crate::home::ETC_FILES;
use crate::mounts::{bind, mount_fs, remount, CUSTOMER_WRITABLE, READ_ONLY};
use crate::safefs::{lookup_error, open_dir, open_path, open_trusted_dir, Dir};
use crate::syscalls::{fd_path, FileKind, Syscalls, RESOLVE_BENEATH};
use crate::NodePaths;
use container_spec::{ContainerSpec, Distro};
use nix::mount::{MntFlags, MsFlags};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

mod users;

/// Paths that must exist in every distro, because the distro is mounted read-only and the
/// jail mounts on them (files for the `etc/` entries, directories otherwise).
pub const JAIL_MOUNTPOINTS: &[&str] = &[
    "proc",
    "dev",
    "tmp",
    "run",
    "var/tmp",
    "var/log",
    "var/spool",
    "usr/local",
    "containers",
    "opt/unbit",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "etc/passwd",
    "etc/group",
];

/// What custom-distros.md asks of every customer image, beyond [`JAIL_MOUNTPOINTS`]: the
/// original pivoted onto `/.old_root` and checked it to tell an image from an arbitrary
/// directory. The jail does not create a missing mountpoint (on a tmpfs overlay or otherwise):
/// the image is mounted read-only as the customer built it, and one that lacks any of these is
/// refused as a whole, so the container falls back to its default distro with an alarm saying
/// what is missing (`unbit-oci-import` creates them all). (`containers` is a jail mountpoint
/// too; it is listed here as the customer contract names it.)
pub const CUSTOM_DISTRO_DIRS: &[&str] = &[".old_root", "containers"];

/// Home subtree -> where it appears in the container.
const HOME_BINDS: &[(&str, &str)] =
    &[("run", "run"), ("tmp", "tmp"), ("tmp", "var/tmp"), ("logs", "var/log"), ("run/spool", "var/spool")];

/// (name, major, minor): the only device nodes a container gets.
pub const DEVICES: &[(&str, u32, u32)] =
    &[("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

pub fn enter_jail_with(
    sys: &dyn Syscalls,
    paths: &NodePaths,
    spec: &ContainerSpec,
    cgroups: &dyn CgroupManager,
) -> Result<()> {
    spec.validate().map_err(JailError::InvalidSpec)?;
    enter(sys, paths, spec, cgroups).map_err(|e| e.for_container(spec.uid))
}

fn enter(sys: &dyn Syscalls, paths: &NodePaths, spec: &ContainerSpec, cgroups: &dyn CgroupManager) -> Result<()> {
    let uid = spec.uid;
    let limits = Limits::from_spec(spec);
    // First, so every page the jail allocates from here on (tmpfs included) is charged.
    cgroups.ensure(uid, &limits)?;
    cgroups.join(uid)?;

    // Nothing below may propagate back to the host.
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
        .ctx("mount (make / rprivate)", "/")?;

    let containers = open_trusted_dir(sys, &paths.containers)?;
    let home = open_dir(sys, &containers, uid.to_string())?;
    let distro = open_distro(sys, paths, &containers, &spec.distro)?;
    let platform = open_trusted_dir(sys, &paths.platform_dir)?;
    let subscribe = match &paths.subscribe_dir {
        Some(p) => Some(open_trusted_dir(sys, p)?),
        None => None,
    };

    // The distro, read-only, on the jail root (created on first use: a root-owned host path).
    mkdir_all(sys, &paths.jail_root)?;
    {
        let target = open_trusted_dir(sys, &paths.jail_root)?;
        sys.mount(Some(&fd_path(distro.as_fd())), &fd_path(target.as_fd()), None, MsFlags::MS_BIND, None)
            .ctx("mount (bind distro)", &paths.jail_root)?;
    }
    // Reopened: now the root of the new mount.
    let root = open_trusted_dir(sys, &paths.jail_root)?;
    sys.mount(None, &fd_path(root.as_fd()), None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | READ_ONLY, None)
        .ctx("mount (remount distro read-only)", &paths.jail_root)?;

    // A fresh /proc for the new pid namespace: only the container's processes, and of
    // those only the caller's own uid (hidepid=2).
    mount_fs(
        sys,
        &root,
        "proc",
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("hidepid=2"),
    )?;
    build_dev(sys, &root, limits.memory_bytes)?;
    // Before the home's tmp is bound on /tmp: it uses the distro's /tmp as a scratch mountpoint.
    users::mount_user_db(sys, &root, uid)?;

    // /containers holds only this container's home.
    mount_fs(
        sys,
        &root,
        "containers",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=16k,nr_inodes=16"),
    )?;
    {
        let c = open_dir(sys, &root, "containers")?;
        sys.mkdirat(c.as_fd(), Path::new(&uid.to_string()), 0o755).ctx("mkdirat", c.join(uid.to_string()))?;
    }
    let home_in_jail = PathBuf::from("containers").join(uid.to_string());
    bind(sys, home.as_fd(), &root, &home_in_jail, FileKind::Dir, CUSTOMER_WRITABLE)?;
    remount(
        sys,
        &root,
        "containers",
        FileKind::Dir,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )?;
    // `make install` / `pip install` into the home.
    bind(sys, home.as_fd(), &root, "usr/local", FileKind::Dir, CUSTOMER_WRITABLE)?;
    for (src, dst) in HOME_BINDS {
        let s = open_path(sys, &home, src, FileKind::Dir)?;
        bind(sys, s.as_fd(), &root, dst, FileKind::Dir, CUSTOMER_WRITABLE)?;
    }
    // /run/shm: the same memory-sized tmpfs as /dev/shm (one pool, charged to the cgroup).
    {
        let shm = open_path(sys, &root, "dev/shm", FileKind::Dir)?;
        bind(sys, shm.as_fd(), &root, "run/shm", FileKind::Dir, CUSTOMER_WRITABLE)?;
    }
    if let Some(sub) = &subscribe {
        bind(sys, sub.as_fd(), &root, "run/subscribe", FileKind::Dir, CUSTOMER_WRITABLE | MsFlags::MS_NOEXEC)?;
    }
    for name in ETC_FILES {
        let rel = Path::new("etc").join(name);
        let s = open_path(sys, &home, &rel, FileKind::File)?;
        bind(sys, s.as_fd(), &root, &rel, FileKind::File, CUSTOMER_WRITABLE | MsFlags::MS_NOEXEC)?;
    }
    bind(sys, platform.as_fd(), &root, "opt/unbit", FileKind::Dir, READ_ONLY)?;

    sys.sethostname(&spec.hostname()).ctx("sethostname", spec.hostname())?;

    // pivot_root(".", ".") stacks the old root on top of the new one; detaching it leaves
    // only the jail (runc's sequence, no put_old directory needed in a read-only distro).
    sys.fchdir(root.as_fd()).ctx("fchdir", &root.path)?;
    drop((root, home, distro, platform, subscribe, containers));
    sys.pivot_root(Path::new("."), Path::new(".")).ctx("pivot_root", &paths.jail_root)?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH).ctx("umount2 (old root)", "/")?;
    sys.chdir(Path::new("/")).ctx("chdir", "/")?;

    // Per IPC namespace: no single SysV segment larger than the container's memory.
    let shmmax = Path::new("/proc/sys/kernel/shmmax");
    sys.write_file(shmmax, limits.memory_bytes.to_string().as_bytes()).ctx("write", shmmax)?;
    Ok(())
}

/// mkdir -p for a trusted, root-owned host path.
fn mkdir_all(sys: &dyn Syscalls, dir: &Path) -> Result<()> {
    let mut cur = PathBuf::new();
    for c in dir.components() {
        cur.push(c);
        if cur.parent().is_some() {
            match sys.mkdir(&cur, 0o755) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(JailError::io("mkdir", cur, e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The distro directory: a platform one under the operator's distros folder (symlinks
/// inside it are the operator's and allowed, but never out of it), or a customer image in
/// the storage container's home, reached without any symlink.
fn open_distro(sys: &dyn Syscalls, paths: &NodePaths, containers: &Dir, distro: &Distro) -> Result<Dir> {
    match distro {
        Distro::Platform { path } => {
            let distros = open_trusted_dir(sys, &paths.distros)?;
            let full = distros.join(path);
            let fd = sys
                .openat2(Some(distros.as_fd()), Path::new(path), libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_BENEATH)
                .map_err(|e| lookup_error("openat2", full.clone(), e))?;
            Ok(Dir { fd, path: full })
        }
        Distro::Custom { storage_uid, path, .. } => {
            open_dir(sys, containers, Path::new(&storage_uid.to_string()).join("distros").join(path))
        }
    }
}

/// Whether a custom distro can be booted: reached below `<containers>/<storage_uid>/distros/`
/// without any symlink, and holding [`CUSTOM_DISTRO_DIRS`] and every [`JAIL_MOUNTPOINTS`] entry
/// as the right kind of object (no symlink either). The error lists everything missing.
pub fn check_custom_distro_with(sys: &dyn Syscalls, paths: &NodePaths, distro: &Distro) -> Result<()> {
    let containers = open_trusted_dir(sys, &paths.containers)?;
    let image = open_distro(sys, paths, &containers, distro)?;
    let mut missing = Vec::new();
    for rel in CUSTOM_DISTRO_DIRS.iter().chain(JAIL_MOUNTPOINTS.iter().filter(|m| !CUSTOM_DISTRO_DIRS.contains(m))) {
        let kind = if rel.starts_with("etc/") { FileKind::File } else { FileKind::Dir };
        if let Err(e) = open_path(sys, &image, rel, kind) {
            missing.push(match e {
                JailError::Planted { found, .. } => format!("/{rel} (is {found})"),
                _ => format!("/{rel}"),
            });
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(JailError::verify(format!(
            "{} is not a usable distro: it lacks {} (directories, regular files for the /etc \
             entries, none of them a symlink)",
            image.path.display(),
            missing.join(", ")
        )))
    }
}

/// A private `/dev`: a small tmpfs with the harmless character devices, a new devpts
/// instance, `/dev/shm` sized to the memory limit and an mqueue for the IPC namespace; then
/// read-only.
fn build_dev(sys: &dyn Syscalls, root: &Dir, shm_bytes: u64) -> Result<()> {
    mount_fs(
        sys,
        root,
        "dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k,nr_inodes=64"),
    )?;
    let dev = open_dir(sys, root, "dev")?;
    for (name, major, minor) in DEVICES {
        sys.mknod_char(dev.as_fd(), Path::new(name), 0o666, *major, *minor).ctx("mknod", dev.join(name))?;
        // mknod applied the umask.
        sys.fchmodat(dev.as_fd(), Path::new(name), 0o666).ctx("fchmodat", dev.join(name))?;
    }
    for d in ["pts", "shm", "mqueue"] {
        sys.mkdirat(dev.as_fd(), Path::new(d), 0o755).ctx("mkdirat", dev.join(d))?;
    }
    for (target, name) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        sys.symlinkat(Path::new(target), dev.as_fd(), Path::new(name)).ctx("symlinkat", dev.join(name))?;
    }
    mount_fs(
        sys,
        &dev,
        "pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount_fs(sys, &dev, "shm", "tmpfs", CUSTOMER_WRITABLE, Some(&format!("mode=1777,size={shm_bytes}")))?;
    mount_fs(sys, &dev, "mqueue", "mqueue", CUSTOMER_WRITABLE | MsFlags::MS_NOEXEC, None)?;
    drop(dev);
    remount(sys, root, "dev", FileKind::Dir, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC)
}
