//! The enter tool: the login shell (and `ForceCommand`) of every container user in the
//! customer sshd. It runs on the host as the container uid, with what sshd gave it: a terminal
//! or three pipes, the command in `SSH_ORIGINAL_COMMAND` (or `-c`), the broker's socket in
//! `UNBIT_SSH_BROKER` (sshd_config's `SetEnv`; clients cannot set variables: no `AcceptEnv`).
//! It runs nothing itself: it asks the broker for the session, then relays the container
//! terminal's bytes (terminal sessions) or just waits, and exits as the session did.

use crate::protocol::{decode, encode, Modes, Reply, Request, Terminal, MAX_MESSAGE};
use jail::enter::tty::{self, WindowSize};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::termios::{self, SetArg};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// The environment variable naming the broker's socket.
pub const BROKER_VAR: &str = "UNBIT_SSH_BROKER";

/// How long output still arriving after the session's end is relayed.
const DRAIN: Duration = Duration::from_millis(200);

/// What sshd asked for: a command, or a login shell when `None`. `args` are the tool's own
/// (`-c STRING` when sshd runs it as a shell); `original` is `SSH_ORIGINAL_COMMAND`, set
/// when the tool is the `ForceCommand` (then `-c` holds the tool's own path).
pub fn command_of(args: &[String], original: Option<String>) -> Option<String> {
    if original.is_some() {
        return original;
    }
    match args {
        [_, c, command] if c == "-c" && !command.trim_end().ends_with("unbit-ssh-enter") => Some(command.clone()),
        _ => None,
    }
}

fn fail(message: &str) -> ! {
    let _ = writeln!(std::io::stderr(), "uwsgi.it: {message}");
    std::process::exit(1)
}

/// Runs the tool; never returns.
pub fn main() -> ! {
    let args: Vec<String> = std::env::args().collect();
    let command = command_of(&args, std::env::var("SSH_ORIGINAL_COMMAND").ok());
    let uid = nix::unistd::getuid();
    let Some(socket_path) = std::env::var_os(BROKER_VAR) else {
        fail(&format!("this account only enters container {uid}, and the node's sshd does not set {BROKER_VAR}"))
    };
    let terminal = termios::tcgetattr(std::io::stdin().as_fd()).ok().map(|t| Terminal {
        term: std::env::var("TERM").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "dumb".into()),
        rows: tty::window_size(std::io::stdin().as_fd()).unwrap_or_default().rows,
        cols: tty::window_size(std::io::stdin().as_fd()).unwrap_or_default().cols,
        modes: Some(Modes {
            input: t.input_flags.bits(),
            output: t.output_flags.bits(),
            control: t.control_flags.bits(),
            local: t.local_flags.bits(),
            chars: t.control_chars.to_vec(),
        }),
    });
    let request = Request { command, terminal, connection: std::env::var("SSH_CONNECTION").ok() };
    let conn = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
        .unwrap_or_else(|e| fail(&format!("socket: {e}")));
    let addr = UnixAddr::new(std::path::Path::new(&socket_path)).unwrap_or_else(|e| fail(&format!("{e}")));
    if let Err(e) = connect(conn.as_raw_fd(), &addr) {
        fail(&format!("the node's ssh service is not ready ({e}); try again in a few seconds"))
    }
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let stdio: Vec<BorrowedFd<'_>> =
        if request.terminal.is_some() { vec![] } else { vec![stdin.as_fd(), stdout.as_fd(), stderr.as_fd()] };
    if let Err(e) = jail::fdpass::send_blocking(conn.as_fd(), &encode(&request), &stdio) {
        // The broker may have refused and closed before reading the request (EPIPE): its
        // reason is still queued for us.
        match next_reply(&conn) {
            (Reply::Refused { reason }, _) if e.raw_os_error() == Some(libc::EPIPE) => fail(&reason),
            _ => fail(&format!("cannot reach the node's ssh service: {e}")),
        }
    }
    drop(stdio);
    let (first, master) = next_reply(&conn);
    let status = match (first, master) {
        (Reply::Terminal, Some(master)) => relay(&conn, master),
        (Reply::Terminal, None) => fail("the node sent a terminal without its descriptor"),
        (other, _) => other,
    };
    exit_as(status)
}

fn next_reply(conn: &OwnedFd) -> (Reply, Option<OwnedFd>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    match jail::fdpass::receive_all(conn.as_fd(), &mut buf, None) {
        Ok(Some((0, _))) | Ok(None) => {
            (Reply::Refused { reason: "the node's ssh service closed the session".into() }, None)
        }
        Ok(Some((n, fds))) => match decode::<Reply>(&buf[..n]) {
            Ok(r) => (r, fds.into_iter().next()),
            Err(e) => (Reply::Refused { reason: e }, None),
        },
        Err(e) => (Reply::Refused { reason: format!("the node's ssh service: {e}") }, None),
    }
}

fn exit_as(status: Reply) -> ! {
    match status {
        Reply::Exited { code } => std::process::exit(code),
        Reply::Killed { signal } => {
            // Die of the same signal, so sshd reports exit-signal as it would for a local
            // process; no core file of ours.
            let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
            if let Ok(sig) = Signal::try_from(signal) {
                let _ = jail::enter::reset_signals();
                let _ = nix::sys::signal::raise(sig);
            }
            std::process::exit(128 + signal)
        }
        Reply::Refused { reason } => fail(&reason),
        Reply::Terminal => fail("the node sent a second terminal"),
    }
}

