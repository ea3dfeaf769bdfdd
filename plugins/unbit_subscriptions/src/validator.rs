//! The policy: decides, for one datagram and the kernel-reported sender, whether the router
//! gets it. Pure logic over the domain table, the home files and the replay state; the
//! sockets are in [`crate::service`].
//!
//! An announce passes only when all hold:
//! 1. it is a well-formed subscription packet ([`crate::wire`]);
//! 2. its key, in the router's form ([`domain_names::normalize_key`]: lowercase IDNA ASCII, no
//!    port, no trailing dot), is not the node's hostname (the router routes requests without
//!    a `Host` by it) nor a wildcard over it, and the node's domain table gives it an owner (a
//!    wildcard's owner for names below it, [`crate::domains`]);
//! 3. the sender uid (from `SCM_CREDENTIALS`, not from the packet) is one of that owner's
//!    containers;
//! 4. the address is the sender's own: a socket in its `run/` directory, reached without a
//!    symlink and owned by it ([`crate::address`], [`crate::homes`]), or an IP address the
//!    node routes to the sender's own interface and the sender's namespace holds
//!    ([`crate::own_ip`]); SNI files are its own regular files in its home, reached without a
//!    symlink;
//! 5. it is signed (RSA, SHA-256) with the owner's key;
//! 6. its timestamp is inside the window and newer than the node's last accepted one; the
//!    same signature is never accepted twice or with the other command ([`crate::replay`]).
//!
//! The router receives a rebuilt, unsigned packet with the normalised key, whose address is
//! the pinned socket's name, never reused ([`crate::pins`]). A pin is let go only after every node the router has at it
//! was taken back: when the vassal re-binds the name, unsubscribes, or the node expires or is
//! revoked. The SNI files never reach the router: the validator reads them and keeps the
//! router's certificate index ([`crate::sni`]) for as long as a node announcing them lives.

use crate::address::{endpoint_of, home_file_of, Endpoint};
use crate::domains::DomainTable;
use crate::held::HeldAnnounces;
use crate::homes::{describe, HomeFiles, Pinned};
use crate::own_ip::IpOwnership;
use crate::pins::{PinBoard, PinId, Publish};
use crate::replay::{NodeId, ReplayGuard, ReplayVerdict};
use crate::sni::{CertIndex, PlatformCert, SniBook, SniClaim, SniFiles};
use crate::wire::{self, Announce, Command};
use openssl::hash::{hash, MessageDigest};
use openssl::sign::Verifier;
use sni_index::ClientCa;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sender of a datagram, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub uid: u32,
    pub pid: i32,
}

/// Where to tell a container about its announces: a socket in its own `run/`, checked and
/// opened like an address.
pub struct NotifyTarget {
    pub path: PathBuf,
    /// Keeps the checked socket open until the message is sent.
    pub _pinned: Pinned,
}

/// A refused announce, with everything the operator's log line and the container's message
/// need.
pub struct Rejection {
    pub sender: Sender,
    pub domain: Option<String>,
    pub reason: String,
    pub notify: Option<NotifyTarget>,
}

impl Rejection {
    /// The operator's log line.
    pub fn log_line(&self) -> String {
        let domain = self.domain.as_deref().map(|d| format!(" for {d}")).unwrap_or_default();
        format!(
            "REJECTED announce from container {} (pid {}){domain}: {}",
            self.sender.uid, self.sender.pid, self.reason
        )
    }

    /// The container's message (no other customer's data in it).
    pub fn message(&self) -> String {
        let domain = self.domain.as_deref().map(|d| format!(" for {d}")).unwrap_or_default();
        format!("[subscription validator] announce{domain} rejected: {}", self.reason)
    }
}

/// What to do with a datagram.
pub enum Outcome {
    /// Send `packets` to the router, in order; log `log` (a new or removed node) and tell
    /// the container `message`.
    Forward {
        packets: Vec<Vec<u8>>,
        log: Option<String>,
        message: Option<(String, NotifyTarget)>,
    },
    /// A harmless duplicate (stock uWSGI's double send at start-up): nothing to do.
    Drop,
    Reject(Rejection),
}

