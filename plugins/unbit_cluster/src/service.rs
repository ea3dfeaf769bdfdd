//! The two gateway processes: the relay (between the node's fastrouter validator and its
//! fastrouter: passes every accepted announce on, and tells the other members which domains
//! this node serves, and gives them the certificates of its `ssl-cluster-domain`s, sealed) and
//! the receiver (members' signed announces in, routes to their fastrouters out, into the node's
//! HTTP router; their sealed certificates into the router's cluster index).

use crate::members::{self, Member};
use crate::message::{self, Announce, Cmd, ReplayGuard, Sequence};
use crate::sealed::{self, Op};
use openssl::pkey::{Id, PKey, Private};
use sni_index::{names, ClientCa, Entry, IndexDir};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unbit_subscriptions::wire;

#[derive(Clone, Debug)]
pub struct Config {
    pub node: String,
    pub members: PathBuf,
    pub key: PathBuf,
    pub window_secs: i64,
    /// This node's X25519 private key: members seal certificates to it (receiver).
    pub x25519_key: PathBuf,
    /// The fastrouter validator's certificate index, whose entries the relay shares; `None`:
    /// beside the relay's socket.
    pub sni_from: Option<PathBuf>,
    /// Where the receiver writes the members' certificates; `None`: the router's cluster index
    /// ([`sni_index::cluster_dir`]).
    pub sni_dir: Option<PathBuf>,
}

/// A local key not re-announced for this long is no longer served by this node (vassals
/// announce every 10 s; the routers drop a silent node after 30 s).
const LOCAL_TTL: Duration = Duration::from_secs(35);
const TICK: Duration = Duration::from_millis(500);
/// A certificate shared with the members is sent again this often, unchanged: a receiver that
/// restarted (its index starts empty) or a member that joined has it within this time.
const RESEND: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The members file, reloaded when it changes.
struct Legion {
    path: PathBuf,
    stamp: Option<SystemTime>,
    members: Vec<Member>,
}

impl Legion {
    fn load(path: &Path) -> Result<Legion, String> {
        let mut l = Legion { path: path.to_path_buf(), stamp: None, members: Vec::new() };
        l.members = members::load(path)?;
        l.stamp = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Ok(l)
    }

    fn refresh(&mut self) {
        let stamp = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if stamp == self.stamp {
            return;
        }
        self.stamp = stamp;
        match members::load(&self.path) {
            Ok(m) => {
                uwsgi::log!("cluster: the Legion now has {} members", m.len());
                self.members = m;
            }
            Err(e) => uwsgi::log!("cluster: keeping the previous members: {e}"),
        }
    }

