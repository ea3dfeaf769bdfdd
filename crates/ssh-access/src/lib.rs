//! Customers' ssh into their running containers (issue 13): who may log in, and how.
//!
//! Keys come from the node's root-owned spec folder, never from the customer-writable home:
//! unbit-node-sync writes each deployable container's keys, as [`key_lines`] renders them, to
//! the root-owned file the customer sshd's `AuthorizedKeysFile` names
//! (`/var/lib/unbit/ssh-keys/%U`). A login name must be a container uid written exactly as
//! the platform writes it ([`parse_user`]), so `30009/.ssh`, `030009` or `30009abc` cannot
//! name container 30009 (the original's `atoi` did).

use container_spec::{ContainerSpec, BASE_UID, MAX_UID};

/// The authorized_keys options every key gets: `restrict` turns off port, agent and X11
/// forwarding, tunnels and `~/.ssh/rc` (forwards would start in the host's network namespace);
/// `pty` gives the interactive shell its terminal back.
pub const KEY_OPTIONS: &str = "restrict,pty";

/// The container uid a login name stands for: strict decimal (no sign, space, leading zero or
/// suffix) within `BASE_UID..=MAX_UID`.
pub fn parse_user(name: &str) -> Result<u32, String> {
    let digits_only = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || name.starts_with('0') {
        return Err(format!("user {name:?} is not a container uid (decimal digits, no leading zero)"));
    }
    // More digits than u32 holds: out of range rather than a parse error of another kind.
    let uid = name.parse::<u32>().ok().filter(|uid| (BASE_UID..=MAX_UID).contains(uid));
    uid.ok_or_else(|| format!("user {name:?} is outside the container uids {BASE_UID}..={MAX_UID}"))
}

/// One line per key. Validation already refuses control characters in keys; checked again here
/// because a newline in a key would be a second authorized_keys line without the options.
pub fn key_lines(spec: &ContainerSpec) -> Result<String, String> {
    let mut out = String::new();
    for (i, key) in spec.ssh_keys.iter().enumerate() {
        if key.chars().any(char::is_control) {
            return Err(format!("container {}: ssh_keys[{i}] contains a control character", spec.uid));
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("container {}: ssh_keys[{i}] is empty", spec.uid));
        }
        out.push_str(KEY_OPTIONS);
        out.push(' ');
        out.push_str(key);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
