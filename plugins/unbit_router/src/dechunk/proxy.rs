//! One proxied request: read the router's packet and the chunked body, forward packet and
//! de-chunked body to the backend, relay the backend's answer.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tempfile::SpooledTempFile;

use super::backend::{self, Address};
use super::chunked::{ChunkError, Dechunker};
use super::packet::Packet;
use super::{Config, BACKEND_VAR, DOMAIN_VAR, UID_VAR};
use crate::traffic::Meter;

/// How long to keep reading (and discarding) the rest of a refused body after the answer:
/// closing at once would make the router's next write fail, and it may then drop the session
/// before it has relayed the answer to the client.
const LINGER: Duration = Duration::from_secs(5);
const BUFFER: usize = 64 * 1024;

/// The statuses the proxy answers itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    RequestTimeout,
    ContentTooLarge,
    InternalServerError,
    NotImplemented,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
}

impl Status {
    pub fn code(self) -> u16 {
        match self {
            Status::BadRequest => 400,
            Status::RequestTimeout => 408,
            Status::ContentTooLarge => 413,
            Status::InternalServerError => 500,
            Status::NotImplemented => 501,
            Status::BadGateway => 502,
            Status::ServiceUnavailable => 503,
            Status::GatewayTimeout => 504,
        }
    }
}

