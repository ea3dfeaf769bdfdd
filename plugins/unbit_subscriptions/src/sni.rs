//! HTTPS for announced names: the validator keeps the router's certificate index
//! ([`sni_index`]) from what it accepted.
//!
//! Stock uWSGI gives the router the `sni_key`/`sni_crt`/`sni_ca` paths of an announce, and every
//! router process then builds a context from them (as root, or not at all when it runs as its
//! own user), once per name, never again after a renewal. Here the router never gets those
//! paths. Once an announce passed every check, the validator reads the files it names (the
//! sender's own regular files, reached without a symlink, [`crate::homes`]), checks the pair,
//! and writes the name's entry into the index the router reads lazily on a handshake.
//!
//! * **Rotation.** Each announce (every 10 seconds) compares the files' stamps with those of
//!   the entry; a changed pair is read again and served from the next handshake on. A new pair
//!   that does not load (key of another certificate, not PEM, encrypted key) leaves the entry as
//!   it was, and the customer's log says why, once per change of the files.
//! * **One source per name.** The first vassal that announces files for a name serves them
//!   while any of its nodes lives; another vassal's different files are not used meanwhile (its
//!   log says so). When the last node announcing the entry goes, the entry goes (the name gets
//!   the node's default certificate until another vassal's next announce).
//! * **Platform certificates** (automatic HTTPS, `crates/acme`): served for a name no customer
//!   entry covers; a customer's own files for the same name win.
//! * **Client CAs.** The front door checks, on every request, the Host against the names with a
//!   client CA, from a list kept beside the entries ([`sni_index::CLIENT_CA_LIST`]).

use crate::homes::{FileStamp, HomeFiles};
use crate::replay::NodeId;
use sni_index::{names, Bundle, ClientCa, IndexDir};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// A certificate, key or CA file larger than this is refused (a long chain is ~10 KB).
pub const MAX_FILE: u64 = 256 * 1024;

/// Where entries are written. [`IndexDir`] on a node; a map in the tests.
pub trait CertIndex {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), String>;
    fn remove(&mut self, name: &str) -> Result<(), String>;
    fn put_ca_list(&mut self, list: &BTreeMap<String, ClientCa>) -> Result<(), String>;
}

impl CertIndex for IndexDir {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        IndexDir::put(self, name, bytes)
    }
    fn remove(&mut self, name: &str) -> Result<(), String> {
        IndexDir::remove(self, name)
    }
    fn put_ca_list(&mut self, list: &BTreeMap<String, ClientCa>) -> Result<(), String> {
        IndexDir::put_ca_list(self, list)
    }
}

/// The files an announce names, relative to the sender's home, as checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniFiles {
    pub key: PathBuf,
    pub crt: PathBuf,
    pub ca: Option<(PathBuf, ClientCa)>,
}

impl SniFiles {
    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.key.as_path(), self.crt.as_path()];
        v.extend(self.ca.as_ref().map(|(p, _)| p.as_path()));
        v
    }

    /// `~/foobar.crt`: the certificate as the customer knows it.
    fn shown(&self) -> String {
        format!("~/{}", self.crt.display())
    }
}

/// An accepted announce's SNI files, with their stamps when they were checked.
#[derive(Clone, Debug)]
pub struct SniClaim {
    pub uid: u32,
    pub files: SniFiles,
    pub stamps: Vec<FileStamp>,
}

/// What happened to a name's certificate: a line for the operator's log and one for the
/// customer's.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SniNews {
    pub log: String,
    pub customer: String,
}

/// A certificate the platform issued (automatic HTTPS), read by the validator.
pub struct PlatformCert {
    pub name: String,
    pub owner: u32,
    pub bundle: Bundle,
    /// Tells a renewed pair from the one already published.
    pub version: String,
}

enum Source {
    Customer { uid: u32, files: SniFiles, stamps: Vec<FileStamp>, users: HashSet<NodeId> },
    Platform { version: String },
}

struct Published {
    source: Source,
    client_ca: ClientCa,
    summary: String,
}

