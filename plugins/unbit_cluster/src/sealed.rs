//! A certificate one member gives another: the index entry of an `ssl-cluster-domain` (chain
//! and private key, as the sender's validator wrote it) sealed to the recipient's own X25519
//! key, signed with the sender's Ed25519 key. So the Lord can terminate TLS for a domain whose
//! containers all run on other nodes, and the key is never readable on the wire.
//!
//! ```text
//! "UBS1" | from_len u8 | from | to_len u8 | to | seq u64 BE | unix_ms i64 BE | op u8 | name_len u16 BE | name
//!        [op = put:  ephemeral X25519 public 32 | ct_len u32 BE | ChaCha20-Poly1305 ciphertext + tag]
//!        | Ed25519 signature (64) over every byte before it
//! ```
//!
//! * **Sealing**: a fresh ephemeral X25519 key per datagram, ECDH with the recipient's static
//!   key (its `x25519_key` in the members file); HKDF-SHA256 (salt: both public keys, info:
//!   this format's label) gives a 32-byte key used for this one datagram only, so the nonce can
//!   be constant. The header up to the ephemeral key is the AEAD's associated data: the
//!   ciphertext cannot be moved under another name, recipient or sequence number.
//! * **Signing** (encrypt, then sign everything): only the named member can have made it;
//!   the recipient's name is signed, so a datagram sealed for C is no use at B.
//! * **Replays**: the same rules as the announces (window, strictly increasing sequence per
//!   sender), in a guard of their own.
//! * `op = drop`: the sender's entry for the name is gone (the vassal switched to a plain
//!   `cluster-domain`); nothing secret, signed only.
//!
//! All of it is OpenSSL's (X25519, HKDF, ChaCha20-Poly1305, Ed25519): no cipher is written here.

use crate::message::MAX_NAME;
use openssl::md::Md;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::sign::Signer;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};

const MAGIC: &[u8; 4] = b"UBS1";
const LABEL: &[u8] = b"unbit-cluster sealed sni entry v1";
const TAG_LEN: usize = 16;
/// One datagram per key per member: what fits in a UDP datagram, with room for the header.
pub const MAX_ENTRY: usize = 60 * 1024;
/// The longest datagram a receiver reads.
pub const MAX_DATAGRAM: usize = 65_507;
const SIGNATURE_LEN: usize = crate::message::SIGNATURE_LEN;

/// Whether a datagram is a sealed entry (else an announce).
pub fn is_sealed(d: &[u8]) -> bool {
    d.starts_with(MAGIC)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Drop,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sending member.
    pub node: String,
    /// The member it is sealed to.
    pub to: String,
    pub seq: u64,
    pub unix_ms: i64,
    pub op: Op,
    /// The index entry's name (the router key: `example.org`, `.example.org`).
    pub name: String,
}

/// The sealed part of a parsed datagram, opened with [`open`].
#[derive(Debug)]
pub struct Envelope<'a> {
    aad: &'a [u8],
    ephemeral: &'a [u8],
    ciphertext: &'a [u8],
}

fn header(h: &Header) -> Result<Vec<u8>, String> {
    let bad = |s: &str, max: usize| s.is_empty() || s.len() > max || !s.bytes().all(|c| c.is_ascii_graphic());
    if bad(&h.node, MAX_NAME) || bad(&h.to, MAX_NAME) || bad(&h.name, crate::message::MAX_KEY) {
        return Err(format!("sealed entry {:?} from {:?} to {:?}: a name is out of range", h.name, h.node, h.to));
    }
    let mut out = Vec::with_capacity(64 + h.name.len());
    out.extend_from_slice(MAGIC);
    out.push(h.node.len() as u8);
    out.extend_from_slice(h.node.as_bytes());
    out.push(h.to.len() as u8);
    out.extend_from_slice(h.to.as_bytes());
    out.extend_from_slice(&h.seq.to_be_bytes());
    out.extend_from_slice(&h.unix_ms.to_be_bytes());
    out.push(match h.op {
        Op::Put => 0,
        Op::Drop => 1,
    });
    out.extend_from_slice(&(h.name.len() as u16).to_be_bytes());
    out.extend_from_slice(h.name.as_bytes());
    Ok(out)
}

/// The per-datagram key: HKDF-SHA256 of the X25519 shared secret.
fn derive(shared: &[u8], ephemeral: &[u8], recipient: &[u8]) -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    (|| -> Result<(), openssl::error::ErrorStack> {
        let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
        ctx.derive_init()?;
        ctx.set_hkdf_md(Md::sha256())?;
        ctx.set_hkdf_key(shared)?;
        ctx.set_hkdf_salt(&[ephemeral, recipient].concat())?;
        ctx.add_hkdf_info(LABEL)?;
        ctx.derive(Some(&mut key))?;
        Ok(())
    })()
    .map_err(|e| format!("HKDF: {e}"))?;
    Ok(key)
}

