//! The subscription packet as stock uWSGI 2.0.21 sends it (`core/subscription.c`,
//! `uwsgi_subscription_ub`): a 4-byte uwsgi header `224, size (u16 LE), cmd`, then uwsgi vars
//! (`u16 LE keylen, key, u16 LE vallen, value`, repeated). A signed packet ends with
//! `unix = now + cmd` and `sign = RSA(body bytes from offset 4 up to the sign record)`.
//!
//! Parsing is strict where stock uWSGI is lax, because every ambiguity is a way around the
//! policy: a packet must be exactly as long as its header says, no variable may appear twice,
//! `sign` must be the last one, and text fields are printable ASCII; except the key, which may
//! be a Unicode domain name (`domain = bücher.example`): printable UTF-8, no blank but the
//! space. The validator turns it into its IDNA form before anything else looks at it.

use std::fmt;

/// uWSGI reads subscriptions into a 4096-byte buffer; anything longer was never a packet
/// stock uWSGI could have sent whole.
pub const MAX_PACKET: usize = 4096;
/// `modifier1` of every subscription packet.
pub const SUBSCRIPTION_MODIFIER1: u8 = 224;
const HEADER: usize = 4;

/// The header's `modifier2`: what the announce asks for. Stock uWSGI does not sign it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Subscribe,
    Unsubscribe,
}

impl Command {
    pub fn byte(self) -> u8 {
        match self {
            Command::Subscribe => 0,
            Command::Unsubscribe => 1,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
        })
    }
}

/// One announce, decoded. Numbers a router only uses for balancing keep uWSGI's defaults when
/// absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    pub command: Command,
    /// The pool: a domain (`example.org`), a wildcard (`.example.org`), optionally `:port`,
    /// as the vassal sent it (the validator normalises it).
    pub key: String,
    pub address: String,
    pub modifier1: u8,
    pub modifier2: u8,
    pub cores: u64,
    pub load: u64,
    pub weight: u64,
    /// Sender's clock plus the command byte (stock adds `cmd` to `now`).
    pub unix: Option<i64>,
    pub sni_key: Option<String>,
    pub sni_crt: Option<String>,
    pub sni_ca: Option<String>,
    pub notify: Option<String>,
    pub signature: Option<Vec<u8>>,
    /// How many body bytes (from offset 4) the signature covers.
    pub signed_len: usize,
}

impl Announce {
    /// The bytes the signature covers, taken from the packet this announce was parsed from.
    pub fn signed_bytes<'a>(&self, packet: &'a [u8]) -> &'a [u8] {
        &packet[HEADER..HEADER + self.signed_len]
    }
}

/// Why bytes are not a subscription packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Garbled(pub String);

impl fmt::Display for Garbled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn garbled<T>(why: impl Into<String>) -> Result<T, Garbled> {
    Err(Garbled(why.into()))
}

/// Longest text value accepted (a socket path is at most 108 bytes; SNI paths are paths).
const MAX_TEXT: usize = 1024;

