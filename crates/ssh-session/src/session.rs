//! One session, in a process the broker forked for it (root, single-threaded): the request,
//! the container, then a child inside the container that becomes the customer's shell or
//! command, while this process waits for it and reports how it ended.
//!
//! The child, in order: a new session; the pipes as stdin/stdout/stderr (no terminal); the
//! privilege drop to the container uid (no groups, no capabilities, `no_new_privs`, no other
//! descriptor); the home; a terminal from the container's own devpts, whose master goes back
//! to the enter tool, with the client's modes and size, as controlling terminal, and its utmp
//! record; a clean environment; `exec` of the distro's shell. Everything that touches the
//! container's files happens after the drop.

use crate::broker::{log, refuse};
use crate::protocol::{self, decode, encode, Modes, Reply, Request, MAX_MESSAGE};
use jail::enter::{self, tty, Forked};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::sys::termios::{self, ControlFlags, InputFlags, LocalFlags, OutputFlags, SetArg};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// How long the enter tool has to send its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the session of the container `uid` (the peer of `conn`, per the kernel); returns this
/// process's exit code.
pub fn run(conn: OwnedFd, uid: u32, emperor: i32) -> i32 {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (request, fds) = match jail::fdpass::receive_all(conn.as_fd(), &mut buf, Some(REQUEST_TIMEOUT)) {
        Ok(Some((n, fds))) => match decode::<Request>(&buf[..n]).and_then(|r| r.validate(fds.len()).map(|()| r)) {
            Ok(r) => (r, fds),
            Err(why) => {
                log(&format!("container {uid}: bad request: {why}"));
                refuse(&conn, &why);
                return 1;
            }
        },
        Ok(None) => {
            log(&format!("container {uid}: no request within {}s", REQUEST_TIMEOUT.as_secs()));
            return 1;
        }
        Err(e) => {
            log(&format!("container {uid}: reading the request: {e}"));
            return 1;
        }
    };
    let container = match enter::find(emperor, uid) {
        Ok(Some(c)) => c,
        Ok(None) => {
            refuse(
                &conn,
                &format!(
                    "container {uid} is not running on this node. It starts once it has a distro and an ssh key; \
                     if it has both, ~/logs/emperor.log says why it stopped."
                ),
            );
            return 1;
        }
        Err(e) => {
            log(&format!("{e}"));
            refuse(&conn, &format!("container {uid} cannot be entered now; the node's log says why"));
            return 1;
        }
    };
    let joined = match container.join() {
        Ok(j) => j,
        Err(e) => {
            log(&format!("{e}"));
            refuse(&conn, &format!("container {uid} cannot be entered now; the node's log says why"));
            return 1;
        }
    };
    let what = match (&request.command, &request.terminal) {
        (None, _) => "login shell".to_string(),
        (Some(c), _) => format!("command of {} bytes", c.len()),
    };
    let from = request.connection.as_deref().and_then(|c| c.split_whitespace().next()).unwrap_or("?");
    match joined.fork() {
        Ok(Forked::Child) => {
            let why = become_session(&conn, uid, &request, fds);
            // Only reached when the exec failed: the customer reads it on their stderr (or
            // terminal); the broker's log gets it too.
            log(&format!("container {uid}: {why}"));
            eprintln!("uwsgi.it: {why}");
            std::process::exit(127);
        }
        Ok(Forked::Parent { child }) => {
            drop(fds);
            log(&format!("container {uid}: session {child} ({what}) for {from}"));
            let reply = supervise(&conn, child);
            log(&format!("container {uid}: session {child} ended: {reply:?}"));
            let _ = jail::fdpass::send_blocking(conn.as_fd(), &encode(&reply), &[]);
            0
        }
        Err(e) => {
            log(&format!("{e}"));
            refuse(&conn, "the node could not start a session; try again");
            1
        }
    }
}

/// Waits for the session's process; a closed connection (the client went away) hangs up its
/// process group, as a terminal's hangup would.
fn supervise(conn: &OwnedFd, child: i32) -> Reply {
    let pidfd = enter::pidfd_open(child).ok();
    let mut hung_up = false;
    loop {
        if let Some(pidfd) = &pidfd {
            let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
            if !hung_up {
                fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, PollTimeout::NONE);
            let gone = fds.get(1).and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
            if gone && !hung_up {
                hung_up = true;
                let _ = killpg(Pid::from_raw(child), Signal::SIGHUP);
            }
            if fds[0].revents().is_none_or(|r| r.is_empty()) {
                continue;
            }
        }
        match waitpid(Pid::from_raw(child), None) {
            Ok(WaitStatus::Exited(_, code)) => return Reply::Exited { code },
            Ok(WaitStatus::Signaled(_, signal, _)) => return Reply::Killed { signal: signal as i32 },
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Reply::Refused { reason: format!("the session's process was lost: {e}") },
        }
    }
}