fn x25519(mine: &PKey<Private>, theirs: &PKey<Public>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    (|| -> Result<(), openssl::error::ErrorStack> {
        let mut ctx = PkeyCtx::new(mine)?;
        ctx.derive_init()?;
        ctx.derive_set_peer(theirs)?;
        ctx.derive_to_vec(&mut out)?;
        Ok(())
    })()
    .map_err(|e| format!("X25519: {e}"))?;
    // An all-zero secret means a low-order public key: refuse rather than encrypt with it.
    if out.iter().all(|&b| b == 0) {
        return Err("X25519: the peer's public key is of low order".into());
    }
    Ok(out)
}

const NONCE: [u8; 12] = [0; 12];

/// The signed datagram; `entry` (for [`Op::Put`]) sealed to `recipient` (its X25519 public key).
pub fn seal(
    h: &Header,
    entry: Option<&[u8]>,
    sign: &PKey<Private>,
    recipient: &PKey<Public>,
) -> Result<Vec<u8>, String> {
    let mut out = header(h)?;
    match (h.op, entry) {
        (Op::Put, Some(entry)) => {
            if entry.len() > MAX_ENTRY {
                return Err(format!("the entry of {} is {} bytes, over {MAX_ENTRY}", h.name, entry.len()));
            }
            let eph = PKey::generate_x25519().map_err(|e| format!("X25519 key: {e}"))?;
            let eph_pub = eph.raw_public_key().map_err(|e| e.to_string())?;
            let to_pub = recipient.raw_public_key().map_err(|e| format!("member {}'s X25519 key: {e}", h.to))?;
            let key = derive(&x25519(&eph, recipient)?, &eph_pub, &to_pub)?;
            out.extend_from_slice(&eph_pub);
            let mut tag = [0u8; TAG_LEN];
            let ct = encrypt_aead(Cipher::chacha20_poly1305(), &key, Some(&NONCE), &out, entry, &mut tag)
                .map_err(|e| format!("sealing the entry of {}: {e}", h.name))?;
            out.extend_from_slice(&((ct.len() + TAG_LEN) as u32).to_be_bytes());
            out.extend_from_slice(&ct);
            out.extend_from_slice(&tag);
        }
        (Op::Drop, None) => {}
        _ => return Err(format!("sealed entry of {}: a put carries an entry, a drop none", h.name)),
    }
    let sig = Signer::new_without_digest(sign)
        .and_then(|mut s| s.sign_oneshot_to_vec(&out))
        .map_err(|e| format!("signing the sealed entry of {}: {e}", h.name))?;
    out.extend_from_slice(&sig);
    Ok(out)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn rest(&self) -> usize {
        self.bytes.len() - self.at
    }
}

/// Decodes a datagram without trusting it: `(header, envelope for a put, signed bytes,
/// signature)`. The caller checks the signature ([`crate::message::verify`]) with the key of
/// the member the header names before anything else.
#[allow(clippy::type_complexity)]
pub fn parse(d: &[u8]) -> Result<(Header, Option<Envelope<'_>>, &[u8], &[u8]), String> {
    let short = || format!("{} bytes: truncated", d.len());
    if d.len() < 4 + 2 + 17 + 3 + SIGNATURE_LEN || !is_sealed(d) {
        return Err(format!("{} bytes: not a sealed entry", d.len()));
    }
    let (signed, sig) = d.split_at(d.len() - SIGNATURE_LEN);
    let mut cur = Cursor { bytes: signed, at: 4 };
    let mut take = |n: usize| cur.take(n).ok_or_else(short);
    let text = |b: &[u8], what: &str, max: usize| -> Result<String, String> {
        if b.is_empty() || b.len() > max || !b.iter().all(|c| c.is_ascii_graphic()) {
            return Err(format!("{what} is not 1-{max} printable ASCII bytes"));
        }
        Ok(String::from_utf8_lossy(b).into_owned())
    };
    let n = take(1)?[0] as usize;
    let node = text(take(n)?, "the sender's name", MAX_NAME)?;
    let n = take(1)?[0] as usize;
    let to = text(take(n)?, "the recipient's name", MAX_NAME)?;
    let seq = u64::from_be_bytes(take(8)?.try_into().map_err(|_| short())?);
    let unix_ms = i64::from_be_bytes(take(8)?.try_into().map_err(|_| short())?);
    let op = match take(1)?[0] {
        0 => Op::Put,
        1 => Op::Drop,
        c => return Err(format!("unknown operation {c}")),
    };
    let n = u16::from_be_bytes(take(2)?.try_into().map_err(|_| short())?) as usize;
    let name = text(take(n)?, "the name", crate::message::MAX_KEY)?;
    let envelope = match op {
        Op::Drop => None,
        Op::Put => {
            let ephemeral = take(32)?;
            let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| short())?) as usize;
            let ciphertext = take(n)?;
            if n < TAG_LEN {
                return Err(short());
            }
            // The associated data: everything before the length.
            let aad_end = signed.len() - cur.rest() - n - 4;
            Some(Envelope { aad: &signed[..aad_end], ephemeral, ciphertext })
        }
    };
    if cur.rest() != 0 {
        return Err(format!("{} bytes after the entry", cur.rest()));
    }
    Ok((Header { node, to, seq, unix_ms, op, name }, envelope, signed, sig))
}