/// A node the router has from us, kept to take it back when its domain goes away.
struct LiveNode {
    router_address: String,
    key_fingerprint: [u8; 32],
    last_seen: i64,
    /// The pin the router reaches it through (none for an IP address).
    pin: Option<PinId>,
    /// It announced SNI files ([`crate::sni`] counts it as a user of its name's entry).
    sni: bool,
}

/// What the validator needs from the node: the homes' files, where router names go, and who
/// owns which IP address.
pub struct NodeFacts {
    pub homes: Box<dyn HomeFiles + Send>,
    /// The host's containers dir (homes at `<dir>/<uid>`).
    pub host_homes: PathBuf,
    pub publisher: Box<dyn Publish + Send>,
    pub ips: Box<dyn IpOwnership + Send>,
    /// The router's certificate index.
    pub certs: Box<dyn CertIndex + Send>,
}

pub struct Validator {
    table: Arc<DomainTable>,
    homes: Box<dyn HomeFiles + Send>,
    host_homes: PathBuf,
    replay: ReplayGuard,
    /// The verified sockets and the names the router knows them by.
    pins: PinBoard,
    ips: Box<dyn IpOwnership + Send>,
    live: HashMap<NodeId, LiveNode>,
    /// A node not announced for this long is forgotten (the router dropped it long before).
    node_ttl: i64,
    /// Subscribes for domains not in the table yet, checked again when the table changes.
    held: HeldAnnounces,
    /// The node's hostname in the router's form: the key of every request without a `Host`.
    hostname: Option<String>,
    sni: SniBook,
}

/// The fallback notify socket when an announce names none (or names a bad one).
const CONTAINER_NOTIFY: &str = "notify.socket";

impl Validator {
    pub fn new(node: NodeFacts, window_secs: i64, node_ttl_secs: i64) -> Self {
        let mut v = Validator {
            table: Arc::new(DomainTable::default()),
            homes: node.homes,
            host_homes: node.host_homes,
            replay: ReplayGuard::new(window_secs),
            pins: PinBoard::new(node.publisher),
            ips: node.ips,
            live: HashMap::new(),
            node_ttl: node_ttl_secs,
            held: HeldAnnounces::default(),
            hostname: None,
            sni: SniBook::new(node.certs),
        };
        // This process is forked from the router instance: its hostname is the router's.
        if let Ok(name) = nix::unistd::gethostname() {
            v.set_node_hostname(&name.to_string_lossy());
        }
        v
    }

    /// Sets the name the router looks requests without a `Host` up by (the router
    /// instance's hostname, which uWSGI reads at start).
    pub fn set_node_hostname(&mut self, hostname: &str) {
        let name = hostname.trim_end_matches('.').to_ascii_lowercase();
        self.hostname = (!name.is_empty()).then_some(name);
    }

    /// Installs a new domain table and takes back every node it no longer allows: a domain
    /// deleted, a container no longer the owner's, a changed owner key. Returns the
    /// unsubscribe packets for the router and one log line per revoked node.
    pub fn set_table(&mut self, table: Arc<DomainTable>, now: i64) -> Vec<(Vec<u8>, String)> {
        self.table = table;
        let mut revoked = Vec::new();
        let mut gone = Vec::new();
        let table = Arc::clone(&self.table);
        self.live.retain(|node, live| {
            let why = match table.owner_of(&node.key) {
                None => Some(format!("{} is no longer a domain of this node", node.key)),
                Some(d) if !d.owner_uids.contains(&node.uid) => {
                    Some(format!("container {} no longer belongs to the owner of {}", node.uid, d.name))
                }
                Some(d) if d.key_fingerprint != live.key_fingerprint => {
                    Some(format!("the owner key of {} changed", d.name))
                }
                Some(_) => None,
            };
            match why {
                Some(why) => {
                    gone.push((node.clone(), live.pin, live.sni));
                    let packet = unsubscribe_packet(&node.key, &live.router_address);
                    revoked.push((
                        packet,
                        format!(
                            "REVOKED {} => {} (container {}): {why}",
                            node.key,
                            describe(&node.endpoint, node.uid),
                            node.uid
                        ),
                    ));
                    false
                }
                None => true,
            }
        });
        for (node, pin, sni) in gone {
            self.let_go(&node, pin, sni, now);
        }
        revoked
    }

