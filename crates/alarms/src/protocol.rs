//! The relay socket: a unix stream socket, one JSON object per line, at most [`MAX_LINE`]
//! bytes. The relay knows who is talking from the kernel (`SO_PEERCRED`), never from the line:
//! a container's uid sends alarms for itself only; uid 0 (the node Emperor) names the
//! container in `uid`.
//!
//! * `{"kind": "oom", "msg": "..."}`: an alarm (the node adds `"uid": N`);
//! * `{"watch": true}`: the container master's console listener; the relay then writes the
//!   container's alarms back on this connection as [`Delivered`] lines.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Longest line either side accepts (a message longer than this is cut by the sender).
pub const MAX_LINE: usize = 4096;
/// Longest message text kept in an alarm.
pub const MAX_MSG: usize = 2048;

/// Where the relay socket appears inside every container (the host's subscription dir is
/// mounted at `/run/subscribe`).
pub const CONTAINER_SOCKET: &str = "/run/subscribe/alarms";
/// The socket's name in the host's subscription dir.
pub const SOCKET_NAME: &str = "alarms";

/// What a sender says: an alarm or the wish to watch the container's alarms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub watch: bool,
}

/// What the relay writes to a container's watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub kind: String,
    pub msg: String,
    pub unix: i64,
}

/// A line the relay wrote to a console watcher.
pub fn parse_delivered(line: &[u8]) -> Result<Delivered, String> {
    serde_json::from_slice(line).map_err(|e| format!("not an alarm: {e}"))
}

/// A valid alarm kind: 1 to 32 of `[a-z0-9_.-]` (it becomes the record's `class` and the
/// de-duplication key; nothing a customer could use to look like another container).
pub fn check_kind(kind: &str) -> Result<(), String> {
    let ok = !kind.is_empty()
        && kind.len() <= 32
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("alarm kind `{}`: expected 1 to 32 of a-z 0-9 _ . -", kind.escape_debug()))
    }
}

/// The kind of an `alarm = NAME unbit:KIND` instance: KIND, or NAME when KIND is empty,
/// lowercased, other characters as `-`, at most 32.
pub fn kind_for(instance: &str, arg: &str) -> Result<String, String> {
    let raw = if arg.trim().is_empty() { instance } else { arg.trim() };
    let kind: String = raw
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' })
        .take(32)
        .collect();
    check_kind(&kind)?;
    Ok(kind)
}

/// The message as stored and sent: valid UTF-8 (lossy), control characters but tab replaced
/// by spaces (a terminal must not receive escape sequences from a log line), trimmed, cut at
/// [`MAX_MSG`] bytes on a character boundary.
pub fn clean_message(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out: String = text.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect();
    out = out.trim().to_string();
    if out.len() > MAX_MSG {
        let mut end = MAX_MSG;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

impl Request {
    pub fn alarm(uid: Option<u32>, kind: &str, msg: &str) -> Request {
        Request { uid, kind: Some(kind.to_string()), msg: Some(msg.to_string()), watch: false }
    }

    /// The line to send (with its newline).
    pub fn line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a request serializes");
        v.push(b'\n');
        v
    }

    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let r: Request = serde_json::from_slice(line).map_err(|e| format!("not an alarm request: {e}"))?;
        if r.watch {
            if r.kind.is_some() || r.msg.is_some() {
                return Err("a watch request carries no alarm".into());
            }
            return Ok(r);
        }
        check_kind(r.kind.as_deref().ok_or("an alarm needs a kind")?)?;
        if r.msg.as_deref().is_none_or(|m| m.trim().is_empty()) {
            return Err("an alarm needs a message".into());
        }
        Ok(r)
    }
}

/// Sends one line to the relay without ever waiting: the connect and the write are
/// non-blocking, and a relay that is down or busy makes this fail at once (the caller drops
/// the alarm and says so). Used by the node Emperor and by uWSGI hooks.
pub fn send_now(socket: &Path, request: &Request) -> io::Result<()> {
    let stream = connect_nonblocking(socket)?;
    write_line_nonblocking(&stream, &request.line())
}

/// The relay's reachability as a sender last saw it, so that an outage is logged once (and
/// the alarms lost during it counted when it ends) instead of one line per alarm: a node
/// without `unbit-alarmd`, or a relay restarting, would otherwise fill the log it reports to.
pub struct RelayHealth {
    /// Alarms lost since the relay became unreachable; `u64::MAX` while it is reachable (or
    /// not tried yet).
    lost: std::sync::atomic::AtomicU64,
}

impl RelayHealth {
    pub const fn new() -> RelayHealth {
        RelayHealth { lost: std::sync::atomic::AtomicU64::new(u64::MAX) }
    }

