//! The announce one member of a Legion sends another: which domain its fastrouter serves now
//! (or no longer), signed with the sender's Ed25519 key.
//!
//! ```text
//! "UBC1" | name_len u8 | name | seq u64 BE | unix_ms i64 BE | cmd u8 | key_len u16 BE | key | Ed25519 signature (64)
//! ```
//!
//! The signature covers every byte before it, the command included (stock uWSGI leaves its
//! command byte unsigned). No address travels: the receiver routes to the fastrouter address
//! its members file lists for the sender, so a member can only ever point domains at itself.
//! Nothing secret travels either (a domain name is public; certificates and keys never do), so
//! the datagram is signed, not encrypted.

use openssl::pkey::{PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use std::collections::HashMap;

const MAGIC: &[u8; 4] = b"UBC1";
pub const SIGNATURE_LEN: usize = 64;
/// Room for the longest domain (253 bytes, plus a wildcard dot and `:port`).
pub const MAX_KEY: usize = 300;
pub const MAX_NAME: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Subscribe,
    Unsubscribe,
    /// Serves it, and its certificate has a client CA (`ssl-ca-cluster-domain`): a receiver
    /// routes the domain only once it holds that certificate and its client-CA rule.
    SubscribeProtected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The sending member's name (its line in the members file).
    pub node: String,
    /// Strictly increasing per sender: the replay guard.
    pub seq: u64,
    pub unix_ms: i64,
    pub cmd: Cmd,
    /// The domain (router key), already checked by the sender's validator.
    pub key: String,
}

/// The unsigned part of the datagram.
fn body(a: &Announce) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + a.node.len() + a.key.len() + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.push(a.node.len() as u8);
    out.extend_from_slice(a.node.as_bytes());
    out.extend_from_slice(&a.seq.to_be_bytes());
    out.extend_from_slice(&a.unix_ms.to_be_bytes());
    out.push(match a.cmd {
        Cmd::Subscribe => 0,
        Cmd::Unsubscribe => 1,
        Cmd::SubscribeProtected => 2,
    });
    out.extend_from_slice(&(a.key.len() as u16).to_be_bytes());
    out.extend_from_slice(a.key.as_bytes());
    out
}

/// The signed datagram.
pub fn seal(a: &Announce, key: &PKey<Private>) -> Result<Vec<u8>, String> {
    if a.node.is_empty() || a.node.len() > MAX_NAME || a.key.is_empty() || a.key.len() > MAX_KEY {
        return Err(format!("announce of {:?} by {:?}: name or key length out of range", a.key, a.node));
    }
    let mut out = body(a);
    let sig = Signer::new_without_digest(key)
        .and_then(|mut s| s.sign_oneshot_to_vec(&out))
        .map_err(|e| format!("signing the announce of {}: {e}", a.key))?;
    out.extend_from_slice(&sig);
    Ok(out)
}

/// Decodes a datagram without trusting it: the caller verifies with [`verify`] using the key
/// of the member the datagram names.
pub fn parse(d: &[u8]) -> Result<(Announce, &[u8], &[u8]), String> {
    let short = || format!("{} bytes: truncated", d.len());
    if d.len() < 4 + 1 + 8 + 8 + 1 + 2 + SIGNATURE_LEN || &d[..4] != MAGIC {
        return Err(format!("{} bytes: not a cluster announce", d.len()));
    }
    let (signed, sig) = d.split_at(d.len() - SIGNATURE_LEN);
    let mut at = 4;
    let nlen = signed[at] as usize;
    at += 1;
    let name = signed.get(at..at + nlen).ok_or_else(short)?;
    at += nlen;
    let num = |at: usize| -> Result<[u8; 8], String> {
        signed.get(at..at + 8).and_then(|s| s.try_into().ok()).ok_or_else(short)
    };
    let seq = u64::from_be_bytes(num(at)?);
    let unix_ms = i64::from_be_bytes(num(at + 8)?);
    at += 16;
    let cmd = match signed.get(at) {
        Some(0) => Cmd::Subscribe,
        Some(1) => Cmd::Unsubscribe,
        Some(2) => Cmd::SubscribeProtected,
        Some(c) => return Err(format!("unknown command {c}")),
        None => return Err(short()),
    };
    at += 1;
    let klen = u16::from_be_bytes(signed.get(at..at + 2).and_then(|s| s.try_into().ok()).ok_or_else(short)?) as usize;
    at += 2;
    let key = signed.get(at..at + klen).ok_or_else(short)?;
    if at + klen != signed.len() {
        return Err(format!("{} bytes after the key", signed.len() - at - klen));
    }
    let text = |b: &[u8], what: &str, max: usize| -> Result<String, String> {
        if b.is_empty() || b.len() > max || !b.iter().all(|c| c.is_ascii_graphic()) {
            return Err(format!("{what} is not 1-{max} printable ASCII bytes"));
        }
        Ok(String::from_utf8_lossy(b).into_owned())
    };
    let a = Announce {
        node: text(name, "the node name", MAX_NAME)?,
        seq,
        unix_ms,
        cmd,
        key: text(key, "the key", MAX_KEY)?,
    };
    Ok((a, signed, sig))
}

pub fn verify(signed: &[u8], sig: &[u8], key: &PKey<Public>) -> bool {
    Verifier::new_without_digest(key).and_then(|mut v| v.verify_oneshot(sig, signed)).unwrap_or(false)
}

