//! Descriptors passed between processes over unix sockets (`SCM_RIGHTS`), one short message
//! each: how the router's subscription validator hands verified sockets to the unprivileged
//! process that holds them for the router.

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Sends `data` and, if given, a duplicate of `fd` on the connected socket `sock`, without
/// blocking (`EAGAIN` when the peer's queue is full).
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let iov = [IoSlice::new(data)];
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage> = raw.as_ref().map(|f| vec![ControlMessage::ScmRights(f)]).unwrap_or_default();
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_DONTWAIT, None).map(drop).map_err(io::Error::from)
}

/// Receives one message into `buf`: its length and the descriptor it carried (close-on-exec).
/// Waits at most `timeout` (`None`: for ever); `Ok(None)` when nothing came in time.
pub fn receive(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
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
    // Room for more than the one descriptor a message carries, so a peer sending extra ones
    // cannot truncate the control data (which would leave the received ones unowned).
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
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
                // nothing else refers to it, so it is ours to own (and to close: all but the
                // first are dropped, a well-behaved peer sends one).
                received.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
    }
    Ok(Some((msg.bytes, received.into_iter().next())))
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
