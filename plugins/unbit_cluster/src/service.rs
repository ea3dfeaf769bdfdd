//! The two gateway processes: the relay (between the node's fastrouter validator and its
//! fastrouter: passes every accepted announce on, and tells the other members which domains
//! this node serves) and the receiver (members' signed announces in, routes to their
//! fastrouters out, into the node's HTTP router).

use crate::members::{self, Member};
use crate::message::{self, Announce, Cmd, ReplayGuard, Sequence};
use openssl::pkey::{PKey, Private};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
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
}

/// A local key not re-announced for this long is no longer served by this node (vassals
/// announce every 10 s; the routers drop a silent node after 30 s).
const LOCAL_TTL: Duration = Duration::from_secs(35);
const TICK: Duration = Duration::from_millis(500);

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

fn read_key(path: &Path) -> Result<PKey<Private>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("the node key {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("the node key {} is readable by others: chmod 600 it", path.display()));
    }
    let pem = std::fs::read(path).map_err(|e| format!("the node key {}: {e}", path.display()))?;
    let key = PKey::private_key_from_pem(&pem).map_err(|e| format!("the node key {}: {e}", path.display()))?;
    if key.id() != openssl::pkey::Id::ED25519 {
        return Err(format!(
            "the node key {} is not an Ed25519 key (openssl genpkey -algorithm ed25519)",
            path.display()
        ));
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
    let key = read_key(&config.key)?;
    let mut legion = Legion::load(&config.members)?;
    let me = legion
        .get(&config.node)
        .ok_or_else(|| format!("this node ({}) is not in {}", config.node, config.members.display()))?
        .clone();
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
        "cluster relay: {} -> {}, announcing this node ({}) to the Legion from {}",
        socket.display(),
        fastrouter.display(),
        config.node,
        me.cluster.ip()
    );
    let mut buf = vec![0u8; 65536];
    let mut last_tick = Instant::now();
    loop {
        if let Ok(n) = input.recv(&mut buf) {
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
                    if let Some(cmd) = cmd {
                        broadcast(&udp, &legion, &config.node, &key, &mut seq, cmd, &a.key);
                    }
                }
                Err(e) => uwsgi::log!("cluster relay: an announce from the validator does not parse: {e}"),
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            legion.refresh();
            let mut expired = Vec::new();
            for (k, addrs) in local.iter_mut() {
                addrs.retain(|_, seen| seen.elapsed() < LOCAL_TTL);
                if addrs.is_empty() {
                    expired.push(k.clone());
                }
            }
            for k in expired {
                local.remove(&k);
                broadcast(&udp, &legion, &config.node, &key, &mut seq, Cmd::Unsubscribe, &k);
            }
        }
    }
}

fn broadcast(
    udp: &UdpSocket,
    legion: &Legion,
    me: &str,
    key: &PKey<Private>,
    seq: &mut Sequence,
    cmd: Cmd,
    domain: &str,
) {
    for m in legion.members.iter().filter(|m| m.name != me) {
        let a =
            Announce { node: me.to_string(), seq: seq.next(now_ns()), unix_ms: now_ms(), cmd, key: domain.to_string() };
        match message::seal(&a, key) {
            Ok(d) => {
                if let Err(e) = udp.send_to(&d, m.cluster) {
                    uwsgi::log!("cluster relay: sending {domain} to member {} at {}: {e}", m.name, m.cluster);
                }
            }
            Err(e) => uwsgi::log!("cluster relay: {e}"),
        }
    }
}

/// The receiver: members' announces on this node's cluster address, routes to their
/// fastrouters into `router` (the HTTP router's private subscription socket).
pub fn run_receiver(config: &Config, router: &Path) -> Result<(), String> {
    let mut legion = Legion::load(&config.members)?;
    let me = legion
        .get(&config.node)
        .ok_or_else(|| format!("this node ({}) is not in {}", config.node, config.members.display()))?
        .clone();
    let udp = UdpSocket::bind(me.cluster).map_err(|e| format!("binding the cluster listener {}: {e}", me.cluster))?;
    udp.set_read_timeout(Some(TICK)).map_err(|e| e.to_string())?;
    let out = UnixDatagram::unbound().map_err(|e| e.to_string())?;
    out.set_write_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
    let mut guard = ReplayGuard::new(config.window_secs * 1000);
    let mut known: HashMap<(String, String), Instant> = HashMap::new();
    let mut refused_lines = (Instant::now(), 0u32);
    uwsgi::log!("cluster receiver: members' announces on {} -> router {}", me.cluster, router.display());
    let mut buf = vec![0u8; 2048];
    let mut last_tick = Instant::now();
    loop {
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            match admit(&buf[..n], from, &legion, &config.node, &mut guard) {
                Ok((a, member)) => {
                    let packet = wire::PacketBuilder::new()
                        .var("key", &a.key)
                        .var("address", member.fastrouter.to_string())
                        .var("modifier1", "0")
                        .var("modifier2", "0")
                        .var("cores", "1")
                        .var("load", "0")
                        .var("weight", "1")
                        .finish(match a.cmd {
                            Cmd::Subscribe => wire::Command::Subscribe,
                            Cmd::Unsubscribe => wire::Command::Unsubscribe,
                        });
                    if let Err(e) = out.send_to(&packet, router) {
                        uwsgi::log!("cluster receiver: handing {} to the router at {}: {e}", a.key, router.display());
                    }
                    let id = (a.key.clone(), member.name.clone());
                    match a.cmd {
                        Cmd::Subscribe => {
                            if known.insert(id, Instant::now()).is_none() {
                                uwsgi::log!(
                                    "cluster: accepted {} from member {} => {}",
                                    a.key,
                                    member.name,
                                    member.fastrouter
                                );
                            }
                        }
                        Cmd::Unsubscribe => {
                            known.remove(&id);
                            uwsgi::log!("cluster: member {} no longer serves {}", member.name, a.key);
                        }
                    }
                }
                Err(reason) => {
                    // Bounded: a flood of junk must not fill the disk.
                    if refused_lines.0.elapsed() > Duration::from_secs(10) {
                        refused_lines = (Instant::now(), 0);
                    }
                    refused_lines.1 += 1;
                    if refused_lines.1 <= 50 {
                        uwsgi::log!("cluster: REFUSED an announce from {from}: {reason}");
                    }
                }
            }
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            legion.refresh();
            known.retain(|_, seen| seen.elapsed() < LOCAL_TTL);
        }
    }
}

fn admit<'a>(
    d: &[u8],
    from: SocketAddr,
    legion: &'a Legion,
    me: &str,
    guard: &mut ReplayGuard,
) -> Result<(Announce, &'a Member), String> {
    let (a, signed, sig) = message::parse(d)?;
    let member = legion.get(&a.node).ok_or_else(|| format!("{} is not a member of this Legion", a.node))?;
    if member.name == me {
        return Err(format!("{} is this node's own name", a.node));
    }
    if from.ip() != member.cluster.ip() {
        return Err(format!(
            "claims to be member {} but comes from {} (its address is {})",
            a.node,
            from.ip(),
            member.cluster.ip()
        ));
    }
    if !message::verify(signed, sig, &member.key) {
        return Err(format!("bad signature for member {} (announce of {})", a.node, a.key));
    }
    guard.admit(&a, now_ms()).map_err(|e| format!("announce of {} by member {}: {e}", a.key, a.node))?;
    Ok((a, member))
}
