//! The client-certificate rule, on every request: a domain's client CA protects the domain,
//! not the TLS server name a connection happened to use.
//!
//! Stock uWSGI checks client certificates in the handshake, for the SNI name, and then routes by
//! the Host header: a client connecting with `a.example` (no CA) and sending `Host: c.example`
//! reaches `c.example`'s app without any certificate, even when `c.example` requires one. And a
//! certificate from `a.example`'s CA (which its owner controls) would reach `c.example`'s app as
//! `HTTPS_DN`. So, for the Host of each request:
//!
//! | the Host's entry | the connection | answer |
//! |---|---|---|
//! | no client CA, and the connection's entry has none either | any | served |
//! | has a client CA, or the connection's entry has one | set up for another entry (or the default) | 421 Misdirected Request |
//! | `!` (required) | set up for it, no verified certificate | 403 |
//! | `!` (required) | plain HTTP | 403 |
//! | optional | plain HTTP | served, without `HTTPS_DN` |
//!
//! The list of names with a client CA is small and read from the index
//! ([`sni_index::CLIENT_CA_LIST`]) into memory, with the cluster index's beside it (the entries
//! other members of a Legion sealed to this node, every one listed with its policy; it answers
//! only for names this node's own index has no entry for). Each request `stat`s the two files
//! (well under a microsecond each, against tens for the request) and reads one again when it
//! was replaced: the validator writes its list before it passes on the announce that brings a
//! protected name (and the cluster's receiver before it routes a member's protected name), so
//! no router process can route a request to that name's app with a list older than the name.
//! (Looking only every 250 ms let plain HTTP reach a newly protected app in that window.)

use super::Selected;
use crate::reload::Identity;
use openssl::ssl::SslRef;
use openssl::x509::X509VerifyResult;
use sni_index::{names, ClientCa};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One client-CA list file as this process last read it.
struct ListFile {
    path: PathBuf,
    names: HashMap<String, ClientCa>,
    identity: Option<Identity>,
}

impl ListFile {
    fn new(path: PathBuf) -> ListFile {
        ListFile { path, names: HashMap::new(), identity: None }
    }

    /// Reads the file again when it was replaced. A list that cannot be read keeps the last
    /// one: a glitch never opens a protected name.
    fn refresh(&mut self) {
        let Ok(md) = std::fs::metadata(&self.path) else { return };
        let id = Some(Identity::of(&md));
        if id == self.identity {
            return;
        }
        if let Ok(bytes) = std::fs::read(&self.path) {
            self.names = sni_index::dir::read_ca_list(&bytes);
            self.identity = id;
        }
    }

    fn get(&self, name: &str) -> Option<(&str, ClientCa)> {
        self.names.get_key_value(name).map(|(n, p)| (n.as_str(), *p))
    }
}

/// The client-CA lists: the validator's, and the cluster's (beside the entries other members
/// of the Legion sealed to this node, [`sni_index::CLUSTER_DIR`], listing every one of them).
/// They answer as the certificate selection chooses entries: the exact name, then its
/// wildcard, this node's own index before the cluster's.
pub struct CaList {
    /// The validator's index (to see whether it has an entry the cluster's list must yield to).
    dir: PathBuf,
    local: ListFile,
    cluster: ListFile,
}

impl CaList {
    pub fn new(dir: &Path) -> CaList {
        CaList {
            dir: dir.to_path_buf(),
            local: ListFile::new(dir.join(sni_index::CLIENT_CA_LIST)),
            cluster: ListFile::new(sni_index::cluster_dir(dir).join(sni_index::CLIENT_CA_LIST)),
        }
    }

    fn refresh(&mut self) {
        self.local.refresh();
        self.cluster.refresh();
    }

    fn is_empty(&self) -> bool {
        self.local.names.is_empty() && self.cluster.names.is_empty()
    }

    /// Whether this node's own index has an entry `name` (which then serves it, whatever the
    /// cluster's index has).
    fn local_entry(&self, name: &str) -> bool {
        std::fs::symlink_metadata(self.dir.join(name)).is_ok()
    }

