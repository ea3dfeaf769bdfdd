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
        .option("unbit-max-stops", "most containers stopped in one sync pass (default 5)", &MAX_STOPS);
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