/// A complete answer with a short plain-text body: the status line, then `detail` when the
/// client can act on it (what is wrong with its body), never internals such as socket paths.
pub fn response(protocol: &str, status: Status, detail: Option<&str>) -> Vec<u8> {
    let (code, reason) = (status.code(), crate::statuses::reason(status.code()));
    let body = match detail {
        Some(detail) => format!("{code} {reason}: {detail}\n"),
        None => format!("{code} {reason}\n"),
    };
    format!(
        "{protocol} {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Why a request was not proxied: what to answer (nothing when the router is gone or never
/// sent a request) and what to log.
struct Failure {
    status: Option<Status>,
    detail: Option<String>,
    log: String,
}

impl Failure {
    fn answer(status: Status, log: impl Into<String>) -> Failure {
        Failure { status: Some(status), detail: None, log: log.into() }
    }

    /// An answer whose reason the client can act on: it goes in the body and in the log.
    fn tell(status: Status, why: impl Into<String>) -> Failure {
        let why = why.into();
        Failure { status: Some(status), detail: Some(why.clone()), log: why }
    }

    fn silent(log: impl Into<String>) -> Failure {
        Failure { status: None, detail: None, log: log.into() }
    }
}

/// What the log says about a request: enough to find it in the router's log.
#[derive(Default)]
struct Context {
    method: String,
    host: String,
    uri: String,
    backend: String,
    protocol: String,
}

impl Context {
    fn of(packet: &Packet) -> Context {
        let text = |key| packet.get(key).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        Context {
            method: text("REQUEST_METHOD"),
            host: text("HTTP_HOST"),
            uri: text("REQUEST_URI"),
            backend: text(BACKEND_VAR),
            protocol: text("SERVER_PROTOCOL"),
        }
    }

    /// The protocol of our own answers: HTTP/1.0 clients get an HTTP/1.0 status line.
    fn protocol(&self) -> &str {
        if self.protocol == "HTTP/1.0" {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}{} (backend {})", self.method, self.host, self.uri, self.backend)
    }
}

/// Serves one connection from the router to the end; never panics on bad input, logs every
/// failure with the request it belongs to.
pub(super) fn handle(mut client: UnixStream, config: &Config) {
    let mut context = Context::default();
    if let Err(e) = client.set_read_timeout(Some(config.timeout)).and(client.set_write_timeout(Some(config.timeout))) {
        (config.log)(&format!("dechunk: cannot set timeouts on a router connection: {e}"));
        return;
    }
    let Err(failure) = proxy(&mut client, config, &mut context) else { return };
    let status = failure.status.map(|s| format!(", answered {}", s.code())).unwrap_or_default();
    if context.method.is_empty() {
        (config.log)(&format!("dechunk: {}{status}", failure.log));
    } else {
        (config.log)(&format!("dechunk: {context}: {}{status}", failure.log));
    }
    if let Some(status) = failure.status {
        refuse(client, &response(context.protocol(), status, failure.detail.as_deref()));
    }
}

/// Writes `answer`, closes our side, and reads what the router still sends for a while so it
/// sees the answer and then an orderly end rather than a broken pipe.
pub(super) fn refuse(mut client: UnixStream, answer: &[u8]) {
    if client.write_all(answer).is_err() || client.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut buf = vec![0u8; BUFFER];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || client.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn proxy(client: &mut UnixStream, config: &Config, context: &mut Context) -> Result<(), Failure> {
    let mut packet = Packet::read_from(client).map_err(|e| Failure::silent(format!("no request packet: {e}")))?;
    *context = Context::of(&packet);
    let backend = take_backend(&mut packet)?;
    let node = take_node(&mut packet);
    check_framing(&mut packet)?;
    meet_expectation(&mut packet, client, context)?;

    let mut body = read_body(client, config)?;
    let body_len = body.seek(SeekFrom::End(0)).and_then(|len| body.rewind().map(|()| len));
    let body_len = body_len.map_err(|e| Failure::answer(Status::InternalServerError, format!("spooled body: {e}")))?;
    packet.push("CONTENT_LENGTH", body_len.to_string().as_bytes());
    let head = packet.encode().map_err(|e| Failure::answer(Status::InternalServerError, e.to_string()))?;

    let mut upstream = backend.connect(config.timeout).map_err(|e| {
        let status = if is_timeout(&e) { Status::GatewayTimeout } else { Status::BadGateway };
        Failure::answer(status, format!("cannot connect to the backend: {e}"))
    })?;
    let meter = node.and_then(|(domain, uid)| Meter::of(context.backend.as_bytes(), &domain, uid));
    // A backend may answer before it has read the whole body (an error, a size limit): its
    // answer then still goes to the client, and only a backend that said nothing is a 502.
    let mut counted = Counted { inner: &mut upstream, written: 0 };
    let sent = counted.write_all(&head).and_then(|()| copy(&mut body, &mut counted).map(|_| ()));
    if let Some(meter) = &meter {
        meter.add(counted.written, 0);
    }
    relay(&mut upstream, client, sent.err(), meter.as_ref())
}

/// The node's pool key and recorded uid, when the router named them (a subscription node),
/// taken out of the packet either way: they are the router's, not the app's.
fn take_node(packet: &mut Packet) -> Option<(Vec<u8>, u32)> {
    let (domain, uid) = (packet.take(DOMAIN_VAR), packet.take(UID_VAR));
    let ([domain], [uid]) = (domain.as_slice(), uid.as_slice()) else { return None };
    let uid = std::str::from_utf8(uid).ok()?.parse().ok()?;
    Some((domain.clone(), uid))
}

/// A writer that counts the bytes its inner writer took (a failed `write_all` may have sent
/// part of its buffer: those bytes reached the node too).
struct Counted<'a, W> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The router names the backend it chose; exactly one, or the router is misconfigured.
fn take_backend(packet: &mut Packet) -> Result<Address, Failure> {
    let values = packet.take(BACKEND_VAR);
    let [value] = values.as_slice() else {
        return Err(Failure::answer(
            Status::InternalServerError,
            format!("the router sent {} {BACKEND_VAR} variables, not one", values.len()),
        ));
    };
    let text = std::str::from_utf8(value)
        .map_err(|_| Failure::answer(Status::InternalServerError, format!("{BACKEND_VAR} is not UTF-8")))?;
    Address::parse(text).map_err(|e| Failure::answer(Status::InternalServerError, format!("{BACKEND_VAR}: {e}")))
}

/// Only `Transfer-Encoding: chunked` bodies come here, and the de-chunked body gets a
/// Content-Length, so both headers go. A request that also has a Content-Length is refused
/// (RFC 9112 §6.3: it "ought to be handled as an error", two framings are a smuggling
/// attempt), and so is any other transfer coding: the app could not undo it.
///
/// The value must be `chunked` exactly, letter case aside: that is the only value for which
/// the router pipes the body (`http.c:159-167` compares the whole value, repeated headers
/// merged with `, `); for any other it sends no body bytes, and waiting for them would only
/// end in a timeout.
fn check_framing(packet: &mut Packet) -> Result<(), Failure> {
    let values = packet.take("HTTP_TRANSFER_ENCODING");
    if values.is_empty() {
        return Err(Failure::answer(
            Status::InternalServerError,
            "the router sent a request without Transfer-Encoding",
        ));
    }
    if packet.get("CONTENT_LENGTH").is_some() {
        return Err(Failure::tell(
            Status::BadRequest,
            "a request may not have both Content-Length and Transfer-Encoding",
        ));
    }
    if let [value] = values.as_slice() {
        if value.eq_ignore_ascii_case(b"chunked") {
            return Ok(());
        }
    }
    let joined = values.iter().map(|v| String::from_utf8_lossy(v)).collect::<Vec<_>>().join(", ");
    let codings: Vec<String> = joined.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    let chunked_last_once = codings.last().is_some_and(|c| c == "chunked")
        && codings.iter().filter(|c| *c == "chunked").count() == 1
        && codings.iter().all(|c| !c.is_empty());
    if chunked_last_once && codings.len() > 1 {
        Err(Failure::tell(Status::NotImplemented, format!("transfer coding not supported: {joined}")))
    } else {
        Err(Failure::tell(Status::BadRequest, format!("Transfer-Encoding must be chunked, not {joined:?}")))
    }
}

/// `Expect: 100-continue` (curl sends it with every upload of unknown size) is met here, where
/// the body is read: the interim answer tells the client to send it now rather than after its
/// own wait (a second, in curl). The app no longer has anything to answer, so the header goes.
/// The router answers it too when `http-manage-expect` is set; a client must accept several
/// 1xx answers (RFC 9110 §15.2).
fn meet_expectation(packet: &mut Packet, client: &mut UnixStream, context: &Context) -> Result<(), Failure> {
    let continue_expected = context.protocol == "HTTP/1.1"
        && packet.get("HTTP_EXPECT").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    if continue_expected {
        packet.take("HTTP_EXPECT");
        client
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|e| Failure::silent(format!("writing 100 Continue: {e}")))?;
    }
    Ok(())
}

/// Reads and de-chunks the body into memory, or a temp file past the configured threshold.
fn read_body(client: &mut UnixStream, config: &Config) -> Result<SpooledTempFile, Failure> {
    let mut body = match &config.spool_dir {
        Some(dir) => SpooledTempFile::new_in(config.memory_threshold, dir),
        None => SpooledTempFile::new(config.memory_threshold),
    };
    let mut dechunker = Dechunker::new(config.max_body);
    let mut buf = vec![0u8; BUFFER];
    while !dechunker.is_done() {
        let n = match client.read(&mut buf) {
            Ok(0) => {
                return Err(Failure::silent(format!("the router closed after {} body bytes", dechunker.body_len())))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => {
                return Err(Failure::answer(Status::RequestTimeout, format!("no body bytes for {:?}", config.timeout)))
            }
            Err(e) => return Err(Failure::silent(format!("reading the body: {e}"))),
        };
        // Bytes after the end of the body are dropped: the router disables keep-alive for a
        // chunked request, so nothing can follow it on this connection.
        let mut rest = &buf[..n];
        while !rest.is_empty() && !dechunker.is_done() {
            let (used, data) = dechunker.decode(rest).map_err(|e| match e {
                ChunkError::TooLarge { .. } => Failure::tell(Status::ContentTooLarge, e.to_string()),
                ChunkError::Malformed(_) => Failure::tell(Status::BadRequest, e.to_string()),
            })?;
            body.write_all(data).map_err(|e| {
                let dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
                Failure::answer(Status::InternalServerError, format!("spooling the body in {}: {e}", dir.display()))
            })?;
            rest = &rest[used..];
        }
    }
    Ok(body)
}

/// Relays the backend's bytes to the router unchanged until the backend closes, adding each
/// read to the node's counters as it comes (a long answer shows before it ends).
fn relay(
    upstream: &mut backend::Stream,
    client: &mut UnixStream,
    send_error: Option<io::Error>,
    meter: Option<&Meter>,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; BUFFER];
    let mut relayed = 0u64;
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if relayed > 0 => return Err(Failure::silent(format!("backend failed after {relayed} bytes: {e}"))),
            Err(e) => {
                let status = if is_timeout(&e) { Status::GatewayTimeout } else { Status::BadGateway };
                let sent = send_error.map(|s| format!(" (sending the request: {s})")).unwrap_or_default();
                return Err(Failure::answer(status, format!("no answer from the backend: {e}{sent}")));
            }
        };
        if let Some(meter) = meter {
            meter.add(0, n as u64);
        }
        client.write_all(&buf[..n]).map_err(|e| Failure::silent(format!("relaying the answer to the router: {e}")))?;
        relayed += n as u64;
    }
    if relayed == 0 {
        let sent = send_error.map(|s| format!(" (sending the request: {s})")).unwrap_or_default();
        return Err(Failure::answer(Status::BadGateway, format!("the backend closed without answering{sent}")));
    }
    Ok(())
}

