//! Descriptors passed between processes over unix sockets (`SCM_RIGHTS`), one short message
//! each: how the router's subscription validator hands verified sockets to the unprivileged
//! process that holds them for the router, and how an ssh session's terminal or pipes reach
//! the container (`crates/ssh-access`).

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Sends `data` and, if given, a duplicate of `fd` on the connected socket `sock`, without
/// blocking (`EAGAIN` when the peer's queue is full).
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    send_all(sock, data, fd.as_slice(), MsgFlags::MSG_DONTWAIT)
}

/// Sends `data` with duplicates of every descriptor of `fds` (at most [`MAX_FDS`]), waiting
/// for room in the peer's queue.
pub fn send_blocking(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_all(sock, data, fds, MsgFlags::empty())
}

fn send_all(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>], flags: MsgFlags) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("more than {MAX_FDS} descriptors")));
    }
    let iov = [IoSlice::new(data)];
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage> = if raw.is_empty() { vec![] } else { vec![ControlMessage::ScmRights(&raw)] };
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, flags, None).map(drop).map_err(io::Error::from)
}

/// The most descriptors one message carries (an ssh session's stdin, stdout and stderr).
pub const MAX_FDS: usize = 3;

/// Receives one message into `buf`: its length and the descriptor it carried (close-on-exec).
/// Waits at most `timeout` (`None`: for ever); `Ok(None)` when nothing came in time.
pub fn receive(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    Ok(receive_up_to_max(sock, buf, timeout)?.map(|(n, fds)| (n, fds.into_iter().next())))
}

/// Like [`receive`], with every descriptor the message carried. A message larger than `buf`
/// is an error, not a truncated request; so is one with more than [`MAX_FDS`] descriptors
/// (they are closed): an ssh session's request is refused rather than served with the first
/// three of what its peer sent.
pub fn receive_all(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    match receive_up_to_max(sock, buf, timeout)? {
        Some((_, fds)) if fds.len() > MAX_FDS => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message with {} descriptors, more than {MAX_FDS}", fds.len()),
        )),
        other => Ok(other),
    }
}

/// Receives one message with every descriptor it carried (up to the control buffer's room).
fn receive_up_to_max(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    if let Some(t) = timeout {
        let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
        let mut fds = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut iov = [IoSliceMut::new(buf)];
    // Room for more than the descriptors a message carries, so a peer sending extra ones
    // cannot truncate the control data (which would leave the received ones unowned).
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 8]);
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(m) => m,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut received = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(list) = c {
            for raw in list {
                // SAFETY: the kernel installed this descriptor in our table for this message;
                // nothing else refers to it, so it is ours to own (and to close when the
                // caller refuses the message).
                received.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        // (its descriptors, now owned, close on the way out)
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a message over {} bytes", buf.len())));
    }
    Ok(Some((msg.bytes, received)))
}

/// Accepts one connection on `listener`, close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = nix::sys::socket::accept4(listener.as_raw_fd(), nix::sys::socket::SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_descriptor_crosses_with_its_message() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let (mut left, right) = std::os::unix::net::UnixStream::pair().unwrap();
        send(a.as_fd(), b"HOLD 7", Some(right.as_fd())).unwrap();
        drop(right);
        let mut buf = [0u8; 64];
        let (n, fd) = receive(b.as_fd(), &mut buf, Some(Duration::from_secs(1))).unwrap().unwrap();
        assert_eq!(&buf[..n], b"HOLD 7");
        let mut passed = std::os::unix::net::UnixStream::from(fd.unwrap());
        passed.write_all(b"x").unwrap();
        let mut got = [0u8; 1];
        left.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
        assert!(receive(b.as_fd(), &mut buf, Some(Duration::from_millis(10))).unwrap().is_none());
    }
}
