//! When a container may announce `<ip>:<port>`, an address the router then connects to over
//! TCP with requests of the customer's choosing.
//!
//! Matching the container's API address is not enough: a container whose network is not set
//! up has only `lo`, and the node would route that address wherever its default route leads
//! (a provider's private 10.0.0.0/8, often). So an IP address passes only when all hold:
//!
//! 1. it is the container's own address (`container_spec::ip_of`), never the node's, another
//!    container's or an outside one;
//! 2. the node routes it through the container's own host interface
//!    (`container_spec::host_interface`), longest prefix first, as the kernel's main table
//!    says (`/proc/net/route`);
//! 3. the process that sent the announce (the kernel-reported pid) belongs to the container's
//!    uid, lives in a network namespace other than the node's, and that namespace has the
//!    address on one of its interfaces (`/proc/<pid>/net/fib_trie`, `host LOCAL`).

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Decides whether a sender owns an IP address.
pub trait IpOwnership {
    /// `Ok` when container `uid`, whose process `pid` sent the announce, may be reached at
    /// `ip`; otherwise the reason, for the operator's log and the container.
    fn check(&self, uid: u32, pid: i32, ip: Ipv4Addr) -> Result<(), String>;
}

/// The node's real routing table and the sender's real namespace, read from `/proc`.
pub struct NodeNetwork {
    proc: PathBuf,
}

impl NodeNetwork {
    pub fn new() -> NodeNetwork {
        NodeNetwork { proc: PathBuf::from("/proc") }
    }
}

impl Default for NodeNetwork {
    fn default() -> Self {
        Self::new()
    }
}

impl IpOwnership for NodeNetwork {
    fn check(&self, uid: u32, pid: i32, ip: Ipv4Addr) -> Result<(), String> {
        let own = container_spec::ip_of(uid);
        if ip != own {
            return Err(format!("{ip} is not the container's own address ({own})"));
        }
        let wanted = container_spec::host_interface(uid);
        let routes = std::fs::read_to_string(self.proc.join("net/route"))
            .map_err(|e| format!("cannot read the node's routes: {e}"))?;
        match route_interface(&routes, ip) {
            Some(dev) if dev == wanted => {}
            Some(dev) => {
                return Err(format!(
                    "the node routes {ip} through {dev}, not through the container's interface {wanted} \
                     (container networking is not set up for it)"
                ))
            }
            None => return Err(format!("the node has no route to {ip} (container networking is not set up for it)")),
        }
        let process = self.proc.join(pid.to_string());
        let owner = std::fs::metadata(&process).map_err(|e| format!("cannot inspect the sender (pid {pid}): {e}"))?;
        if owner.uid() != uid {
            return Err(format!("the sender (pid {pid}) is no longer a process of the container"));
        }
        let ns = |p: PathBuf| std::fs::metadata(&p).map(|m| (m.dev(), m.ino()));
        let (theirs, ours) = (ns(process.join("ns/net")), ns(self.proc.join("self/ns/net")));
        match (theirs, ours) {
            (Ok(t), Ok(o)) if t != o => {}
            (Ok(_), Ok(_)) => return Err("the sender runs in the node's own network namespace".into()),
            (Err(e), _) | (_, Err(e)) => return Err(format!("cannot compare network namespaces: {e}")),
        }
        let trie = std::fs::read_to_string(process.join("net/fib_trie"))
            .map_err(|e| format!("cannot read the container's addresses: {e}"))?;
        if !is_local(&trie, ip) {
            return Err(format!("{ip} is not an address of any interface of the container"));
        }
        Ok(())
    }
}

/// The interface the kernel's main table (the text of `/proc/net/route`) sends `ip` through:
/// the longest matching prefix of an up route that is not a reject route, then the lowest
/// metric. Destinations and masks there are the address bytes in network order, printed as
/// one native-endian (little-endian here) 32-bit hex number.
pub fn route_interface(table: &str, ip: Ipv4Addr) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    const RTF_REJECT: u32 = 0x200;
    let target = u32::from(ip);
    let mut best: Option<(u32, u32, &str)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| u32::from_be_bytes(v.to_le_bytes()));
        let (Some(dest), Some(mask), Ok(flags), Ok(metric)) =
            (hex(f[1]), hex(f[7]), u32::from_str_radix(f[3], 16), f[6].parse::<u32>())
        else {
            continue;
        };
        // A mask must be contiguous ones; anything else is not a prefix (and never matched).
        if mask.leading_ones() + mask.trailing_zeros() != 32 || flags & RTF_UP == 0 || flags & RTF_REJECT != 0 {
            continue;
        }
        if target & mask != dest & mask {
            continue;
        }
        let len = mask.leading_ones();
        let better = match best {
            None => true,
            Some((blen, bmetric, _)) => len > blen || (len == blen && metric < bmetric),
        };
        if better {
            best = Some((len, metric, f[0]));
        }
    }
    best.map(|(_, _, dev)| dev.to_string())
}

