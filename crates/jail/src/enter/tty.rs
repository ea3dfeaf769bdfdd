//! Terminals for sessions: a pseudo-terminal from the container's own devpts (so `tty`,
//! `who` and the restart notice see it inside), the controlling terminal, window sizes.

use nix::fcntl::OFlag;
use nix::pty::{posix_openpt, unlockpt};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

/// `TIOCGWINSZ`.
pub fn window_size(tty: BorrowedFd<'_>) -> io::Result<WindowSize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(WindowSize { rows: ws.ws_row, cols: ws.ws_col })
}

/// `TIOCSWINSZ`: on a pty master, also signals `SIGWINCH` to the terminal's foreground group.
pub fn set_window_size(tty: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize { ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the struct we pass.
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pseudo-terminal pair from `/dev/ptmx` of the calling process's mount namespace.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    /// `pts/N`, as utmp names lines.
    pub line: String,
}

/// Opens a pair: master and slave close-on-exec and not the caller's controlling terminal.
/// The slave comes from the master itself (`TIOCGPTPEER`, Linux 4.13), never from a path
/// lookup in `/dev/pts`.
pub fn open_pty() -> io::Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    unlockpt(&master)?;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes the pty's number into the unsigned int we pass.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags and returns a new descriptor for the slave.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are ours alone: `slave` was just returned by the kernel, and the
    // master's is released by `PtyMaster` (which would otherwise close it on drop).
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master.into_raw_fd()), OwnedFd::from_raw_fd(slave)) };
    Ok(Pty { master, slave, line: format!("pts/{n}") })
}

/// `TIOCSCTTY`: makes `tty` the controlling terminal of the caller's new session (the caller
/// must have called `setsid` and the terminal must have no session yet).
pub fn set_controlling_terminal(tty: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal another session's terminal).
    if unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
