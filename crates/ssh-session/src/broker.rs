//! The broker's main loop (root, single-threaded, a child of the node Emperor): accepts the
//! enter tools' connections, tells each peer's container from the kernel (`SO_PEERCRED`), and
//! forks a [`session`](crate::session) process for it.

use crate::protocol::{encode, Reply};
use crate::session;
use container_spec::is_container_uid;
use nix::sys::socket::{
    bind, getsockopt, listen, socket, sockopt::PeerCredentials, AddressFamily, Backlog, MsgFlags, SockFlag, SockType,
    UnixAddr,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How the broker runs (its command-line flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The socket the enter tools connect to (sshd_config's `SetEnv UNBIT_SSH_BROKER`).
    pub socket: PathBuf,
    /// Sessions one container may have open at once; more are refused.
    pub max_sessions: usize,
}

/// The sessions each container has open (session process pid -> uid).
#[derive(Default)]
struct Sessions {
    by_pid: HashMap<i32, u32>,
}

impl Sessions {
    fn count(&self, uid: u32) -> usize {
        self.by_pid.values().filter(|u| **u == uid).count()
    }

    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) => {
                    self.by_pid.remove(&pid.as_raw());
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

pub fn log(line: &str) {
    eprintln!("[unbit-ssh-broker] {line}");
}

/// Serves until the Emperor that started it goes away (the broker's parent changes).
pub fn serve(settings: &Settings) -> Result<(), String> {
    let emperor = nix::unistd::getppid().as_raw();
    // The containers are found below the parent: it must be the node's uWSGI instance itself,
    // not a shell between them (uWSGI runs `attach-daemon2` commands with /bin/sh -c).
    let parent_exe = std::fs::read_link(format!("/proc/{emperor}/exe")).unwrap_or_default();
    if !parent_exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("uwsgi")) {
        return Err(format!(
            "the parent process {emperor} is {}, not the node's uWSGI instance: start the broker from \
             emperor.ini with `attach-daemon2 = cmd=exec /usr/local/bin/unbit-ssh-broker ...`",
            parent_exe.display()
        ));
    }
    let listener = listen_on(&settings.socket)?;
    log(&format!("listening on {} for the containers of the node instance {emperor}", settings.socket.display()));
    let mut sessions = Sessions::default();
    loop {
        sessions.reap();
        if nix::unistd::getppid().as_raw() != emperor {
            log("the node Emperor is gone; stopping");
            let _ = std::fs::remove_file(&settings.socket);
            return Ok(());
        }
        let mut fds = [nix::poll::PollFd::new(listener.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll on {}: {e}", settings.socket.display())),
        }
        let conn = match jail::fdpass::accept(listener.as_fd()) {
            Ok(fd) => fd,
            Err(e) => {
                log(&format!("accept: {e}"));
                continue;
            }
        };
        let uid = match getsockopt(&conn, PeerCredentials) {
            Ok(c) => c.uid(),
            Err(e) => {
                log(&format!("SO_PEERCRED: {e}"));
                continue;
            }
        };
        if !is_container_uid(uid) || is_host_user(uid) {
            log(&format!("uid {uid} is not a container's: refused"));
            refuse(&conn, "this socket only serves container users");
            continue;
        }
        if sessions.count(uid) >= settings.max_sessions {
            log(&format!("container {uid}: {} sessions open already, refused", settings.max_sessions));
            refuse(&conn, &format!("container {uid} has {} sessions open already", settings.max_sessions));
            continue;
        }
        match jail::enter::fork() {
            Ok(jail::enter::Forked::Child) => {
                drop(listener);
                let code = session::run(conn, uid, emperor);
                std::process::exit(code);
            }
            Ok(jail::enter::Forked::Parent { child }) => {
                sessions.by_pid.insert(child, uid);
            }
            Err(e) => {
                log(&format!("container {uid}: {e}"));
                refuse(&conn, "the node could not start a session; try again");
            }
        }
    }
}

/// Whether the host's own user database (`/etc/passwd`, not the containers' extrausers) names
/// `uid`: a host account's processes must never be taken for a container's, whatever range the
/// number falls in. An unreadable file counts as naming every uid (fail closed).
fn is_host_user(uid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else { return true };
    text.lines().any(|l| l.split(':').nth(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
}

pub fn refuse(conn: &OwnedFd, reason: &str) {
    let _ = jail::fdpass::send_blocking(conn.as_fd(), &encode(&Reply::Refused { reason: reason.into() }), &[]);
    // A unix socket closed with unread messages resets the peer, which then reads
    // ECONNRESET instead of the refusal queued for it: the enter tool sends its request right
    // after connecting, so the refusals made before reading it (not a container's uid, too
    // many sessions) were lost. Discard what is queued (descriptors in it are closed by the
    // kernel), without waiting for more.
    let mut sink = [0u8; 64];
    for _ in 0..4 {
        match nix::sys::socket::recv(conn.as_raw_fd(), &mut sink, MsgFlags::MSG_DONTWAIT) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Binds the socket afresh (a stale socket of a previous broker is replaced; anything else at
/// the path is an error), mode 0666: who may use a session is decided per connection.
fn listen_on(path: &Path) -> Result<OwnedFd, String> {
    let ctx = |what: &str, e: &dyn std::fmt::Display| format!("{what} {}: {e}", path.display());
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(|e| ctx("remove", &e))?,
        Ok(_) => return Err(ctx("refusing to replace", &"not a socket")),
        Err(_) => {}
    }
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| ctx("socket", &e))?;
    let addr = UnixAddr::new(path).map_err(|e| ctx("address", &e))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| ctx("bind", &e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|e| ctx("chmod", &e))?;
    listen(&fd, Backlog::new(128).expect("a valid backlog")).map_err(|e| ctx("listen", &e))?;
    Ok(fd)
}
