//! The operator-facing options of the container manager, with the node's defaults.

use jail::NodePaths;
use std::path::PathBuf;
use uwsgi::{Registry, Setting};

static CONTAINERS_DIR: Setting<PathBuf> = Setting::new();
static DISTROS_DIR: Setting<PathBuf> = Setting::new();
static PLATFORM_DIR: Setting<PathBuf> = Setting::new();
static SUBSCRIBE_DIR: Setting<PathBuf> = Setting::new();
static JAIL_ROOT: Setting<PathBuf> = Setting::new();
static CGROUP_NAME: Setting<String> = Setting::new();
static QUOTA: Setting<QuotaChoice> = Setting::new();
static MAX_STOPS: Setting<usize> = Setting::new();
static NETWORK: Setting<bool> = Setting::new();
static NETWORK_UPLINK: Setting<String> = Setting::new();
static NETWORK_TABLE: Setting<String> = Setting::new();
static NETWORK_TUNNEL: Setting<String> = Setting::new();
static PORTMAPPINGS: Setting<PathBuf> = Setting::new();

pub fn declare(reg: &mut Registry) {
    reg.option("unbit-containers-dir", "where container homes live (default /containers)", &CONTAINERS_DIR)
        .option("unbit-distros-dir", "where platform distros live (default /distros)", &DISTROS_DIR)
        .option(
            "unbit-platform-dir",
            "plugins + shortcuts.ini, mounted read-only at /opt/unbit (default /opt/unbit)",
            &PLATFORM_DIR,
        )
        .option(
            "unbit-subscribe-dir",
            "the routers' subscription sockets, seen as /run/subscribe (default /subscribe)",
            &SUBSCRIBE_DIR,
        )
        .option(
            "unbit-jail-root",
            "empty root-owned dir container roots are assembled on (default /run/unbit/jail)",
            &JAIL_ROOT,
        )
        .option("unbit-cgroup-name", "name of the platform's own cgroup subtree (default unbit)", &CGROUP_NAME)
        .option("unbit-quota", "disk quota: auto (detect) or none (default auto)", &QUOTA)
        .option("unbit-max-stops", "most containers stopped in one sync pass (default 5)", &MAX_STOPS)
        .option(
            "unbit-network",
            "give every container uwsgi0 on 10.0.0.0/8, isolated by the node's nftables table (default false)",
            &NETWORK,
        )
        .option(
            "unbit-network-uplink",
            "the interface leading to the Internet: NAT and port mappings (default: the default route's)",
            &NETWORK_UPLINK,
        )
        .option("unbit-network-table", "name of the node's own table, inet family (default unbit)", &NETWORK_TABLE)
        .option(
            "unbit-network-tunnel",
            "the node's tunnel to the other nodes of its Legion (unbit-links): only linked pairs cross it (default none)",
            &NETWORK_TUNNEL,
        )
        .option(
            "unbit-portmappings",
            "node-sync's port mappings file, applied as DNAT (default /var/lib/unbit/portmappings.json)",
            &PORTMAPPINGS,
        );
}

pub fn node_paths() -> NodePaths {
    let d = NodePaths::default();
    NodePaths {
        containers: CONTAINERS_DIR.get_or(d.containers),
        distros: DISTROS_DIR.get_or(d.distros),
        platform_dir: PLATFORM_DIR.get_or(d.platform_dir),
        subscribe_dir: SUBSCRIBE_DIR.get().or(d.subscribe_dir).filter(|p| p.exists()),
        jail_root: JAIL_ROOT.get_or(d.jail_root),
        cgroup_name: CGROUP_NAME.get_or(d.cgroup_name),
    }
}

pub fn quota() -> QuotaChoice {
    QUOTA.get_or(QuotaChoice::Auto)
}

pub fn max_stops() -> usize {
    MAX_STOPS.get_or(5)
}

/// Whether containers get networking (`unbit-network`).
pub fn network() -> bool {
    NETWORK.get_or(false)
}

pub fn network_uplink() -> Option<String> {
    NETWORK_UPLINK.get()
}

pub fn network_table() -> String {
    NETWORK_TABLE.get_or("unbit".into())
}

pub fn network_tunnel() -> Option<String> {
    NETWORK_TUNNEL.get()
}

pub fn portmappings() -> PathBuf {
    PORTMAPPINGS.get_or("/var/lib/unbit/portmappings.json".into())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaChoice {
    Auto,
    None,
}

impl std::str::FromStr for QuotaChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(QuotaChoice::Auto),
            "none" => Ok(QuotaChoice::None),
            _ => Err("expected auto or none".into()),
        }
    }
}