/// `io::copy` without its splice/sendfile shortcuts, which do not honour socket timeouts.
fn copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_has_its_own_reason_phrase() {
        let answer = String::from_utf8(response("HTTP/1.0", Status::ContentTooLarge, Some("over 1 MB"))).unwrap();
        assert!(answer.starts_with("HTTP/1.0 413 Content Too Large\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n413 Content Too Large: over 1 MB\n"), "{answer}");
        for status in [Status::RequestTimeout, Status::NotImplemented, Status::GatewayTimeout] {
            let line = String::from_utf8(response("HTTP/1.1", status, None)).unwrap();
            assert!(!line.lines().next().unwrap().ends_with(" Error"), "{line}");
        }
    }

    fn packet_with(vars: &[(&str, &str)]) -> Packet {
        let mut packet = Packet::default();
        for (k, v) in vars {
            packet.push(k, v.as_bytes());
        }
        packet
    }

    fn framing(vars: &[(&str, &str)]) -> Result<Packet, Option<u16>> {
        let mut packet = packet_with(vars);
        check_framing(&mut packet).map(|()| packet).map_err(|f| f.status.map(Status::code))
    }

    #[test]
    fn accepts_chunked_alone_and_takes_the_header_out() {
        for value in ["chunked", "Chunked", "CHUNKED"] {
            let packet = framing(&[("REQUEST_METHOD", "POST"), ("HTTP_TRANSFER_ENCODING", value)]).unwrap();
            assert_eq!(packet.get("HTTP_TRANSFER_ENCODING"), None);
            assert_eq!(packet.get("REQUEST_METHOD"), Some(&b"POST"[..]));
        }
    }

    #[test]
    fn refuses_other_framings() {
        let te = "HTTP_TRANSFER_ENCODING";
        assert_eq!(framing(&[(te, "chunked"), ("CONTENT_LENGTH", "5")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[(te, "gzip, chunked")]).unwrap_err(), Some(501));
        assert_eq!(framing(&[(te, "gzip"), (te, "chunked")]).unwrap_err(), Some(501));
        assert_eq!(framing(&[(te, "chunked, gzip")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[(te, "chunked, chunked")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[(te, "chunked"), (te, "chunked")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[(te, ", chunked")]).unwrap_err(), Some(400));
        // The router pipes no body for these, so they are answered at once.
        assert_eq!(framing(&[(te, "chunked ")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[(te, "\tchunked")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[(te, "gzip")]).unwrap_err(), Some(400));
        assert_eq!(framing(&[("REQUEST_METHOD", "POST")]).unwrap_err(), Some(500));
    }

    #[test]
    fn takes_exactly_one_backend() {
        let mut packet = packet_with(&[(BACKEND_VAR, "/run/a.sock"), ("X", "y")]);
        assert_eq!(take_backend(&mut packet).ok(), Some(Address::Unix("/run/a.sock".into())));
        assert_eq!(packet, packet_with(&[("X", "y")]));
        for vars in [&[][..], &[(BACKEND_VAR, "/a"), (BACKEND_VAR, "/b")], &[(BACKEND_VAR, "host:name")]] {
            let status = take_backend(&mut packet_with(vars)).err().and_then(|f| f.status);
            assert_eq!(status, Some(Status::InternalServerError), "{vars:?}");
        }
    }

    #[test]
    fn takes_the_node_s_pool_out_and_reads_it() {
        let mut packet = packet_with(&[(DOMAIN_VAR, ".a.test"), (UID_VAR, "30701"), ("X", "y")]);
        assert_eq!(take_node(&mut packet), Some((b".a.test".to_vec(), 30701)));
        assert_eq!(packet, packet_with(&[("X", "y")]));
        // a node the router has no pool for, or variables it would never send: not counted,
        // and still never passed to the app
        for vars in [
            &[("X", "y")][..],
            &[(DOMAIN_VAR, "a.test"), ("X", "y")],
            &[(DOMAIN_VAR, "a.test"), (UID_VAR, "x"), ("X", "y")],
            &[(DOMAIN_VAR, "a.test"), (UID_VAR, "1"), (UID_VAR, "2"), ("X", "y")],
        ] {
            let mut packet = packet_with(vars);
            assert_eq!(take_node(&mut packet), None, "{vars:?}");
            assert_eq!(packet, packet_with(&[("X", "y")]), "{vars:?}");
        }
    }

    #[test]
    fn counts_what_reached_the_writer_even_when_a_write_fails() {
        struct Takes(usize);
        impl Write for Takes {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                match self.0.min(buf.len()) {
                    0 => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
                    n => {
                        self.0 -= n;
                        Ok(n)
                    }
                }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut inner = Takes(10);
        let mut counted = Counted { inner: &mut inner, written: 0 };
        counted.write_all(b"0123456").unwrap();
        assert!(counted.write_all(b"0123456").is_err());
        assert_eq!(counted.written, 10);
    }

    #[test]
    fn answers_are_complete_http_responses() {
        let answer = String::from_utf8(response("HTTP/1.1", Status::ContentTooLarge, Some("too big"))).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 413 Content Too Large\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())), "{head}");
        assert_eq!(body, "413 Content Too Large: too big\n");
    }
}
