//! Namespaces of another process: pidfds, opening `/proc/<pid>/ns/*`, who owns them, `setns`.

use crate::error::{JailError, Result};
use nix::sched::CloneFlags;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// The namespaces a session joins, in the order it joins them: the mount namespace last, so
/// every earlier step still sees the host's `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Cgroup,
    Ipc,
    Uts,
    Net,
    Pid,
    Mnt,
}

const ALL: [Namespace; 6] =
    [Namespace::Cgroup, Namespace::Ipc, Namespace::Uts, Namespace::Net, Namespace::Pid, Namespace::Mnt];

impl Namespace {
    fn file(self) -> &'static str {
        match self {
            Namespace::Cgroup => "cgroup",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Net => "net",
            Namespace::Pid => "pid",
            Namespace::Mnt => "mnt",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Namespace::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
            Namespace::Mnt => CloneFlags::CLONE_NEWNS,
        }
    }
}

/// `pidfd_open(2)` (Linux 5.3).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall with integer arguments; on success it returns a new descriptor
    // that nothing else owns.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process of `pidfd` is still alive (signal 0 through the pidfd: no reuse race).
pub fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: a plain syscall on a pidfd we own; signal 0 only checks deliverability.
    let r = unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), 0, std::ptr::null::<libc::siginfo_t>(), 0)
    };
    r == 0
}

/// Opens every namespace of `pid` that differs from the caller's own (a container without a
/// cgroup namespace of its own shares the host's: nothing to join).
pub fn open_all(pid: i32) -> Result<Vec<(Namespace, OwnedFd)>> {
    let mut out = Vec::new();
    for kind in ALL {
        let theirs = format!("/proc/{pid}/ns/{}", kind.file());
        let file = File::open(&theirs).map_err(|e| JailError::io("open", &theirs, e))?;
        let ours = format!("/proc/self/ns/{}", kind.file());
        let same = std::fs::metadata(&ours)
            .map(|m| m.ino())
            .ok()
            .zip(file.metadata().ok().map(|m| m.ino()))
            .is_some_and(|(a, b)| a == b);
        if !same {
            out.push((kind, OwnedFd::from(file)));
        }
    }
    Ok(out)
}

/// `NS_GET_USERNS` from linux/nsfs.h: `_IO(0xb7, 0x1)`.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// Refuses a namespace that the host's user namespace does not own: one a customer created
/// (inside a user namespace of their own) and moved their container's pid 1 into.
pub fn check_owner(kind: Namespace, ns: &OwnedFd, pid: i32) -> Result<()> {
    // SAFETY: the ioctl takes no argument and returns a new descriptor (or -1).
    let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    if owner < 0 {
        let e = io::Error::last_os_error();
        return Err(JailError::io("ioctl(NS_GET_USERNS)", format!("/proc/{pid}/ns/{}", kind.file()), e));
    }
    // SAFETY: `owner` was just returned by the kernel and is owned by no one else.
    let owner = File::from(unsafe { OwnedFd::from_raw_fd(owner) });
    let host = std::fs::metadata("/proc/self/ns/user").map_err(|e| JailError::io("stat", "/proc/self/ns/user", e))?;
    let theirs = owner.metadata().map_err(|e| JailError::io("fstat", "(owning user namespace)", e))?;
    if (theirs.dev(), theirs.ino()) != (host.dev(), host.ino()) {
        return Err(JailError::verify(format!(
            "the {} namespace of pid {pid} belongs to a user namespace the node did not create: not joining it",
            kind.file()
        )));
    }
    Ok(())
}

/// `setns(2)` into `ns`, which must be of `kind` (the kernel checks).
pub fn enter(kind: Namespace, ns: &OwnedFd) -> Result<()> {
    nix::sched::setns(ns.as_fd(), kind.flag())
        .map_err(|e| JailError::io("setns", format!("({} namespace)", kind.file()), e.into()))
}