    /// Records one send's outcome; `Some(line)` when it changes what the log should say.
    pub fn note(&self, sent: &io::Result<()>, socket: &Path) -> Option<String> {
        use std::sync::atomic::Ordering::SeqCst;
        match sent {
            Ok(()) => match self.lost.swap(u64::MAX, SeqCst) {
                u64::MAX => None,
                lost => Some(format!(
                    "the alarm relay at {} is reachable again; {lost} alarm(s) were lost while it was not",
                    socket.display()
                )),
            },
            Err(e) => match self.lost.fetch_update(SeqCst, SeqCst, |n| Some(if n == u64::MAX { 1 } else { n + 1 })) {
                Ok(u64::MAX) => Some(format!(
                    "the alarm relay at {} is unreachable ({e}): alarms are lost until it is back",
                    socket.display()
                )),
                _ => None,
            },
        }
    }
}

impl Default for RelayHealth {
    fn default() -> Self {
        Self::new()
    }
}

/// Connects to a unix stream socket without blocking: `EAGAIN` (the relay's backlog is full)
/// is returned as an error instead of waiting.
pub fn connect_nonblocking(socket: &Path) -> io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket as new_socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(socket).map_err(io::Error::from)?;
    let fd = new_socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
        .map_err(io::Error::from)?;
    connect(fd.as_raw_fd(), &addr).map_err(io::Error::from)?;
    Ok(UnixStream::from(fd))
}

/// Writes `line` to a non-blocking stream; a full socket buffer is an error, not a wait.
pub fn write_line_nonblocking(mut stream: &UnixStream, line: &[u8]) -> io::Result<()> {
    let n = stream.write(line)?;
    if n != line.len() {
        return Err(io::Error::new(io::ErrorKind::WouldBlock, "the relay's socket buffer is full"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_said_once_and_its_end_with_what_it_lost() {
        let h = RelayHealth::new();
        let at = Path::new("/run/x/alarms");
        let down = || Err(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(h.note(&Ok(()), at), None);
        assert!(h.note(&down(), at).unwrap().contains("unreachable"));
        assert_eq!(h.note(&down(), at), None);
        assert_eq!(h.note(&down(), at), None);
        assert!(h.note(&Ok(()), at).unwrap().contains("3 alarm(s) were lost"));
        assert_eq!(h.note(&Ok(()), at), None);
        assert!(h.note(&down(), at).is_some(), "a second outage is said again");
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let r = Request::alarm(Some(30601), "oom", "container 30601: OUT OF MEMORY");
        let line = r.line();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(Request::parse(&line[..line.len() - 1]).unwrap(), r);
        assert!(Request::parse(br#"{"watch":true}"#).unwrap().watch);
        for bad in [
            &br#"{"kind":"OOM","msg":"x"}"#[..],
            br#"{"kind":"oom"}"#,
            br#"{"kind":"oom","msg":"  "}"#,
            br#"{"kind":"","msg":"x"}"#,
            br#"{"kind":"a/b","msg":"x"}"#,
            br#"{"watch":true,"kind":"oom","msg":"x"}"#,
            br#"{"kind":"oom","msg":"x","extra":1}"#,
            b"not json",
        ] {
            assert!(Request::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn kinds_come_from_the_argument_or_the_instance() {
        assert_eq!(kind_for("Crash Loop", "").unwrap(), "crash-loop");
        assert_eq!(kind_for("x", " myapp ").unwrap(), "myapp");
        assert_eq!(kind_for("a", &"x".repeat(40)).unwrap().len(), 32);
        assert!(kind_for("", " ").is_err());
    }

    #[test]
    fn messages_lose_control_characters_and_are_bounded() {
        assert_eq!(clean_message(b"  a\x1b[31mred\r\nnext\t!  "), "a [31mred  next\t!");
        let long = "\u{e9}".repeat(MAX_MSG);
        let cut = clean_message(long.as_bytes());
        assert!(cut.len() <= MAX_MSG && cut.chars().all(|c| c == '\u{e9}'));
        assert_eq!(clean_message(b"\xff ok"), "\u{fffd} ok");
    }

    #[test]
    fn a_relay_that_is_not_there_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let err = send_now(&dir.path().join("none"), &Request::alarm(None, "x", "y")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_line_reaches_a_listener() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        send_now(&path, &Request::alarm(None, "quota", "full")).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(conn).read_line(&mut line).unwrap();
        assert_eq!(Request::parse(line.trim_end().as_bytes()).unwrap().kind.as_deref(), Some("quota"));
    }
}
