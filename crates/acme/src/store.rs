//! The node's certificate store: the ACME account, the certificates and keys, the index the
//! router's SNI plugin reads, and the issuer's retry state. Everything is root's, in a 0700
//! directory; keys are 0600. Layout (the contract with the SNI plugin is `index.json` and the
//! `current/` pair; docs/architecture.md, "Automatic certificates"):
//!
//! ```text
//! <store>/                      0700
//!   accounts/<id>.json          0600  ACME account (its private key), one per CA directory URL
//!   state.json                  0600  per name: failures in a row, next attempt, last error
//!   index.json                  0600  [{name, fullchain, key, not_after, owner_uids}]
//!   certs/<name>/               0700
//!     current -> v-<serial>           symlink, replaced atomically (rename) on renewal
//!     v-<serial>/fullchain.pem  0644  leaf first, then the CA's intermediates
//!     v-<serial>/key.pem        0600  ECDSA P-256, PKCS#8
//!     renew                           operator's "renew now" marker (`unbit-acme renew NAME`)
//!     retired                         unix time the name left the list; purged after the grace
//! ```
//!
//! Every file is written to a temporary name in its directory, synced and renamed: a reader
//! never sees half a file, and `current` switches from one complete pair to the next.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const CURRENT: &str = "current";
pub const FULLCHAIN: &str = "fullchain.pem";
pub const KEY: &str = "key.pem";
const RENEW_MARKER: &str = "renew";
/// `<store>/wake`: a renewal was requested; the running issuer looks at once.
pub const WAKE_MARKER: &str = "wake";
const RETIRED_MARKER: &str = "retired";
const VERSION_PREFIX: &str = "v-";

pub struct Store {
    root: PathBuf,
}

/// The pair `current` points at.
pub struct Installed {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// One line of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    pub fullchain: PathBuf,
    pub key: PathBuf,
    pub not_after: i64,
    pub owner_uids: Vec<u32>,
}

/// What the issuer remembers about a name between passes and restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState {
    /// Failed attempts in a row (0 after a success).
    pub failures: u32,
    /// No attempt before this unix time.
    pub next_attempt: i64,
    pub last_error: String,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Creates `path` (mode `mode`) unless it exists; an existing one must be a directory of this
/// user, and loses any group/other bits (a store made by hand with 0755 is tightened, said once).
fn private_dir(path: &Path, mode: u32) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err("cannot create", path, e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(|e| err("cannot stat", path, e))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", path.display()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to uid {}, not to this issuer (uid {me}): keys must not be stored where another user controls the directory",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o7777 & !mode != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| err("cannot restrict", path, e))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically with `mode` (temp file in the same directory, fsync,
/// rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let dir = path.parent().ok_or_else(|| format!("{} has no parent directory", path.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // The umask may have taken bits the caller asked for (0644 under umask 077).
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| err("cannot write", path, e))
}