    pub fn table(&self) -> &DomainTable {
        &self.table
    }

    /// Decides about one datagram received at `now` (unix seconds).
    pub fn check(&mut self, sender: Sender, packet: &[u8], now: i64) -> Outcome {
        let reject = |domain: Option<&str>, reason: String, notify: Option<NotifyTarget>| {
            Outcome::Reject(Rejection { sender, domain: domain.map(str::to_string), reason, notify })
        };
        if packet.len() > wire::MAX_PACKET {
            return Outcome::Reject(self.oversized(sender, packet.len()));
        }
        let mut announce = match wire::parse(packet) {
            Ok(a) => a,
            Err(g) => return reject(None, format!("garbled packet: {g}"), self.container_notify(sender.uid)),
        };
        let notify = self.announce_notify(sender.uid, &announce);
        // From here on the key is the router's; the customer's spelling is kept for messages.
        let written = match domain_names::normalize_key(&announce.key) {
            Ok(key) => std::mem::replace(&mut announce.key, key),
            Err(why) => {
                let reason = format!("{:?} cannot be a domain: {why}", announce.key);
                return reject(Some(&announce.key), reason, notify);
            }
        };
        let key = announce.key.as_str();
        match self.decide(sender, &announce, &written, packet, now) {
            Ok(Some(forward)) => forward_with(forward, notify),
            Ok(None) => Outcome::Drop,
            Err(reason) => {
                let unknown_domain = self.table.owner_of(key).is_none() && !self.is_hostname(key);
                if unknown_domain && announce.command == Command::Subscribe {
                    self.held.hold(sender, key, packet, now);
                }
                reject(Some(key), reason, notify)
            }
        }
    }

    /// Whether the router could send requests without a `Host` to `key`: the node's hostname,
    /// or a wildcard above it (the router's dotsplit walk tries those too).
    fn is_hostname(&self, key: &str) -> bool {
        let Some(host) = &self.hostname else { return false };
        key == host || (key.starts_with('.') && host.ends_with(key))
    }

