//! The backend a request is proxied to, named by the router in `UNBIT_BACKEND` the way uWSGI
//! names a subscription node: `host:port` is TCP (an IP literal here: the router never
//! resolves names for nodes either), `@name` an abstract unix socket, anything else a unix
//! socket path (`/run/app.sock`, `/proc/<pid>/fd/<n>`). uWSGI's own rule is "a colon means
//! TCP" (`uwsgi_connectn`); a path starting with `/` is kept a path even with a colon in it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::TimeVal;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// An abstract unix socket name, without the leading `@`.
    Abstract(Vec<u8>),
}

impl Address {
    pub fn parse(text: &str) -> Result<Address, String> {
        if text.is_empty() {
            return Err("an empty backend address".to_string());
        }
        if let Some(name) = text.strip_prefix('@') {
            return Ok(Address::Abstract(name.as_bytes().to_vec()));
        }
        if text.contains(':') && !text.starts_with('/') {
            return text
                .parse()
                .map(Address::Tcp)
                .map_err(|_| format!("backend {text:?} is neither a unix socket path nor an IP:port"));
        }
        Ok(Address::Unix(PathBuf::from(text)))
    }

    /// Connects within `timeout`; the stream then has `timeout` on every read and write.
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        let stream = match self {
            Address::Tcp(addr) => Stream::Tcp(TcpStream::connect_timeout(addr, timeout)?),
            Address::Unix(path) => Stream::Unix(connect_unix(&UnixAddr::new(path.as_path())?, timeout)?),
            Address::Abstract(name) => Stream::Unix(connect_unix(&UnixAddr::new_abstract(name)?, timeout)?),
        };
        stream.set_timeouts(timeout)?;
        Ok(stream)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "{}", path.display()),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// A unix `connect` blocks while the listener's backlog is full (a busy or stopped app), for
/// as long as the socket's send timeout allows; std's `UnixStream::connect` cannot set one
/// first, hence the socket is built here.
fn connect_unix(addr: &UnixAddr, timeout: Duration) -> io::Result<UnixStream> {
    let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let timeout = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    socket::setsockopt(&fd, socket::sockopt::SendTimeout, &timeout)?;
    socket::connect(fd.as_raw_fd(), addr)?;
    Ok(UnixStream::from(fd))
}

/// A connected backend.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_addresses_uwsgi_uses_for_nodes() {
        assert_eq!(Address::parse("/run/app.sock"), Ok(Address::Unix("/run/app.sock".into())));
        assert_eq!(Address::parse("/proc/12/fd/7"), Ok(Address::Unix("/proc/12/fd/7".into())));
        assert_eq!(Address::parse("/odd:name.sock"), Ok(Address::Unix("/odd:name.sock".into())));
        assert_eq!(Address::parse("run/app.sock"), Ok(Address::Unix("run/app.sock".into())));
        assert_eq!(Address::parse("@app"), Ok(Address::Abstract(b"app".to_vec())));
        assert_eq!(Address::parse("127.0.0.1:3031"), Ok(Address::Tcp("127.0.0.1:3031".parse().unwrap())));
        assert_eq!(Address::parse("[::1]:3031"), Ok(Address::Tcp("[::1]:3031".parse().unwrap())));
        assert!(Address::parse("localhost:3031").is_err());
        assert!(Address::parse("10.0.0.1:").is_err());
        assert!(Address::parse("").is_err());
    }

    #[test]
    fn connecting_to_a_missing_socket_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let err = Address::Unix(dir.path().join("none.sock")).connect(Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_full_backlog_times_out_instead_of_blocking() {
        // A listener that never accepts: once its backlog is full, a further connect waits
        // for room. The send timeout must end that wait.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.sock");
        let listener = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
        socket::bind(listener.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
        socket::listen(&listener, socket::Backlog::new(1).unwrap()).unwrap();
        let address = Address::Unix(path);
        let mut held = Vec::new();
        let err = loop {
            match address.connect(Duration::from_millis(200)) {
                Ok(stream) => held.push(stream),
                Err(e) => break e,
            }
            assert!(held.len() < 10, "a backlog of 1 never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    }
}
