//! Hooks for the container master (the plugin is loaded there too, from `/opt/unbit/plugins`),
//! running as the container uid inside the container.

use std::path::Path;
use std::process::{Command, Stdio};

/// `hook-master-start = unbit-rc-local:PATH`: runs the customer's `~/etc/rc.local` with
/// `/bin/sh` when it is a regular file, in its own session, with no descriptor but the log.
pub fn run_rc_local(path: &str) -> Result<(), String> {
    let path = Path::new(path);
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(format!("{} is not a regular file; not running it", path.display())),
        Err(_) => return Ok(()),
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(path).stdin(Stdio::null());
    let child = uwsgi::process::spawn_detached(cmd).map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    uwsgi::log!("started {} (pid {})", path.display(), child.id());
    Ok(())
}

/// `hook-emperor-stop = unbit-broadcast:TEXT`: shows TEXT on every terminal of the container
/// (its own devpts instance holds only the container's terminals).
pub fn broadcast(text: &str) -> Result<(), String> {
    alarms::terminals::broadcast(Path::new("/dev/pts"), text);
    Ok(())
}