/// In the child, inside the container's namespaces: becomes the customer's shell or command.
/// Returns only on failure, with the reason.
fn become_session(conn: &OwnedFd, uid: u32, request: &Request, fds: Vec<OwnedFd>) -> String {
    if let Err(e) = nix::unistd::setsid() {
        return format!("setsid: {e}");
    }
    for (target, fd) in fds.iter().enumerate() {
        if let Err(e) = nix::unistd::dup2(fd.as_raw_fd(), target as i32) {
            return format!("dup2: {e}");
        }
    }
    drop(fds);
    if let Err(e) = jail::drop_privileges_keeping(uid, &[conn.as_raw_fd()]) {
        return e.to_string();
    }
    let home = format!("/containers/{uid}");
    if nix::unistd::chdir(home.as_str()).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    let mut env = vec![
        ("HOME", home.clone()),
        ("USER", uid.to_string()),
        ("LOGNAME", uid.to_string()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("LANG", "C.UTF-8".to_string()),
    ];
    if let Some(c) = &request.connection {
        env.push(("SSH_CONNECTION", c.clone()));
        let words: Vec<&str> = c.split_whitespace().collect();
        if words.len() == 4 {
            env.push(("SSH_CLIENT", format!("{} {} {}", words[0], words[1], words[3])));
        }
    }
    if let Some(t) = &request.terminal {
        match attach_terminal(conn, uid, t, request.connection.as_deref()) {
            Ok(line) => {
                env.push(("TERM", t.term.clone()));
                env.push(("SSH_TTY", format!("/dev/{line}")));
            }
            Err(e) => return format!("cannot open a terminal in the container: {e}"),
        }
    }
    let shell = ["/bin/bash", "/bin/sh"]
        .into_iter()
        .find(|s| nix::unistd::access(*s, nix::unistd::AccessFlags::X_OK).is_ok())
        .unwrap_or("/bin/sh");
    env.push(("SHELL", shell.to_string()));
    let name = Path::new(shell).file_name().and_then(|n| n.to_str()).unwrap_or("sh");
    let argv: Vec<String> = match &request.command {
        None => vec![format!("-{name}")],
        Some(c) => vec![name.to_string(), "-c".to_string(), c.clone()],
    };
    if let Err(e) = enter::reset_signals() {
        return e.to_string();
    }
    if let Err(e) = jail::replace_environment(&env) {
        return e.to_string();
    }
    let (Ok(path), Ok(argv)) = (CString::new(shell), argv.into_iter().map(CString::new).collect::<Result<Vec<_>, _>>())
    else {
        return "the command contains a NUL byte".into();
    };
    match nix::unistd::execv(&path, &argv) {
        Err(e) => format!("cannot run {shell} in the container: {e}"),
        Ok(never) => match never {},
    }
}

/// Opens the session's terminal in the container, hands its master to the enter tool, and
/// makes it stdin, stdout, stderr and the controlling terminal. Returns its line (`pts/N`).
fn attach_terminal(
    conn: &OwnedFd,
    uid: u32,
    t: &protocol::Terminal,
    connection: Option<&str>,
) -> std::io::Result<String> {
    let pty = tty::open_pty()?;
    if let Some(m) = &t.modes {
        apply_modes(pty.slave.as_fd(), m)?;
    }
    tty::set_window_size(pty.slave.as_fd(), tty::WindowSize { rows: t.rows, cols: t.cols })?;
    jail::fdpass::send_blocking(conn.as_fd(), &encode(&Reply::Terminal), &[pty.master.as_fd()])?;
    drop(pty.master);
    tty::set_controlling_terminal(pty.slave.as_fd())?;
    for target in 0..3 {
        nix::unistd::dup2(pty.slave.as_raw_fd(), target)?;
    }
    drop(pty.slave);
    let host = connection.and_then(|c| c.split_whitespace().next()).unwrap_or("");
    let user = uid.to_string();
    // A missing utmp entry only hides the session from `who`: not worth refusing the login.
    let _ = enter::utmp::record_login(
        Path::new("/run/utmp"),
        &enter::utmp::Login { line: &pty.line, user: &user, host, pid: nix::unistd::getpid().as_raw() },
    );
    Ok(pty.line)
}

fn apply_modes(tty: BorrowedFd<'_>, m: &Modes) -> std::io::Result<()> {
    let mut t = termios::tcgetattr(tty)?;
    t.input_flags = InputFlags::from_bits_retain(m.input);
    t.output_flags = OutputFlags::from_bits_retain(m.output);
    t.control_flags = ControlFlags::from_bits_retain(m.control);
    t.local_flags = LocalFlags::from_bits_retain(m.local);
    for (dst, src) in t.control_chars.iter_mut().zip(&m.chars) {
        *dst = *src;
    }
    termios::tcsetattr(tty, SetArg::TCSANOW, &t)?;
    Ok(())
}
