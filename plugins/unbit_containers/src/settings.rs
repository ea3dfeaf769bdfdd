//! The operator-facing options of the container manager, with the node's defaults.

use std::path::PathBuf;
use uwsgi::{Registry, Setting};

pub static CONTAINERS_DIR: Setting<PathBuf> = Setting::new();
pub static DISTROS_DIR: Setting<PathBuf> = Setting::new();
pub static STATE_DIR: Setting<PathBuf> = Setting::new();
pub static CGROUP_NAME: Setting<String> = Setting::new();

pub fn declare(reg: &mut Registry) {
    reg.option("unbit-containers-dir", "where container homes live (default /containers)", &CONTAINERS_DIR)
        .option("unbit-distros-dir", "where platform distros live (default /distros)", &DISTROS_DIR)
        .option("unbit-state-dir", "root-owned directory with the node's last good container specs", &STATE_DIR)
        .option("unbit-cgroup-name", "name of the platform's own cgroup subtree (default unbit)", &CGROUP_NAME);
}
