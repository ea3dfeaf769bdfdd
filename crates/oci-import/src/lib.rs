//! Docker and OCI images as custom distros: `unbit-oci-import` unpacks a `docker save` tarball,
//! a `docker export` tarball (plain or gzip) or an OCI image layout (a directory, or a tar of
//! one) into `~/distros/<name>`, a directory the node can boot a container from (see
//! `docs/custom-distros.md`).
//!
//! The customer runs it inside their custom_distros_storage container, as the container's uid:
//! no root is involved, so whatever an image holds, the import can do no more than that uid
//! can. On top of that the image cannot reach outside the target even within the customer's
//! own files: every path is resolved beneath the target with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` from directory fds, so a layer's `../` path, or a symlink planted by
//! one layer (absolute or relative) that a later entry writes through, is refused, never
//! followed. Device nodes and FIFOs are dropped, setuid/setgid bits cleared, hard links made
//! only to files already in the tree, whiteouts (`.wh.NAME`, `.wh..wh..opq`) applied as the
//! OCI image spec says. The tree is built beside the target and renamed into place at the end:
//! a failed import leaves nothing behind.

mod fsops;
mod layout;

pub use layout::{layers_of, Layer, Source};

use fsops::Tree;
use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// What went wrong, with the entry, layer or file it concerns.
#[derive(Debug)]
pub struct ImportError(pub String);

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImportError {}

pub type Result<T> = std::result::Result<T, ImportError>;

pub(crate) fn err(msg: impl Into<String>) -> ImportError {
    ImportError(msg.into())
}

/// What an import did, for the customer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub layers: usize,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    /// Device nodes and FIFOs, never created.
    pub dropped_devices: Vec<String>,
    /// Files and directories whose setuid/setgid bits were cleared.
    pub cleared_setid: Vec<String>,
    /// Hard links to a file not in the tree.
    pub dropped_links: Vec<String>,
    /// What was added or replaced so the node can boot the tree (mountpoints, /.old_root).
    pub added: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} layer(s): {} files ({} bytes), {} directories, {} symlinks, {} hard links, {} whiteouts applied",
            self.layers, self.files, self.bytes, self.dirs, self.symlinks, self.hardlinks, self.whiteouts
        )?;
        for (what, list) in [
            ("dropped device nodes/FIFOs", &self.dropped_devices),
            ("cleared setuid/setgid bits on", &self.cleared_setid),
            ("dropped hard links to missing files", &self.dropped_links),
            ("added for the node", &self.added),
        ] {
            if !list.is_empty() {
                let shown: Vec<&str> = list.iter().take(10).map(String::as_str).collect();
                let more = if list.len() > 10 { format!(" and {} more", list.len() - 10) } else { String::new() };
                write!(f, "\n{what}: {}{more}", shown.join(", "))?;
            }
        }
        Ok(())
    }
}

/// Whether `name` can be a distro directory: one path component of `[A-Za-z0-9._-]`, not
/// starting with a dot (the importer's work directories do), at most 64 bytes.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(err(format!("distro name {name:?}: expected 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot")))
    }
}

/// Imports `source` as `<distros>/<name>`. With `replace`, an existing distro of that name is
/// swapped out once the new one is complete (containers running on it keep the old files until
/// they restart); without, an existing one is an error.
pub fn import(source: &Path, distros: &Path, name: &str, replace: bool) -> Result<Report> {
    check_name(name)?;
    let layers = layers_of(source)?;
    let parent = Tree::open_dir(distros)?;
    if !replace && parent.exists(name)? {
        return Err(err(format!(
            "{}: already exists (pass --replace to swap it for the new image)",
            distros.join(name).display()
        )));
    }
    let work = format!(".import-{name}-{}", std::process::id());
    let tree = parent.create_subtree(&work)?;
    let result = (|| {
        let mut report = Report::default();
        for (i, layer) in layers.iter().enumerate() {
            let reader = layer.open().map_err(|e| err(format!("layer {} ({}): {e}", i + 1, layer.describe())))?;
            apply_layer(&tree, reader, &mut report)
                .map_err(|e| err(format!("layer {} ({}): {e}", i + 1, layer.describe())))?;
            report.layers += 1;
        }
        make_bootable(&tree, &mut report)?;
        Ok(report)
    })();
    match result {
        Ok(report) => {
            parent.install(&work, name, replace)?;
            Ok(report)
        }
        Err(e) => {
            let _ = parent.remove_tree(&work);
            Err(e)
        }
    }
}

