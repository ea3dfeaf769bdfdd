//! Who owns which domain on this node: the control API's `GET /api/node/v1/domains` answer,
//! written by the node sync as `domains.json`:
//!
//! ```json
//! [{"name": "example.org", "owner_uids": [30001, 30004], "public_key_pem": "-----BEGIN PUBLIC KEY-----...",
//!   "tls": "auto"}]
//! ```
//!
//! `owner_uids` are the owner's containers on this node; the key is the owner's subscription
//! key (the public half of every one of its containers' `~/etc/uwsgi.key`); `tls` (optional,
//! `"off"` when absent) is `"auto"` when the node keeps a certificate for the name itself
//! (`unbit-acme`).
//!
//! Read by the subscription validator (who may announce a domain) and by the router's front
//! door (a domain with no live backend is a known one: 503, not 404; the ACME challenges of a
//! `tls: auto` name go to the issuer, [`auto_tls_names`]), with the same lookup.

use openssl::hash::{hash, MessageDigest};
use openssl::pkey::{PKey, Public};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// One domain (or wildcard `.example.org`) and its owner, with the key already parsed.
pub struct Domain {
    pub name: String,
    pub owner_uids: BTreeSet<u32>,
    pub key: PKey<Public>,
    /// SHA-256 of the key's DER form: tells a changed key from the same key re-sent.
    pub key_fingerprint: [u8; 32],
    pub tls: Tls,
}

/// Whether the node gets a certificate for the name itself (the control API's `tls` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tls {
    #[default]
    Off,
    /// `unbit-acme` keeps a certificate for the name (HTTP-01 through the front door).
    Auto,
}

impl Tls {
    /// The file's `tls` value: absent or `"off"`, `"auto"`; `None` for a mode this build does
    /// not know (a newer API), which readers take as [`Tls::Off`]: nothing is routed to the
    /// issuer or ordered for a name on a guess.
    pub fn parse(value: Option<&str>) -> Option<Tls> {
        match value {
            None | Some("off") => Some(Tls::Off),
            Some("auto") => Some(Tls::Auto),
            Some(_) => None,
        }
    }
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").field("name", &self.name).field("owner_uids", &self.owner_uids).finish()
    }
}

#[derive(Deserialize)]
struct RawDomain {
    name: String,
    owner_uids: Vec<u32>,
    public_key_pem: String,
    #[serde(default)]
    tls: Option<String>,
}

/// The parsed file. Lookups follow the router's own `subscription-dotsplit` walk, so the
/// validator's idea of who owns `a.b.example.org` is the router's idea of what serves it.
#[derive(Default, Debug)]
pub struct DomainTable {
    by_name: HashMap<String, Arc<Domain>>,
}

/// A file that loaded, and the entries in it that could not be used (each with its reason).
pub struct Loaded {
    pub table: DomainTable,
    pub skipped: Vec<String>,
}

/// Where the node sync writes the file unless the instance's config says otherwise
/// (`unbit-subscriptions-domains`).
pub const DEFAULT_PATH: &str = "/var/lib/unbit/domains.json";

/// At most this many names are tried, as the router does (`a.b.c.d.e` → 5 tries).
const DOTSPLIT_TRIES: usize = 5;