/// Freshness and replay: an announce must be within `window_ms` of the receiver's clock, and
/// its sequence number above the last one accepted from that member. A sender numbers from
/// its clock in nanoseconds, so a restarted sender still counts up.
///
/// A restarted receiver has forgotten the last numbers: it starts every member at its own
/// start time (`floor`, ns since the epoch), so an announce sent before it started, which an
/// attacker may have captured, is refused although it is still within the window. What is
/// left is the clocks' skew (NTP: milliseconds), not the window's 60 s; and no state file.
pub struct ReplayGuard {
    window_ms: i64,
    floor: u64,
    last: HashMap<String, u64>,
}

impl ReplayGuard {
    pub fn new(window_ms: i64, floor: u64) -> Self {
        ReplayGuard { window_ms, floor, last: HashMap::new() }
    }

    /// `Err(reason)` for a stale or replayed announce; records it otherwise.
    pub fn admit(&mut self, a: &Announce, now_ms: i64) -> Result<(), String> {
        if (a.unix_ms - now_ms).abs() > self.window_ms {
            return Err(format!(
                "stale: sent at {} ms, {} ms from this node's clock (window {} ms)",
                a.unix_ms,
                a.unix_ms - now_ms,
                self.window_ms
            ));
        }
        let last = self.last.get(&a.node).copied().unwrap_or(self.floor);
        if a.seq <= last {
            return Err(format!(
                "replayed: sequence {} not above {last} (the last accepted, or this receiver's start)",
                a.seq
            ));
        }
        self.last.insert(a.node.clone(), a.seq);
        Ok(())
    }
}

/// The sender's numbering: its clock in nanoseconds, never twice the same.
pub struct Sequence(u64);

impl Sequence {
    pub fn new() -> Self {
        Sequence(0)
    }

    pub fn next(&mut self, now_ns: u64) -> u64 {
        self.0 = now_ns.max(self.0 + 1);
        self.0
    }
}

impl Default for Sequence {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::pkey::Id;

    fn keys() -> (PKey<Private>, PKey<Public>) {
        let k = PKey::generate_ed25519().unwrap();
        let p = PKey::public_key_from_raw_bytes(&k.raw_public_key().unwrap(), Id::ED25519).unwrap();
        (k, p)
    }

    fn sample() -> Announce {
        Announce { node: "b".into(), seq: 7, unix_ms: 1_000_000, cmd: Cmd::Subscribe, key: "example.org".into() }
    }

    #[test]
    fn a_sealed_announce_parses_and_verifies_with_the_senders_key_only() {
        let (k, p) = keys();
        let (_, other) = keys();
        let d = seal(&sample(), &k).unwrap();
        let (a, signed, sig) = parse(&d).unwrap();
        assert_eq!(a, sample());
        let protected = Announce { cmd: Cmd::SubscribeProtected, ..sample() };
        assert_eq!(parse(&seal(&protected, &k).unwrap()).unwrap().0, protected);
        assert!(verify(signed, sig, &p));
        assert!(!verify(signed, sig, &other));
    }

    #[test]
    fn any_flipped_bit_breaks_the_signature_or_the_parse() {
        let (k, p) = keys();
        let d = seal(&sample(), &k).unwrap();
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 1;
            if let Ok((_, signed, sig)) = parse(&t) {
                assert!(!verify(signed, sig, &p), "bit flipped at {i} still verifies");
            }
        }
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(parse(b"hello").unwrap_err().contains("not a cluster announce"));
        let (k, _) = keys();
        let mut d = seal(&sample(), &k).unwrap();
        d.insert(40, b'x');
        assert!(parse(&d).is_err());
        assert!(seal(&Announce { key: String::new(), ..sample() }, &k).is_err());
    }

    #[test]
    fn replays_and_stale_announces_are_refused() {
        let mut g = ReplayGuard::new(60_000, 0);
        let a = sample();
        g.admit(&a, 1_000_500).unwrap();
        assert!(g.admit(&a, 1_000_600).unwrap_err().starts_with("replayed"));
        assert!(g.admit(&Announce { seq: 6, ..sample() }, 1_000_600).unwrap_err().starts_with("replayed"));
        g.admit(&Announce { seq: 8, ..sample() }, 1_000_600).unwrap();
        // Another member counts on its own.
        g.admit(&Announce { node: "c".into(), seq: 1, ..sample() }, 1_000_600).unwrap();
        assert!(g.admit(&Announce { seq: 9, ..sample() }, 1_070_001).unwrap_err().starts_with("stale"));
    }

    #[test]
    fn a_restarted_receiver_refuses_what_was_sent_before_it_started() {
        // Started at 1 000 s (ns): a member's announce numbered before that is a capture, even
        // inside the window; the member's next one is numbered after and passes.
        let started = 1_000_000_000_000;
        let mut g = ReplayGuard::new(60_000, started);
        let captured = Announce { seq: started - 2_000_000_000, unix_ms: 998_000, ..sample() };
        assert!(g.admit(&captured, 1_000_100).unwrap_err().starts_with("replayed"));
        g.admit(&Announce { seq: started + 1_000_000, unix_ms: 1_000_001, ..sample() }, 1_000_100).unwrap();
    }

    #[test]
    fn the_sequence_always_grows() {
        let mut s = Sequence::new();
        assert_eq!(s.next(100), 100);
        assert_eq!(s.next(100), 101);
        assert_eq!(s.next(50), 102);
        assert_eq!(s.next(500), 500);
    }
}