/// Decodes one datagram.
pub fn parse(packet: &[u8]) -> Result<Announce, Garbled> {
    if packet.len() < HEADER {
        return garbled(format!("{} bytes, shorter than the 4-byte header", packet.len()));
    }
    if packet[0] != SUBSCRIPTION_MODIFIER1 {
        return garbled(format!("modifier1 {} is not a subscription (224)", packet[0]));
    }
    let declared = u16::from_le_bytes([packet[1], packet[2]]) as usize;
    if declared != packet.len() - HEADER {
        return garbled(format!("header says {declared} body bytes, the datagram has {}", packet.len() - HEADER));
    }
    let command = match packet[3] {
        0 => Command::Subscribe,
        1 => Command::Unsubscribe,
        other => return garbled(format!("unknown command byte {other}")),
    };

    let mut a = Announce {
        command,
        key: String::new(),
        address: String::new(),
        modifier1: 0,
        modifier2: 0,
        cores: 0,
        load: 0,
        weight: 0,
        unix: None,
        sni_key: None,
        sni_crt: None,
        sni_ca: None,
        notify: None,
        signature: None,
        signed_len: 0,
    };
    let mut seen: Vec<&[u8]> = Vec::new();
    let body = &packet[HEADER..];
    let mut pos = 0;
    while pos < body.len() {
        let record_start = pos;
        let (name, next) = take_field(body, pos, "variable name")?;
        let (value, next) = take_field(body, next, "variable value")?;
        pos = next;
        if seen.contains(&name) {
            return garbled(format!("variable {} appears twice", String::from_utf8_lossy(name)));
        }
        seen.push(name);
        if a.signature.is_some() {
            return garbled("sign is not the last variable");
        }
        match name {
            b"key" => a.key = unicode_text(name, value)?,
            b"address" => a.address = text(name, value)?,
            b"modifier1" => a.modifier1 = number(name, value, u8::MAX as u64)? as u8,
            b"modifier2" => a.modifier2 = number(name, value, u8::MAX as u64)? as u8,
            b"cores" => a.cores = number(name, value, u32::MAX as u64)?,
            b"load" => a.load = number(name, value, u64::MAX)?,
            b"weight" => a.weight = number(name, value, u32::MAX as u64)?,
            b"unix" => a.unix = Some(number(name, value, i64::MAX as u64)? as i64),
            b"sni_key" => a.sni_key = Some(text(name, value)?),
            b"sni_crt" => a.sni_crt = Some(text(name, value)?),
            b"sni_ca" => a.sni_ca = Some(text(name, value)?),
            b"notify" => a.notify = Some(text(name, value)?),
            b"sign" => {
                if value.is_empty() {
                    return garbled("empty signature");
                }
                a.signature = Some(value.to_vec());
                a.signed_len = record_start;
            }
            // Newer uWSGI releases add variables (algo, backup, proto, vassal, clear); like
            // stock 2.0.21 we ignore them, and they are never passed on to the router.
            _ => {
                if !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_') || name.is_empty() {
                    return garbled("a variable name is not [A-Za-z0-9_]");
                }
            }
        }
    }
    if a.key.is_empty() {
        return garbled("no key (domain)");
    }
    if a.address.is_empty() {
        return garbled("no address");
    }
    Ok(a)
}

fn take_field<'a>(body: &'a [u8], pos: usize, what: &str) -> Result<(&'a [u8], usize), Garbled> {
    let Some(len) = body.get(pos..pos + 2) else {
        return garbled(format!("truncated {what} length"));
    };
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let start = pos + 2;
    match body.get(start..start + len) {
        Some(v) => Ok((v, start + len)),
        None => garbled(format!("{what} runs past the end of the packet")),
    }
}

fn text(name: &[u8], value: &[u8]) -> Result<String, Garbled> {
    let name = String::from_utf8_lossy(name);
    if value.len() > MAX_TEXT {
        return garbled(format!("{name} is longer than {MAX_TEXT} bytes"));
    }
    if !value.iter().all(|b| (0x21..0x7f).contains(b)) {
        return garbled(format!("{name} holds bytes outside printable ASCII"));
    }
    Ok(String::from_utf8(value.to_vec()).expect("printable ASCII is UTF-8"))
}

/// Printable UTF-8 with no blank but the space, of at most [`MAX_TEXT`] bytes.
fn unicode_text(name: &[u8], value: &[u8]) -> Result<String, Garbled> {
    let name = String::from_utf8_lossy(name);
    if value.len() > MAX_TEXT {
        return garbled(format!("{name} is longer than {MAX_TEXT} bytes"));
    }
    match std::str::from_utf8(value) {
        // A space reaches the validator's name rules, which say what is wrong with it; a line
        // break or another blank could forge a line of the logs the key is written to.
        Ok(v) if !v.chars().any(|c| c.is_control() || (c.is_whitespace() && c != ' ')) => Ok(v.to_string()),
        Ok(_) => garbled(format!("{name} holds control or blank characters")),
        Err(_) => garbled(format!("{name} is not UTF-8")),
    }
}

