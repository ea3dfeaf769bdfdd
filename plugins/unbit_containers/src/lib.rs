//! `unbit_containers`: runs every customer container of a node as a vassal of the node's
//! Emperor, in its own namespaces, rootfs, cgroup, quota and sub-Emperor.
//!
//! Operators load it with `plugins = unbit_containers` and point the Emperor at the node's
//! specs: `emperor = unbit:///var/lib/unbit/specs` with
//! `emperor-use-clone = fs,pid,ipc,uts,net` (see `vassals-examples/emperor.ini`).
//!
//! * [`monitor`]: the imperial monitor: reads specs, plans with [`reconcile`], prepares homes,
//!   feeds and stops container vassals, reports OOM kills;
//! * [`container_child`]: in the Emperor's child, builds `uwsgi0` and the jail and drops
//!   privileges;
//! * [`loopboxes`]: customer ext4 images mounted into running containers;
//! * [`network`]: the node's side of container networking (`unbit-network`);
//! * [`in_container`]: hooks for the container master itself (rc.local, restart notice).

mod container_child;
mod in_container;
pub mod loopboxes;
mod monitor;
mod network;
pub mod reconcile;
mod running_specs;
mod settings;
pub mod spec_folder;
pub mod vassal_config;

use uwsgi::{Registry, Vassal};

struct UnbitContainers;

impl uwsgi::Plugin for UnbitContainers {
    const NAME: &'static std::ffi::CStr = c"unbit_containers";

    fn on_load(reg: &mut Registry) {
        settings::declare(reg);
        reg.imperial_monitor("unbit", |arg| Ok(Box::new(monitor::ContainersMonitor::from_arg(arg)?)))
            .hook("unbit-rc-local", in_container::run_rc_local)
            .hook("unbit-broadcast", in_container::broadcast);
    }

    fn vassal(v: &Vassal) -> Result<(), String> {
        container_child::setup(v)
    }

    fn vassal_before_exec(v: &Vassal) -> Result<(), String> {
        container_child::before_exec(v)
    }
}

uwsgi::plugin!(unbit_containers_plugin: UnbitContainers);
