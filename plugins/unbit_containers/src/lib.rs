//! `unbit_containers`: runs every customer container of a node as a vassal of the node's
//! Emperor, in its own namespaces, rootfs, cgroup, quota and sub-Emperor.
//!
//! Loaded by operators with `plugins = unbit_containers` in `emperor.ini`.

mod settings;

use uwsgi::Registry;

struct UnbitContainers;

impl uwsgi::Plugin for UnbitContainers {
    const NAME: &'static std::ffi::CStr = c"unbit_containers";

    fn on_load(reg: &mut Registry) {
        settings::declare(reg);
    }
}

uwsgi::plugin!(unbit_containers_plugin: UnbitContainers);
