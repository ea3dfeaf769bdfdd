//! What the platform does with the pieces: [`node`] once per Emperor start, in the node's
//! namespace; [`container`] in each container's cloned child, root, already in the
//! container's fresh network namespace, before anything of the customer runs.

use crate::link::{Netlink, Route};
use crate::owner::Owner;
use crate::{sysctl, NetError, Result, CONTAINER_IF, GATEWAY};
use nix::sched::CloneFlags;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// One container's interface, as the child builds it.
#[derive(Debug, Clone)]
pub struct ContainerNet {
    pub uid: u32,
    /// `uw<uid>`, the host end.
    pub host_if: String,
    pub ip: Ipv4Addr,
    /// No default route (and no way to the uplink in the table either).
    pub dmz: bool,
    /// Written on the host end: the platform and the container's first process.
    pub owner: Owner,
}

/// The calling thread's network namespace, to come back to or to hand to a child.
pub fn current_netns() -> Result<OwnedFd> {
    std::fs::File::open("/proc/thread-self/ns/net")
        .map(OwnedFd::from)
        .map_err(|e| NetError(format!("open /proc/thread-self/ns/net: {e}")))
}

fn enter(ns: BorrowedFd<'_>, what: &str) -> Result<()> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| NetError(format!("enter {what} network namespace: {e}")))
}

/// Node side, once per Emperor start, in the node's namespace: the gateway address on `lo`
/// (the containers' default route points at it; the table keeps containers from reaching
/// anything on it) and IPv4 forwarding. `route_localnet` is never touched (CVE-2020-8558).
pub fn node() -> Result<()> {
    let mut nl = Netlink::open()?;
    let lo = nl.index_of("lo")?.ok_or_else(|| NetError("the node has no lo interface".into()))?;
    if !nl.has_address(lo, GATEWAY)? {
        match nl.add_address(lo, GATEWAY, 32) {
            Ok(()) => {}
            Err(e) if e.errno == Some(nix::errno::Errno::EEXIST as i32) => {}
            Err(e) => return Err(NetError(format!("add {GATEWAY}/32 to lo: {e}"))),
        }
    }
    nl.set_up(lo).map_err(|e| NetError(format!("bring lo up: {e}")))?;
    sysctl::enable_forwarding()
}

/// What [`container`] could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    /// `uwsgi0` and its host end are up.
    Yes,
    /// The host end's name stayed taken in the node's namespace: another platform on this
    /// machine runs a container with the same uid there. Nothing was changed; the container
    /// has only `lo`.
    NameTaken,
}

