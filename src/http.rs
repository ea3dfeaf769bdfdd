//! A minimal HTTP/1.0 client over loopback: enough to check what a router or an app answers,
//! with no dependency that could hide what goes over the wire.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// `GET path` to `addr` with a `Host` header.
pub fn get(addr: &str, host: &str, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

/// Sends `request` as it is (any bytes: no Host, huge headers) and reads the answer until the
/// server closes. A connection closed without a byte is an error saying so.
pub fn raw(addr: &str, request: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    if raw.is_empty() {
        return Err(std::io::Error::other("the connection was closed without a response"));
    }
    parse(&raw)
}

/// One HTTP/1.1 connection, kept alive across requests.
pub struct KeepAlive {
    stream: TcpStream,
}

impl KeepAlive {
    pub fn open(addr: &str) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(KeepAlive { stream })
    }

    /// `GET path` with `Host: host` on this connection; the answer must say its length.
    pub fn get(&mut self, host: &str, path: &str) -> std::io::Result<Response> {
        self.get_with(host, path, &[])
    }

    /// [`KeepAlive::get`] with more request headers (`("Cookie", "...")`).
    pub fn get_with(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
        let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
        write!(self.stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")?;
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            if self.stream.read(&mut byte)? == 0 {
                return Err(std::io::Error::other(format!(
                    "the connection was closed after {:?}",
                    String::from_utf8_lossy(&raw)
                )));
            }
            raw.push(byte[0]);
        }
        let head = parse(&raw)?;
        let length: usize = head
            .headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no Content-Length in {head:?}")))?;
        let mut body = vec![0u8; length];
        self.stream.read_exact(&mut body)?;
        raw.extend_from_slice(&body);
        parse(&raw)
    }
}

fn parse(raw: &[u8]) -> std::io::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Response { status, headers, body: body.to_string() })
}

/// Retries `GET` until it answers with `status` or `timeout` passes.
pub fn wait_for_status(addr: &str, host: &str, path: &str, status: u16, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match get(addr, host, path) {
            Ok(r) if r.status == status => return Ok(r),
            Ok(r) => last = format!("status {} body {:?}", r.status, r.body),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("http://{addr}{path} (Host {host}) did not answer {status} within {timeout:?}: last {last}"))
}

/// `GET path` over a unix socket (a container's `~/run/*.sock`, seen from the host).
pub fn get_unix(socket: &std::path::Path, host: &str, path: &str) -> std::io::Result<Response> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw)
}

/// Retries [`get_unix`] until it answers 200 or `timeout` passes.
pub fn wait_unix_ok(socket: &std::path::Path, path: &str, timeout: Duration) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match get_unix(socket, "localhost", path) {
            Ok(r) if r.status == 200 => return Ok(r),
            Ok(r) => last = format!("status {} body {:?}", r.status, r.body),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(format!("{}{path} did not answer 200 within {timeout:?}: last {last}", socket.display()))
}

/// Waits until the socket at `socket` was re-created (its [`identity`] is not `old`, e.g. after its
/// app restarted) and answers 200 on `path`.
pub fn wait_unix_restarted(
    socket: &std::path::Path,
    old: u64,
    path: &str,
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    while identity(socket) == old || identity(socket) == 0 {
        if Instant::now() >= deadline {
            return Err(format!("{} was not re-created within {timeout:?}", socket.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_unix_ok(socket, path, deadline.saturating_duration_since(Instant::now()))
}

/// An identity of a socket file (0 when missing) that changes when it is re-created: its
/// inode mixed with its change time in nanoseconds (inode numbers alone get reused at once).
pub fn identity(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.ino() ^ (m.ctime() as u64).wrapping_mul(1_000_000_007) ^ m.ctime_nsec() as u64)
        .unwrap_or(0)
}