/// Whether `/proc/<pid>/net/fib_trie` lists `ip` as a local address (`/32 host LOCAL`).
pub fn is_local(trie: &str, ip: Ipv4Addr) -> bool {
    let wanted = ip.to_string();
    let mut lines = trie.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().strip_prefix("|-- ") != Some(wanted.as_str()) {
            continue;
        }
        while let Some(next) = lines.peek() {
            let t = next.trim_start();
            if !t.starts_with('/') {
                break;
            }
            if t.starts_with("/32 ") && t.ends_with("host LOCAL") {
                return true;
            }
            lines.next();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
        eth0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n\
        uw30001\t0300000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        uw30002\t0400000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        down0\t0500000A\t00000000\t0004\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        blackhole\t0600000A\t00000000\t0201\t0\t0\t0\tFFFFFFFF\t0\t0\t0\n\
        odd\t0700000A\t00000000\t0001\t0\t0\t0\tFF00FFFF\t0\t0\t0\n";

    fn via(ip: &str) -> Option<String> {
        route_interface(ROUTES, ip.parse().unwrap())
    }

    #[test]
    fn the_longest_up_prefix_wins() {
        assert_eq!(via("10.0.0.3").as_deref(), Some("uw30001"));
        assert_eq!(via("10.0.0.4").as_deref(), Some("uw30002"));
        // 10.0.0.0/8 (not /24: the original's mask bug) through eth0 for every other 10.x.
        assert_eq!(via("10.0.0.42").as_deref(), Some("eth0"));
        assert_eq!(via("10.200.1.1").as_deref(), Some("eth0"));
        assert_eq!(via("192.0.2.1").as_deref(), Some("eth0"), "the default route");
        assert_eq!(via("10.0.0.5").as_deref(), Some("eth0"), "a route that is not up is not used");
        assert_eq!(via("10.0.0.6").as_deref(), Some("eth0"), "nor a reject route");
        assert_eq!(via("10.0.0.7").as_deref(), Some("eth0"), "nor a non-contiguous mask");
        assert_eq!(route_interface("Iface\tDestination\n", "10.0.0.3".parse().unwrap()), None);
    }

    #[test]
    fn every_prefix_length_matches_exactly_the_addresses_it_covers() {
        // The class of the original's netmask bug: /n must cover 2^(32-n) addresses, no more.
        for len in 0..=32u32 {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let dest = 0x0a00_0000 & mask;
            let hex = |v: u32| format!("{:08X}", u32::from_le_bytes(v.to_be_bytes()));
            let table = format!("h\nx\t{}\t0\t0001\t0\t0\t0\t{}\n", hex(dest), hex(mask));
            let inside = Ipv4Addr::from(dest | (!mask & 0x5a5a_5a5a));
            assert_eq!(route_interface(&table, inside).as_deref(), Some("x"), "/{len}: {inside}");
            if len > 0 {
                let outside = Ipv4Addr::from(dest ^ (1 << (32 - len)));
                assert_eq!(route_interface(&table, outside), None, "/{len}: {outside}");
            }
        }
    }

    #[test]
    fn only_host_local_addresses_count() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    Local:\n  +-- 10.0.0.0/8 2 0 2\n     |-- 10.0.0.3\n        /32 host LOCAL\n\
                    |-- 10.0.0.4\n        /8 link UNICAST\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert!(is_local(trie, "10.0.0.3".parse().unwrap()));
        assert!(is_local(trie, "127.0.0.1".parse().unwrap()));
        assert!(!is_local(trie, "10.0.0.4".parse().unwrap()), "a subnet route is not an address");
        assert!(!is_local(trie, "10.0.0.30".parse().unwrap()));
    }
}