/// The entry, decrypted with this node's X25519 key; an error when it was not sealed to that
/// key or was altered.
pub fn open(e: &Envelope<'_>, mine: &PKey<Private>) -> Result<Vec<u8>, String> {
    let eph = PKey::public_key_from_raw_bytes(e.ephemeral, Id::X25519).map_err(|e| format!("ephemeral key: {e}"))?;
    let my_pub = mine.raw_public_key().map_err(|e| e.to_string())?;
    let key = derive(&x25519(mine, &eph)?, e.ephemeral, &my_pub)?;
    let (ct, tag) = e.ciphertext.split_at(e.ciphertext.len() - TAG_LEN);
    decrypt_aead(Cipher::chacha20_poly1305(), &key, Some(&NONCE), e.aad, ct, tag)
        .map_err(|_| "does not decrypt with this node's X25519 key (altered, or sealed to another key)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(k: &PKey<Private>, id: Id) -> PKey<Public> {
        PKey::public_key_from_raw_bytes(&k.raw_public_key().unwrap(), id).unwrap()
    }

    fn sample(op: Op) -> Header {
        Header { node: "c".into(), to: "b".into(), seq: 9, unix_ms: 1_000_000, op, name: "secure.example".into() }
    }

    #[test]
    fn a_sealed_entry_opens_with_the_recipients_key_only_and_hides_the_key() {
        let (sign, b, other) =
            (PKey::generate_ed25519().unwrap(), PKey::generate_x25519().unwrap(), PKey::generate_x25519().unwrap());
        let entry = b"unbit-sni 1\n...PRIVATE KEY BYTES...".to_vec();
        let d = seal(&sample(Op::Put), Some(&entry), &sign, &public(&b, Id::X25519)).unwrap();
        assert!(!d.windows(11).any(|w| w == b"PRIVATE KEY"), "the entry travels encrypted");
        let (h, env, signed, sig) = parse(&d).unwrap();
        assert_eq!(h, sample(Op::Put));
        assert!(crate::message::verify(signed, sig, &public(&sign, Id::ED25519)));
        let env = env.unwrap();
        assert_eq!(open(&env, &b).unwrap(), entry);
        assert!(open(&env, &other).unwrap_err().contains("does not decrypt"));
        // Two seals of the same entry differ (a fresh ephemeral key each).
        assert_ne!(d, seal(&sample(Op::Put), Some(&entry), &sign, &public(&b, Id::X25519)).unwrap());
    }

    #[test]
    fn any_flipped_bit_breaks_the_signature_the_parse_or_the_seal() {
        let (sign, b) = (PKey::generate_ed25519().unwrap(), PKey::generate_x25519().unwrap());
        let vk = public(&sign, Id::ED25519);
        let d = seal(&sample(Op::Put), Some(b"entry"), &sign, &public(&b, Id::X25519)).unwrap();
        for i in 0..d.len() {
            let mut t = d.clone();
            t[i] ^= 1;
            if let Ok((_, env, signed, sig)) = parse(&t) {
                assert!(!crate::message::verify(signed, sig, &vk), "bit flipped at {i} still verifies");
                // A member that signs what it altered still cannot change what it sealed.
                if let Some(env) = env {
                    if i < d.len() - SIGNATURE_LEN {
                        assert!(open(&env, &b).is_err(), "bit flipped at {i} still opens");
                    }
                }
            }
        }
    }

    #[test]
    fn drops_carry_nothing_and_bad_input_says_why() {
        let (sign, b) = (PKey::generate_ed25519().unwrap(), PKey::generate_x25519().unwrap());
        let bp = public(&b, Id::X25519);
        let d = seal(&sample(Op::Drop), None, &sign, &bp).unwrap();
        let (h, env, _, _) = parse(&d).unwrap();
        assert_eq!((h.op, env.is_none()), (Op::Drop, true));
        assert!(seal(&sample(Op::Drop), Some(b"x"), &sign, &bp).is_err());
        assert!(seal(&sample(Op::Put), None, &sign, &bp).is_err());
        assert!(seal(&sample(Op::Put), Some(&vec![0; MAX_ENTRY + 1]), &sign, &bp).unwrap_err().contains("over"));
        assert!(parse(b"UBS1short").unwrap_err().contains("not a sealed entry"));
        let mut long = seal(&sample(Op::Put), Some(b"entry"), &sign, &bp).unwrap();
        long.insert(long.len() - SIGNATURE_LEN, 0);
        assert!(parse(&long).is_err());
        assert!(is_sealed(&d) && !is_sealed(b"UBC1"));
    }
}
