//! rtnetlink, synchronously: one `NETLINK_ROUTE` socket per network namespace, a request, its
//! acknowledgement. A socket acts on the namespace it was created in, whatever namespace its
//! user moves to afterwards.
//!
//! Built on `netlink-packet-route` (the messages) and `netlink-sys` (the socket), the crates
//! netavark uses the same way; no async runtime (this runs in the Emperor's cloned child,
//! which must not start threads) and no `ip` binary.

use crate::{ctx, NetError, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The kernel's errno for a failed request (`EEXIST`, `ENODEV`...), or `None` for other
/// failures (a socket or decoding error).
#[derive(Debug)]
pub struct RequestError {
    pub errno: Option<i32>,
    pub message: String,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A `NETLINK_ROUTE` socket bound to the network namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A route to add: `dst/len` through `dev`, optionally via a gateway, with a preferred
/// source address for the node's own connections.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub dev: u32,
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Option<Ipv4Addr>,
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub fn open() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(ctx("open a netlink socket"))?;
        let addr = SocketAddr::new(0, 0);
        socket.bind(&addr).map_err(ctx("bind the netlink socket"))?;
        socket.connect(&addr).map_err(ctx("connect the netlink socket"))?;
        Ok(Netlink { socket, seq: 0, buf: vec![0; 64 * 1024] })
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, RequestError> {
        let fail = |message: String| RequestError { errno: None, message };
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        self.seq = self.seq.wrapping_add(1);
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(|e| fail(format!("netlink send: {e}")))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut result = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).map_err(|e| fail(format!("netlink recv: {e}")))?;
            let mut at = 0;
            while at < n {
                let reply: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&self.buf[at..n])
                    .map_err(|e| fail(format!("undecodable netlink reply: {e}")))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number != self.seq {
                    // A late answer to an earlier request: not ours.
                    at += len.max(1);
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(result),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(result),
                            Some(code) => {
                                let errno = -code.get();
                                Err(RequestError {
                                    errno: Some(errno),
                                    message: std::io::Error::from_raw_os_error(errno).to_string(),
                                })
                            }
                        }
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        result.push(m);
                        if !dump {
                            return Ok(result);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
    }

    /// Creates a veth pair: `name` here, `peer` in the namespace of `peer_netns` (the peer is
    /// born there: it never exists in this namespace). Fails with `EEXIST` when either name
    /// is taken.
    pub fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
    ) -> std::result::Result<(), RequestError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// The index of interface `name`, `None` if there is none.
    pub fn index_of(&mut self, name: &str) -> Result<Option<u32>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(e) if e.errno == Some(libc_enodev()) => Ok(None),
            Err(e) => Err(NetError(format!("look up interface {name}: {e}"))),
        }
    }

    /// Deletes interface `name` (for a veth end, the whole pair). `false` if it did not exist.
    pub fn delete_link(&mut self, name: &str) -> Result<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(e) if e.errno == Some(libc_enodev()) => Ok(false),
            Err(e) => Err(NetError(format!("delete interface {name}: {e}"))),
        }
    }

    /// Deletes interface `index` (for a veth end, the whole pair), but only if it is still
    /// called `name`: an index is never reused while the interface lives, and the name check
    /// keeps a lookup-then-delete from hitting an interface renamed in between. `false` if it
    /// was gone.
    pub fn delete_index(&mut self, index: u32, name: &str) -> Result<bool> {
        if self.name_of(index)?.as_deref() != Some(name) {
            return Ok(false);
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK) {
            Ok(_) => Ok(true),
            Err(e) if e.errno == Some(libc_enodev()) => Ok(false),
            Err(e) => Err(NetError(format!("delete interface {name}: {e}"))),
        }
    }

    /// Sets interface `index`'s alias (`IFLA_IFALIAS`, at most 255 bytes).
    pub fn set_alias(&mut self, index: u32, alias: &str) -> std::result::Result<(), RequestError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK).map(drop)
    }

    /// Every interface of the namespace as `(index, name, alias)`.
    pub fn links(&mut self) -> Result<Vec<(u32, String, Option<String>)>> {
        let replies = self
            .request(RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)
            .map_err(|e| NetError(format!("list interfaces: {e}")))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => {
                    let (mut name, mut alias) = (None, None);
                    for a in l.attributes {
                        match a {
                            LinkAttribute::IfName(n) => name = Some(n),
                            LinkAttribute::IfAlias(a) => alias = Some(a),
                            _ => {}
                        }
                    }
                    Some((l.header.index, name?, alias))
                }
                _ => None,
            })
            .collect())
    }

    /// Brings interface `index` up.
    pub fn set_up(&mut self, index: u32) -> std::result::Result<(), RequestError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK).map(drop)
    }

    /// Adds `ip/len` to interface `index` (`EEXIST` if it is there).
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, len: u8) -> std::result::Result<(), RequestError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(ip.into()));
        msg.attributes.push(AddressAttribute::Address(ip.into()));
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// Adds a route in the main table (`EEXIST` if one for that destination is there).
    pub fn add_route(&mut self, r: &Route) -> std::result::Result<(), RequestError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = r.len;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = if r.gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
        msg.header.kind = RouteType::Unicast;
        if r.len > 0 {
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(r.dst)));
        }
        if let Some(gw) = r.gateway {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
        }
        if let Some(src) = r.prefsrc {
            msg.attributes.push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
        }
        msg.attributes.push(RouteAttribute::Oif(r.dev));
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// The interface of the main table's IPv4 default route, if there is one.
    pub fn default_route_interface(&mut self) -> Result<Option<String>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let routes = self
            .request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)
            .map_err(|e| NetError(format!("list the node's routes: {e}")))?;
        let oif = routes.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r)
                if r.header.destination_prefix_length == 0 && r.header.table == RouteHeader::RT_TABLE_MAIN =>
            {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            }
            _ => None,
        });
        match oif {
            None => Ok(None),
            Some(index) => self.name_of(index),
        }
    }

    /// The name of interface `index`.
    pub fn name_of(&mut self, index: u32) -> Result<Option<String>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                }),
                _ => None,
            })),
            Err(e) if e.errno == Some(libc_enodev()) => Ok(None),
            Err(e) => Err(NetError(format!("look up interface #{index}: {e}"))),
        }
    }

    /// The names of every interface of the namespace.
    pub fn link_names(&mut self) -> Result<Vec<String>> {
        Ok(self.links()?.into_iter().map(|(_, name, _)| name).collect())
    }

    /// Whether `ip` is an address of interface `index`.
    pub fn has_address(&mut self, index: u32, ip: Ipv4Addr) -> Result<bool> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let replies = self
            .request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)
            .map_err(|e| NetError(format!("list addresses: {e}")))?;
        Ok(replies.into_iter().any(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => {
                a.header.index == index
                    && a.attributes.iter().any(|x| matches!(x, AddressAttribute::Local(l) if *l == ip))
            }
            _ => false,
        }))
    }
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

/// Interface names the kernel accepts: 1..=15 bytes, no `/`, no whitespace, not `.`/`..`
/// (they also become `/proc/sys/net/.../conf/<name>` paths).
pub fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':' && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_ifname("uw30001"));
        assert!(valid_ifname(&container_spec_like_name(u32::MAX)));
        for bad in ["", ".", "..", "a/b", "a b", "0123456789abcdef", "x\"y"] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
    }

    fn container_spec_like_name(uid: u32) -> String {
        format!("uw{uid}")
    }
}