impl DomainTable {
    /// Parses the file. A syntax error rejects the whole file (the caller keeps its last good
    /// table); a bad entry (name, key) is skipped and reported, the others load.
    pub fn from_json(bytes: &[u8]) -> Result<Loaded, String> {
        let raw: Vec<RawDomain> = serde_json::from_slice(bytes).map_err(|e| format!("not a domains list: {e}"))?;
        let mut by_name = HashMap::new();
        let mut skipped = Vec::new();
        for r in raw {
            if !is_domain_name(&r.name) {
                skipped.push(format!("{:?}: not a domain name", r.name));
                continue;
            }
            let key = match PKey::public_key_from_pem(r.public_key_pem.as_bytes()) {
                Ok(k) => k,
                Err(e) => {
                    skipped.push(format!("{}: unreadable public key ({e})", r.name));
                    continue;
                }
            };
            let der = key.public_key_to_der().map_err(|e| format!("{}: {e}", r.name))?;
            let digest = hash(MessageDigest::sha256(), &der).map_err(|e| e.to_string())?;
            let mut key_fingerprint = [0u8; 32];
            key_fingerprint.copy_from_slice(&digest);
            let domain = Domain {
                name: r.name.clone(),
                owner_uids: r.owner_uids.into_iter().collect(),
                key,
                key_fingerprint,
                tls: Tls::parse(r.tls.as_deref()).unwrap_or_default(),
            };
            if by_name.insert(r.name.clone(), Arc::new(domain)).is_some() {
                skipped.push(format!("{}: listed twice, the last entry wins", r.name));
            }
        }
        Ok(Loaded { table: DomainTable { by_name }, skipped })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The entry that decides who may announce `key` (a subscription key, `:port` allowed):
    /// the name itself, else the nearest wildcard above it (`a.example.org` → `.example.org`).
    /// A specific entry always wins over a wildcard, so a customer owning `.example.org`
    /// cannot take `shop.example.org` from the customer who registered that name.
    pub fn owner_of(&self, key: &str) -> Option<&Arc<Domain>> {
        let name = key.rsplit_once(':').map_or(key, |(host, _port)| host);
        if let Some(d) = self.by_name.get(name) {
            return Some(d);
        }
        // `a.b.example.org` → `.b.example.org`, `.example.org`; `.b.example.org` → `.example.org`.
        let mut rest = name.strip_prefix('.').unwrap_or(name);
        for _ in 0..DOTSPLIT_TRIES {
            let (_, parent) = rest.split_once('.')?;
            if let Some(d) = self.by_name.get(&format!(".{parent}")) {
                return Some(d);
            }
            rest = parent;
        }
        None
    }
}

/// The exact names of the file whose `tls` is `"auto"` (wildcards never are: HTTP-01 cannot
/// prove them), read without parsing the owners' keys: the front door's router processes
/// read the file on a challenge request, in their event loop. A file that is not a list of
/// entries is an error (the caller keeps its last good set); a bad entry is left out.
pub fn auto_tls_names(bytes: &[u8]) -> Result<HashSet<String>, String> {
    #[derive(Deserialize)]
    struct NameAndTls {
        name: String,
        #[serde(default)]
        tls: Option<String>,
    }
    let raw: Vec<NameAndTls> = serde_json::from_slice(bytes).map_err(|e| format!("not a domains list: {e}"))?;
    Ok(raw
        .into_iter()
        .filter(|e| Tls::parse(e.tls.as_deref()) == Some(Tls::Auto))
        .filter(|e| !e.name.starts_with('.') && is_domain_name(&e.name))
        .map(|e| e.name)
        .collect())
}

/// Whether `name` is a domain in the form the control API stores (lowercase IDNA ASCII, at
/// least two labels, an optional leading `.` for a wildcard): `domain_names`' rule, checked
/// again here because the file is input to a root-run service.
pub fn is_domain_name(name: &str) -> bool {
    domain_names::is_canonical(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;

    pub fn public_pem(bits: u32) -> String {
        let rsa = Rsa::generate(bits).unwrap();
        String::from_utf8(PKey::from_rsa(rsa).unwrap().public_key_to_pem().unwrap()).unwrap()
    }

    fn table(entries: &[(&str, &[u32])]) -> DomainTable {
        let pem = public_pem(1024);
        let list: Vec<_> = entries
            .iter()
            .map(|(n, u)| serde_json::json!({"name": n, "owner_uids": u, "public_key_pem": pem}))
            .collect();
        DomainTable::from_json(serde_json::to_string(&list).unwrap().as_bytes()).unwrap().table
    }

    #[test]
    fn exact_names_win_over_wildcards_and_wildcards_cover_subdomains() {
        let t = table(&[("example.org", &[1]), (".example.org", &[2]), ("shop.example.org", &[3])]);
        let owner = |k: &str| t.owner_of(k).map(|d| (d.name.clone(), *d.owner_uids.iter().next().unwrap()));
        assert_eq!(owner("example.org"), Some(("example.org".into(), 1)));
        assert_eq!(owner("a.example.org"), Some((".example.org".into(), 2)));
        assert_eq!(owner("a.b.example.org"), Some((".example.org".into(), 2)));
        assert_eq!(owner(".b.example.org"), Some((".example.org".into(), 2)));
        assert_eq!(owner(".example.org"), Some((".example.org".into(), 2)));
        assert_eq!(owner("shop.example.org"), Some(("shop.example.org".into(), 3)));
        assert_eq!(owner("shop.example.org:8080"), Some(("shop.example.org".into(), 3)));
        assert_eq!(owner("example.com"), None);
        assert_eq!(owner("org"), None);
        // The bare name is not covered by its wildcard (the router does not route it there).
        let only_wildcard = table(&[(".example.net", &[2])]);
        assert!(only_wildcard.owner_of("example.net").is_none());
    }

    #[test]
    fn the_tls_field_is_read_and_only_exact_auto_names_are_listed() {
        let pem = public_pem(1024);
        let json = serde_json::json!([
            {"name": "auto.org", "owner_uids": [1], "public_key_pem": pem, "tls": "auto"},
            {"name": "off.org", "owner_uids": [1], "public_key_pem": pem, "tls": "off"},
            {"name": "plain.org", "owner_uids": [1], "public_key_pem": pem},
            {"name": "newer.org", "owner_uids": [1], "public_key_pem": pem, "tls": "dns-01"},
            {"name": ".wild.org", "owner_uids": [1], "public_key_pem": pem, "tls": "auto"},
            {"name": "Upper.org", "owner_uids": [1], "public_key_pem": pem, "tls": "auto"},
        ]);
        let bytes = json.to_string();
        let t = DomainTable::from_json(bytes.as_bytes()).unwrap().table;
        let tls = |n: &str| t.owner_of(n).map(|d| d.tls);
        assert_eq!(tls("auto.org"), Some(Tls::Auto));
        assert_eq!(tls("off.org"), Some(Tls::Off));
        assert_eq!(tls("plain.org"), Some(Tls::Off));
        assert_eq!(tls("newer.org"), Some(Tls::Off), "an unknown mode still serves the name");
        let names = auto_tls_names(bytes.as_bytes()).unwrap();
        assert_eq!(names, HashSet::from(["auto.org".to_string()]));
        assert!(auto_tls_names(b"{}").is_err());
    }

    #[test]
    fn bad_entries_are_skipped_with_a_reason_and_bad_files_refused() {
        let pem = public_pem(1024);
        let json = serde_json::json!([
            {"name": "good.org", "owner_uids": [30001], "public_key_pem": pem},
            {"name": "Bad Name", "owner_uids": [30001], "public_key_pem": pem},
            {"name": "nokey.org", "owner_uids": [30001], "public_key_pem": "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n"},
        ]);
        let loaded = DomainTable::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(loaded.table.len(), 1);
        assert_eq!(loaded.skipped.len(), 2, "{:?}", loaded.skipped);
        assert!(loaded.skipped[0].contains("not a domain name"));
        assert!(loaded.skipped[1].contains("nokey.org: unreadable public key"));
        assert!(DomainTable::from_json(b"{\"name\": 1}").is_err());
    }

    /// Only names as the API stores them load: the router and the validator look keys up in
    /// that form, so a name in any other would never match.
    #[test]
    fn names_load_only_in_the_apis_form() {
        let t = table(&[
            ("xn--bcher-kva.example", &[1]),
            (".wild.example", &[1]),
            ("Upper.example", &[1]),
            ("dot.example.", &[1]),
            ("port.example:80", &[1]),
            ("bücher.example", &[1]),
            ("1.2.3.4", &[1]),
            ("xn--zz.example", &[1]),
        ]);
        assert_eq!(t.len(), 2);
        assert!(t.owner_of("xn--bcher-kva.example").is_some() && t.owner_of("a.wild.example").is_some());
    }
}
