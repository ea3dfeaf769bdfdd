//! Container networking: every container's `uwsgi0`, the node's routes to it, and the node's
//! nftables table that isolates containers from each other and from the node.
//!
//! * [`addr`]: IPv4 addresses and prefixes (parsing, masks), property-tested;
//! * [`link`]: netlink (veth pairs, addresses, routes, up), synchronous, no external binary;
//! * [`owner`]: whose a host end is (its alias), so the platform deletes its dead containers'
//!   host ends and nothing else;
//! * [`sysctl`]: the per-interface and per-namespace kernel switches;
//! * [`firewall`]: the table's fixed rules and its sets and maps, rendered for `nft -f -`,
//!   changed by element edits;
//! * [`portmap`]: the port mappings file node-sync writes;
//! * [`setup`]: what the container's cloned child and the node Emperor do with the above.
//!
//! The design and the reasons for each rule are in `docs/networking.md`.

pub mod addr;
pub mod firewall;
pub mod link;
pub mod owner;
pub mod portmap;
pub mod setup;
pub mod sysctl;

/// A networking operation that failed, with what it was doing (which container, interface,
/// address or file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError(pub String);

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NetError {}

pub type Result<T> = std::result::Result<T, NetError>;

/// Adds context to an error: `ctx("container 30001: add 10.0.0.3/8 to uwsgi0")`.
pub(crate) fn ctx<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> NetError {
    move |e| NetError(format!("{what}: {e}"))
}

/// The container's interface name inside its own namespace (the customer contract).
pub const CONTAINER_IF: &str = "uwsgi0";

/// The node's address on the container network: every container's gateway, on the node's `lo`.
pub const GATEWAY: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);

/// The container network, 10.0.0.0/8.
pub const CONTAINER_NET: addr::Ipv4Prefix = addr::Ipv4Prefix::new_unchecked(std::net::Ipv4Addr::new(10, 0, 0, 0), 8);