    /// The entry answering for `host` and its policy, if a list knows it: the exact name,
    /// else its wildcard; the cluster's list only where this node's index has neither the
    /// name nor (for the wildcard) the exact one, as the selection does.
    fn resolve(&self, host: &str) -> Option<(&str, ClientCa)> {
        if let Some(found) = self.local.get(host) {
            return Some(found);
        }
        let theirs = |name: &str| self.cluster.get(name).filter(|_| !self.local_entry(host));
        if let Some(found) = theirs(host) {
            return Some(found);
        }
        let wildcard = names::wildcard_of(host)?;
        if let Some(found) = self.local.get(&wildcard) {
            return Some(found);
        }
        theirs(&wildcard).filter(|_| !self.local_entry(&wildcard))
    }
}

/// How the connection a request came over was set up.
pub enum Connection<'a> {
    Plain,
    Tls { selected: Option<&'a Selected>, verified_client: bool },
}

impl<'a> Connection<'a> {
    pub fn of(ssl: Option<&'a SslRef>) -> Connection<'a> {
        match ssl {
            None => Connection::Plain,
            Some(ssl) => Connection::Tls {
                selected: super::selection(ssl),
                verified_client: ssl.peer_certificate().is_some() && ssl.verify_result() == X509VerifyResult::OK,
            },
        }
    }
}

/// The status refusing a request for `host` (the normalised Host) over `conn`, if refused.
pub fn refusal(list: &Mutex<CaList>, host: &[u8], conn: Connection<'_>) -> Option<u16> {
    let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
    list.refresh();
    decide(&list, host, &conn)
}

fn decide(list: &CaList, host: &[u8], conn: &Connection<'_>) -> Option<u16> {
    let conn_ca = match &conn {
        Connection::Tls { selected: Some(s), .. } => s.client_ca,
        _ => ClientCa::None,
    };
    if list.is_empty() && conn_ca == ClientCa::None {
        return None;
    }
    let host = names::server_name(host);
    let wanted = host.as_deref().and_then(|h| list.resolve(h));
    let host_ca = wanted.map_or(ClientCa::None, |(_, p)| p);
    match *conn {
        Connection::Plain => (host_ca == ClientCa::Required).then_some(403),
        Connection::Tls { selected, verified_client } => {
            if host_ca == ClientCa::None && conn_ca == ClientCa::None {
                return None;
            }
            let conn_entry = selected.and_then(|s| s.entry.as_deref());
            if wanted.map(|(name, _)| name) != conn_entry {
                return Some(421);
            }
            (host_ca == ClientCa::Required && !verified_client).then_some(403)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn list(lines: &str) -> Mutex<CaList> {
        let mut l = CaList::new(Path::new("/nonexistent"));
        l.local.names = sni_index::dir::read_ca_list(lines.as_bytes());
        Mutex::new(l)
    }

    fn tls(entry: Option<&str>, ca: ClientCa, verified: bool) -> (Selected, bool) {
        (Selected { entry: entry.map(Arc::from), client_ca: ca }, verified)
    }

    fn ask(l: &Mutex<CaList>, host: &str, conn: Option<&(Selected, bool)>) -> Option<u16> {
        let c = match conn {
            None => Connection::Plain,
            Some((s, v)) => Connection::Tls { selected: Some(s), verified_client: *v },
        };
        refusal(l, host.as_bytes(), c)
    }

    #[test]
    fn a_protected_host_is_served_only_over_its_own_verified_connection() {
        let l = list("secure.test required\nopt.test optional\n.wild.test required\nopen.wild.test none\n");
        let secure_ok = tls(Some("secure.test"), ClientCa::Required, true);
        let secure_without = tls(Some("secure.test"), ClientCa::Required, false);
        let other = tls(Some("a.test"), ClientCa::None, false);
        let default = tls(None, ClientCa::None, false);
        assert_eq!(ask(&l, "secure.test", Some(&secure_ok)), None);
        assert_eq!(ask(&l, "secure.test", Some(&secure_without)), Some(403));
        assert_eq!(ask(&l, "secure.test", Some(&other)), Some(421), "SNI of another name, Host of a protected one");
        assert_eq!(ask(&l, "secure.test", Some(&default)), Some(421), "no SNI");
        assert_eq!(ask(&l, "secure.test", None), Some(403), "plain HTTP");
        // Optional: no certificate is fine, another connection's certificate is not.
        let opt_none = tls(Some("opt.test"), ClientCa::Optional, false);
        assert_eq!(ask(&l, "opt.test", Some(&opt_none)), None);
        assert_eq!(ask(&l, "opt.test", None), None);
        assert_eq!(ask(&l, "opt.test", Some(&secure_ok)), Some(421));
        // A certificate of one domain's CA never reaches another domain's app.
        assert_eq!(ask(&l, "a.test", Some(&secure_ok)), Some(421));
        assert_eq!(ask(&l, "a.test", Some(&other)), None);
        assert_eq!(ask(&l, "b.test", Some(&other)), None, "no CA on either side: Host routing as usual");
        // Wildcards one label deep; an exact entry below answers for itself.
        let wild = tls(Some(".wild.test"), ClientCa::Required, true);
        assert_eq!(ask(&l, "shop.wild.test", Some(&wild)), None);
        assert_eq!(ask(&l, "shop.wild.test", Some(&other)), Some(421));
        assert_eq!(ask(&l, "shop.wild.test", None), Some(403));
        let open = tls(Some("open.wild.test"), ClientCa::None, false);
        assert_eq!(ask(&l, "open.wild.test", Some(&open)), None);
        assert_eq!(ask(&l, "open.wild.test", None), None);
        assert_eq!(ask(&l, "open.wild.test", Some(&wild)), Some(421));
    }

    #[test]
    fn a_name_protected_just_now_is_refused_on_the_next_request() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join(sni_index::CLIENT_CA_LIST);
        std::fs::write(&file, "").unwrap();
        let l = Mutex::new(CaList::new(tmp.path()));
        let open = tls(None, ClientCa::None, false);
        assert_eq!(refusal(&l, b"new.test", Connection::Tls { selected: Some(&open.0), verified_client: false }), None);
        assert_eq!(refusal(&l, b"new.test", Connection::Plain), None);
        // The validator publishes new.test with a client CA, then passes its announce on: the
        // very next requests, over a connection built for it or plain HTTP, see the new list.
        std::fs::write(tmp.path().join("tmp"), "new.test required\n").unwrap();
        std::fs::rename(tmp.path().join("tmp"), &file).unwrap();
        let fresh = tls(Some("new.test"), ClientCa::Required, true);
        assert_eq!(refusal(&l, b"new.test", Connection::Tls { selected: Some(&fresh.0), verified_client: true }), None);
        assert_eq!(refusal(&l, b"new.test", Connection::Plain), Some(403));
    }

    #[test]
    fn the_clusters_list_answers_for_the_names_this_nodes_index_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sni");
        let cluster = sni_index::cluster_dir(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&cluster).unwrap();
        std::fs::write(dir.join(sni_index::CLIENT_CA_LIST), "").unwrap();
        // Other members' entries: a protected name, a protected wildcard, an open name.
        std::fs::write(
            cluster.join(sni_index::CLIENT_CA_LIST),
            "remote.test required\n.wild.test required\nopen.test none\n",
        )
        .unwrap();
        let l = Mutex::new(CaList::new(&dir));
        let remote = tls(Some("remote.test"), ClientCa::Required, true);
        let other = tls(Some("a.test"), ClientCa::None, false);
        assert_eq!(ask(&l, "remote.test", Some(&remote)), None);
        assert_eq!(ask(&l, "remote.test", Some(&other)), Some(421));
        assert_eq!(ask(&l, "remote.test", None), Some(403), "plain HTTP to a protected name of another node");
        assert_eq!(ask(&l, "shop.wild.test", None), Some(403));
        assert_eq!(ask(&l, "open.test", None), None);
        // This node's own entries win, as in the selection: its exact shop.wild.test (no CA)
        // answers for itself, and its own remote.test too.
        std::fs::write(dir.join("shop.wild.test"), "entry").unwrap();
        std::fs::write(dir.join("remote.test"), "entry").unwrap();
        let shop = tls(Some("shop.wild.test"), ClientCa::None, false);
        assert_eq!(ask(&l, "shop.wild.test", Some(&shop)), None);
        assert_eq!(ask(&l, "shop.wild.test", None), None);
        assert_eq!(ask(&l, "remote.test", None), None);
        assert_eq!(ask(&l, "other.wild.test", None), Some(403));
    }

    #[test]
    fn no_protected_name_costs_nothing() {
        let l = list("");
        assert_eq!(ask(&l, "anything.test", None), None);
        assert_eq!(ask(&l, "anything.test", Some(&tls(None, ClientCa::None, false))), None);
    }
}
