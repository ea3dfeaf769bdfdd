//! Joining a running container from the host: what the ssh broker does for every session
//! (`crates/ssh-access`), in a forked, single-threaded, root process.
//!
//! The rules it keeps (`shared/reference/ssh-access.md` §1, the original's pam-unbit):
//! * **Which process** is the container comes from the kernel, never from a file or socket a
//!   customer can reach: a child of the node Emperor, itself a root child of the node's uWSGI
//!   master in our pid namespace ([`find`] is given the master's pid: the broker's parent),
//!   running as the container uid, and pid 1 of a pid namespace one level below ours
//!   (`NSpid: <pid> 1`). A container still being built is root at that point, so it is not
//!   found until its jail is complete and it has dropped to the uid.
//! * **Which namespaces** are joined: only ones owned by the host's user namespace. A customer
//!   who ptraces the container's pid 1 (same uid) and makes it `unshare` a user namespace and
//!   new mount or network namespaces gets namespaces owned by that user namespace: refused,
//!   instead of root walking into a mount table the customer built.
//! * **The process is the one looked at**: the namespaces are opened after a pidfd pins the
//!   process, and used only if the pidfd still names a living process afterwards, so a pid
//!   reused in between is caught.
//! * After `setns` nothing reads a file of the container as root: the caller drops to the
//!   uid before it opens a terminal, writes utmp or executes anything.

mod ns;
mod proc_status;
pub mod tty;
pub mod utmp;

use crate::cgroup;
use crate::error::{JailError, Result};
use crate::linux::Linux;
use ns::Namespace;
use std::os::fd::OwnedFd;

pub use ns::{alive, pidfd_open};
pub use proc_status::Status;

/// A running container, pinned: its pid 1 (host pid and pidfd) and its namespaces, opened and
/// checked.
#[derive(Debug)]
pub struct Container {
    pub uid: u32,
    /// Host pid of the container's pid 1 (its master, the sub-Emperor).
    pub pid: i32,
    pidfd: OwnedFd,
    namespaces: Vec<(Namespace, OwnedFd)>,
}

/// The running container of `uid` among the grandchildren of `node` (the node's uWSGI
/// master; the Emperor is its child, or `node` itself when it runs the Emperor in-process),
/// pinned and with its namespaces opened; `Ok(None)` when it does not run (yet). Errors are
/// the host's (procfs unreadable) or a container whose namespaces fail the ownership rule.
pub fn find(node: i32, uid: u32) -> Result<Option<Container>> {
    let mut emperors = vec![node];
    emperors.extend(
        proc_status::children(node)?.into_iter().filter(|c| Status::read(*c).is_some_and(|s| s.is_host_root())),
    );
    for emperor in emperors {
        if let Some(c) = find_in(emperor, uid).map_err(|e| e.for_container(uid))? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn find_in(parent: i32, uid: u32) -> Result<Option<Container>> {
    // (a child that exited since the listing has no task directory: nothing to find there)
    let Ok(children) = proc_status::children(parent) else { return Ok(None) };
    for pid in children {
        let Some(status) = Status::read(pid) else { continue };
        if !status.is_container_init(parent, uid) {
            continue;
        }
        let pidfd = match ns::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(JailError::io("pidfd_open", format!("/proc/{pid}"), e)),
        };
        // The pid may have been reused between the listing and the pidfd: look again at what
        // the pidfd now names.
        if !Status::read(pid).is_some_and(|s| s.is_container_init(parent, uid)) {
            continue;
        }
        let namespaces = match ns::open_all(pid) {
            Ok(n) => n,
            // An exiting process (a zombie too, which the pidfd still calls alive) has no
            // namespaces left: a container restarting, not an error of the host. Its
            // successor, if already started, is another child.
            Err(e) if e.errno() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if !ns::alive(&pidfd) {
            // Died while its namespaces were being opened: they may be another process's.
            continue;
        }
        for (kind, fd) in &namespaces {
            ns::check_owner(*kind, fd, pid)?;
        }
        return Ok(Some(Container { uid, pid, pidfd, namespaces }));
    }
    Ok(None)
}

impl Container {
    /// Moves the calling process into the container's cgroups (those its pid 1 is in) and
    /// namespaces. The pid namespace applies to the children forked afterwards. The caller
    /// must be single-threaded (the kernel refuses `setns` into a mount namespace to a process
    /// sharing its filesystem context with threads).
    /// Returns the token that forks the session's process (procfs inside is the container's,
    /// where [`fork`] could not count our threads).
    pub fn join(&self) -> Result<Joined> {
        let uid = self.uid;
        (|| {
            let threads = proc_status::own_threads()?;
            if threads != 1 {
                return Err(JailError::verify(format!("cannot join from a process of {threads} threads")));
            }
            // On the host's cgroupfs, before the mount namespace changes what paths mean.
            cgroup::join_cgroups_of(&Linux, self.pid)?;
            for (kind, fd) in &self.namespaces {
                ns::enter(*kind, fd)?;
            }
            // A root process inside the container's namespaces: nothing of the container may
            // ptrace it or read its memory (the uid cannot anyway; belt and braces).
            nix::sys::prctl::set_dumpable(false).map_err(|e| JailError::io("prctl(PR_SET_DUMPABLE)", "", e.into()))?;
            Ok(Joined(()))
        })()
        .map_err(|e: JailError| e.for_container(uid))
    }

    /// Whether the container's pid 1 still runs.
    pub fn running(&self) -> bool {
        ns::alive(&self.pidfd)
    }

    /// The container's mount namespace (checked like the others), `None` when it shares the
    /// caller's. What [`crate::loopbox`] mounts into, from a thread of its own.
    pub fn mount_namespace(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.namespaces.iter().find(|(kind, _)| *kind == Namespace::Mnt).map(|(_, fd)| fd.as_fd())
    }
}

/// A process that joined a container with [`Container::join`], single-threaded when it did.
pub struct Joined(());

impl Joined {
    /// Forks the process that will live in the container's pid namespace.
    pub fn fork(&self) -> Result<Forked> {
        // SAFETY: `join` found the process single-threaded, and a thread can only have been
        // started since by the caller's own code, which the broker's session does not do.
        unsafe { fork_unchecked() }
    }
}

/// What [`fork`] returned in each process.
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// `fork(2)` for the broker's session processes. Refused unless the caller is single-threaded
/// (read from `/proc/self/status`): a child of a multi-threaded process may find a lock held
/// for ever by a thread that does not exist there.
pub fn fork() -> Result<Forked> {
    let threads = proc_status::own_threads()?;
    if threads != 1 {
        return Err(JailError::verify(format!("fork refused: the process has {threads} threads, not 1")));
    }
    // SAFETY: the process has exactly one thread (checked just above, and it cannot create
    // another meanwhile: this is that thread).
    unsafe { fork_unchecked() }
}

/// # Safety
/// The caller must be single-threaded: the child inherits no lock held elsewhere and may then
/// run ordinary Rust code.
unsafe fn fork_unchecked() -> Result<Forked> {
    // SAFETY: the caller's promise, above.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent { child: child.as_raw() }),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(JailError::io("fork", "", e.into())),
    }
}

/// Every signal back to its default action and none blocked, right before a session's exec:
/// dispositions set to "ignore" survive `exec`, and a shell started with `SIGPIPE` ignored
/// (Rust programs ignore it) would see `yes | head` never end.
pub fn reset_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_DFL runs no code of ours in a signal context.
        unsafe { sigaction(signal, &default) }.map_err(|e| JailError::io("sigaction", "", e.into()))?;
    }
    nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| JailError::io("sigprocmask", "", e.into()))
}
