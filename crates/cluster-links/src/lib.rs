//! Links between containers on different nodes of a Legion, encrypted between the nodes.
//!
//! Every node has one WireGuard interface (`unbit-wg`) whose peers are the other members of its
//! Legion: their inter-node endpoint, their X25519 public key, and as AllowedIPs the addresses
//! of the containers that run there (`container_spec::ip_of` of each uid). WireGuard's
//! cryptokey routing gives the two properties the links need between nodes: a packet to a
//! remote container is encrypted to the node that runs it, and a packet that comes out of the
//! tunnel carries a source address the sending node owns (anything else is dropped by the
//! tunnel itself). The node's table (`container_net::firewall`, set `tunnel`) then lets only
//! a linked pair through, both ways, and nothing else from the tunnel reaches a container or
//! the node.
//!
//! This crate holds what is independent of where WireGuard runs: the node's key, the links
//! members file, the configuration for boringtun's userspace device (UAPI, used on the
//! development kernel, which has no WireGuard module) and for the kernel's (`wg setconf`
//! format, production), and the routes the node needs. `unbit-links` (src/main.rs) runs it.
//! Design: `docs/networking.md`, "Links across nodes".

use base64::Engine as _;
use boringtun::x25519::{PublicKey, StaticSecret};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

pub mod follow;

/// The interface's MTU: WireGuard's 60 bytes of IPv4 overhead (outer IP, UDP, header, tag)
/// under a 1500-byte inter-node link, as the kernel's `wg-quick` picks it.
pub const TUNNEL_MTU: u32 = 1420;

/// A keepalive keeps each pair's session and NAT state warm, so the first packet of a link
/// does not wait for a handshake.
pub const KEEPALIVE_SECS: u16 = 25;

/// A WireGuard key (32 bytes), written as WireGuard's tools write it: standard base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a private key in a log: only the first bytes, enough to tell keys apart.
        write!(f, "Key({}...)", &self.to_base64()[..8])
    }
}

impl Key {
    pub fn parse(s: &str) -> Result<Key, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| format!("not a WireGuard key (base64 of 32 bytes): {e}"))?;
        let raw: [u8; 32] =
            raw.try_into().map_err(|_| "not a WireGuard key: it must decode to 32 bytes".to_string())?;
        Ok(Key(raw))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn to_hex(self) -> String {
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// A new private key from the kernel's random source.
    pub fn generate() -> Result<Key, String> {
        use std::io::Read as _;
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        Ok(Key(StaticSecret::from(raw).to_bytes()))
    }

    /// The public key of this private key.
    pub fn public(&self) -> Key {
        Key(PublicKey::from(&StaticSecret::from(self.0)).to_bytes())
    }
}

/// Reads the node's private key file: one base64 line, readable by its owner only (refused
/// otherwise: the key is what lets a node decrypt its containers' traffic). The mode is checked
/// on the descriptor that is read, so a file swapped or chmodded between check and read cannot
/// slip through.
pub fn read_private_key(path: &Path) -> Result<Key, String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt;
    let at = |e: std::io::Error| format!("links key {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(at)?;
    let mode = file.metadata().map_err(at)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "links key {}: readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(at)?;
    Key::parse(&text).map_err(|e| format!("links key {}: {e}", path.display()))
}

/// One member of the Legion as the links see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// Where its WireGuard listens on the inter-node network.
    pub endpoint: SocketAddr,
    pub public_key: Key,
    /// The uids of the containers it runs (their addresses are its AllowedIPs).
    pub containers: BTreeSet<u32>,
}

impl Member {
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.containers.iter().map(|&uid| container_spec::ip_of(uid))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    members: Vec<RawMember>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: String,
    endpoint: String,
    public_key: String,
    #[serde(default)]
    containers: Vec<u32>,
}