/// A tar entry's path as a clean relative path: `./` and a leading `/` dropped, `..` refused.
/// `None` for the root itself.
fn clean_path(raw: &Path) -> Result<Option<PathBuf>> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(err(format!("entry {}: a path with `..` would leave the image; refused", raw.display())))
            }
            Component::Prefix(_) => return Err(err(format!("entry {}: not a Unix path", raw.display()))),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT: &str = ".wh.";

/// Applies one layer tarball (already decompressed) over `tree`.
pub fn apply_layer(tree: &Tree, reader: impl Read, report: &mut Report) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    // Paths this layer created: an opaque whiteout hides lower layers only.
    let mut this_layer: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(|e| err(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| err(format!("reading the tar: {e}")))?;
        let raw = entry.path().map_err(|e| err(format!("an entry's path: {e}")))?.into_owned();
        let Some(rel) = clean_path(&raw)? else { continue };
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let at = |e: ImportError| err(format!("entry {}: {e}", rel.display()));
        if name == OPAQUE {
            tree.clear_dir(&dir, &|child: &Path| this_layer.contains(child)).map_err(at)?;
            report.whiteouts += 1;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            // `.wh...` would name the parent directory.
            if matches!(hidden, "" | "." | "..") {
                return Err(at(err(format!("whiteout of {hidden:?}: not a name; refused"))));
            }
            tree.remove(&dir.join(hidden)).map_err(at)?;
            report.whiteouts += 1;
            continue;
        }
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644);
        let kind = header.entry_type();
        if mode & 0o6000 != 0 && (kind.is_file() || kind.is_dir() || kind.is_contiguous()) {
            report.cleared_setid.push(format!("/{}", rel.display()));
        }
        match kind {
            k if k.is_dir() => {
                tree.mkdir(&rel, (mode & 0o1777) | 0o700).map_err(at)?;
                report.dirs += 1;
            }
            k if k.is_file() || k.is_contiguous() || k == tar::EntryType::GNUSparse => {
                let n = tree.write_file(&rel, mode & 0o777, &mut entry).map_err(at)?;
                report.files += 1;
                report.bytes += n;
            }
            k if k.is_symlink() => {
                let target = entry
                    .link_name()
                    .map_err(|e| at(err(e.to_string())))?
                    .ok_or_else(|| at(err("symlink without a target")))?
                    .into_owned();
                tree.symlink(&rel, &target).map_err(at)?;
                report.symlinks += 1;
            }
            k if k.is_hard_link() => {
                let raw_target = entry
                    .link_name()
                    .map_err(|e| at(err(e.to_string())))?
                    .ok_or_else(|| at(err("hard link without a target")))?
                    .into_owned();
                let target = clean_path(&raw_target)?.ok_or_else(|| at(err("hard link to the image root")))?;
                if tree.hardlink(&rel, &target).map_err(at)? {
                    report.hardlinks += 1;
                } else {
                    report.dropped_links.push(format!("/{} -> /{}", rel.display(), target.display()));
                }
            }
            k if k.is_character_special() || k.is_block_special() || k.is_fifo() => {
                report.dropped_devices.push(format!("/{}", rel.display()));
                continue;
            }
            // PAX and GNU long-name records are consumed by the tar reader; anything else is
            // not part of a filesystem.
            _ => continue,
        }
        this_layer.insert(rel);
    }
    Ok(())
}

/// What the node needs of a distro it boots (custom-distros.md and the jail's mountpoints):
/// created when missing; a symlink where the jail mounts is replaced (the jail follows none).
fn make_bootable(tree: &Tree, report: &mut Report) -> Result<()> {
    let mountpoints = jail::JAIL_MOUNTPOINTS.iter().filter(|m| !jail::CUSTOM_DISTRO_DIRS.contains(m));
    for rel in jail::CUSTOM_DISTRO_DIRS.iter().chain(mountpoints) {
        let path = Path::new(rel);
        let seed: &[u8] = match *rel {
            "etc/passwd" => b"root:x:0:0:root:/root:/bin/sh\n",
            "etc/group" => b"root:x:0:\n",
            _ => b"",
        };
        let changed = if rel.starts_with("etc/") { tree.ensure_file(path, seed)? } else { tree.ensure_dir(path)? };
        if changed {
            report.added.push(format!("/{rel}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_components_are_refused_and_roots_dropped() {
        assert_eq!(clean_path(Path::new("./usr/bin/x")).unwrap(), Some(PathBuf::from("usr/bin/x")));
        assert_eq!(clean_path(Path::new("/etc/passwd")).unwrap(), Some(PathBuf::from("etc/passwd")));
        assert_eq!(clean_path(Path::new("./")).unwrap(), None);
        for bad in ["../etc/passwd", "usr/../../x", "a/.."] {
            assert!(clean_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_are_single_safe_components() {
        for ok in ["debian12", "my-app_1.0"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
