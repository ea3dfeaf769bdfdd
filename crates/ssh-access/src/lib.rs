//! Customers' ssh into their running containers (issue 13), the part that decides whose keys
//! open which container: the customer sshd's `AuthorizedKeysCommand`.
//!
//! Keys come from the node's root-owned spec folder (`<uid>.json`, the same files the
//! containers plugin boots from), never from the customer-writable home; the user name must be
//! a container uid written exactly as the platform writes it, so `30009/.ssh`, `030009` or
//! `30009abc` cannot name container 30009 (the original's `atoi` did). Every failure yields no
//! keys: sshd then refuses the login.

use container_spec::{ContainerSpec, BASE_UID, MAX_UID};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The authorized_keys options every key gets: `restrict` turns off port, agent and X11
/// forwarding, tunnels and `~/.ssh/rc` (forwards would start in the host's network namespace);
/// `pty` gives the interactive shell its terminal back.
pub const KEY_OPTIONS: &str = "restrict,pty";

/// A spec is a few KiB (256 keys of at most 16 KiB are the validated worst case, about 4 MiB);
/// a larger file is not a spec.
const MAX_SPEC_BYTES: u64 = 8 << 20;

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

/// Whoever can write the spec folder (or a spec in it) chooses the keys of every container:
/// it must belong to `owner` (root for the real command) and be writable by no one else.
fn check_owner(what: &str, path: &Path, meta: &std::fs::Metadata, owner: u32) -> Result<(), String> {
    if meta.uid() != owner {
        return Err(format!("{what} {} is owned by uid {}, not {owner}", path.display(), meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{what} {} is writable by group or others (mode {:o})",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The authorized_keys text (one `restrict,pty <key>` line per key) for login name `user`, read
/// from `<specs>/<uid>.json`; `Err` says why there are no keys. `owner` is the uid the folder and
/// the spec must belong to (root in production; tests pass their own).
pub fn authorized_keys(specs: &Path, user: &str, owner: u32) -> Result<String, String> {
    let uid = parse_user(user)?;
    let dir_meta = std::fs::metadata(specs).map_err(|e| format!("spec folder {}: {e}", specs.display()))?;
    if !dir_meta.is_dir() {
        return Err(format!("spec folder {} is not a directory", specs.display()));
    }
    check_owner("spec folder", specs, &dir_meta, owner)?;
    let spec = read_spec(specs, uid, owner)?;
    if !spec.is_deployable() {
        return Err(format!("container {uid}: not deployable, no login"));
    }
    key_lines(&spec)
}

fn read_spec(specs: &Path, uid: u32, owner: u32) -> Result<ContainerSpec, String> {
    let path = specs.join(format!("{uid}.json"));
    let context = |e: std::io::Error| format!("container {uid}: spec {}: {e}", path.display());
    // No link is followed and no FIFO can block the open: sshd waits for this command.
    let file =
        OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(&path).map_err(context)?;
    let meta = file.metadata().map_err(context)?;
    if !meta.is_file() {
        return Err(format!("container {uid}: spec {} is not a regular file", path.display()));
    }
    check_owner("spec", &path, &meta, owner).map_err(|e| format!("container {uid}: {e}"))?;
    let bytes = read_bounded(file).map_err(context)?;
    let spec =
        ContainerSpec::from_json(&bytes).map_err(|e| format!("container {uid}: spec {}: {e}", path.display()))?;
    if spec.uid != uid {
        return Err(format!("container {uid}: spec {} holds uid {}", path.display(), spec.uid));
    }
    Ok(spec)
}

fn read_bounded(file: File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_SPEC_BYTES} bytes")));
    }
    Ok(bytes)
}

/// One line per key. Validation already refuses control characters in keys; checked again here
/// because a newline in a key would be a second authorized_keys line without the options.
fn key_lines(spec: &ContainerSpec) -> Result<String, String> {
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
