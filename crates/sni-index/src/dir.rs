//! The writer's side: the index directory and its files.

use crate::bundle::ClientCa;
use crate::{names, CLIENT_CA_LIST, TMP_PREFIX};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The index directory, as the validator (root) keeps it.
pub struct IndexDir {
    path: PathBuf,
    /// The router's group: may open entries. `None`: the router runs as root (0400 files).
    gid: Option<u32>,
    seq: u64,
}

impl IndexDir {
    /// Creates `path` (`root:<gid> 0710`) or empties it: a new validator starts with no entry,
    /// and puts back what its containers announce again (every 10 seconds).
    pub fn create(path: &Path, gid: Option<u32>) -> Result<IndexDir, String> {
        Self::open(path, gid, false).map(|(index, _)| index)
    }

    /// Creates `path` like [`IndexDir::create`], or takes it over keeping its entries (files
    /// being written are removed): for a writer that cannot get them all back at once (the
    /// cluster's receiver, whose members resend every 30 s). Returns the entries' names.
    pub fn keep(path: &Path, gid: Option<u32>) -> Result<(IndexDir, Vec<String>), String> {
        Self::open(path, gid, true)
    }

    fn open(path: &Path, gid: Option<u32>, keep: bool) -> Result<(IndexDir, Vec<String>), String> {
        let shown = path.display();
        let existed = match std::fs::DirBuilder::new().mode(0o700).create(path) {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let md = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
                if !md.is_dir() {
                    return Err(format!("the certificate index {shown} exists and is not a directory"));
                }
                true
            }
            Err(e) => return Err(format!("creating the certificate index {shown}: {e}")),
        };
        // Ours, whoever made it before: another owner could swap the entries the router trusts.
        // Taken before it is emptied, so that owner cannot add entries after the cleanup.
        // (`/proc/self` belongs to this process's effective uid.)
        let me = std::fs::metadata("/proc/self").map_err(|e| format!("/proc/self: {e}"))?.uid();
        std::os::unix::fs::chown(path, Some(me), gid).map_err(|e| format!("chown {shown}: {e}"))?;
        let mode = if gid.is_some() { 0o710 } else { 0o700 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {shown}: {e}"))?;
        let mut kept = Vec::new();
        if existed {
            let entries = std::fs::read_dir(path).map_err(|e| format!("listing {shown}: {e}"))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let file = entry.file_type().is_ok_and(|t| t.is_file());
                if keep && file && names::is_entry_name(&name) {
                    // Ours from now on, whoever wrote it: the same owner and mode as a new one.
                    let p = entry.path();
                    std::os::unix::fs::chown(&p, Some(me), gid).map_err(|e| format!("chown {}: {e}", p.display()))?;
                    let mode = if gid.is_some() { 0o440 } else { 0o400 };
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| format!("chmod {}: {e}", p.display()))?;
                    kept.push(name);
                    continue;
                }
                std::fs::remove_file(entry.path())
                    .map_err(|e| format!("removing the stale {}: {e}", entry.path().display()))?;
            }
        }
        kept.sort();
        Ok((IndexDir { path: path.to_path_buf(), gid, seq: 0 }, kept))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the entry of `name` (complete, then renamed over the old one).
    pub fn put(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        if !names::is_entry_name(name) {
            return Err(format!("{name:?} cannot be an index entry"));
        }
        self.write(name, bytes)
    }

    /// Removes the entry of `name`; the router serves the default certificate for it within a
    /// second.
    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        if !names::is_entry_name(name) {
            return Err(format!("{name:?} cannot be an index entry"));
        }
        match std::fs::remove_file(self.path.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", self.path.join(name).display())),
        }
    }

    /// Writes the client-CA list (see [`read_ca_list`]).
    pub fn put_ca_list(&mut self, list: &BTreeMap<String, ClientCa>) -> Result<(), String> {
        let mut text = String::new();
        for (name, policy) in list {
            text.push_str(&format!("{name} {}\n", policy.as_str()));
        }
        self.write(CLIENT_CA_LIST, text.as_bytes())
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.seq += 1;
        let tmp = self.path.join(format!("{TMP_PREFIX}{}-{}", std::process::id(), self.seq));
        let target = self.path.join(name);
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            if let Some(gid) = self.gid {
                std::os::unix::fs::fchown(&f, None, Some(gid))?;
                f.set_permissions(std::fs::Permissions::from_mode(0o440))?;
            }
            f.write_all(bytes)?;
            std::fs::rename(&tmp, &target)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("writing {}: {e}", target.display()));
        }
        Ok(())
    }
}

/// The client-CA list: one `name policy` line per name whose requests the front door checks
/// (`.example.org required`; an exact name below such a wildcard that has its own entry is
/// listed too, with its own policy, often `none`).
pub fn read_ca_list(bytes: &[u8]) -> HashMap<String, ClientCa> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| {
            let (name, policy) = l.split_once(' ')?;
            Some((name.to_string(), ClientCa::parse(policy)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_replaced_whole_and_a_new_writer_starts_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sni");
        let mut index = IndexDir::create(&dir, None).unwrap();
        index.put("example.org", b"one").unwrap();
        index.put(".example.org", b"wild").unwrap();
        index.put("example.org", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("example.org")).unwrap(), b"two");
        let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(dir.join("example.org")).unwrap()) & 0o777;
        assert_eq!(mode, 0o400);
        assert!(index.put("../evil", b"x").is_err() && index.put("@client-ca", b"x").is_err());
        let mut list = BTreeMap::new();
        list.insert(".example.org".to_string(), ClientCa::Required);
        list.insert("www.example.org".to_string(), ClientCa::None);
        index.put_ca_list(&list).unwrap();
        let back = read_ca_list(&std::fs::read(dir.join(CLIENT_CA_LIST)).unwrap());
        assert_eq!(back.get(".example.org"), Some(&ClientCa::Required));
        assert_eq!(back.get("www.example.org"), Some(&ClientCa::None));
        index.remove("example.org").unwrap();
        index.remove("example.org").unwrap();
        assert!(!dir.join("example.org").exists());
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        IndexDir::create(&dir, None).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_writer_may_keep_the_entries_but_not_half_written_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sni");
        let mut index = IndexDir::create(&dir, None).unwrap();
        index.put("example.org", b"one").unwrap();
        index.put(".example.org", b"wild").unwrap();
        std::fs::write(dir.join(format!("{TMP_PREFIX}1-1")), b"half").unwrap();
        std::fs::write(dir.join("not an entry"), b"x").unwrap();
        let (_, kept) = IndexDir::keep(&dir, None).unwrap();
        assert_eq!(kept, [".example.org", "example.org"]);
        assert_eq!(std::fs::read(dir.join("example.org")).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    }
}
