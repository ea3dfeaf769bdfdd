//! Per-domain hits and bytes from the HTTP router's stats server (`http-stats-server`): which
//! container each subscription node is, and the node counters summed per (container, domain).

use crate::parse::{self, RouterNode};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

/// Counters of one domain served by one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DomainCounters {
    pub hits: u64,
    pub rx: u64,
    pub tx: u64,
}

/// `(uid, domain)` -> counters.
pub type DomainSamples = BTreeMap<(u32, String), DomainCounters>;

/// Reads the whole stats document: `host:port` over TCP, anything else is a unix socket path.
/// The server writes the JSON and closes.
pub fn fetch(address: &str, timeout: Duration) -> Result<String, String> {
    let mut text = String::new();
    let result = if address.starts_with('/') {
        std::os::unix::net::UnixStream::connect(address).and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            s.read_to_string(&mut text)
        })
    } else {
        let addr = address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("--router-stats {address}: not host:port or a socket path: {e}"))?;
        std::net::TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
            s.set_read_timeout(Some(timeout))?;
            s.read_to_string(&mut text)
        })
    };
    result.map_err(|e| format!("router stats at {address}: {e}"))?;
    Ok(text)
}

/// The container uid a subscription node belongs to, or `None` if it is not one of `uids`:
/// 1. the sender uid the router recorded (routers taking announces directly, with
///    `subscriptions-use-credentials`);
/// 2. an address on the containers' network (`10.x.y.z:port`, `container_spec::ip_of`);
/// 3. a socket path (the platform's validator hands the router a pinned name that resolves to
///    the container's own socket file, which the validator checked is the container's): its
///    owner.
pub fn owner(node: &RouterNode, uids: &BTreeSet<u32>) -> Option<u32> {
    let uid = if node.uid > 0 {
        Some(node.uid)
    } else if node.name.starts_with('/') {
        std::fs::metadata(&node.name).ok().map(|m| m.uid())
    } else {
        let ip: Ipv4Addr = node.name.rsplit_once(':')?.0.parse().ok()?;
        let n = u32::from(ip) & 0x00ff_ffff;
        let uid = n.wrapping_sub(2).wrapping_add(container_spec::BASE_UID);
        (container_spec::ip_of(uid) == ip).then_some(uid)
    }?;
    uids.contains(&uid).then_some(uid)
}

/// Sums the nodes of each (container, domain); nodes of no container of this node are left
/// out (and counted in the second value, for the log).
pub fn per_container(nodes: &[RouterNode], uids: &BTreeSet<u32>) -> (DomainSamples, usize) {
    let mut out = DomainSamples::new();
    let mut unknown = 0;
    for node in nodes {
        let Some(uid) = owner(node, uids) else {
            unknown += 1;
            continue;
        };
        let c = out.entry((uid, node.domain.clone())).or_default();
        c.hits = c.hits.saturating_add(node.requests);
        c.rx = c.rx.saturating_add(node.rx);
        c.tx = c.tx.saturating_add(node.tx);
    }
    (out, unknown)
}

/// Fetches and attributes the router's counters.
pub fn collect(address: &str, uids: &BTreeSet<u32>) -> Result<(DomainSamples, usize), String> {
    let text = fetch(address, Duration::from_secs(5))?;
    let nodes = parse::router_stats(&text)?;
    Ok(per_container(&nodes, uids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(domain: &str, name: &str, uid: u32, requests: u64) -> RouterNode {
        RouterNode { domain: domain.into(), name: name.into(), uid, requests, rx: requests * 10, tx: requests * 100 }
    }

    #[test]
    fn nodes_are_attributed_by_uid_address_or_socket_owner() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("app.sock");
        std::fs::write(&sock, "").unwrap();
        std::os::unix::fs::chown(&sock, Some(30703), None).unwrap();
        let pin = t.path().join("pin-1");
        std::os::unix::fs::symlink(&sock, &pin).unwrap();
        let uids: BTreeSet<u32> = [30701, 30702, 30703].into();
        let ip = container_spec::ip_of(30702);
        let nodes = vec![
            node("a.example.com", "/nowhere", 30701, 3),
            node("a.example.com", &format!("{ip}:3031"), 0, 4),
            node("b.example.com", pin.to_str().unwrap(), 0, 5),
            node("b.example.com", pin.to_str().unwrap(), 0, 6),
            node("c.example.com", "/nowhere/else", 0, 7),
            node("c.example.com", "10.255.255.255:80", 0, 8),
            node("c.example.com", "/x", 40000, 9),
        ];
        let (samples, unknown) = per_container(&nodes, &uids);
        assert_eq!(unknown, 3);
        assert_eq!(samples[&(30701, "a.example.com".to_string())], DomainCounters { hits: 3, rx: 30, tx: 300 });
        assert_eq!(samples[&(30702, "a.example.com".to_string())].hits, 4);
        // two nodes of one container for one domain (two vassals) add up
        assert_eq!(samples[&(30703, "b.example.com".to_string())], DomainCounters { hits: 11, rx: 110, tx: 1100 });
        assert_eq!(samples.len(), 3);
    }
}