pub struct SniBook {
    index: Box<dyn CertIndex + Send>,
    entries: HashMap<String, Published>,
    /// Files that did not load, by name and container: not read (nor reported) again until
    /// they change.
    broken: HashMap<(String, u32), Vec<FileStamp>>,
    /// Nodes already told that another vassal's files serve their name.
    told: HashSet<NodeId>,
    platform: HashMap<String, PlatformCert>,
    /// Names with a client CA, and the exact names that shadow such a wildcard, as last written.
    ca_list: BTreeMap<String, ClientCa>,
    problems: Vec<String>,
}

impl SniBook {
    pub fn new(index: Box<dyn CertIndex + Send>) -> SniBook {
        let mut book = SniBook {
            index,
            entries: HashMap::new(),
            broken: HashMap::new(),
            told: HashSet::new(),
            platform: HashMap::new(),
            ca_list: BTreeMap::new(),
            problems: Vec::new(),
        };
        // The router reads the list before any entry: an empty one says "no client CA yet".
        if let Err(e) = book.index.put_ca_list(&BTreeMap::new()) {
            book.problems.push(format!("certificate index: {e}"));
        }
        book
    }

    /// A live node of `node.key` announced `claim` (every check passed, the router has the
    /// node). Reads and publishes the files when they are new or changed.
    pub fn claim(&mut self, node: &NodeId, claim: SniClaim, homes: &dyn HomeFiles) -> Option<SniNews> {
        let name = node.key.as_str();
        let current = self.entries.get_mut(name);
        let previous = match current {
            Some(Published { source: Source::Customer { uid, files, stamps, users }, .. })
                if *uid == claim.uid && *files == claim.files =>
            {
                users.insert(node.clone());
                if *stamps == claim.stamps {
                    return None;
                }
                Previous::Same
            }
            Some(Published { source: Source::Customer { uid, files, users, .. }, .. }) => {
                users.remove(node);
                if !users.is_empty() {
                    if !self.told.insert(node.clone()) {
                        return None;
                    }
                    let whose = if *uid == claim.uid {
                        "another vassal of this container".to_string()
                    } else {
                        format!("container {uid}")
                    };
                    return Some(SniNews {
                        log: format!(
                            "sni {name}: container {} announced ~/{} while {whose} serves ~/{}; kept the latter",
                            claim.uid,
                            claim.files.crt.display(),
                            files.crt.display()
                        ),
                        customer: format!(
                            "HTTPS for {name}: {} is not used: the certificate ~/{} announced by {whose} is served while it runs",
                            claim.files.shown(),
                            files.crt.display()
                        ),
                    });
                }
                Previous::Other
            }
            Some(Published { source: Source::Platform { .. }, .. }) => Previous::Platform,
            None => Previous::None,
        };
        self.told.remove(node);
        let key = (name.to_string(), claim.uid);
        if self.broken.get(&key) == Some(&claim.stamps) {
            self.keep_serving(name, node);
            return None;
        }
        match load(homes, &claim) {
            Ok((bundle, stamps)) => {
                self.broken.remove(&key);
                let shown = claim.files.shown();
                let summary = bundle.summary();
                if let Err(e) = self.publish(name, claim.uid, &shown, &bundle) {
                    self.problems.push(e);
                    return Some(SniNews {
                        log: format!("sni {name}: could not write the index entry"),
                        customer: format!(
                            "HTTPS for {name}: the node could not load {shown} (the operator's log says more)"
                        ),
                    });
                }
                let mut users = HashSet::new();
                users.insert(node.clone());
                self.entries.insert(
                    name.to_string(),
                    Published {
                        source: Source::Customer { uid: claim.uid, files: claim.files, stamps, users },
                        client_ca: bundle.client_ca,
                        summary: summary.clone(),
                    },
                );
                self.refresh_ca_list(name);
                let what = match previous {
                    Previous::Same | Previous::Other => "new certificate",
                    Previous::None | Previous::Platform => "serving",
                };
                let mut customer = format!("HTTPS for {name}: {what} {shown} ({summary})");
                if matches!(previous, Previous::Platform) {
                    customer.push_str(", instead of the platform's automatic certificate");
                }
                for w in bundle.warnings(name) {
                    customer.push_str(&format!("; warning: {w}"));
                }
                Some(SniNews {
                    log: format!("sni {name}: {what} {shown} of container {} ({summary})", claim.uid),
                    customer,
                })
            }
            Err(why) => {
                self.broken.insert(key, claim.stamps.clone());
                self.keep_serving(name, node);
                let kept = match (&previous, self.entries.get(name)) {
                    (Previous::None, _) | (_, None) => "HTTPS is not enabled for it".to_string(),
                    (Previous::Platform, _) => "the platform's automatic certificate stays served".to_string(),
                    (_, Some(p)) => format!("still serving the previous certificate ({})", p.summary),
                };
                Some(SniNews {
                    log: format!("sni {name}: files of container {} not loaded: {why}", claim.uid),
                    customer: format!("HTTPS for {name}: {} not loaded: {why}; {kept}", claim.files.shown()),
                })
            }
        }
    }

