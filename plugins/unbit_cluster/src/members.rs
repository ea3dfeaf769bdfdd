//! The Legion's members file (`unbit-cluster-members`), written by the operator or the node
//! sync: every node's name, where its cluster listener and its fastrouter are, its Ed25519
//! public key (32 bytes, hex: signs what it sends) and its X25519 public key (`x25519_key`:
//! the certificates of `ssl-cluster-domain`s are sealed to it, [`crate::sealed`]; a member
//! without one is sent no certificate).
//!
//! ```json
//! {"members": [{"name": "a", "cluster": "192.168.250.1:3022", "fastrouter": "192.168.250.1:1999",
//!               "public_key": "5d0f...(64 hex digits)", "x25519_key": "9a41...(64 hex digits)"}]}
//! ```

use openssl::pkey::{Id, PKey, Public};
use std::net::SocketAddr;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub cluster: SocketAddr,
    pub fastrouter: SocketAddr,
    pub key: PKey<Public>,
    pub x25519: Option<PKey<Public>>,
}

#[derive(serde::Deserialize)]
struct File {
    members: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    cluster: SocketAddr,
    fastrouter: SocketAddr,
    public_key: String,
    #[serde(default)]
    x25519_key: Option<String>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub fn parse(text: &str) -> Result<Vec<Member>, String> {
    let f: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out: Vec<Member> = Vec::new();
    for e in f.members {
        if e.name.is_empty() || e.name.len() > crate::message::MAX_NAME || !e.name.bytes().all(|c| c.is_ascii_graphic())
        {
            return Err(format!("member name {:?}: 1-64 printable ASCII bytes", e.name));
        }
        if out.iter().any(|m| m.name == e.name) {
            return Err(format!("member {} listed twice", e.name));
        }
        let raw = |field: &str, hex: &str, id: Id| {
            let bytes = unhex(hex)
                .filter(|k| k.len() == 32)
                .ok_or_else(|| format!("member {}: {field} is not 64 hex digits", e.name))?;
            PKey::public_key_from_raw_bytes(&bytes, id).map_err(|err| format!("member {}: {field}: {err}", e.name))
        };
        let key = raw("public_key", &e.public_key, Id::ED25519)?;
        let x25519 = e.x25519_key.as_deref().map(|h| raw("x25519_key", h, Id::X25519)).transpose()?;
        out.push(Member { name: e.name, cluster: e.cluster, fastrouter: e.fastrouter, key, x25519 });
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<Vec<Member>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("the Legion's members file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("the Legion's members file {}: {e}", path.display()))
}

/// The hex form of a node's public key (Ed25519 or X25519), for the members file.
pub fn public_hex(key: &PKey<openssl::pkey::Private>) -> Result<String, String> {
    let raw = key.raw_public_key().map_err(|e| format!("not an Ed25519 or X25519 key: {e}"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_file_parses_and_bad_ones_say_why() {
        let k = PKey::generate_ed25519().unwrap();
        let hex = public_hex(&k).unwrap();
        let one = |name: &str, key: &str| {
            format!(
                r#"{{"name":"{name}","cluster":"10.1.0.1:3022","fastrouter":"10.1.0.1:1999","public_key":"{key}"}}"#
            )
        };
        let ok = format!(r#"{{"members":[{},{}]}}"#, one("a", &hex), one("b", &hex));
        let m = parse(&ok).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].fastrouter.port(), 1999);
        let twice = format!(r#"{{"members":[{},{}]}}"#, one("a", &hex), one("a", &hex));
        assert!(parse(&twice).unwrap_err().contains("listed twice"));
        let short = format!(r#"{{"members":[{}]}}"#, one("a", "abcd"));
        assert!(parse(&short).unwrap_err().contains("64 hex digits"));
        let blank = format!(r#"{{"members":[{}]}}"#, one("a b", &hex));
        assert!(parse(&blank).unwrap_err().contains("printable"));
        assert!(m[0].x25519.is_none());
        let x = public_hex(&PKey::generate_x25519().unwrap()).unwrap();
        let sealed =
            format!(r#"{{"members":[{}]}}"#, one("a", &hex).replace('}', &format!(r#","x25519_key":"{x}"}}"#)));
        assert!(parse(&sealed).unwrap()[0].x25519.is_some());
        let bad = format!(r#"{{"members":[{}]}}"#, one("a", &hex).replace('}', r#","x25519_key":"00"}"#));
        assert!(parse(&bad).unwrap_err().contains("x25519_key is not 64 hex digits"));
    }
}
