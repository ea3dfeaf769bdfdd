//! Which addresses a container may announce (the original's WEAK-8: a signed packet could
//! point the router at any socket or port on the host).
//!
//! A container announces `$(HOME)/run/<name>` (`/containers/<uid>/run/<name>` inside, which is
//! `<containers dir>/<uid>/run/<name>` on the host) or `<its own ip>:<port>`. Everything else
//! (another container's home, a host path, `127.0.0.1:<stats port>`, an abstract socket) is
//! refused here, before any file is looked at; [`crate::homes`] then checks the file itself.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Where homes appear inside every container (the jail's view).
pub const HOMES_INSIDE: &str = "/containers";
/// uWSGI binds and connects unix sockets of at most 102 bytes (`sun_path`, `core/socket.c`).
/// The router never connects to an announced path (it gets a pinned name, [`crate::pins`]),
/// so only the name a vassal binds counts: `/run/<name>` inside its container.
const MAX_SOCKET_PATH: usize = 102;
const RUN_INSIDE: &str = "/run/";
const MAX_DEPTH: usize = 8;

/// A place the router may connect to, owned by one container.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A unix socket, relative to the container's `run/` directory.
    RunSocket(PathBuf),
    /// The container's own IP and a port.
    OwnIp(SocketAddrV4),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::RunSocket(rel) => write!(f, "~/run/{}", rel.display()),
            Endpoint::OwnIp(a) => write!(f, "{a}"),
        }
    }
}

/// Maps an announced `address` of container `uid` to an endpoint of that container, or says
/// why it is not one. `host_homes` is the node's containers dir, accepted as a prefix too.
pub fn endpoint_of(address: &str, uid: u32, host_homes: &Path, own_ip: Ipv4Addr) -> Result<Endpoint, String> {
    if address.starts_with('@') {
        return Err("an abstract socket cannot be reached from the router".into());
    }
    if address.starts_with('/') {
        let rel = below_home(address, uid, host_homes)?;
        let rel =
            rel.strip_prefix("run/").ok_or_else(|| format!("{address} is not in the container's run/ directory"))?;
        let rel = safe_relative(rel).ok_or_else(|| format!("{address}: not a plain path below run/"))?;
        if RUN_INSIDE.len() + rel.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "{address}: no vassal can bind a socket name this long in run/ (at most {} bytes)",
                MAX_SOCKET_PATH - RUN_INSIDE.len()
            ));
        }
        return Ok(Endpoint::RunSocket(rel));
    }
    let addr: SocketAddrV4 = address.parse().map_err(|_| format!("{address} is neither a socket path nor ip:port"))?;
    if *addr.ip() != own_ip {
        return Err(format!("{address} is not the container's own address ({own_ip})"));
    }
    if addr.port() == 0 {
        return Err(format!("{address}: port 0"));
    }
    Ok(Endpoint::OwnIp(addr))
}

/// A file a container points the router at (SNI key, certificate, CA): anywhere in its own
/// home, as a path relative to the home.
pub fn home_file_of(path: &str, uid: u32, host_homes: &Path) -> Result<PathBuf, String> {
    let rel = below_home(path, uid, host_homes)?;
    safe_relative(rel).ok_or_else(|| format!("{path}: not a plain path in the home"))
}

/// `rest` of `/containers/<uid>/<rest>` or `<host homes>/<uid>/<rest>`.
fn below_home<'a>(path: &'a str, uid: u32, host_homes: &Path) -> Result<&'a str, String> {
    let inside = format!("{HOMES_INSIDE}/{uid}/");
    let host = format!("{}/{uid}/", host_homes.display());
    if let Some(rest) = path.strip_prefix(&inside).or_else(|| path.strip_prefix(&host)) {
        return Ok(rest);
    }
    let foreign = [HOMES_INSIDE.to_string(), host_homes.display().to_string()]
        .iter()
        .any(|homes| path.strip_prefix(homes.as_str()).is_some_and(|r| r.starts_with('/')));
    if foreign {
        Err(format!("{path} is in another container's home"))
    } else {
        Err(format!("{path} is outside the container's home"))
    }
}