    /// The node's new files did not load: the entry it had (or its vassal's predecessor had)
    /// stays served while the node lives.
    fn keep_serving(&mut self, name: &str, node: &NodeId) {
        if let Some(Published { source: Source::Customer { users, .. }, .. }) = self.entries.get_mut(name) {
            users.insert(node.clone());
        }
    }

    /// `node` no longer announces files for its name (it went away, or announces none now).
    /// The last node of an entry takes it along.
    pub fn release(&mut self, node: &NodeId) {
        self.told.remove(node);
        let name = node.key.as_str();
        // Forgotten with the node, so a table of names refused once cannot grow for ever (another
        // live node of the container with the same files is told again at its next announce).
        self.broken.remove(&(name.to_string(), node.uid));
        let Some(Published { source: Source::Customer { users, .. }, .. }) = self.entries.get_mut(name) else {
            return;
        };
        if !users.remove(node) || !users.is_empty() {
            return;
        }
        self.entries.remove(name);
        self.broken.retain(|(n, _), _| n != name);
        match self.platform.get(name) {
            Some(cert) => {
                let (owner, version) = (cert.owner, cert.version.clone());
                let bundle = cert.bundle.clone();
                let _ = self.publish_platform(name, owner, version, &bundle);
            }
            None => {
                if let Err(e) = self.index.remove(name) {
                    self.problems.push(e);
                }
            }
        }
        self.refresh_ca_list(name);
    }

    /// The platform's certificates now (the issuer's whole list). Returns log lines.
    pub fn set_platform(&mut self, certs: Vec<PlatformCert>) -> Vec<String> {
        let mut lines = Vec::new();
        let new: HashMap<String, PlatformCert> = certs.into_iter().map(|c| (c.name.clone(), c)).collect();
        for name in self.platform.keys().filter(|n| !new.contains_key(*n)).cloned().collect::<Vec<_>>() {
            if matches!(self.entries.get(&name), Some(Published { source: Source::Platform { .. }, .. })) {
                self.entries.remove(&name);
                if let Err(e) = self.index.remove(&name) {
                    self.problems.push(e);
                }
                lines.push(format!("sni {name}: the platform's certificate is no longer served"));
            }
        }
        for (name, cert) in &new {
            let served = match self.entries.get(name) {
                Some(Published { source: Source::Platform { version }, .. }) => Some(version == &cert.version),
                Some(_) => continue,
                None => None,
            };
            if served == Some(true) {
                continue;
            }
            // A failed write is in the problems; no line saying it is served.
            if self.publish_platform(name, cert.owner, cert.version.clone(), &cert.bundle) {
                lines.push(format!("sni {name}: serving the platform's certificate ({})", cert.bundle.summary()));
            }
        }
        self.platform = new;
        lines
    }

