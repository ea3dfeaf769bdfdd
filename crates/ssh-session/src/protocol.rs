//! What the enter tool and the broker say to each other: one request, then replies, each a
//! JSON message on a `SOCK_SEQPACKET` unix socket (message boundaries kept, descriptors
//! attached to the message that carries them).
//!
//! * enter tool -> broker: a [`Request`]; without a terminal it carries the session's stdin,
//!   stdout and stderr (sshd's pipes) as three descriptors.
//! * broker -> enter tool: [`Reply::Terminal`] with the master of the terminal the broker
//!   opened in the container (terminal sessions), then one of [`Reply::Exited`],
//!   [`Reply::Killed`]; or [`Reply::Refused`] and nothing else.

use serde::{Deserialize, Serialize};

/// The largest message either side accepts, in bytes: a command line may be long (sshd
/// accepts up to 256 KiB), nothing else is.
pub const MAX_MESSAGE: usize = 300 * 1024;

/// The most bytes of a command; Linux's own limit on one argument is 128 KiB.
pub const MAX_COMMAND: usize = 128 * 1024;

/// One session, as sshd asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// `ssh node 'command'` (or the sftp subsystem's program); `None`: a login shell.
    pub command: Option<String>,
    /// Set when the client asked for a terminal (`ssh -t`, an interactive login).
    pub terminal: Option<Terminal>,
    /// sshd's `SSH_CONNECTION`: client address and port, server address and port.
    pub connection: Option<String>,
}

/// The client's terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminal {
    /// `TERM`.
    pub term: String,
    pub rows: u16,
    pub cols: u16,
    /// The modes the client sent (termios flags and control characters), as sshd set them on
    /// the terminal it gave the enter tool.
    pub modes: Option<Modes>,
}

/// termios flags and control characters (`struct termios` minus speeds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modes {
    pub input: u32,
    pub output: u32,
    pub control: u32,
    pub local: u32,
    pub chars: Vec<u8>,
}

/// What the broker answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The session's terminal master is attached: relay between it and the client's terminal.
    Terminal,
    /// The session's process exited with this status.
    Exited { code: i32 },
    /// The session's process was killed by this signal.
    Killed { signal: i32 },
    /// No session: the reason, for the customer.
    Refused { reason: String },
}

impl Request {
    /// Checks what the broker is about to act on; `Err` is the reason given to the customer.
    pub fn validate(&self, descriptors: usize) -> Result<(), String> {
        if let Some(c) = &self.command {
            if c.len() > MAX_COMMAND {
                return Err(format!("the command is longer than {MAX_COMMAND} bytes"));
            }
            if c.contains('\0') {
                return Err("the command contains a NUL byte".into());
            }
        }
        match &self.terminal {
            Some(t) => {
                if t.term.len() > 64 || !t.term.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(format!("TERM {:?} is not a terminal type", t.term));
                }
                if descriptors != 0 {
                    return Err("a terminal session carries no descriptors".into());
                }
            }
            None if descriptors != 3 => {
                return Err(format!(
                    "a session without a terminal carries stdin, stdout and stderr, not {descriptors}"
                ));
            }
            None => {}
        }
        if self.connection.as_ref().is_some_and(|c| c.len() > 256 || c.chars().any(char::is_control)) {
            return Err("SSH_CONNECTION is not an address line".into());
        }
        Ok(())
    }
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    serde_json::to_vec(message).expect("protocol messages always serialize")
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a message of the ssh broker protocol: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(term: &str) -> Request {
        Request {
            command: None,
            terminal: Some(Terminal { term: term.into(), rows: 24, cols: 80, modes: None }),
            connection: Some("127.0.0.1 5555 127.0.0.1 22".into()),
        }
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused_with_a_reason() {
        let r = shell("xterm-256color");
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        assert_eq!(r.validate(0), Ok(()));
        assert!(r.validate(3).is_err(), "a terminal session with pipes");
        assert!(shell("xterm\n").validate(0).is_err());
        assert!(shell(&"x".repeat(65)).validate(0).is_err());
        let cmd = Request { command: Some("id -u".into()), terminal: None, connection: None };
        assert_eq!(cmd.validate(3), Ok(()));
        assert!(cmd.validate(0).is_err(), "a command without its pipes");
        let nul = Request { command: Some("a\0b".into()), ..cmd.clone() };
        assert!(nul.validate(3).is_err());
        let long = Request { command: Some("x".repeat(MAX_COMMAND + 1)), ..cmd };
        assert!(long.validate(3).is_err());
        assert!(decode::<Request>(b"{\"command\": 5}").is_err());
    }

    #[test]
    fn replies_are_tagged() {
        assert_eq!(String::from_utf8(encode(&Reply::Exited { code: 42 })).unwrap(), r#"{"exited":{"code":42}}"#);
        assert_eq!(decode::<Reply>(br#""terminal""#).unwrap(), Reply::Terminal);
    }
}