impl Store {
    /// Opens (creating it if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store, String> {
        if let Some(parent) = root.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("cannot create", parent, e))?;
        }
        private_dir(root, 0o700)?;
        private_dir(&root.join("accounts"), 0o700)?;
        private_dir(&root.join("certs"), 0o700)?;
        Ok(Store { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `certs/<name>`; `name` has passed the domain grammar (no `/`, no empty label).
    pub fn name_dir(&self, name: &str) -> PathBuf {
        self.root.join("certs").join(name)
    }

    /// The paths the SNI plugin opens for `name` (through `current`).
    pub fn live_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let current = self.name_dir(name).join(CURRENT);
        (current.join(FULLCHAIN), current.join(KEY))
    }

    /// The account file for a CA directory URL: a new CA (staging to production, say) gets an
    /// account of its own instead of failing with the other CA's.
    pub fn account_path(&self, directory: &str) -> PathBuf {
        let digest = openssl::sha::sha256(directory.as_bytes());
        let id: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.root.join("accounts").join(format!("{id}.json"))
    }

    /// The pair `current` points at, read through one directory handle so the chain and the
    /// key are of the same version even if a renewal swaps `current` meanwhile.
    pub fn current(&self, name: &str) -> Option<Installed> {
        let dir = self.name_dir(name).join(CURRENT);
        let target = std::fs::read_link(&dir).ok()?;
        let version = self.name_dir(name).join(target);
        Some(Installed {
            chain_pem: std::fs::read(version.join(FULLCHAIN)).ok()?,
            key_pem: std::fs::read(version.join(KEY)).ok()?,
        })
    }

    /// Installs a new pair for `name` as `v-<version>` and points `current` at it, then removes
    /// every version but the new one and the one it replaces (a reader that resolved `current`
    /// a moment ago still finds its files).
    pub fn install(&self, name: &str, version: &str, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
        let dir = self.name_dir(name);
        private_dir(&dir, 0o700)?;
        let version_name = format!("{VERSION_PREFIX}{version}");
        let vdir = dir.join(&version_name);
        if vdir.exists() {
            std::fs::remove_dir_all(&vdir).map_err(|e| err("cannot remove", &vdir, e))?;
        }
        private_dir(&vdir, 0o700)?;
        write_atomic(&vdir.join(KEY), key_pem, 0o600)?;
        write_atomic(&vdir.join(FULLCHAIN), chain_pem, 0o644)?;
        let previous = std::fs::read_link(dir.join(CURRENT)).ok();
        let tmp = dir.join(format!(".{CURRENT}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version_name, &tmp).map_err(|e| err("cannot create", &tmp, e))?;
        if let Err(e) = std::fs::rename(&tmp, dir.join(CURRENT)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(err("cannot switch", &dir.join(CURRENT), e));
        }
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| err("cannot sync", &dir, e))?;
        let keep = [Some(PathBuf::from(&version_name)), previous];
        for entry in std::fs::read_dir(&dir).map_err(|e| err("cannot list", &dir, e))?.flatten() {
            let file_name = PathBuf::from(entry.file_name());
            let is_version = file_name.to_string_lossy().starts_with(VERSION_PREFIX);
            if is_version && !keep.iter().any(|k| k.as_ref() == Some(&file_name)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }

    /// `unbit-acme renew NAME`: the next pass orders a new certificate whatever the dates say.
    pub fn request_renewal(&self, name: &str) -> Result<(), String> {
        let dir = self.name_dir(name);
        private_dir(&dir, 0o700)?;
        write_atomic(&dir.join(RENEW_MARKER), b"", 0o600)?;
        write_atomic(&self.root.join(WAKE_MARKER), b"", 0o600)
    }

    pub fn renewal_requested(&self, name: &str) -> bool {
        self.name_dir(name).join(RENEW_MARKER).exists()
    }

    pub fn clear_renewal_request(&self, name: &str) {
        let _ = std::fs::remove_file(self.name_dir(name).join(RENEW_MARKER));
    }

    /// Names with a directory in the store, retired or not.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("certs"))
            .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.retain(|n| domain_table::is_domain_name(n));
        names.sort();
        names
    }

    /// Marks a name that left the list (its files are kept for `grace`, so a domain list that
    /// comes back after a glitch does not cost a new order per name); returns true when the
    /// name was retired by this call.
    pub fn retire(&self, name: &str, now: i64) -> Result<bool, String> {
        let marker = self.name_dir(name).join(RETIRED_MARKER);
        if marker.exists() {
            return Ok(false);
        }
        write_atomic(&marker, now.to_string().as_bytes(), 0o600).map(|()| true)
    }

    /// Takes a name back into service; true when it had been retired.
    pub fn unretire(&self, name: &str) -> bool {
        std::fs::remove_file(self.name_dir(name).join(RETIRED_MARKER)).is_ok()
    }

    /// Removes the files of names retired for longer than `grace_secs`; returns their names.
    pub fn purge_retired(&self, now: i64, grace_secs: i64) -> Vec<String> {
        let mut purged = Vec::new();
        for name in self.names() {
            let dir = self.name_dir(&name);
            let since =
                std::fs::read_to_string(dir.join(RETIRED_MARKER)).ok().and_then(|s| s.trim().parse::<i64>().ok());
            if since.is_some_and(|t| now - t >= grace_secs) && std::fs::remove_dir_all(&dir).is_ok() {
                purged.push(name);
            }
        }
        purged
    }

    pub fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Rewrites `index.json` when its content changes (the SNI plugin reloads on change).
    pub fn write_index(&self, entries: &[IndexEntry]) -> Result<bool, String> {
        let bytes = serde_json::to_vec_pretty(entries).expect("index serializes");
        if std::fs::read(self.index_path()).ok().as_deref() == Some(&bytes[..]) {
            return Ok(false);
        }
        write_atomic(&self.index_path(), &bytes, 0o600).map(|()| true)
    }

    pub fn load_state(&self) -> BTreeMap<String, NameState> {
        std::fs::read(self.root.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_state(&self, state: &BTreeMap<String, NameState>) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        if std::fs::read(self.root.join("state.json")).ok().as_deref() == Some(&bytes[..]) {
            return Ok(());
        }
        write_atomic(&self.root.join("state.json"), &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn install_swaps_current_and_keeps_one_previous_version() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("acme")).unwrap();
        assert_eq!(mode(store.root()), 0o700);
        store.install("example.org", "01", b"chain1", b"key1").unwrap();
        store.install("example.org", "02", b"chain2", b"key2").unwrap();
        let cur = store.current("example.org").unwrap();
        assert_eq!((cur.chain_pem.as_slice(), cur.key_pem.as_slice()), (&b"chain2"[..], &b"key2"[..]));
        let (chain, key) = store.live_paths("example.org");
        assert_eq!(std::fs::read(&key).unwrap(), b"key2");
        assert_eq!((mode(&key), mode(&chain)), (0o600, 0o644));
        assert_eq!(mode(&store.name_dir("example.org")), 0o700);
        store.install("example.org", "03", b"chain3", b"key3").unwrap();
        let mut versions: Vec<String> = std::fs::read_dir(store.name_dir("example.org"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        versions.sort();
        assert_eq!(versions, ["current", "v-02", "v-03"]);
    }

    #[test]
    fn a_loose_store_is_tightened_and_a_foreign_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("acme");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        Store::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&root, Some(65534), None).unwrap();
            let e = Store::open(&root).err().unwrap();
            assert!(e.contains("belongs to uid 65534"), "{e}");
        }
    }

    #[test]
    fn retired_names_are_purged_after_the_grace_only() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("acme")).unwrap();
        store.install("a.example.org", "01", b"c", b"k").unwrap();
        store.install("b.example.org", "01", b"c", b"k").unwrap();
        assert!(store.retire("a.example.org", 1000).unwrap());
        assert!(!store.retire("a.example.org", 2000).unwrap());
        assert!(store.purge_retired(1000 + 99, 100).is_empty());
        assert_eq!(store.purge_retired(1000 + 100, 100), ["a.example.org"]);
        assert_eq!(store.names(), ["b.example.org"]);
        assert!(store.retire("b.example.org", 0).unwrap());
        assert!(store.unretire("b.example.org"));
        assert!(store.purge_retired(i64::MAX / 2, 1).is_empty());
    }
}
