//! A small XMPP client that does one thing: log in as the customer's bot account and send a
//! chat message to each destination (RFC 6120 and 6121): STARTTLS (required: the password
//! never travels in clear), SASL PLAIN, resource binding, the messages, then a ping whose
//! answer proves the server has processed them, and the stream is closed. Blocking, with a
//! deadline on every read and write; the relay runs it on a blocking thread.

use crate::srv;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// Where and how to connect; the account itself comes from the container's settings.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `host:port` instead of the JID domain's server found through DNS (the operator's
    /// override: no SRV lookup then).
    pub server: Option<String>,
    /// The DNS server for the SRV and address lookups (`--dns-server`) instead of the
    /// system's (`/etc/resolv.conf`).
    pub dns_server: Option<SocketAddr>,
    /// A CA file to verify the server with, instead of the system's.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// The bot account and the message.
pub struct Send<'a> {
    pub jid: &'a str,
    pub password: &'a str,
    pub destinations: &'a [String],
    pub body: &'a str,
}

/// `"a@b, c@d"` -> valid bare JIDs (`local@domain`, no spaces or markup).
pub fn destinations(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|j| valid_jid(j)).map(str::to_string).collect()
}

fn valid_jid(j: &str) -> bool {
    let Some((local, domain)) = j.split_once('@') else { return false };
    let clean =
        |s: &str| !s.is_empty() && s.len() <= 1023 && s.chars().all(|c| !c.is_whitespace() && !"<>&'\"/@".contains(c));
    clean(local) && clean(domain)
}

/// XML text escaping for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            // Control characters are not allowed in XML 1.0.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    fn send(&mut self, s: &str) -> Result<(), String> {
        self.io.write_all(s.as_bytes()).and_then(|_| self.io.flush()).map_err(|e| format!("write: {e}"))
    }

    /// Reads until one of `needles` appears in what the server sent since the last call;
    /// returns the index of the needle found. A `<stream:error` or `<failure` ends it.
    fn until(&mut self, needles: &[&str]) -> Result<usize, String> {
        loop {
            let text = String::from_utf8_lossy(&self.buf);
            if let Some(i) = needles.iter().position(|n| text.contains(n)) {
                self.buf.clear();
                return Ok(i);
            }
            if let Some(at) = text.find("<stream:error") {
                return Err(format!("server error: {}", &text[at..].chars().take(200).collect::<String>()));
            }
            if self.buf.len() > 1 << 20 {
                return Err("server sent more than 1 MB without what was expected".into());
            }
            let mut chunk = [0u8; 4096];
            let n = self.io.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Opens a (new) stream and waits for the server's features.
    fn open_stream(&mut self, domain: &str) -> Result<(), String> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
            escape(domain)
        ))?;
        self.until(&["</stream:features>"]).map(drop)
    }
}

/// Why a send failed: `Refused` will not get better by retrying (a wrong password, no valid
/// destination); `Failed` may (the server is down, slow, or closed the connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Failed(s)
    }
}

/// Logs in and sends the message; the error says which step failed (never the password).
pub fn send(connect: &Connect, msg: &Send<'_>) -> Result<(), Failure> {
    let (local, domain) = msg
        .jid
        .split_once('@')
        .filter(|_| valid_jid(msg.jid))
        .ok_or_else(|| Failure::Refused("jid is not user@domain".into()))?;
    let domain = domain.split('/').next().unwrap_or(domain);
    if msg.destinations.is_empty() {
        return Err(Failure::Refused("no valid jid in jid_destinations".into()));
    }
    // RFC 6120 §3.2: the domain's SRV records, or the domain itself on 5222.
    let (tcp, server) = match &connect.server {
        Some(server) => srv::connect_server(server, connect.timeout)?,
        None => {
            let dns = srv::Dns::new(connect.dns_server, connect.timeout).map_err(|e| format!("{domain}: {e}"))?;
            srv::connect(&dns, domain, connect.timeout, &mut srv::random_draw)?
        }
    };
    tcp.set_read_timeout(Some(connect.timeout))
        .and_then(|_| tcp.set_write_timeout(Some(connect.timeout)))
        .map_err(|e| format!("{server}: {e}"))?;
    let mut c = Conn { io: Box::new(tcp.try_clone().map_err(|e| e.to_string())?), buf: Vec::new() };

    // Plain stream: only STARTTLS is done on it.
    c.open_stream(domain)?;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")?;
    if c.until(&["<proceed", "<failure"])? != 0 {
        return Err(Failure::Refused("the server refused STARTTLS".into()));
    }
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    if let Some(ca) = &connect.ca_file {
        builder.set_ca_file(ca).map_err(|e| format!("xmpp CA {}: {e}", ca.display()))?;
    }
    builder.set_verify(SslVerifyMode::PEER);
    // The certificate must name the JID's domain, never the SRV target (RFC 6120 §13.7.2.1):
    // DNS is not trusted to say which server may speak for the domain.
    let tls: SslStream<TcpStream> =
        builder.build().connect(domain, tcp).map_err(|e| format!("TLS with {server} as {domain}: {e}"))?;
    c.io = Box::new(tls);

    c.open_stream(domain)?;
    let plain = openssl::base64::encode_block(format!("\0{local}\0{}", msg.password).as_bytes());
    c.send(&format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{plain}</auth>"))?;
    if c.until(&["<success", "<failure"])? != 0 {
        return Err(Failure::Refused(format!("the server refused the login of {}", msg.jid)));
    }
    c.open_stream(domain)?;
    c.send(
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
         <resource>unbit-alarms</resource></bind></iq>",
    )?;
    c.until(&["</jid>"])?;
    for to in msg.destinations {
        c.send(&format!("<message to='{}' type='chat'><body>{}</body></message>", escape(to), escape(msg.body)))?;
    }
    // Stanzas are processed in order: the ping's answer means the messages were handled.
    c.send(&format!("<iq type='get' id='ping1' to='{}'><ping xmlns='urn:xmpp:ping'/></iq>", escape(domain)))?;
    c.until(&["'ping1'", "\"ping1\""])?;
    let _ = c.send("</stream:stream>");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_keep_only_bare_jids() {
        assert_eq!(destinations(" a@b.c ,x, d@e ,<x>@y, f g@h,"), ["a@b.c", "d@e"]);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href='x'>&\"\u{1b}"), "&lt;a href=&apos;x&apos;&gt;&amp;&quot; ");
    }

    #[test]
    fn a_bad_jid_fails_before_any_connection() {
        let c = Connect { timeout: Duration::from_secs(1), ..Default::default() };
        let d = vec!["a@b".to_string()];
        let m = Send { jid: "nodomain", password: "p", destinations: &d, body: "x" };
        assert_eq!(send(&c, &m).unwrap_err(), Failure::Refused("jid is not user@domain".into()));
        let none: Vec<String> = vec![];
        let m = Send { jid: "a@b", password: "p", destinations: &none, body: "x" };
        assert!(matches!(send(&c, &m).unwrap_err(), Failure::Refused(e) if e.contains("jid_destinations")));
    }
}
