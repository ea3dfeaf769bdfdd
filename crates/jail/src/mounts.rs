//! Mount helpers that never resolve a customer-influenced path twice: targets and sources are
//! opened first (`O_PATH`, `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`) and handed to `mount(2)`
//! as `/proc/self/fd/N`.
//!
//! A bind mount ignores `MS_NOSUID`/`MS_NODEV`/`MS_RDONLY` on its first call (the original's
//! §4.4 note), so every bind is followed by a `MS_REMOUNT | MS_BIND` with the flags, on a
//! *fresh* handle of the target: the handle used for the bind still names the directory
//! underneath the new mount.

use crate::error::{IoContext, Result};
use crate::safefs::{open_path, Dir};
use crate::syscalls::{fd_path, FileKind, Syscalls};
use nix::mount::MsFlags;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// What every mount a customer can write to gets.
pub const CUSTOMER_WRITABLE: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
/// Read-only platform trees (the distro, `/opt/unbit`).
pub const READ_ONLY: MsFlags = MsFlags::MS_RDONLY.union(MsFlags::MS_NOSUID).union(MsFlags::MS_NODEV);

/// Binds the object behind `source` on `dir/target` and applies `flags` with a remount.
pub fn bind(
    sys: &dyn Syscalls,
    source: BorrowedFd<'_>,
    dir: &Dir,
    target: impl AsRef<Path>,
    kind: FileKind,
    flags: MsFlags,
) -> Result<()> {
    let target = target.as_ref();
    let t = open_path(sys, dir, target, kind)?;
    sys.mount(Some(&fd_path(source)), &fd_path(t.as_fd()), None, MsFlags::MS_BIND, None)
        .ctx("mount (bind)", dir.join(target))?;
    drop(t);
    remount(sys, dir, target, kind, flags)
}

/// Sets the per-mount flags of the mount at `dir/target` (`MS_REMOUNT | MS_BIND` changes only
/// the mount's flags, never the filesystem's options).
pub fn remount(sys: &dyn Syscalls, dir: &Dir, target: impl AsRef<Path>, kind: FileKind, flags: MsFlags) -> Result<()> {
    let target = target.as_ref();
    let t = open_path(sys, dir, target, kind)?;
    sys.mount(None, &fd_path(t.as_fd()), None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags, None)
        .ctx("mount (remount)", dir.join(target))
}

/// Mounts a fresh kernel filesystem (proc, tmpfs, devpts, mqueue) on `dir/target`.
pub fn mount_fs(
    sys: &dyn Syscalls,
    dir: &Dir,
    target: impl AsRef<Path>,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let target = target.as_ref();
    let t = open_path(sys, dir, target, FileKind::Dir)?;
    sys.mount(Some(Path::new(fstype)), &fd_path(t.as_fd()), Some(fstype), flags, data).ctx("mount", dir.join(target))
}
