//! Which names this node gets certificates for: the entries of the node's `domains.json`
//! (`GET /api/node/v1/domains`, written by `unbit-node-sync`) whose `tls` is `"auto"`.
//!
//! ```json
//! [{"name": "example.org", "owner_uids": [30001], "public_key_pem": "...", "tls": "auto"}]
//! ```
//!
//! The file is input to a root-run service: every name is checked against the API's grammar
//! again (it becomes a directory name in the store), and wildcards are left out (HTTP-01 cannot
//! prove them; the API refuses `tls: auto` on them too).

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A name to keep a certificate for, and the containers of its owner on this node (whose logs
/// hear about failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub owner_uids: BTreeSet<u32>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    #[serde(default)]
    owner_uids: Vec<u32>,
    #[serde(default)]
    tls: Option<String>,
}

/// The parsed file: the wanted names (sorted) and the entries left out, each with its reason.
#[derive(Debug, Default)]
pub struct Parsed {
    pub wanted: Vec<Wanted>,
    pub skipped: Vec<String>,
}

/// Parses the file's bytes. A file that is not a list of entries is an error (the caller keeps
/// its last good list); a bad entry is skipped and reported.
pub fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let entries: Vec<Entry> = serde_json::from_slice(bytes).map_err(|e| format!("not a domains list: {e}"))?;
    let mut out = Parsed::default();
    let mut by_name: BTreeMap<String, Wanted> = BTreeMap::new();
    for e in entries {
        match domain_table::Tls::parse(e.tls.as_deref()) {
            Some(domain_table::Tls::Off) => continue,
            Some(domain_table::Tls::Auto) => {}
            None => {
                let mode = e.tls.unwrap_or_default();
                out.skipped.push(format!("{}: unknown tls mode {mode:?} (known: off, auto)", e.name));
                continue;
            }
        }
        if !domain_table::is_domain_name(&e.name) {
            out.skipped.push(format!("{:?}: not a domain name", e.name));
            continue;
        }
        if e.name.starts_with('.') {
            out.skipped.push(format!("{}: a wildcard needs DNS-01, which this issuer does not do", e.name));
            continue;
        }
        let owners = e.owner_uids.into_iter().collect();
        if by_name.insert(e.name.clone(), Wanted { name: e.name.clone(), owner_uids: owners }).is_some() {
            out.skipped.push(format!("{}: listed twice, the last entry wins", e.name));
        }
    }
    out.wanted = by_name.into_values().collect();
    Ok(out)
}

/// Reads and parses the file; a missing file is an empty list (a node whose sync has not run
/// yet has no domains).
pub fn read(path: &Path) -> Result<Parsed, String> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Parsed::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_names_with_auto_tls_are_wanted() {
        let json = br#"[
            {"name": "b.example.org", "owner_uids": [30002, 30001], "public_key_pem": "k", "tls": "auto"},
            {"name": "a.example.org", "owner_uids": [30001], "public_key_pem": "k", "tls": "auto"},
            {"name": "plain.example.org", "owner_uids": [30001], "public_key_pem": "k"},
            {"name": "off.example.org", "owner_uids": [30001], "public_key_pem": "k", "tls": "off"},
            {"name": ".wild.example.org", "owner_uids": [30001], "public_key_pem": "k", "tls": "auto"},
            {"name": "../etc", "owner_uids": [30001], "public_key_pem": "k", "tls": "auto"},
            {"name": "x.example.org", "owner_uids": [30001], "public_key_pem": "k", "tls": "manual"}
        ]"#;
        let p = parse(json).unwrap();
        let names: Vec<&str> = p.wanted.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["a.example.org", "b.example.org"]);
        assert_eq!(p.wanted[1].owner_uids.iter().copied().collect::<Vec<_>>(), [30001, 30002]);
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
        assert!(p.skipped[0].contains("wildcard needs DNS-01"));
        assert!(p.skipped[1].contains("\"../etc\": not a domain name"));
        assert!(p.skipped[2].contains("unknown tls mode \"manual\""));
    }

    #[test]
    fn a_broken_file_is_an_error_and_a_missing_one_empty() {
        assert!(parse(b"{\"name\": 1}").is_err());
        assert!(parse(b"[{\"owner_uids\": []}]").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("none.json")).unwrap().wanted.is_empty());
        std::fs::write(dir.path().join("bad.json"), "[").unwrap();
        assert!(read(&dir.path().join("bad.json")).unwrap_err().contains("bad.json"));
    }
}
