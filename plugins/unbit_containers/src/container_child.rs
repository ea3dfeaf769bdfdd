//! The Emperor's child for one container: already in new mount/pid/ipc/uts/net namespaces
//! (`emperor-use-clone`), still root, about to exec the container master.
//!
//! `vassal` joins the cgroup and builds and pivots into the container's root; `before_exec`
//! points stdout/stderr at the container's own log (never the operator's), drops to the
//! container uid for good and sets the environment customers rely on (`$(HOME)`). Nothing from
//! the guest rootfs runs before the drop.

use crate::{running_specs, settings, vassal_config::uid_of};
use std::os::fd::RawFd;
use uwsgi::Vassal;

/// The container this vassal is, if it is one of ours.
fn container_uid(v: &Vassal) -> Option<u32> {
    (v.monitor_scheme().as_deref() == Some("unbit")).then(|| uid_of(&v.name())).flatten()
}

pub fn setup(v: &Vassal) -> Result<(), String> {
    let Some(uid) = container_uid(v) else { return Ok(()) };
    let spec = running_specs::get(uid).ok_or_else(|| format!("container {uid}: no spec known to the Emperor"))?;
    jail::enter_jail(&settings::node_paths(), &spec).map_err(|e| e.to_string())
}

pub fn before_exec(v: &Vassal) -> Result<(), String> {
    let Some(uid) = container_uid(v) else { return Ok(()) };
    // The two pipes of uWSGI's vassal protocol are the only descriptors that cross the exec.
    let keep: Vec<RawFd> = ["UWSGI_EMPEROR_FD", "UWSGI_EMPEROR_FD_CONFIG"]
        .iter()
        .filter_map(|k| std::env::var(k).ok()?.parse().ok())
        .collect();
    jail::drop_privileges_keeping(uid, &keep).map_err(|e| e.to_string())?;
    let home = format!("/containers/{uid}");
    // Opened as the container uid: whatever the customer put at that path, we can only reach
    // what the container itself can.
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(format!("{home}/logs/emperor.log"))
        .map_err(|e| format!("container {uid}: cannot open {home}/logs/emperor.log: {e}"))?;
    redirect_output(&log).map_err(|e| format!("container {uid}: cannot redirect output: {e}"))?;
    for (k, val) in [("HOME", home.as_str()), ("USER", &uid.to_string()), ("LOGNAME", &uid.to_string())] {
        std::env::set_var(k, val);
    }
    std::env::set_var("PATH", "/usr/local/bin:/usr/bin:/bin");
    Ok(())
}

fn redirect_output(log: &std::fs::File) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    nix::unistd::dup2(log.as_raw_fd(), 1)?;
    nix::unistd::dup2(log.as_raw_fd(), 2)?;
    Ok(())
}
