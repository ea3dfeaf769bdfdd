//! The uwsgi request packet, as the HTTP router sends it to a backend (the uwsgi protocol): a
//! 4-byte header `modifier1, size (u16 LE), modifier2`, then `size` bytes of variables, each
//! `u16 LE key length, key, u16 LE value length, value`. The body follows the packet.
//!
//! Variables stay bytes and keep their order and repetitions: the proxy only takes out the
//! ones it owns and adds `CONTENT_LENGTH`, and must hand the rest to the app exactly as the
//! router produced them.

use std::fmt;
use std::io::{self, Read};

/// Bytes before the variables.
pub const HEADER_LEN: usize = 4;
/// The variables' size is a 16-bit field.
pub const MAX_VARS_LEN: usize = u16::MAX as usize;

/// Why bytes are not a uwsgi packet, or a packet cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketError(pub String);

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PacketError {}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub modifier1: u8,
    pub modifier2: u8,
    /// `(key, value)` in packet order; a key may repeat.
    pub vars: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Packet {
    /// Decodes the variables block (the `size` bytes after the header). Every variable must be
    /// complete and the block must end exactly after the last one.
    pub fn decode(modifier1: u8, modifier2: u8, vars: &[u8]) -> Result<Packet, PacketError> {
        let mut packet = Packet { modifier1, modifier2, vars: Vec::new() };
        let mut rest = vars;
        while !rest.is_empty() {
            let offset = vars.len() - rest.len();
            let key = take_field(&mut rest).ok_or_else(|| PacketError(format!("truncated key at byte {offset}")))?;
            let value = take_field(&mut rest).ok_or_else(|| {
                PacketError(format!("truncated value of {:?} at byte {offset}", String::from_utf8_lossy(key)))
            })?;
            packet.vars.push((key.to_vec(), value.to_vec()));
        }
        Ok(packet)
    }

    /// Reads one packet (header and variables, not the body) from `stream`.
    pub fn read_from(stream: &mut impl Read) -> io::Result<Packet> {
        let mut header = [0u8; HEADER_LEN];
        stream.read_exact(&mut header)?;
        let size = usize::from(u16::from_le_bytes([header[1], header[2]]));
        let mut vars = vec![0u8; size];
        stream.read_exact(&mut vars)?;
        Packet::decode(header[0], header[3], &vars).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The packet's bytes: header and variables.
    pub fn encode(&self) -> Result<Vec<u8>, PacketError> {
        let mut out = vec![self.modifier1, 0, 0, self.modifier2];
        for (key, value) in &self.vars {
            for field in [key, value] {
                let len = u16::try_from(field.len()).map_err(|_| {
                    PacketError(format!("variable {:?} is longer than 65535 bytes", String::from_utf8_lossy(key)))
                })?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(field);
            }
        }
        let size = u16::try_from(out.len() - HEADER_LEN).map_err(|_| {
            PacketError(format!("the variables take {} bytes, over uwsgi's {MAX_VARS_LEN}", out.len() - HEADER_LEN))
        })?;
        out[1..3].copy_from_slice(&size.to_le_bytes());
        Ok(out)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.vars.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v.as_slice())
    }

    /// Removes every `key` variable; returns their values in order.
    pub fn take(&mut self, key: &str) -> Vec<Vec<u8>> {
        let mut taken = Vec::new();
        self.vars.retain_mut(|(k, v)| {
            if k == key.as_bytes() {
                taken.push(std::mem::take(v));
                false
            } else {
                true
            }
        });
        taken
    }

    pub fn push(&mut self, key: &str, value: &[u8]) {
        self.vars.push((key.as_bytes().to_vec(), value.to_vec()));
    }
}

/// A `u16 LE length, bytes` field off the front of `rest`.
fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len));
    let field = tail.get(..len)?;
    *rest = &tail[len..];
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet as stock uWSGI's router lays it out, written by hand.
    fn router_bytes() -> Vec<u8> {
        let mut vars = Vec::new();
        for (k, v) in [("REQUEST_METHOD", "POST"), ("HTTP_HOST", "example.test"), ("EMPTY", "")] {
            vars.extend_from_slice(&(k.len() as u16).to_le_bytes());
            vars.extend_from_slice(k.as_bytes());
            vars.extend_from_slice(&(v.len() as u16).to_le_bytes());
            vars.extend_from_slice(v.as_bytes());
        }
        let mut out = vec![5, 0, 0, 7];
        out[1..3].copy_from_slice(&(vars.len() as u16).to_le_bytes());
        out.extend_from_slice(&vars);
        out
    }

    #[test]
    fn decodes_what_the_router_sends_and_encodes_it_back_byte_for_byte() {
        let bytes = router_bytes();
        let packet = Packet::read_from(&mut &bytes[..]).unwrap();
        assert_eq!((packet.modifier1, packet.modifier2), (5, 7));
        assert_eq!(packet.get("HTTP_HOST"), Some(&b"example.test"[..]));
        assert_eq!(packet.get("EMPTY"), Some(&b""[..]));
        assert_eq!(packet.get("MISSING"), None);
        assert_eq!(packet.encode().unwrap(), bytes);
    }

    #[test]
    fn reads_only_the_packet_and_leaves_the_body() {
        let mut bytes = router_bytes();
        bytes.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        let mut stream = &bytes[..];
        Packet::read_from(&mut stream).unwrap();
        assert_eq!(stream, b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn take_removes_every_repetition_and_keeps_the_order() {
        let mut packet = Packet::default();
        for (k, v) in [("A", "1"), ("X", "x1"), ("B", "2"), ("X", "x2"), ("C", "3")] {
            packet.push(k, v.as_bytes());
        }
        assert_eq!(packet.take("X"), vec![b"x1".to_vec(), b"x2".to_vec()]);
        assert!(packet.take("X").is_empty());
        let keys: Vec<&[u8]> = packet.vars.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(keys, [b"A", b"B", b"C"]);
    }

    #[test]
    fn refuses_truncated_variables() {
        let bytes = router_bytes();
        let vars = &bytes[HEADER_LEN..];
        for cut in 1..vars.len() {
            // Cutting after a whole variable (REQUEST_METHOD takes 2+14+2+4 bytes, HTTP_HOST
            // 2+9+2+12) leaves a valid, shorter packet; anywhere else is a truncated field.
            let whole = [22, 47].contains(&cut);
            assert_eq!(Packet::decode(0, 0, &vars[..cut]).is_ok(), whole, "cut at {cut}");
        }
        // The header promises more than the stream holds.
        assert_eq!(Packet::read_from(&mut &bytes[..bytes.len() - 1]).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        // A stray byte after the last variable.
        let mut extra = vars.to_vec();
        extra.push(0);
        assert!(Packet::decode(0, 0, &extra).is_err());
    }

    #[test]
    fn refuses_to_encode_more_than_uwsgi_can_carry() {
        let mut packet = Packet::default();
        packet.push("BIG", &vec![b'x'; MAX_VARS_LEN + 1]);
        assert!(packet.encode().unwrap_err().0.contains("BIG"));
        let mut packet = Packet::default();
        packet.push("A", &vec![b'x'; 40_000]);
        packet.push("B", &vec![b'x'; 40_000]);
        assert!(packet.encode().unwrap_err().0.contains("65535"));
        // The largest packet that fits: 4 length bytes, a 1-byte key, the value.
        let mut packet = Packet::default();
        packet.push("A", &vec![b'x'; MAX_VARS_LEN - 5]);
        let bytes = packet.encode().unwrap();
        assert_eq!(Packet::read_from(&mut &bytes[..]).unwrap(), packet);
    }
}
