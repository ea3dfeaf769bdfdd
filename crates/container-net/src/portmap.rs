//! The port mappings file unbit-node-sync writes (`/var/lib/unbit/portmappings.json`), the
//! API's `/api/node/v1/portmappings` answer:
//! `{"revision": N, "mappings": [{"proto": "tcp"|"udp", "public_ip": "a.b.c.d",
//! "public_port": N, "private_ip": "10.x.y.z", "private_port": N}]}`.

use crate::addr::parse_ipv4;
use crate::firewall::PortMap;
use crate::{NetError, Result};
use serde::Deserialize;
use std::net::Ipv4Addr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)]
    revision: u64,
    mappings: Vec<Mapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mapping {
    proto: String,
    public_ip: String,
    public_port: u32,
    private_ip: String,
    private_port: u32,
}

/// The TCP and UDP maps of a port mappings file. Every mapping must be valid (an address in
/// plain dotted decimal, the private one in 10.0.0.0/8, ports 1..=65535, one target per public
/// address and port), or the whole file is refused, naming the entry: a half-applied file
/// would silently drop a customer's mapping.
pub fn parse(bytes: &[u8]) -> Result<(PortMap, PortMap)> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| NetError(format!("unreadable port mappings: {e}")))?;
    let (mut tcp, mut udp) = (PortMap::new(), PortMap::new());
    for (i, m) in file.mappings.iter().enumerate() {
        let bad = |why: String| NetError(format!("port mapping {i}: {why}"));
        let ip =
            |s: &str, field: &str| parse_ipv4(s).ok_or_else(|| bad(format!("{field} {s:?} is not an IPv4 address")));
        let port = |p: u32, field: &str| {
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| bad(format!("{field} {p} is not a port")))
        };
        let public = (ip(&m.public_ip, "public_ip")?, port(m.public_port, "public_port")?);
        let private: (Ipv4Addr, u16) = (ip(&m.private_ip, "private_ip")?, port(m.private_port, "private_port")?);
        if !crate::CONTAINER_NET.contains(private.0) || private.0 == crate::GATEWAY {
            return Err(bad(format!("private_ip {} is not a container address", private.0)));
        }
        let map = match m.proto.as_str() {
            "tcp" => &mut tcp,
            "udp" => &mut udp,
            other => return Err(bad(format!("proto {other:?} is neither tcp nor udp"))),
        };
        if map.insert(public, private).is_some_and(|old| old != private) {
            return Err(bad(format!("{}:{} {} is mapped twice", public.0, public.1, m.proto)));
        }
    }
    Ok((tcp, udp))
}

/// Reads the file; a missing file means no mappings.
pub fn read(path: &std::path::Path) -> Result<(PortMap, PortMap)> {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes).map_err(|e| NetError(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((PortMap::new(), PortMap::new())),
        Err(e) => Err(NetError(format!("cannot read {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_api_answer() {
        let (tcp, udp) = parse(br#"{"revision": 3, "mappings": [
            {"proto": "tcp", "public_ip": "198.18.0.1", "public_port": 8080, "private_ip": "10.0.0.3", "private_port": 80},
            {"proto": "udp", "public_ip": "198.18.0.1", "public_port": 53, "private_ip": "10.0.1.3", "private_port": 5353}]}"#)
        .unwrap();
        assert_eq!(tcp[&(Ipv4Addr::new(198, 18, 0, 1), 8080)], (Ipv4Addr::new(10, 0, 0, 3), 80));
        assert_eq!(udp.len(), 1);
    }

    #[test]
    fn refuses_a_bad_entry_by_its_index() {
        // A valid entry with one field replaced.
        let entry = |field: &str, value: &str| {
            let mut e = serde_json::json!({"proto": "tcp", "public_ip": "1.2.3.4", "public_port": 1,
                "private_ip": "10.0.0.3", "private_port": 1});
            e[field] = serde_json::from_str(value).unwrap();
            format!(r#"{{"revision":1,"mappings":[{e}]}}"#)
        };
        for (field, value) in [
            ("proto", r#""sctp""#),
            ("public_port", "0"),
            ("private_port", "70000"),
            ("private_ip", r#""192.168.0.3""#),
            ("private_ip", r#""10.0.0.1""#),
            ("public_ip", r#""01.2.3.4""#),
        ] {
            let e = parse(entry(field, value).as_bytes()).unwrap_err().to_string();
            assert!(e.contains("port mapping 0") && e.contains(field), "{e}");
        }
        let twice = r#"{"revision":1,"mappings":[
            {"proto":"tcp","public_ip":"1.2.3.4","public_port":1,"private_ip":"10.0.0.3","private_port":1},
            {"proto":"tcp","public_ip":"1.2.3.4","public_port":1,"private_ip":"10.0.0.4","private_port":1}]}"#;
        assert!(parse(twice.as_bytes()).unwrap_err().to_string().contains("mapped twice"));
    }

    #[test]
    fn a_missing_file_is_no_mappings() {
        let (tcp, udp) = read(std::path::Path::new("/nonexistent/portmappings.json")).unwrap();
        assert!(tcp.is_empty() && udp.is_empty());
    }
}
