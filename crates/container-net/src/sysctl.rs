//! Network sysctls, written through `/proc/sys/net`, which shows the namespace of the process
//! that opens it: the caller must be in the namespace it means to change.

use crate::link::valid_ifname;
use crate::{ctx, NetError, Result};
use std::path::PathBuf;

/// `net.ipv4.conf.<ifname>.<key>` (or `net.ipv6.conf...` with `v6`).
fn conf_path(v6: bool, ifname: &str, key: &str) -> Result<PathBuf> {
    if !valid_ifname(ifname) && ifname != "all" && ifname != "default" {
        return Err(NetError(format!("{ifname:?} is not an interface name")));
    }
    let family = if v6 { "ipv6" } else { "ipv4" };
    Ok(PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}")))
}

fn write(path: PathBuf, value: &str) -> Result<()> {
    // Skip the write when the value is already there: the file may be read-only in a
    // namespace where the value is inherited and right.
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(ctx(format!("set {} to {value}", path.display())))
}

/// Sets an IPv4 per-interface switch, e.g. `ipv4(ifname, "proxy_arp", "1")`.
pub fn ipv4(ifname: &str, key: &str, value: &str) -> Result<()> {
    write(conf_path(false, ifname, key)?, value)
}

/// Sets a per-interface neighbour (ARP) parameter, e.g. `neigh(ifname, "proxy_delay", "0")`.
pub fn neigh(ifname: &str, key: &str, value: &str) -> Result<()> {
    let conf = conf_path(false, ifname, key)?;
    write(PathBuf::from(conf.to_string_lossy().replace("/conf/", "/neigh/")), value)
}

/// Turns IPv6 off on an interface: no link-local address, nothing received or sent.
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    write(conf_path(true, ifname, "disable_ipv6")?, "1")
}

/// `net.ipv4.ip_forward = 1` in the caller's namespace.
pub fn enable_forwarding() -> Result<()> {
    write(PathBuf::from("/proc/sys/net/ipv4/ip_forward"), "1")
}

/// Reads a sysctl below `/proc/sys/net` (`ipv4/conf/lo/route_localnet`).
pub fn read(rel: &str) -> Result<String> {
    if rel.split('/').any(|c| c.is_empty() || c == "..") {
        return Err(NetError(format!("{rel:?} is not a sysctl path")));
    }
    std::fs::read_to_string(format!("/proc/sys/net/{rel}"))
        .map(|s| s.trim().to_string())
        .map_err(ctx(format!("read net/{rel}")))
}