/// The links members file: every member of the Legion with its containers, the same on every
/// node (the operator's, or node-sync's from the API, which knows where each container runs).
///
/// `{"members": [{"name": "node1", "endpoint": "192.168.250.1:51820",
///   "public_key": "<base64>", "containers": [30501, 30502]}]}`
///
/// Refused whole, with the member's index, when anything is wrong: a half-read file would
/// route a container's traffic to the wrong node, or nowhere.
pub fn parse_members(text: &str) -> Result<Vec<Member>, String> {
    let raw: RawFile = serde_json::from_str(text).map_err(|e| format!("not a links members file: {e}"))?;
    let mut names = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let mut owner_of: BTreeMap<u32, String> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, m) in raw.members.into_iter().enumerate() {
        let at = |what: String| format!("members[{i}] ({:?}): {what}", m.name);
        let name_ok = !m.name.is_empty()
            && m.name.len() <= 64
            && m.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(at("a name is 1 to 64 letters, digits, - _ .".into()));
        }
        if !names.insert(m.name.clone()) {
            return Err(at("named twice".into()));
        }
        let endpoint: SocketAddr =
            m.endpoint.parse().map_err(|e| at(format!("endpoint {:?} is not address:port: {e}", m.endpoint)))?;
        if endpoint.port() == 0 {
            return Err(at("endpoint port 0".into()));
        }
        let public_key = Key::parse(&m.public_key).map_err(at)?;
        if !keys.insert(public_key) {
            return Err(at("its public key is another member's too".into()));
        }
        let mut containers = BTreeSet::new();
        for uid in m.containers {
            if !container_spec::is_container_uid(uid) {
                return Err(at(format!("{uid} is not a container uid")));
            }
            if let Some(other) = owner_of.insert(uid, m.name.clone()) {
                return Err(at(format!("container {uid} is listed on {other:?} too")));
            }
            containers.insert(uid);
        }
        out.push(Member { name: m.name, endpoint, public_key, containers });
    }
    Ok(out)
}

/// What one node's tunnel holds: its key and port, and every other member as a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub private_key: Key,
    pub listen_port: u16,
    pub peers: Vec<Member>,
}

impl NodeConfig {
    /// This node's view of the members file: itself out of the peers (and its public key and
    /// listening port checked against its own entry, so a wrong key file or file shows at
    /// start, not as a silent one-way tunnel).
    pub fn new(node: &str, private_key: Key, members: &[Member]) -> Result<NodeConfig, String> {
        let me = members
            .iter()
            .find(|m| m.name == node)
            .ok_or_else(|| format!("node {node:?} is not in the links members file"))?;
        if me.public_key != private_key.public() {
            return Err(format!(
                "node {node:?}: the members file lists public key {} but this node's key gives {}",
                me.public_key.to_base64(),
                private_key.public().to_base64()
            ));
        }
        let peers = members.iter().filter(|m| m.name != node).cloned().collect();
        Ok(NodeConfig { private_key, listen_port: me.endpoint.port(), peers })
    }

    /// The remote containers' addresses: each one is routed into the tunnel.
    pub fn remote_addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.peers.iter().flat_map(Member::addresses).collect()
    }

    /// The configuration as WireGuard's cross-platform UAPI `set` (boringtun's), replacing
    /// every peer and allowed address: applying it twice is applying it once.
    pub fn uapi_set(&self) -> String {
        let mut s = String::from("set=1\n");
        let _ = writeln!(s, "private_key={}", self.private_key.to_hex());
        let _ = writeln!(s, "listen_port={}", self.listen_port);
        s.push_str("replace_peers=true\n");
        for p in &self.peers {
            let _ = writeln!(s, "public_key={}", p.public_key.to_hex());
            let _ = writeln!(s, "endpoint={}", p.endpoint);
            let _ = writeln!(s, "persistent_keepalive_interval={KEEPALIVE_SECS}");
            s.push_str("replace_allowed_ips=true\n");
            for a in p.addresses() {
                let _ = writeln!(s, "allowed_ip={a}/32");
            }
        }
        s.push('\n');
        s
    }

    /// The same configuration for the kernel's WireGuard (`wg setconf unbit-wg FILE`), as a
    /// production node runs it: same keys, same peers, same AllowedIPs.
    pub fn wg_conf(&self) -> String {
        let mut s = String::from("[Interface]\n");
        let _ = writeln!(s, "PrivateKey = {}", self.private_key.to_base64());
        let _ = writeln!(s, "ListenPort = {}", self.listen_port);
        for p in &self.peers {
            let _ = writeln!(s, "\n# {}\n[Peer]", p.name);
            let _ = writeln!(s, "PublicKey = {}", p.public_key.to_base64());
            let _ = writeln!(s, "Endpoint = {}", p.endpoint);
            let _ = writeln!(s, "PersistentKeepalive = {KEEPALIVE_SECS}");
            let ips: Vec<String> = p.addresses().map(|a| format!("{a}/32")).collect();
            if !ips.is_empty() {
                let _ = writeln!(s, "AllowedIPs = {}", ips.join(", "));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