/// Relays between the client's terminal (fd 0/1, set raw: the container's terminal does the
/// line discipline) and the container terminal's `master`, passes window size changes on, and
/// returns how the session ended.
fn relay(conn: &OwnedFd, master: OwnedFd) -> Reply {
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
    }
    let mut mask = SigSet::empty();
    for s in [Signal::SIGWINCH, Signal::SIGHUP, Signal::SIGTERM] {
        mask.add(s);
    }
    let _ = mask.thread_block();
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok();
    let mut to_session: Vec<u8> = Vec::new();
    let mut to_client: Vec<u8> = Vec::new();
    let mut client_open = true;
    let mut master_open = true;
    let mut ended: Option<(Reply, Instant)> = None;
    let mut buf = [0u8; 16384];
    loop {
        if let Some((_, at)) = &ended {
            if !master_open || at.elapsed() >= DRAIN {
                break;
            }
        }
        if !master_open && ended.is_none() && to_client.is_empty() {
            // The terminal is gone; the status follows on the connection.
            let (r, _) = next_reply(conn);
            ended = Some((r, Instant::now()));
            continue;
        }
        let stdout = std::io::stdout();
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(5);
        let mut slots = [None; 5];
        if client_open && to_session.len() < buf.len() {
            push(&mut fds, &mut slots, 0, stdin.as_fd(), PollFlags::POLLIN);
        }
        if master_open {
            let mut f = PollFlags::empty();
            if to_client.len() < buf.len() {
                f |= PollFlags::POLLIN;
            }
            if !to_session.is_empty() {
                f |= PollFlags::POLLOUT;
            }
            push(&mut fds, &mut slots, 1, master.as_fd(), f);
        }
        if !to_client.is_empty() {
            push(&mut fds, &mut slots, 2, stdout.as_fd(), PollFlags::POLLOUT);
        }
        if ended.is_none() {
            push(&mut fds, &mut slots, 3, conn.as_fd(), PollFlags::POLLIN);
        }
        if let Some(s) = &signals {
            push(&mut fds, &mut slots, 4, s.as_fd(), PollFlags::POLLIN);
        }
        let timeout = match &ended {
            Some((_, at)) => PollTimeout::try_from(DRAIN.saturating_sub(at.elapsed())).unwrap_or(PollTimeout::ZERO),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Reply::Refused { reason: format!("poll: {e}") },
        }
        let ready =
            |slot: usize| -> PollFlags { slots[slot].and_then(|i| fds[i].revents()).unwrap_or(PollFlags::empty()) };
        let (r_in, r_master, r_out, r_conn, r_sig) = (ready(0), ready(1), ready(2), ready(3), ready(4));
        drop(fds);
        if !r_in.is_empty() {
            let room = buf.len() - to_session.len();
            match nix::unistd::read(0, &mut buf[..room]) {
                Ok(0) => client_open = false,
                Ok(n) => to_session.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => client_open = false,
            }
        }
        if r_master.contains(PollFlags::POLLOUT) {
            match nix::unistd::write(&master, &to_session) {
                Ok(n) => {
                    to_session.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => master_open = false,
            }
        }
        if r_master.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let room = buf.len() - to_client.len();
            match nix::unistd::read(master.as_raw_fd(), &mut buf[..room]) {
                // EIO: every descriptor of the terminal's slave side is closed.
                Ok(0) | Err(Errno::EIO) => master_open = false,
                Ok(n) => to_client.extend_from_slice(&buf[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => master_open = false,
            }
        }
        if !r_out.is_empty() {
            match nix::unistd::write(&stdout, &to_client) {
                Ok(n) => {
                    to_client.drain(..n);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => return Reply::Exited { code: 255 },
            }
        }
        if !r_conn.is_empty() {
            let (r, _) = next_reply(conn);
            ended = Some((r, Instant::now()));
        }
        if !r_sig.is_empty() {
            if let Some(s) = &signals {
                while let Ok(Some(info)) = s.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGWINCH) => {
                            if let Ok(size) = tty::window_size(stdin.as_fd()) {
                                let _ = tty::set_window_size(master.as_fd(), WindowSize { ..size });
                            }
                        }
                        // sshd hangs up: closing the master hangs up the container's terminal.
                        _ => std::process::exit(129),
                    }
                }
            }
        }
    }
    // Whatever the client's terminal still has to show.
    let _ = std::io::stdout().write_all(&to_client);
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, t);
    }
    ended.map(|(r, _)| r).unwrap_or(Reply::Exited { code: 0 })
}

/// Adds `fd` to the poll set, remembering its index in `slots[slot]`.
fn push<'a>(
    fds: &mut Vec<PollFd<'a>>,
    slots: &mut [Option<usize>; 5],
    slot: usize,
    fd: BorrowedFd<'a>,
    flags: PollFlags,
) {
    slots[slot] = Some(fds.len());
    fds.push(PollFd::new(fd, flags));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_command_comes_from_force_command_or_the_shell_invocation() {
        let me = "/usr/local/lib/unbit/unbit-ssh-enter";
        assert_eq!(command_of(&args(&["unbit-ssh-enter", "-c", me]), Some("id -u".into())), Some("id -u".into()));
        assert_eq!(command_of(&args(&["unbit-ssh-enter", "-c", me]), None), None, "ForceCommand, no command: shell");
        assert_eq!(command_of(&args(&["unbit-ssh-enter", "-c", "ls /"]), None), Some("ls /".into()));
        assert_eq!(command_of(&args(&["-unbit-ssh-enter"]), None), None, "a login shell");
    }
}