/// How long a host end's name may stay taken before [`Built::NameTaken`]: a restarted
/// container's predecessor's namespace is destroyed by the kernel asynchronously, and with it
/// the old pair.
const NAME_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// In the container's cloned child: creates the veth pair (`uwsgi0` here, `uw<uid>` born in
/// the node's namespace `host_ns`), configures the container end (`lo` up, `ip/8`, IPv6 off,
/// a default route via [`GATEWAY`] unless dmz), then enters the node's namespace for the host
/// end (its owner as alias, up, proxy ARP answered at once, strict reverse-path filter, IPv6
/// off, `ip/32` route with the gateway as the node's source address) and comes back.
///
/// A taken `uw<uid>` that this platform's dead container left (its namespace kept alive by
/// the kernel) is deleted and the pair built again; any other taken name is waited for
/// [`NAME_WAIT`], never deleted: it belongs to a container still stopping, or to another
/// platform on the machine.
pub fn container(c: &ContainerNet, host_ns: BorrowedFd<'_>) -> Result<Built> {
    let fail = |what: String| move |e: NetError| NetError(format!("container {}: {what}: {e}", c.uid));
    let own_ns = current_netns().map_err(fail("networking".into()))?;
    let mut nl = Netlink::open().map_err(fail("networking".into()))?;
    let started = std::time::Instant::now();
    loop {
        match nl.create_veth(CONTAINER_IF, &c.host_if, host_ns) {
            Ok(()) => break,
            Err(e) if e.errno == Some(nix::errno::Errno::EEXIST as i32) => {
                if nl.index_of(CONTAINER_IF)?.is_some() {
                    return Err(NetError(format!("container {}: {CONTAINER_IF} exists already", c.uid)));
                }
                let reclaimed = in_namespace(host_ns, own_ns.as_fd(), || {
                    remove_dead_host_ends(&c.owner.platform, Some(&c.host_if))
                })
                .map_err(fail(format!("reclaim {}", c.host_if)))?;
                if !reclaimed.is_empty() {
                    continue;
                }
                if started.elapsed() >= NAME_WAIT {
                    return Ok(Built::NameTaken);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(NetError(format!("container {}: create {CONTAINER_IF}/{}: {e}", c.uid, c.host_if))),
        }
    }
    let step = |what: &str| {
        let what = format!("container {}: {what}", c.uid);
        move |e: crate::link::RequestError| NetError(format!("{what}: {e}"))
    };
    let lo = nl.index_of("lo")?.ok_or_else(|| NetError(format!("container {}: no lo", c.uid)))?;
    nl.set_up(lo).map_err(step("bring lo up"))?;
    let inner =
        nl.index_of(CONTAINER_IF)?.ok_or_else(|| NetError(format!("container {}: {CONTAINER_IF} vanished", c.uid)))?;
    sysctl::disable_ipv6(CONTAINER_IF).map_err(fail("IPv6 off".into()))?;
    nl.add_address(inner, c.ip, 8).map_err(step(&format!("add {}/8 to {CONTAINER_IF}", c.ip)))?;
    nl.set_up(inner).map_err(step(&format!("bring {CONTAINER_IF} up")))?;
    if !c.dmz {
        let default = Route { dst: Ipv4Addr::UNSPECIFIED, len: 0, dev: inner, gateway: Some(GATEWAY), prefsrc: None };
        nl.add_route(&default).map_err(step(&format!("default route via {GATEWAY}")))?;
    }
    in_namespace(host_ns, own_ns.as_fd(), || host_end(c)).map_err(fail(format!("configure {}", c.host_if)))?;
    Ok(Built::Yes)
}

fn host_end(c: &ContainerNet) -> Result<()> {
    let mut nl = Netlink::open()?;
    let index =
        nl.index_of(&c.host_if)?.ok_or_else(|| NetError(format!("{} is not in the node's namespace", c.host_if)))?;
    nl.set_alias(index, &c.owner.to_string()).map_err(|e| NetError(format!("mark {} as ours: {e}", c.host_if)))?;
    sysctl::disable_ipv6(&c.host_if)?;
    sysctl::ipv4(&c.host_if, "proxy_arp", "1")?;
    // The kernel delays proxy ARP answers to broadcast requests by up to 0.8 s by default (to
    // let a real owner answer first): there is no other owner on a point-to-point veth, and
    // the delay would hold up a container's first packet to every peer.
    sysctl::neigh(&c.host_if, "proxy_delay", "0")?;
    sysctl::ipv4(&c.host_if, "rp_filter", "1")?;
    nl.set_up(index).map_err(|e| NetError(format!("bring {} up: {e}", c.host_if)))?;
    let route = Route { dst: c.ip, len: 32, dev: index, gateway: None, prefsrc: Some(GATEWAY) };
    nl.add_route(&route).map_err(|e| NetError(format!("route {}/32 via {}: {e}", c.ip, c.host_if)))
}

/// In the node's namespace: deletes the host ends (and so the pairs) of `platform`'s
/// containers whose first process is gone, all of them or only `only`. Returns their names.
/// Interfaces without the platform's alias are never touched.
pub fn remove_dead_host_ends(platform: &str, only: Option<&str>) -> Result<Vec<String>> {
    let mut nl = Netlink::open()?;
    let mut removed = Vec::new();
    for (index, name, alias) in nl.links()? {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Some(owner) = alias.as_deref().and_then(Owner::parse) else { continue };
        if owner.platform == platform && !owner.alive() && nl.delete_index(index, &name)? {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Runs `f` in namespace `ns`, then returns to `back` whatever `f` did.
fn in_namespace<T>(ns: BorrowedFd<'_>, back: BorrowedFd<'_>, f: impl FnOnce() -> Result<T>) -> Result<T> {
    enter(ns, "the node's")?;
    let r = f();
    enter(back, "the container's")?;
    r
}