/// A relative path of plain names (`[A-Za-z0-9._:-]`, no `.` or `..`), at most a few levels.
/// The domain shortcuts' names (`domain_names::socket_file`) are all of this kind; `:` stays
/// for sockets named after `name:port` by hand (or by the shortcuts before they dropped ports).
fn safe_relative(rel: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = rel.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    };
    (parts.len() <= MAX_DEPTH && parts.iter().all(plain)).then(|| parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

    fn ep(addr: &str) -> Result<Endpoint, String> {
        endpoint_of(addr, 30001, Path::new("/srv/homes"), IP)
    }

    #[test]
    fn a_container_may_announce_its_own_run_sockets_and_its_own_ip() {
        let want = Endpoint::RunSocket("example.org_ABCD.socket".into());
        assert_eq!(ep("/containers/30001/run/example.org_ABCD.socket"), Ok(want.clone()));
        assert_eq!(ep("/srv/homes/30001/run/example.org_ABCD.socket"), Ok(want));
        assert_eq!(ep("/containers/30001/run/apps/a.sock"), Ok(Endpoint::RunSocket("apps/a.sock".into())));
        let with_port = "/containers/30001/run/example.org:8080_ABCD.socket";
        assert_eq!(ep(with_port), Ok(Endpoint::RunSocket("example.org:8080_ABCD.socket".into())));
        assert_eq!(ep("10.0.0.3:8080"), Ok(Endpoint::OwnIp("10.0.0.3:8080".parse().unwrap())));
    }

    #[test]
    fn other_containers_host_paths_and_ports_are_refused() {
        let cases = [
            ("/containers/30002/run/x.socket", "another container's home"),
            ("/srv/homes/30002/run/x.socket", "another container's home"),
            ("/containers/300011/run/x.socket", "another container's home"),
            ("/run/unbit/http.sock", "outside the container's home"),
            ("/containers/30001/x.socket", "not in the container's run/"),
            ("/containers/30001/run/../../30002/run/x.socket", "not a plain path"),
            ("/containers/30001/run/./x.socket", "not a plain path"),
            ("/containers/30001/run//x.socket", "not a plain path"),
            ("/containers/30001/run/", "not a plain path"),
            ("127.0.0.1:5003", "not the container's own address"),
            ("10.0.0.4:80", "not the container's own address"),
            ("10.0.0.3:0", "port 0"),
            ("@abstract", "abstract socket"),
            ("localhost:80", "neither a socket path nor ip:port"),
        ];
        for (addr, why) in cases {
            let err = ep(addr).unwrap_err();
            assert!(err.contains(why), "{addr}: {err} (wanted {why:?})");
        }
        // What a vassal can bind in run/ is accepted, whatever the node's containers dir.
        let longest = format!("{}.socket", "a".repeat(90));
        assert_eq!(ep(&format!("/containers/30001/run/{longest}")), Ok(Endpoint::RunSocket(longest.clone().into())));
        let long = format!("/containers/30001/run/a{longest}");
        assert!(ep(&long).unwrap_err().contains("no vassal can bind a socket name this long"));
        let deep = endpoint_of(
            &format!("/a/very/long/containers/dir/on/this/node/30001/run/{longest}"),
            30001,
            Path::new("/a/very/long/containers/dir/on/this/node"),
            IP,
        );
        assert!(deep.is_ok(), "{deep:?}");
    }

    #[test]
    fn every_socket_the_domain_shortcuts_bind_is_accepted() {
        let label = "a".repeat(63);
        let longest = [label.as_str(), &label, &label, &"b".repeat(61)].join(".");
        let names = ["example.org", "Example.ORG:8080", ".example.org", "bücher.example", &longest, "not a domain"];
        for name in names {
            let file = domain_names::socket_file(name, "1A2B3C4D").unwrap();
            let announced = format!("/containers/{}/run/{file}", u32::MAX);
            let uid = u32::MAX;
            assert_eq!(
                endpoint_of(&announced, uid, Path::new("/srv/homes"), IP),
                Ok(Endpoint::RunSocket(file.into())),
                "{name}"
            );
        }
    }

    #[test]
    fn sni_files_must_be_in_the_senders_home() {
        let homes = Path::new("/srv/homes");
        assert_eq!(home_file_of("/containers/30001/tls/a.key", 30001, homes), Ok(PathBuf::from("tls/a.key")));
        assert!(home_file_of("/etc/ssl/private/node.key", 30001, homes).is_err());
        assert!(home_file_of("/containers/30002/a.key", 30001, homes).unwrap_err().contains("another container"));
    }
}
