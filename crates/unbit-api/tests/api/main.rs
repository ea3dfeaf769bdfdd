//! Black-box tests of the `unbit-api` binary: each runs against SQLite and PostgreSQL (the
//! `both!` macro), with real servers (PostgreSQL, dnsmasq, slapd) started on loopback.

mod harness;

mod account;
mod alarms;
mod containers;
mod domains;
mod fuzz;
mod http;
mod ldap;
mod legion;
mod metrics;
mod misc;
mod mtls;
mod node;
mod quickstart;
mod tags_loopboxes;

use harness::{Api, Who};

/// Two customers on one shared server: `kratos` owns two containers, `zeus` one.
pub struct Fixture {
    pub kratos: Who,
    pub zeus: Who,
    pub node: Who,
    pub k1: u32,
    pub k2: u32,
    pub z1: u32,
    pub distro: i64,
}

pub fn fixture(api: &mut Api) -> Fixture {
    let node = api.server("node1", "192.0.2.10", 4000, 100_000);
    let kratos = api.customer("kratos", "deimos-pass");
    let zeus = api.customer("zeus", "olympus-pass");
    let k1 = api.container(&kratos, "node1", "web", 500, 1000);
    let k2 = api.container(&kratos, "node1", "db", 500, 1000);
    let z1 = api.container(&zeus, "node1", "zeus-app", 500, 1000);
    let distro = api.distro("Debian 12", "bookworm");
    api.start();
    Fixture { kratos, zeus, node, k1, k2, z1, distro }
}