    fn get(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// A node's private key (PEM, 0600) of type `id` (Ed25519 or X25519).
fn read_key(path: &Path, id: Id) -> Result<PKey<Private>, String> {
    let (what, alg) = if id == Id::X25519 { ("X25519 key", "x25519") } else { ("node key", "ed25519") };
    let meta = std::fs::metadata(path).map_err(|e| format!("the {what} {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("the {what} {} is readable by others: chmod 600 it", path.display()));
    }
    let pem = std::fs::read(path).map_err(|e| format!("the {what} {}: {e}", path.display()))?;
    let key = PKey::private_key_from_pem(&pem).map_err(|e| format!("the {what} {}: {e}", path.display()))?;
    if key.id() != id {
        return Err(format!("the {what} {} is not one (openssl genpkey -algorithm {alg})", path.display()));
    }
    Ok(key)
}

fn bind_unix(path: &Path) -> Result<UnixDatagram, String> {
    let _ = std::fs::remove_file(path);
    let s = UnixDatagram::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    s.set_read_timeout(Some(TICK)).map_err(|e| e.to_string())?;
    Ok(s)
}

/// The relay: `socket` is where the fastrouter's validator sends (its
/// `unbit-subscriptions-router`), `fastrouter` the fastrouter's own subscription socket.
pub fn run_relay(config: &Config, socket: &Path, fastrouter: &Path) -> Result<(), String> {
    let key = read_key(&config.key, Id::ED25519)?;
    let mut legion = Legion::load(&config.members)?;
    let me = legion
        .get(&config.node)
        .ok_or_else(|| format!("this node ({}) is not in {}", config.node, config.members.display()))?
        .clone();
    let sni_from = config.sni_from.clone().unwrap_or_else(|| sni_index::default_dir(socket));
    let mut certs: HashMap<String, Shared> = HashMap::new();
    let input = bind_unix(socket)?;
    let out = UnixDatagram::unbound().map_err(|e| e.to_string())?;
    out.set_write_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    // Sent from the node's own cluster address: receivers check the source.
    let udp = UdpSocket::bind(SocketAddr::new(me.cluster.ip(), 0))
        .map_err(|e| format!("binding {} for the cluster's announces: {e}", me.cluster.ip()))?;
    let mut seq = Sequence::new();
    // key -> local addresses (pinned sockets) serving it, with when they last announced
    let mut local: HashMap<String, HashMap<String, Instant>> = HashMap::new();
    uwsgi::log!(
        "cluster relay: {} -> {}, announcing this node ({}) to the Legion from {}, certificates from {}",
        socket.display(),
        fastrouter.display(),
        config.node,
        me.cluster.ip(),
        sni_from.display()
    );
    let mut buf = vec![0u8; 65536];
    let mut last_tick = Instant::now();
    let mut errors = RecvErrors::new(format!("cluster relay: receiving from the validator on {}", socket.display()));
    loop {
        let received = input.recv(&mut buf);
        if let Err(e) = &received {
            errors.note(e);
        }
        if let Ok(n) = received {
            let packet = &buf[..n];
            if let Err(e) = out.send_to(packet, fastrouter) {
                uwsgi::log!("cluster relay: passing an announce to the fastrouter at {}: {e}", fastrouter.display());
            }
            match wire::parse(packet) {
                Ok(a) => {
                    let cmd = match a.command {
                        wire::Command::Subscribe => {
                            local.entry(a.key.clone()).or_default().insert(a.address.clone(), Instant::now());
                            Some(Cmd::Subscribe)
                        }
                        wire::Command::Unsubscribe => {
                            let gone = local.get_mut(&a.key).is_some_and(|m| {
                                m.remove(&a.address);
                                m.is_empty()
                            });
                            gone.then(|| {
                                local.remove(&a.key);
                                Cmd::Unsubscribe
                            })
                        }
                    };
                    let out = Out { udp: &udp, legion: &legion, me: &config.node, key: &key };
                    match cmd {
                        Some(Cmd::Unsubscribe) => {
                            certs.remove(&a.key);
                            broadcast(&out, &mut seq, Cmd::Unsubscribe, &a.key);
                        }
                        Some(_) => {
                            // The certificate first (the validator wrote the entry before it
                            // passed the announce on), then the announce, which says whether
                            // it has a client CA.
                            share(&out, &mut seq, &mut certs, &sni_from, &a.key);
                            let cmd = if certs.get(&a.key).is_some_and(|c| c.protected) {
                                Cmd::SubscribeProtected
                            } else {
                                Cmd::Subscribe
                            };
                            broadcast(&out, &mut seq, cmd, &a.key);
                        }
                        None => {}
                    }
                }
                Err(e) => uwsgi::log!("cluster relay: an announce from the validator does not parse: {e}"),
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            legion.refresh();
            let out = Out { udp: &udp, legion: &legion, me: &config.node, key: &key };
            let mut expired = Vec::new();
            for (k, addrs) in local.iter_mut() {
                addrs.retain(|_, seen| seen.elapsed() < LOCAL_TTL);
                if addrs.is_empty() {
                    expired.push(k.clone());
                }
            }
            for k in expired {
                local.remove(&k);
                certs.remove(&k);
                broadcast(&out, &mut seq, Cmd::Unsubscribe, &k);
            }
            for k in local.keys() {
                share(&out, &mut seq, &mut certs, &sni_from, k);
            }
        }
    }
}

/// How often a receive error that keeps coming back is logged again.
const RECV_ERROR_EVERY: Duration = Duration::from_secs(60);

/// One socket's receive errors for the instance's log: each kind the first time, then at most
/// once every [`RECV_ERROR_EVERY`] with how many came meanwhile, so that a persistent one
/// neither goes unseen nor fills the disk. The socket's read timeout (`EAGAIN`, which paces the
/// loop's ticks) and a signal (`EINTR`) are not errors.
struct RecvErrors {
    /// The gateway and the socket, as the log names them.
    what: String,
    /// Per kind: when it was last logged, and how many times it came since.
    seen: HashMap<(std::io::ErrorKind, Option<i32>), (Instant, u64)>,
}

impl RecvErrors {
    fn new(what: String) -> RecvErrors {
        RecvErrors { what, seen: HashMap::new() }
    }

    /// Logs `e` if it is time to.
    fn note(&mut self, e: &std::io::Error) {
        if is_recv_error(e) {
            if let Some(line) = self.line(e, Instant::now()) {
                uwsgi::log!("{line}");
            }
            // An error that comes back at once must not spin a core in this loop.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The line to log for `e` at `now`, if any.
    fn line(&mut self, e: &std::io::Error, now: Instant) -> Option<String> {
        if !is_recv_error(e) {
            return None;
        }
        let what = &self.what;
        match self.seen.get_mut(&(e.kind(), e.raw_os_error())) {
            None => {
                self.seen.insert((e.kind(), e.raw_os_error()), (now, 0));
                Some(format!("{what}: {e}"))
            }
            Some((last, more)) if now.duration_since(*last) >= RECV_ERROR_EVERY => {
                let line = match *more {
                    0 => format!("{what}: {e}"),
                    n => format!("{what}: {e} ({n} more in the last {} s)", now.duration_since(*last).as_secs()),
                };
                (*last, *more) = (now, 0);
                Some(line)
            }
            Some((_, more)) => {
                *more += 1;
                None
            }
        }
    }
}

/// Whether a receive failed (rather than timed out or was interrupted).
fn is_recv_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    !matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

/// What the relay sends with.
struct Out<'a> {
    udp: &'a UdpSocket,
    legion: &'a Legion,
    me: &'a str,
    key: &'a PKey<Private>,
}

/// A local key's certificate as the members last got it.
struct Shared {
    /// The entry file's identity when last read (a new entry is a new inode: written, renamed).
    file: Option<(u64, u64, i64, i64)>,
    /// What the members have (`None`: no certificate, or one not shared).
    entry: Option<Vec<u8>>,
    /// It has a client CA: the announces say so.
    protected: bool,
    sent: Instant,
}

/// Gives the members the certificate of `name` when the fastrouter validator's entry for it
/// appeared or changed (a renewal), takes it back when the entry went, and sends it again
/// every [`RESEND`].
fn share(out: &Out<'_>, seq: &mut Sequence, certs: &mut HashMap<String, Shared>, from: &Path, name: &str) {
    if !names::is_entry_name(name) {
        return;
    }
    let file = std::fs::symlink_metadata(from.join(name))
        .ok()
        .filter(|m| m.is_file())
        .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
    let st = certs.entry(name.to_string()).or_insert(Shared {
        file: None,
        entry: None,
        protected: false,
        sent: Instant::now(),
    });
    if file == st.file {
        if st.entry.is_some() && st.sent.elapsed() >= RESEND {
            st.sent = Instant::now();
            seal_to_members(out, seq, Op::Put, name, st.entry.as_deref());
        }
        return;
    }
    st.file = file;
    let entry = match file.map(|_| std::fs::read(from.join(name))) {
        None => None,
        Some(Err(e)) => {
            uwsgi::log!("cluster relay: reading the certificate of {name} in {}: {e}", from.display());
            None
        }
        Some(Ok(bytes)) => match Entry::decode(&bytes) {
            Ok(_) if bytes.len() > sealed::MAX_ENTRY => {
                uwsgi::log!(
                    "cluster relay: the certificate of {name} is {} bytes, over the {} a member is sent",
                    bytes.len(),
                    sealed::MAX_ENTRY
                );
                None
            }
            Ok(e) => {
                st.protected = e.bundle.client_ca != ClientCa::None;
                Some(bytes)
            }
            Err(e) => {
                uwsgi::log!("cluster relay: the certificate of {name} in {} does not decode: {e}", from.display());
                None
            }
        },
    };
    if entry.is_none() {
        st.protected = false;
    }
    match (&st.entry, entry) {
        (_, Some(bytes)) => {
            st.sent = Instant::now();
            seal_to_members(out, seq, Op::Put, name, Some(&bytes));
            st.entry = Some(bytes);
        }
        (Some(_), None) => {
            st.entry = None;
            seal_to_members(out, seq, Op::Drop, name, None);
        }
        (None, None) => {}
    }
}

/// One datagram per member with an X25519 key, sealed to that key.
fn seal_to_members(out: &Out<'_>, seq: &mut Sequence, op: Op, name: &str, entry: Option<&[u8]>) {
    for m in out.legion.members.iter().filter(|m| m.name != out.me) {
        let Some(to) = &m.x25519 else { continue };
        let h = sealed::Header {
            node: out.me.to_string(),
            to: m.name.clone(),
            seq: seq.next(now_ns()),
            unix_ms: now_ms(),
            op,
            name: name.to_string(),
        };
        match sealed::seal(&h, entry, out.key, to) {
            Ok(d) => {
                if let Err(e) = out.udp.send_to(&d, m.cluster) {
                    uwsgi::log!(
                        "cluster relay: sending the certificate of {name} to member {} at {}: {e}",
                        m.name,
                        m.cluster
                    );
                }
            }
            Err(e) => uwsgi::log!("cluster relay: {e}"),
        }
    }
}

fn broadcast(out: &Out<'_>, seq: &mut Sequence, cmd: Cmd, domain: &str) {
    for m in out.legion.members.iter().filter(|m| m.name != out.me) {
        let a = Announce {
            node: out.me.to_string(),
            seq: seq.next(now_ns()),
            unix_ms: now_ms(),
            cmd,
            key: domain.to_string(),
        };
        match message::seal(&a, out.key) {
            Ok(d) => {
                if let Err(e) = out.udp.send_to(&d, m.cluster) {
                    uwsgi::log!("cluster relay: sending {domain} to member {} at {}: {e}", m.name, m.cluster);
                }
            }
            Err(e) => uwsgi::log!("cluster relay: {e}"),
        }
    }
}

/// The receiver: members' announces on this node's cluster address, routes to their
/// fastrouters into `router` (the HTTP router's private subscription socket); members' sealed
/// certificates into the router's cluster index.
pub fn run_receiver(config: &Config, router: &Path) -> Result<(), String> {
    let mut legion = Legion::load(&config.members)?;
    let me = legion
        .get(&config.node)
        .ok_or_else(|| format!("this node ({}) is not in {}", config.node, config.members.display()))?
        .clone();
    let x25519 = read_key(&config.x25519_key, Id::X25519)?;
    let sni_dir = config.sni_dir.clone().unwrap_or_else(|| sni_index::cluster_dir(&sni_index::default_dir(router)));
    let mut certs = Certs::new(&sni_dir, router_group(router))?;
    let udp = UdpSocket::bind(me.cluster).map_err(|e| format!("binding the cluster listener {}: {e}", me.cluster))?;
    udp.set_read_timeout(Some(TICK)).map_err(|e| e.to_string())?;
    let out = UnixDatagram::unbound().map_err(|e| e.to_string())?;
    out.set_write_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let started = now_ns();
    let mut guard = ReplayGuard::new(config.window_secs * 1000, started);
    // Sealed certificates count on their own: a large datagram overtaken by a small announce
    // must not look like a replay.
    let mut sealed_guard = ReplayGuard::new(config.window_secs * 1000, started);
    let mut known: HashMap<(String, String), Instant> = HashMap::new();
    let mut refused_lines = (Instant::now(), 0u32);
    uwsgi::log!(
        "cluster receiver: members' announces on {} -> router {}, their certificates -> {}",
        me.cluster,
        router.display(),
        sni_dir.display()
    );
    let mut buf = vec![0u8; sealed::MAX_DATAGRAM];
    let mut last_tick = Instant::now();
    let mut errors = RecvErrors::new(format!("cluster receiver: receiving members' announces on {}", me.cluster));
    loop {
        let received = udp.recv_from(&mut buf);
        if let Err(e) = &received {
            errors.note(e);
        }
        if let Ok((n, from)) = received {
            let d = &buf[..n];
            let outcome = if sealed::is_sealed(d) {
                admit_sealed(d, from, &legion, &config.node, &mut sealed_guard, &x25519).map(|(h, member, entry)| {
                    certs.offer(&h.name, &member.name, entry, &known);
                })
            } else {
                admit(d, from, &legion, &config.node, &mut guard).map(|(a, member)| {
                    let route = |command: wire::Command| {
                        let packet = wire::PacketBuilder::new()
                            .var("key", &a.key)
                            .var("address", member.fastrouter.to_string())
                            .var("modifier1", "0")
                            .var("modifier2", "0")
                            .var("cores", "1")
                            .var("load", "0")
                            .var("weight", "1")
                            .finish(command);
                        if let Err(e) = out.send_to(&packet, router) {
                            uwsgi::log!(
                                "cluster receiver: handing {} to the router at {}: {e}",
                                a.key,
                                router.display()
                            );
                        }
                    };
                    let id = (a.key.clone(), member.name.clone());
                    match a.cmd {
                        Cmd::Subscribe | Cmd::SubscribeProtected => {
                            let new = known.insert(id, Instant::now()).is_none();
                            if new {
                                uwsgi::log!(
                                    "cluster: accepted {} from member {} => {}",
                                    a.key,
                                    member.name,
                                    member.fastrouter
                                );
                                certs.sync(&a.key, &known);
                            }
                            // A domain behind a client CA is routed only once this node's
                            // front door has its rule: never reachable here without it.
                            if a.cmd == Cmd::SubscribeProtected && !certs.protects(&a.key) {
                                if new {
                                    uwsgi::log!(
                                        "cluster: {} of member {} has a client CA: routed once its certificate is here",
                                        a.key,
                                        member.name
                                    );
                                }
                                return;
                            }
                            route(wire::Command::Subscribe);
                        }
                        Cmd::Unsubscribe => {
                            route(wire::Command::Unsubscribe);
                            known.remove(&id);
                            uwsgi::log!("cluster: member {} no longer serves {}", member.name, a.key);
                            certs.offer(&a.key, &member.name, None, &known);
                        }
                    }
                })
            };
            if let Err(reason) = outcome {
                // Bounded: a flood of junk must not fill the disk.
                if refused_lines.0.elapsed() > Duration::from_secs(10) {
                    refused_lines = (Instant::now(), 0);
                }
                refused_lines.1 += 1;
                if refused_lines.1 <= 50 {
                    uwsgi::log!("cluster: REFUSED {} from {from}: {reason}", what(d));
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            legion.refresh();
            let mut silent = Vec::new();
            known.retain(|id, seen| {
                let keep = seen.elapsed() < LOCAL_TTL;
                if !keep {
                    silent.push(id.clone());
                }
                keep
            });
            for (name, member) in silent {
                certs.offer(&name, &member, None, &known);
            }
            certs.expire(&known);
        }
    }
}

fn what(d: &[u8]) -> &'static str {
    if sealed::is_sealed(d) {
        "a sealed certificate"
    } else {
        "an announce"
    }
}

/// The group of the router's private directory when its group may enter it (root:unbit-router
/// 0710 on a node): the group that may read the cluster index. `None`: the router runs as root.
fn router_group(router: &Path) -> Option<u32> {
    let md = std::fs::metadata(router.parent()?).ok()?;
    (md.gid() != 0 && md.mode() & 0o010 != 0).then_some(md.gid())
}

/// The members' certificates: which member gave which entry, and what the router's cluster
/// index holds. An entry is written while a member that gave it serves its name (announces it);
/// when none does any more, it is removed.
struct Certs {
    index: IndexDir,
    /// name -> member -> (entry, when received)
    given: HashMap<String, HashMap<String, (Vec<u8>, Instant)>>,
    /// name -> (the member whose entry the index holds, the entry)
    written: HashMap<String, (String, Vec<u8>)>,
    /// Entries a previous receiver wrote, kept until then: a respawned receiver does not make
    /// the Lord serve its default certificate while the members' next resend is on its way.
    inherited: HashMap<String, Instant>,
    /// The client-CA list beside the entries ([`sni_index::CLIENT_CA_LIST`]): every entry's
    /// policy, `none` included (an exact name answers for itself, not its wildcard's rule).
    policies: BTreeMap<String, ClientCa>,
}

/// What an inherited entry is recorded as given by.
const INHERITED: &str = "(a previous receiver)";

impl Certs {
    fn new(dir: &Path, gid: Option<u32>) -> Result<Certs, String> {
        let (index, kept) = IndexDir::keep(dir, gid)?;
        let mut certs = Certs {
            index,
            given: HashMap::new(),
            written: HashMap::new(),
            inherited: HashMap::new(),
            policies: BTreeMap::new(),
        };
        let until = Instant::now() + RESEND + TICK * 4;
        for name in kept {
            match std::fs::read(dir.join(&name)) {
                Ok(bytes) => {
                    certs.policies.insert(name.clone(), policy(&bytes));
                    certs.written.insert(name.clone(), (INHERITED.to_string(), bytes));
                    certs.inherited.insert(name, until);
                }
                Err(e) => uwsgi::log!("cluster: the previous certificate of {name} in {}: {e}", dir.display()),
            }
        }
        // Written before the router could be told about any name of ours.
        certs.index.put_ca_list(&certs.policies)?;
        if !certs.inherited.is_empty() {
            uwsgi::log!(
                "cluster: kept {} certificates of the previous receiver until the members confirm them",
                certs.inherited.len()
            );
        }
        Ok(certs)
    }

    /// Whether the front door has `name`'s client-CA rule (its entry has a client CA).
    fn protects(&self, name: &str) -> bool {
        self.policies.get(name).is_some_and(|p| *p != ClientCa::None)
    }

    /// Writes the client-CA list with `name`'s policy (`None`: without it) when it changes.
    fn set_policy(&mut self, name: &str, p: Option<ClientCa>) -> Result<(), String> {
        let mut list = self.policies.clone();
        match p {
            Some(p) => list.insert(name.to_string(), p),
            None => list.remove(name),
        };
        if list != self.policies {
            self.index.put_ca_list(&list)?;
            self.policies = list;
        }
        Ok(())
    }

    /// Inherited entries no member confirmed in time are removed.
    fn expire(&mut self, known: &HashMap<(String, String), Instant>) {
        let now = Instant::now();
        let due: Vec<String> =
            self.inherited.iter().filter(|(_, until)| **until <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            self.inherited.remove(&name);
            self.sync(&name, known);
        }
    }

    /// `member`'s entry for `name` (`None`: it has none any more), then the index updated.
    fn offer(&mut self, name: &str, member: &str, entry: Option<Vec<u8>>, known: &HashMap<(String, String), Instant>) {
        match entry {
            Some(e) => {
                self.given.entry(name.to_string()).or_default().insert(member.to_string(), (e, Instant::now()));
            }
            None => {
                // A member withdrew it: an inherited entry waits no longer (members still
                // serving it send theirs again).
                self.inherited.remove(name);
                if let Some(m) = self.given.get_mut(name) {
                    m.remove(member);
                    if m.is_empty() {
                        self.given.remove(name);
                    }
                }
            }
        }
        self.sync(name, known);
    }

    /// Writes the newest entry a member serving `name` gave, or removes the entry.
    fn sync(&mut self, name: &str, known: &HashMap<(String, String), Instant>) {
        let serving = |m: &String| known.contains_key(&(name.to_string(), m.clone()));
        let best = self
            .given
            .get(name)
            .and_then(|by| by.iter().filter(|(m, _)| serving(m)).max_by_key(|(_, (_, at))| *at))
            .map(|(m, (e, _))| (m.clone(), e.clone()));
        if best.is_some() {
            self.inherited.remove(name);
        }
        match best {
            Some((member, entry)) => {
                if let Some((by, w)) = self.written.get_mut(name) {
                    if *w == entry {
                        *by = member;
                        return;
                    }
                }
                // The rule before the entry: no handshake with a protected name's certificate
                // while requests for it are not checked yet.
                match self.set_policy(name, Some(policy(&entry))).and_then(|()| self.index.put(name, &entry)) {
                    Ok(()) => {
                        let summary = Entry::decode(&entry).map(|e| e.bundle.summary()).unwrap_or_default();
                        uwsgi::log!("cluster: serving the certificate of {name} from member {member} ({summary})");
                        self.written.insert(name.to_string(), (member, entry));
                    }
                    Err(e) => uwsgi::log!("cluster: the certificate of {name} from member {member}: {e}"),
                }
            }
            None if self.inherited.contains_key(name) => {}
            None => {
                if self.written.remove(name).is_some() {
                    match self.index.remove(name).and_then(|()| self.set_policy(name, None)) {
                        Ok(()) => uwsgi::log!("cluster: no member serves {name} with a certificate any more: removed"),
                        Err(e) => uwsgi::log!("cluster: {e}"),
                    }
                }
            }
        }
    }
}

/// An entry's client-CA policy (entries were checked on the way in).
fn policy(entry: &[u8]) -> ClientCa {
    Entry::decode(entry).map_or(ClientCa::None, |e| e.bundle.client_ca)
}

/// Checks a sealed certificate as [`admit`] checks an announce (member, its address, its
/// signature, fresh, never seen), then that it was sealed to this node, opens it and checks
/// the entry loads.
fn admit_sealed<'a>(
    d: &[u8],
    from: SocketAddr,
    legion: &'a Legion,
    me: &str,
    guard: &mut ReplayGuard,
    x25519: &PKey<Private>,
) -> Result<(sealed::Header, &'a Member, Option<Vec<u8>>), String> {
    let (h, envelope, signed, sig) = sealed::parse(d)?;
    let member = sender(legion, me, &h.node, from)?;
    if !message::verify(signed, sig, &member.key) {
        return Err(format!("bad signature for member {} (certificate of {})", h.node, h.name));
    }
    if h.to != me {
        return Err(format!("the certificate of {} by member {} is sealed to member {}", h.name, h.node, h.to));
    }
    let as_announce =
        Announce { node: h.node.clone(), seq: h.seq, unix_ms: h.unix_ms, cmd: Cmd::Subscribe, key: h.name.clone() };
    guard.admit(&as_announce, now_ms()).map_err(|e| format!("certificate of {} by member {}: {e}", h.name, h.node))?;
    if !names::is_entry_name(&h.name) {
        return Err(format!("certificate of {:?} by member {}: not a domain name", h.name, h.node));
    }
    let entry = match (h.op, envelope) {
        (Op::Put, Some(env)) => {
            let bytes = sealed::open(&env, x25519)
                .map_err(|e| format!("certificate of {} by member {}: {e}", h.name, h.node))?;
            let entry =
                Entry::decode(&bytes).map_err(|e| format!("certificate of {} by member {}: {e}", h.name, h.node))?;
            // `context` leaves OpenSSL's error queue empty, whether it builds or fails.
            entry.context().map_err(|e| format!("certificate of {} by member {}: {e}", h.name, h.node))?;
            Some(bytes)
        }
        _ => None,
    };
    Ok((h, member, entry))
}

/// The member a datagram names, if it is one (not this node) and the datagram comes from its
/// address.
fn sender<'a>(legion: &'a Legion, me: &str, node: &str, from: SocketAddr) -> Result<&'a Member, String> {
    let member = legion.get(node).ok_or_else(|| format!("{node} is not a member of this Legion"))?;
    if member.name == me {
        return Err(format!("{node} is this node's own name"));
    }
    if from.ip() != member.cluster.ip() {
        return Err(format!(
            "claims to be member {node} but comes from {} (its address is {})",
            from.ip(),
            member.cluster.ip()
        ));
    }
    Ok(member)
}

fn admit<'a>(
    d: &[u8],
    from: SocketAddr,
    legion: &'a Legion,
    me: &str,
    guard: &mut ReplayGuard,
) -> Result<(Announce, &'a Member), String> {
    let (a, signed, sig) = message::parse(d)?;
    let member = sender(legion, me, &a.node, from)?;
    if !message::verify(signed, sig, &member.key) {
        return Err(format!("bad signature for member {} (announce of {})", a.node, a.key));
    }
    guard.admit(&a, now_ms()).map_err(|e| format!("announce of {} by member {}: {e}", a.key, a.node))?;
    Ok((a, member))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn receive_errors_are_logged_once_per_kind_and_then_once_a_minute_with_a_count() {
        let mut errors = RecvErrors::new("cluster receiver: receiving members' announces on 10.0.0.1:3022".into());
        let t0 = Instant::now();
        for quiet in [ErrorKind::WouldBlock, ErrorKind::TimedOut, ErrorKind::Interrupted] {
            assert_eq!(errors.line(&Error::from(quiet), t0), None, "{quiet:?} is no error");
        }
        let refused = Error::from(ErrorKind::ConnectionRefused);
        let first = errors.line(&refused, t0).expect("the first one is logged");
        assert!(first.starts_with("cluster receiver: receiving members' announces on 10.0.0.1:3022: "), "{first}");
        assert!(first.contains(&refused.to_string()), "{first}");
        for s in 0..100 {
            assert_eq!(errors.line(&refused, t0 + Duration::from_millis(s * 500)), None, "the same again: quiet");
        }
        let denied = errors.line(&Error::from(ErrorKind::PermissionDenied), t0 + Duration::from_secs(1));
        assert!(denied.is_some(), "another kind is logged at once");
        let again = errors.line(&refused, t0 + RECV_ERROR_EVERY).expect("a minute later: logged again");
        assert!(again.ends_with("(100 more in the last 60 s)"), "{again}");
        assert_eq!(errors.line(&refused, t0 + RECV_ERROR_EVERY + Duration::from_secs(1)), None);
        let later = errors.line(&refused, t0 + RECV_ERROR_EVERY * 3).expect("the next minute mark: logged");
        assert_eq!(later, first.clone() + " (1 more in the last 120 s)");
    }
}