fn number(name: &[u8], value: &[u8], max: u64) -> Result<u64, Garbled> {
    let name = String::from_utf8_lossy(name);
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return garbled(format!("{name} is not a decimal number"));
    }
    match std::str::from_utf8(value).ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(n) if n <= max => Ok(n),
        _ => garbled(format!("{name} is out of range")),
    }
}

/// Builds packets: the validator's unsigned re-emission to the router, and (in tests and the
/// benchmark) packets exactly as stock uWSGI builds them.
#[derive(Default)]
pub struct PacketBuilder {
    body: Vec<u8>,
}

impl PacketBuilder {
    pub fn new() -> Self {
        PacketBuilder { body: Vec::with_capacity(512) }
    }

    pub fn var(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(name.as_bytes(), value.as_ref());
        self
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        self.body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        self.body.extend_from_slice(name);
        self.body.extend_from_slice(&(value.len() as u16).to_le_bytes());
        self.body.extend_from_slice(value);
    }

    /// The body so far: what a signature appended next would cover.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Appends `sign` (the signature of everything before it), as stock uWSGI does.
    pub fn signed_with(mut self, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Self {
        let signature = sign(&self.body);
        self.push(b"sign", &signature);
        self
    }

    /// The datagram: header plus body.
    pub fn finish(self, command: Command) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.body.len());
        out.push(SUBSCRIPTION_MODIFIER1);
        out.extend_from_slice(&(self.body.len() as u16).to_le_bytes());
        out.push(command.byte());
        out.extend_from_slice(&self.body);
        out
    }
}