    /// After a new table: checks again, in full, the held subscribes whose domain it now
    /// lists. Returns their outcomes (duplicates left out); the others keep waiting.
    pub fn recheck_held(&mut self, now: i64) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for held in self.held.take(now) {
            if self.table.owner_of(&held.key).is_none() {
                self.held.put_back(held);
                continue;
            }
            match self.check(held.sender, &held.packet, now) {
                Outcome::Drop => {}
                outcome => outcomes.push(outcome),
            }
        }
        outcomes
    }

    /// A datagram longer than any subscription packet (`len` is its real size).
    pub fn oversized(&self, sender: Sender, len: usize) -> Rejection {
        Rejection {
            sender,
            domain: None,
            reason: format!("oversized packet ({len} bytes, at most {})", wire::MAX_PACKET),
            notify: self.container_notify(sender.uid),
        }
    }

    /// `a.key` is normalised; `written` is the key as the packet has it.
    fn decide(
        &mut self,
        sender: Sender,
        a: &Announce,
        written: &str,
        packet: &[u8],
        now: i64,
    ) -> Result<Option<Accepted>, String> {
        if self.is_hostname(&a.key) {
            return Err(format!(
                "{} is this node's hostname or covers it: the router sends requests without a Host header there, so no container may announce it",
                a.key
            ));
        }
        let table = Arc::clone(&self.table);
        let domain = table
            .owner_of(&a.key)
            .ok_or_else(|| format!("{} is not a domain of any customer with containers on this node", a.key))?;
        if !domain.owner_uids.contains(&sender.uid) {
            return Err(format!("container {} does not belong to the owner of {}", sender.uid, domain.name));
        }
        let (Some(signature), Some(unix)) = (&a.signature, a.unix) else {
            return Err("unsigned packet (the platform requires sign=SHA256:$(HOME)/etc/uwsgi.key)".into());
        };
        let own_ip = container_spec::ip_of(sender.uid);
        let endpoint = endpoint_of(&a.address, sender.uid, &self.host_homes, own_ip)
            .map_err(|e| format!("address refused: {e}"))?;
        if let Endpoint::OwnIp(addr) = &endpoint {
            self.ips.check(sender.uid, sender.pid, *addr.ip()).map_err(|e| format!("address {addr} refused: {e}"))?;
        }
        // An unsubscribe takes the node (and its files' entry) away whatever its files are now.
        let sni = if a.command == Command::Subscribe { self.sni_claim(sender.uid, a)? } else { None };
        if !verify(&domain.key, a.signed_bytes(packet), signature) {
            return Err(format!(
                "signature does not verify with the key of the owner of {} (RSA, SHA-256; another key, a SHA1 signature or altered bytes)",
                domain.name
            ));
        }
        let digest = sha256(signature);
        let node = NodeId { key: a.key.clone(), uid: sender.uid, endpoint: endpoint.clone() };
        match self.replay.check(&node, a.command, unix, &digest, now) {
            ReplayVerdict::Fresh => {}
            ReplayVerdict::Duplicate => return Ok(None),
            ReplayVerdict::Refused(why) => return Err(why),
        }

        let mut packets = Vec::new();
        // Other domains' nodes at the socket this one replaced, taken back from the router.
        let mut taken_back = Vec::new();
        let (router_address, pin) = match (&endpoint, a.command) {
            (Endpoint::OwnIp(addr), _) => (addr.to_string(), None),
            (Endpoint::RunSocket(rel), Command::Subscribe) => {
                let pinned = self
                    .homes
                    .open_socket(sender.uid, rel)
                    .map_err(|e| format!("address refused: {}: {e}", describe(&endpoint, sender.uid)))?;
                let id = self.pin(sender.uid, rel, pinned, now, &mut packets, &mut taken_back)?;
                taken_back.retain(|k| *k != a.key);
                (self.pins.address(id).to_string(), Some(id))
            }
            (Endpoint::RunSocket(rel), Command::Unsubscribe) => match self.pins.current(sender.uid, rel) {
                Some(id) => (self.pins.address(id).to_string(), Some(id)),
                // The router never had this node from us: nothing to take back.
                None => return Ok(None),
            },
        };
        packets.push(wire::router_packet(a, &router_address));
        self.replay.accept(node.clone(), a.command, unix, digest, now);

        let shown = describe(&endpoint, sender.uid);
        let (log, message) = match a.command {
            Command::Subscribe => {
                let previous = self.live.insert(
                    node.clone(),
                    LiveNode {
                        router_address: router_address.clone(),
                        key_fingerprint: domain.key_fingerprint,
                        last_seen: now,
                        pin,
                        sni: sni.is_some(),
                    },
                );
                if previous.as_ref().map(|p| p.pin) != Some(pin) {
                    if let Some(id) = pin {
                        self.pins.retain(id);
                    }
                    if let Some(old) = previous.as_ref().and_then(|p| p.pin) {
                        self.pins.release(old, now);
                    }
                }
                let spelled = if written == a.key { String::new() } else { format!(" (announced as {written})") };
                // Those domains are unreachable until their own next announce: say so.
                let also = if taken_back.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} left the router with the socket it replaced until announced again",
                        taken_back.join(", ")
                    )
                };
                let (log, message) = match &previous {
                    Some(p) if p.router_address == router_address => (None, None),
                    _ => (
                        Some(format!(
                            "accepted {}{spelled} => {shown} (container {}, router address {router_address}){also}",
                            a.key, sender.uid
                        )),
                        Some(format!("[subscription validator] {}{spelled} => {shown} accepted{also}", a.key)),
                    ),
                };
                let news = match sni {
                    Some(claim) => self.sni.claim(&node, claim, self.homes.as_ref()),
                    None => {
                        if previous.is_some_and(|p| p.sni) {
                            self.sni.release(&node);
                        }
                        None
                    }
                };
                match news {
                    None => (log, message),
                    Some(news) => (
                        Some(log.map_or(news.log.clone(), |l| format!("{l}; {}", news.log))),
                        Some(match message {
                            Some(m) => format!("{m}; {}", news.customer),
                            None => format!("[subscription validator] {}", news.customer),
                        }),
                    ),
                }
            }
            Command::Unsubscribe => {
                if let Some(gone) = self.live.remove(&node) {
                    self.let_go(&node, gone.pin, gone.sni, now);
                }
                (
                    Some(format!("unsubscribed {} => {shown} (container {})", a.key, sender.uid)),
                    Some(format!("[subscription validator] {} => {shown} unsubscribed", a.key)),
                )
            }
        };
        Ok(Some(Accepted { packets, log, message }))
    }

    /// Keeps the verified socket open for the router. When the name now holds another
    /// socket (the vassal re-bound it, maybe for other domains), every node the router has at
    /// the old socket, whatever its domain, is taken back first; only then can the old pin go.
    fn pin(
        &mut self,
        uid: u32,
        rel: &Path,
        pinned: Pinned,
        now: i64,
        packets: &mut Vec<Vec<u8>>,
        taken_back: &mut Vec<String>,
    ) -> Result<PinId, String> {
        let result = self
            .pins
            .pin(uid, rel, pinned)
            .map_err(|e| format!("the node could not pin the socket (the operator's log says more): {e}"))?;
        if let Some(old) = result.superseded {
            let stale: Vec<NodeId> =
                self.live.iter().filter(|(_, l)| l.pin == Some(old)).map(|(n, _)| n.clone()).collect();
            for node in stale {
                if let Some(l) = self.live.remove(&node) {
                    packets.push(unsubscribe_packet(&node.key, &l.router_address));
                    self.let_go(&node, l.pin, l.sni, now);
                    taken_back.push(node.key);
                }
            }
        }
        Ok(result.id)
    }

    /// The SNI files of an announce, checked: `sni_key` and `sni_crt` together, `sni_ca`
    /// (`!path`: client certificates required) only with them; each one the sender's own
    /// regular file in its home, reached without a symlink.
    fn sni_claim(&self, uid: u32, a: &Announce) -> Result<Option<SniClaim>, String> {
        let file = |what: &str, path: &str| -> Result<PathBuf, String> {
            let rel = home_file_of(path, uid, &self.host_homes).map_err(|e| format!("{what} refused: {e}"))?;
            self.homes.check_file(uid, &rel).map_err(|e| format!("{what} refused: {path}: {e}"))?;
            Ok(rel)
        };
        let (key, crt) = match (&a.sni_key, &a.sni_crt, &a.sni_ca) {
            (None, None, None) => return Ok(None),
            (Some(key), Some(crt), _) => (file("sni_key", key)?, file("sni_crt", crt)?),
            _ => {
                return Err("sni_key and sni_crt go together (ssl-domain = NAME KEY CRT), sni_ca only with them".into())
            }
        };
        let ca = match &a.sni_ca {
            None => None,
            Some(v) => match v.strip_prefix('!') {
                Some(path) => Some((file("sni_ca", path)?, ClientCa::Required)),
                None => Some((file("sni_ca", v)?, ClientCa::Optional)),
            },
        };
        let files = SniFiles { key, crt, ca };
        let stamps =
            crate::sni::stamps(self.homes.as_ref(), uid, &files).map_err(|e| format!("SNI files refused: {e}"))?;
        Ok(Some(SniClaim { uid, files, stamps }))
    }

    /// The platform's certificates (automatic HTTPS): served for names without a customer's
    /// own. Returns log lines.
    pub fn set_platform_certs(&mut self, certs: Vec<PlatformCert>) -> Vec<String> {
        self.sni.set_platform(certs)
    }

    /// The vassal's own notify socket, if the announce names a good one; else the
    /// container's.
    fn announce_notify(&self, uid: u32, a: &Announce) -> Option<NotifyTarget> {
        let own =
            a.notify.as_deref().and_then(|n| match endpoint_of(n, uid, &self.host_homes, container_spec::ip_of(uid)) {
                Ok(Endpoint::RunSocket(rel)) => self.notify_target(uid, &rel),
                _ => None,
            });
        own.or_else(|| self.container_notify(uid))
    }

    fn container_notify(&self, uid: u32) -> Option<NotifyTarget> {
        self.notify_target(uid, Path::new(CONTAINER_NOTIFY))
    }

    fn notify_target(&self, uid: u32, rel: &Path) -> Option<NotifyTarget> {
        let pinned = self.homes.open_socket(uid, rel).ok()?;
        Some(NotifyTarget { path: self.homes.local_path(uid, rel, &pinned), _pinned: pinned })
    }

    /// Forgets nodes not announced for the node TTL (the router dropped them long before;
    /// the returned unsubscribes make sure), lets their pins go, and old replay state.
    pub fn expire(&mut self, now: i64) -> Vec<Vec<u8>> {
        self.replay.expire(now);
        self.held.expire(now);
        let ttl = self.node_ttl;
        let silent: Vec<NodeId> =
            self.live.iter().filter(|(_, l)| now - l.last_seen > ttl).map(|(n, _)| n.clone()).collect();
        let mut packets = Vec::new();
        for node in silent {
            if let Some(l) = self.live.remove(&node) {
                packets.push(unsubscribe_packet(&node.key, &l.router_address));
                self.let_go(&node, l.pin, l.sni, now);
            }
        }
        self.pins.expire(now);
        packets
    }

    /// A node left `live` (the router no longer has it): its pin and its name's certificate
    /// entry lose a user.
    fn let_go(&mut self, node: &NodeId, pin: Option<PinId>, sni: bool, now: i64) {
        if let Some(id) = pin {
            self.pins.release(id, now);
        }
        if sni {
            self.sni.release(node);
        }
    }

    /// Problems with the router's names since the last call, for the operator's log.
    pub fn take_problems(&mut self) -> Vec<String> {
        let mut problems = self.pins.take_problems();
        problems.extend(self.sni.take_problems());
        problems
    }

    /// Names the router has a certificate for.
    pub fn certificates(&self) -> usize {
        self.sni.len()
    }

    /// Sockets pinned for the router.
    pub fn pinned_sockets(&self) -> usize {
        self.pins.len()
    }

    /// How many nodes the router has from us.
    pub fn live_nodes(&self) -> usize {
        self.live.len()
    }
}

struct Accepted {
    packets: Vec<Vec<u8>>,
    log: Option<String>,
    message: Option<String>,
}

fn forward_with(a: Accepted, notify: Option<NotifyTarget>) -> Outcome {
    let message = match (a.message, notify) {
        (Some(m), Some(n)) => Some((m, n)),
        _ => None,
    };
    Outcome::Forward { packets: a.packets, log: a.log, message }
}

fn unsubscribe_packet(key: &str, router_address: &str) -> Vec<u8> {
    wire::PacketBuilder::new().var("key", key).var("address", router_address).finish(Command::Unsubscribe)
}

fn verify(key: &openssl::pkey::PKey<openssl::pkey::Public>, signed: &[u8], signature: &[u8]) -> bool {
    let Ok(mut v) = Verifier::new(MessageDigest::sha256(), key) else { return false };
    v.update(signed).is_ok() && v.verify(signature).unwrap_or(false)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Ok(d) = hash(MessageDigest::sha256(), bytes) {
        out.copy_from_slice(&d);
    }
    out
}

#[cfg(test)]
mod tests;