    /// Whether the entry was written (else the reason is in the problems).
    fn publish_platform(&mut self, name: &str, owner: u32, version: String, bundle: &Bundle) -> bool {
        match self.publish(name, owner, "the platform's automatic certificate", bundle) {
            Ok(()) => {
                self.entries.insert(
                    name.to_string(),
                    Published {
                        source: Source::Platform { version },
                        client_ca: ClientCa::None,
                        summary: bundle.summary(),
                    },
                );
                true
            }
            Err(e) => {
                self.problems.push(e);
                false
            }
        }
    }

    fn publish(&mut self, name: &str, owner: u32, shown: &str, bundle: &Bundle) -> Result<(), String> {
        let bytes = bundle.encode(name, owner, shown).map_err(|e| format!("sni {name}: {e}"))?;
        self.index.put(name, &bytes).map_err(|e| format!("sni {name}: {e}"))
    }

    /// Rewrites the client-CA list when `changed` has a say in it: a name with a client CA, or
    /// an exact name below a wildcard with one (its own entry answers for it, CA or not).
    fn refresh_ca_list(&mut self, changed: &str) {
        let policy = |n: &str| self.entries.get(n).map(|p| p.client_ca);
        let parent_has_ca = names::wildcard_of(changed)
            .is_some_and(|w| policy(&w).is_some_and(|c| c != ClientCa::None) || self.ca_list.contains_key(&w));
        let relevant = parent_has_ca
            || policy(changed).is_some_and(|c| c != ClientCa::None)
            || self.ca_list.contains_key(changed)
            || (changed.starts_with('.')
                && self.ca_list.keys().any(|k| names::wildcard_of(k).as_deref() == Some(changed)));
        if !relevant {
            return;
        }
        let mut list = BTreeMap::new();
        let wildcards: HashSet<&str> = self
            .entries
            .iter()
            .filter(|(n, p)| n.starts_with('.') && p.client_ca != ClientCa::None)
            .map(|(n, _)| n.as_str())
            .collect();
        for (n, p) in &self.entries {
            let shadows = names::wildcard_of(n).is_some_and(|w| wildcards.contains(w.as_str()));
            if p.client_ca != ClientCa::None || (!n.starts_with('.') && shadows) {
                list.insert(n.clone(), p.client_ca);
            }
        }
        if list != self.ca_list {
            match self.index.put_ca_list(&list) {
                Ok(()) => self.ca_list = list,
                Err(e) => self.problems.push(format!("certificate index: {e}")),
            }
        }
    }

    /// Problems for the operator's log since the last call.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Names with an entry (for reports and tests).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

enum Previous {
    None,
    /// The same files of the same container: a rotation.
    Same,
    /// Other files, whose vassals are gone.
    Other,
    Platform,
}

/// Reads and checks the claim's files (again without following a symlink); the stamps are
/// those of the bytes read.
fn load(homes: &dyn HomeFiles, claim: &SniClaim) -> Result<(Bundle, Vec<FileStamp>), String> {
    let mut stamps = Vec::new();
    let mut read = |rel: &Path| -> Result<Vec<u8>, String> {
        let (stamp, bytes) =
            homes.read_file(claim.uid, rel, MAX_FILE).map_err(|e| format!("~/{}: {e}", rel.display()))?;
        stamps.push(stamp);
        Ok(bytes)
    };
    let files = &claim.files;
    let (key, crt) = (read(&files.key)?, read(&files.crt)?);
    let ca = match &files.ca {
        Some((path, policy)) => Some((read(path)?, *policy)),
        None => None,
    };
    let bundle = Bundle::from_pem(&crt, &key, ca.as_ref().map(|(b, p)| (b.as_slice(), *p)))?;
    debug_assert_eq!(stamps.len(), files.all().len());
    Ok((bundle, stamps))
}

/// The stamps of the claim's files as they are now (the checks [`HomeFiles::check_file`] does).
pub fn stamps(homes: &dyn HomeFiles, uid: u32, files: &SniFiles) -> Result<Vec<FileStamp>, String> {
    files.all().into_iter().map(|p| homes.check_file(uid, p)).collect()
}