/// The announce the router gets from the validator: unsigned (the private socket is the
/// proof), the address already mapped to the router's name for it, only the variables the
/// router uses. `notify` is left out on purpose: the router would follow a customer-planted
/// symlink when sending to it; the validator tells the container itself. So are the SNI files:
/// the stock router would load them in every process at once and never again (the validator
/// keeps the router's certificate index instead, `crate::sni`).
pub fn router_packet(a: &Announce, host_address: &str) -> Vec<u8> {
    PacketBuilder::new()
        .var("key", &a.key)
        .var("address", host_address)
        .var("modifier1", a.modifier1.to_string())
        .var("modifier2", a.modifier2.to_string())
        .var("cores", a.cores.to_string())
        .var("load", a.load.to_string())
        .var("weight", a.weight.to_string())
        .finish(a.command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock_like(cmd: Command) -> Vec<u8> {
        PacketBuilder::new()
            .var("key", "example.org")
            .var("address", "/containers/30001/run/example.org_1.socket")
            .var("modifier1", "0")
            .var("modifier2", "0")
            .var("cores", "1")
            .var("load", "0")
            .var("weight", "0")
            .var("notify", "/containers/30001/run/notify_1.socket")
            .var("unix", "1700000000")
            .signed_with(|body| vec![0xAB; body.len() % 7 + 256])
            .finish(cmd)
    }

    #[test]
    fn a_stock_packet_decodes_with_its_signed_region() {
        let p = stock_like(Command::Subscribe);
        let a = parse(&p).unwrap();
        assert_eq!(a.command, Command::Subscribe);
        assert_eq!(a.key, "example.org");
        assert_eq!(a.address, "/containers/30001/run/example.org_1.socket");
        assert_eq!(a.unix, Some(1_700_000_000));
        assert_eq!(a.cores, 1);
        assert_eq!(a.notify.as_deref(), Some("/containers/30001/run/notify_1.socket"));
        let sig = a.signature.clone().unwrap();
        // The signed region ends right before the sign record, header excluded.
        let signed = a.signed_bytes(&p);
        assert_eq!(4 + signed.len() + 2 + 4 + 2 + sig.len(), p.len());
        assert!(signed.ends_with(b"1700000000"));
    }

    #[test]
    fn the_command_byte_is_read_but_outside_the_signed_bytes() {
        let sub = stock_like(Command::Subscribe);
        let unsub = stock_like(Command::Unsubscribe);
        let (a, b) = (parse(&sub).unwrap(), parse(&unsub).unwrap());
        assert_eq!(b.command, Command::Unsubscribe);
        assert_eq!(a.signed_bytes(&sub), b.signed_bytes(&unsub));
    }

    #[test]
    fn malformed_packets_are_refused_with_a_reason() {
        let good = stock_like(Command::Subscribe);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![224, 0], "shorter than the 4-byte header"),
            (
                {
                    let mut p = good.clone();
                    p[0] = 0;
                    p
                },
                "modifier1 0",
            ),
            (
                {
                    let mut p = good.clone();
                    p[3] = 7;
                    p
                },
                "unknown command byte 7",
            ),
            (
                {
                    let mut p = good.clone();
                    p.pop();
                    p
                },
                "header says",
            ),
            (
                {
                    let mut p = good.clone();
                    p[1] = 0xff;
                    p[2] = 0xff;
                    p
                },
                "header says",
            ),
            (
                PacketBuilder::new()
                    .var("key", "a.org")
                    .var("key", "b.org")
                    .var("address", "x")
                    .finish(Command::Subscribe),
                "appears twice",
            ),
            (
                PacketBuilder::new()
                    .var("key", "a.org")
                    .var("address", "x")
                    .signed_with(|_| vec![1])
                    .var("unix", "1")
                    .finish(Command::Subscribe),
                "sign is not the last",
            ),
            (
                PacketBuilder::new().var("key", "a.org\n").var("address", "x").finish(Command::Subscribe),
                "key holds control or blank characters",
            ),
            (
                PacketBuilder::new().var("key", b"a\xff.org").var("address", "x").finish(Command::Subscribe),
                "key is not UTF-8",
            ),
            (
                PacketBuilder::new().var("key", "a.org").var("address", "/run/bücher").finish(Command::Subscribe),
                "address holds bytes outside printable ASCII",
            ),
            (
                PacketBuilder::new()
                    .var("key", "a.org")
                    .var("address", "x")
                    .var("unix", "-5")
                    .finish(Command::Subscribe),
                "not a decimal",
            ),
            (
                PacketBuilder::new()
                    .var("key", "a.org")
                    .var("address", "x")
                    .var("modifier1", "300")
                    .finish(Command::Subscribe),
                "out of range",
            ),
            (PacketBuilder::new().var("address", "x").finish(Command::Subscribe), "no key"),
            (PacketBuilder::new().var("key", "a.org").finish(Command::Subscribe), "no address"),
        ];
        for (packet, expected) in cases {
            let err = parse(&packet).unwrap_err();
            assert!(err.0.contains(expected), "{packet:?}: {err} (wanted {expected:?})");
        }
        // A body whose last record claims more bytes than there are.
        let mut truncated = PacketBuilder::new().var("key", "a.org").finish(Command::Subscribe);
        truncated.extend_from_slice(&[7, 0, b'a']);
        let size = (truncated.len() - 4) as u16;
        truncated[1..3].copy_from_slice(&size.to_le_bytes());
        assert!(parse(&truncated).unwrap_err().0.contains("runs past the end"));
    }

    #[test]
    fn a_unicode_key_is_read_as_written() {
        let p = PacketBuilder::new().var("key", "Bücher.example").var("address", "/x").finish(Command::Subscribe);
        assert_eq!(parse(&p).unwrap().key, "Bücher.example");
    }

    #[test]
    fn unknown_variables_are_ignored_and_never_forwarded() {
        let p = PacketBuilder::new()
            .var("key", "example.org")
            .var("address", "/containers/30001/run/a.socket")
            .var("vassal", "x")
            .var("sni_key", "/containers/30001/a.key")
            .var("sni_crt", "/containers/30001/a.crt")
            .finish(Command::Subscribe);
        let a = parse(&p).unwrap();
        let out = router_packet(&a, "/srv/containers/30001/run/a.socket");
        let fwd = parse(&out).unwrap();
        assert_eq!(fwd.address, "/srv/containers/30001/run/a.socket");
        assert!(!out.windows(6).any(|w| w == b"vassal") && !out.windows(4).any(|w| w == b"sni_"));
        assert!(fwd.signature.is_none() && fwd.notify.is_none());
    }
}
