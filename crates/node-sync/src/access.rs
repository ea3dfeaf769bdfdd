//! Who may ssh into this node's containers (issue 13): the files the customer sshd reads,
//! derived from the spec folder after every pass.
//!
//! * `--ssh-keys-dir` (`/var/lib/unbit/ssh-keys`, the sshd's `AuthorizedKeysFile .../%U`):
//!   `<uid>` holds one `restrict,pty <key>` line per key of each deployable container, root's,
//!   0644; a container removed, undeployable or with an unreadable spec has no file, so a key
//!   removed through the API stops working with the pass that follows the change. The dir is
//!   this node-sync's alone: every other `<uid>` file in it is removed.
//! * `--users-dir` (`/var/lib/extrausers`, read by libnss-extrausers): the containers' users,
//!   whose login shell is the enter tool. Those files are one per machine and several platforms
//!   (tests, `make run`) may share it, each with its own node-sync: a uid's lines are the same
//!   whatever the platform, so each pass adds its containers' lines, removes only those of the
//!   containers it removed from its own folder, and keeps every other line, under an flock of
//!   a lock file in that dir.

use crate::folder;
use container_spec::ContainerSpec;
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

/// Every container user's login shell (and the sshd's ForceCommand): it hands the session to
/// the root broker, which starts it inside the container. A fixed path: sshd runs it on the host.
pub const ENTER_TOOL: &str = "/usr/local/lib/unbit/unbit-ssh-enter";

/// A keys file: sshd (StrictModes) wants it root's or the user's and written by no one else.
pub const KEYS_MODE: u32 = 0o644;

/// The lock file every node-sync sharing a users dir takes before it rewrites the files.
pub const USERS_LOCK: &str = ".unbit-node-sync.lock";

/// The deployable containers of the spec folder and their authorized_keys text; `problems`
/// names the specs that give no login (unreadable, invalid, a bad key), which fail closed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Logins {
    pub keys: BTreeMap<u32, String>,
    pub problems: Vec<String>,
}

/// Reads the spec folder (the node's last good state, written by [`folder::apply`] or by hand).
pub fn logins(specs: &Path) -> io::Result<Logins> {
    let mut out = Logins::default();
    for uid in folder::present(specs)? {
        let path = specs.join(format!("{uid}.json"));
        let spec = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| ContainerSpec::from_json(&bytes).map_err(|e| e.to_string()))
            .and_then(|spec| spec.validate().map(|()| spec).map_err(|e| e.to_string()))
            .and_then(|spec| if spec.uid == uid { Ok(spec) } else { Err(format!("holds container {}", spec.uid)) });
        match spec {
            Ok(spec) if spec.is_deployable() => match ssh_access::key_lines(&spec) {
                Ok(text) => {
                    out.keys.insert(uid, text);
                }
                Err(e) => out.problems.push(format!("{e}; no ssh login")),
            },
            Ok(_) => {}
            Err(e) => out.problems.push(format!("container {uid}: spec {}: {e}; no ssh login", path.display())),
        }
    }
    Ok(out)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeysReport {
    pub written: Vec<u32>,
    pub removed: Vec<u32>,
}

/// Makes `dir` hold exactly one keys file per container of `logins` (created 0755 when missing).
pub fn write_keys(dir: &Path, logins: &Logins) -> io::Result<KeysReport> {
    use std::os::unix::fs::DirBuilderExt;
    let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| context(&format!("keys dir {}", dir.display()), e))?;
    let mut report = KeysReport::default();
    for (uid, text) in &logins.keys {
        let path = dir.join(uid.to_string());
        if folder::write_if_changed(&path, text.as_bytes(), KEYS_MODE)
            .map_err(|e| context(&format!("container {uid}: keys file {}", path.display()), e))?
        {
            report.written.push(*uid);
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| context(&format!("keys dir {}", dir.display()), e))?;
    for entry in entries {
        let name = entry?.file_name();
        let Some(uid) = name.to_str().and_then(|n| ssh_access::parse_user(n).ok()) else { continue };
        if !logins.keys.contains_key(&uid) {
            let path = dir.join(&name);
            std::fs::remove_file(&path)
                .map_err(|e| context(&format!("container {uid}: keys file {}", path.display()), e))?;
            report.removed.push(uid);
        }
    }
    report.removed.sort_unstable();
    Ok(report)
}

/// One extrausers file: its name, mode, group (None: root's) and a container's line in it.
struct UsersFile {
    name: &'static str,
    mode: u32,
    group: Option<&'static str>,
    line: fn(u32) -> String,
}

const USERS_FILES: [UsersFile; 3] = [
    // Home `/`: sshd chdirs to it on the host before it runs the shell; the broker sets the
    // session's home inside the container.
    UsersFile { name: "passwd", mode: 0o644, group: None, line: passwd_line },
    UsersFile { name: "group", mode: 0o644, group: None, line: |uid| format!("{uid}:x:{uid}:") },
    // `*`, not `!`: with UsePAM no, sshd refuses a `!` password field as a locked account, even
    // for key logins. 0640 root:shadow, as Debian keeps its own shadow.
    UsersFile { name: "shadow", mode: 0o640, group: Some("shadow"), line: |uid| format!("{uid}:*:::::::") },
];

fn passwd_line(uid: u32) -> String {
    format!("{uid}:x:{uid}:{uid}:uwsgi.it container:/:{ENTER_TOOL}")
}

/// Adds the users of `present` to the extrausers files in `dir` and removes those of `removed`,
/// keeping every other line where it is; returns the files it rewrote.
pub fn write_users(dir: &Path, present: &BTreeSet<u32>, removed: &[u32]) -> io::Result<Vec<&'static str>> {
    let context = |what: String, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let lock_path = dir.join(USERS_LOCK);
    let lock_file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&lock_path)
    }
    .map_err(|e| context(format!("users lock {}", lock_path.display()), e))?;
    // Held until the function returns (dropping the Flock unlocks).
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| context(format!("users lock {}", lock_path.display()), errno.into()))?;
    let mut changed = Vec::new();
    for file in &USERS_FILES {
        let path = dir.join(file.name);
        let old = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(context(format!("users file {}", path.display()), e)),
        };
        let new = merge_lines(&old, present, removed, file.line);
        let gid = match file.group {
            Some(name) => Some(group_id(name)?),
            None => None,
        };
        if folder::write_owned_if_changed(&path, new.as_bytes(), file.mode, gid)
            .map_err(|e| context(format!("users file {}", path.display()), e))?
        {
            changed.push(file.name);
        }
    }
    Ok(changed)
}

fn group_id(name: &str) -> io::Result<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(io::Error::new(io::ErrorKind::NotFound, format!("no group {name} on this machine"))),
        Err(errno) => Err(io::Error::new(io::Error::from(errno).kind(), format!("group {name}: {errno}"))),
    }
}

/// `old` with the lines of `removed` dropped, those of `present` replaced by `line(uid)` (or
/// appended, in uid order), and every other line kept as it was.
fn merge_lines(old: &str, present: &BTreeSet<u32>, removed: &[u32], line: fn(u32) -> String) -> String {
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for l in old.lines() {
        let name = l.split(':').next().unwrap_or_default();
        let ours = ssh_access::parse_user(name).ok();
        match ours {
            Some(uid) if removed.contains(&uid) => continue,
            Some(uid) if present.contains(&uid) => {
                // A second line for the same name would be a duplicate user: dropped.
                if seen.insert(uid) {
                    out.push_str(&line(uid));
                    out.push('\n');
                }
            }
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    for uid in present.difference(&seen) {
        out.push_str(&line(*uid));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
