//! The platform's own certificates (automatic HTTPS, `crates/acme`), read from the issuer's
//! `index.json` for the router's certificate index ([`crate::sni`]).
//!
//! The issuer's store is root's alone; the validator (root) reads the pairs the index names
//! and hands them to the router through the certificate index, like a customer's files. The
//! file is rewritten (renamed into place) only when it changes, and a renewal changes it
//! (`not_after`), so its identity is looked at on every housekeeping pass and the list read
//! again when it changed:
//!
//! ```json
//! [{"name": "shop.example.org", "fullchain": "<store>/certs/shop.example.org/current/fullchain.pem",
//!   "key": "<store>/certs/shop.example.org/current/key.pem", "not_after": 1798761600, "owner_uids": [30001]}]
//! ```
//!
//! `current` is a symlink switched atomically on renewal: it is resolved once, and both files
//! are read from the version it pointed at, so a chain and a key always belong together.

use crate::sni::{PlatformCert, MAX_FILE};
use serde::Deserialize;
use sni_index::{names, Bundle};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Listed {
    name: String,
    fullchain: PathBuf,
    key: PathBuf,
    #[serde(default)]
    not_after: i64,
    #[serde(default)]
    owner_uids: Vec<u32>,
}

/// Looks at the index file for changes.
pub struct Watcher {
    path: PathBuf,
    seen: Option<(u64, u64, i64, i64)>,
    /// The file was never read yet (the first look reports even a missing file).
    first: bool,
}

impl Watcher {
    pub fn new(path: PathBuf) -> Watcher {
        Watcher { path, seen: None, first: true }
    }

    /// The whole list when the file changed since the last call (an empty one when it went
    /// away); problems are logged.
    pub fn changed(&mut self) -> Option<Vec<PlatformCert>> {
        let now = std::fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()));
        if now == self.seen && !self.first {
            return None;
        }
        self.first = false;
        self.seen = now;
        let (certs, problems) = load(&self.path);
        for p in problems {
            uwsgi::log!("platform certificates {}: {p}", self.path.display());
        }
        Some(certs)
    }
}

/// Reads the list and every pair in it; the pairs that cannot be served are left out, each with
/// its reason.
pub fn load(path: &Path) -> (Vec<PlatformCert>, Vec<String>) {
    let mut problems = Vec::new();
    let listed: Vec<Listed> = match read_trusted(path, 16 * 1024 * 1024) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(l) => l,
            Err(e) => return (Vec::new(), vec![format!("not the issuer's index: {e}")]),
        },
        Err(e) if e.starts_with("missing") => return (Vec::new(), Vec::new()),
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut certs = Vec::new();
    for l in listed {
        match pair(&l) {
            Ok(cert) => certs.push(cert),
            Err(e) => problems.push(format!("{}: {e}; not served", l.name)),
        }
    }
    (certs, problems)
}

fn pair(l: &Listed) -> Result<PlatformCert, String> {
    if l.name.starts_with('.') || !names::is_entry_name(&l.name) {
        return Err("not an exact domain name".into());
    }
    let (Some(dir), Some(chain_file), Some(key_file)) =
        (l.fullchain.parent(), l.fullchain.file_name(), l.key.file_name())
    else {
        return Err("fullchain and key must be file paths".into());
    };
    if l.key.parent() != Some(dir) {
        return Err("fullchain and key must be in the same directory (one version of the pair)".into());
    }
    // `current` once: both files of the version it points at now.
    let version = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let chain = read_trusted(&version.join(chain_file), MAX_FILE)?;
    let key = read_trusted(&version.join(key_file), MAX_FILE)?;
    let bundle = Bundle::from_pem(&chain, &key, None)?;
    Ok(PlatformCert {
        name: l.name.clone(),
        owner: l.owner_uids.first().copied().unwrap_or(0),
        bundle,
        version: format!("{} {}", version.display(), l.not_after),
    })
}

/// A file of the issuer's store: root's, not writable by anyone else (whoever could write it
/// would choose which key the router serves for a customer's domain).
fn read_trusted(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    // O_NONBLOCK: a FIFO planted on the way is refused below instead of blocking the validator.
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(format!("missing {}", path.display())),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let md = file.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
    if !md.is_file() || md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(format!(
            "{} must be a regular file of root's that nobody else may write (uid {}, mode {:o})",
            path.display(),
            md.uid(),
            md.mode() & 0o7777
        ));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sni_index::testing::{server, KeyKind};

    #[test]
    fn a_pair_is_read_from_the_version_current_points_at() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs/shop.example.org");
        let v1 = certs.join("v-01");
        std::fs::create_dir_all(&v1).unwrap();
        let pair = server(&["shop.example.org"], KeyKind::P256, None, 1);
        std::fs::write(v1.join("fullchain.pem"), pair.cert_pem()).unwrap();
        std::fs::write(v1.join("key.pem"), pair.key_pem()).unwrap();
        std::os::unix::fs::symlink("v-01", certs.join("current")).unwrap();
        let index = tmp.path().join("index.json");
        let entry = |name: &str| {
            serde_json::json!({"name": name, "fullchain": certs.join("current/fullchain.pem"),
                "key": certs.join("current/key.pem"), "not_after": 1, "owner_uids": [30001]})
        };
        std::fs::write(&index, serde_json::to_vec(&[entry("shop.example.org"), entry(".example.org")]).unwrap())
            .unwrap();
        let (loaded, problems) = load(&index);
        assert_eq!(loaded.len(), 1);
        assert_eq!((loaded[0].name.as_str(), loaded[0].owner), ("shop.example.org", 30001));
        assert!(loaded[0].version.contains("v-01"), "{}", loaded[0].version);
        assert_eq!(problems, [".example.org: not an exact domain name; not served"]);
        // Anyone else able to write the list: nothing is served from it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o666)).unwrap();
        let (loaded, problems) = load(&index);
        assert!(loaded.is_empty() && problems[0].contains("nobody else may write"), "{problems:?}");
        // A FIFO where a key was: refused, the validator does not wait for a writer.
        std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::remove_file(v1.join("key.pem")).unwrap();
        nix::unistd::mkfifo(&v1.join("key.pem"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (loaded, problems) = load(&index);
        assert!(loaded.is_empty() && problems[0].contains("must be a regular file"), "{problems:?}");
    }
}
