//! Every privileged call the jail makes goes through [`Syscalls`], so the order and the
//! arguments can be checked without root against the recording fake in [`crate::fake`]
//! (youki's `Syscall` trait pattern). [`crate::linux::Linux`] is the real implementation.
//!
//! Files inside customer-writable trees are only ever reached through directory fds with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and `*at` calls that never follow a final
//! symlink; mount targets and sources are fds too, passed to `mount(2)` as
//! `/proc/self/fd/N` ([`fd_path`]) so a path is resolved exactly once, safely.

use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// openat2 resolve flags (linux/openat2.h).
pub const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
pub const RESOLVE_NO_SYMLINKS: u64 = 0x04;
pub const RESOLVE_BENEATH: u64 = 0x08;
/// What every lookup inside a customer-writable tree uses: stay below the directory fd, never
/// traverse a symlink of any kind.
pub const RESOLVE_SAFE: u64 = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File,
    Symlink,
    CharDevice,
    Other,
}

impl FileKind {
    pub fn describe(self) -> &'static str {
        match self {
            FileKind::Dir => "a directory",
            FileKind::File => "a regular file",
            FileKind::Symlink => "a symlink",
            FileKind::CharDevice => "a character device",
            FileKind::Other => "a special file",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    /// Permission bits only (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

/// Effective, permitted, inheritable, bounding and ambient capability sets, as bitmasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
}

/// The privileged surface of the crate. Paths given to the `*at` methods are relative to the
/// directory fd; `None` as directory means the current directory (only used with absolute,
/// trusted, host-controlled paths).
pub trait Syscalls {
    // ---- files, through directory fds ----
    fn openat2(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &Path,
        flags: i32,
        mode: u32,
        resolve: u64,
    ) -> io::Result<OwnedFd>;
    fn fstat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat>;
    /// `fstatat(AT_SYMLINK_NOFOLLOW)`: describes a symlink itself, never its target.
    fn fstatat_nofollow(&self, dir: BorrowedFd<'_>, name: &Path) -> io::Result<Stat>;
    fn mkdirat(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()>;
    fn mknod_char(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()>;
    fn symlinkat(&self, target: &Path, dir: BorrowedFd<'_>, name: &Path) -> io::Result<()>;
    /// chown of the object the fd refers to (`fchownat(fd, "", AT_EMPTY_PATH)`), so it also
    /// works on `O_PATH` fds and can never follow anything.
    fn fchown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()>;
    fn fchmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()>;
    /// Only used on entries the crate itself just created in a root-owned tmpfs.
    fn fchmodat(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()>;
    fn unlinkat(&self, dir: BorrowedFd<'_>, name: &Path, is_dir: bool) -> io::Result<()>;
    fn renameat(&self, old_dir: BorrowedFd<'_>, old: &Path, new_dir: BorrowedFd<'_>, new: &Path) -> io::Result<()>;
    /// `renameat2(RENAME_NOREPLACE)`: fails with `EEXIST` rather than replace what is at `new`.
    fn renameat_noreplace(
        &self,
        old_dir: BorrowedFd<'_>,
        old: &Path,
        new_dir: BorrowedFd<'_>,
        new: &Path,
    ) -> io::Result<()>;
    fn write_all(&self, fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()>;
    fn read_all(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>>;
    /// At most `max` bytes from the fd's position: a file that grows while it is read (in a
    /// customer-writable tree) costs no more memory than that.
    fn read_at_most(&self, fd: BorrowedFd<'_>, max: u64) -> io::Result<Vec<u8>>;
    fn fsync(&self, fd: BorrowedFd<'_>) -> io::Result<()>;

    // ---- mounts and the root ----
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn fchdir(&self, fd: BorrowedFd<'_>) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;

    // ---- identity ----
    fn setgroups_empty(&self) -> io::Result<()>;
    fn setresgid(&self, gid: u32) -> io::Result<()>;
    fn setresuid(&self, uid: u32) -> io::Result<()>;
    fn getresuid(&self) -> io::Result<(u32, u32, u32)>;
    fn getresgid(&self) -> io::Result<(u32, u32, u32)>;
    fn getgroups_count(&self) -> io::Result<usize>;
    fn clear_ambient_caps(&self) -> io::Result<()>;
    /// Drops every capability from the bounding set (needs CAP_SETPCAP: call while root).
    fn drop_bounding_caps(&self) -> io::Result<()>;
    /// capset: effective, permitted and inheritable all empty.
    fn clear_caps(&self) -> io::Result<()>;
    fn caps(&self) -> io::Result<CapSets>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    fn no_new_privs(&self) -> io::Result<bool>;
    /// Closes every fd from `first` to `last` inclusive.
    fn close_range(&self, first: u32, last: u32) -> io::Result<()>;
    /// `clearenv(3)`: empties the process environment, entries std cannot name (no `=`, an
    /// empty name) included. Only right before exec, in a single-threaded process.
    fn clear_environment(&self) -> io::Result<()>;

    // ---- trusted kernel files (cgroupfs, procfs), absolute paths ----
    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn read_file(&self, path: &Path) -> io::Result<String>;
    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    fn kill(&self, pid: i32, signal: i32) -> io::Result<()>;
}

/// The `/proc/self/fd/N` name of an fd, to hand an already-resolved object to `mount(2)`.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `true` for "no such file": the one error most lookups treat as "create it".
pub fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}
