//! Applying an API answer to the spec folder.
//!
//! Rules, from the original's worst failure (an empty API answer deleted every container of a
//! node):
//! * every spec is validated before it is written; an invalid one is reported and its old file
//!   (if any) is kept;
//! * files are written atomically (temp file in the same folder, fsync, rename) and only when
//!   their content changes, so the monitor sees whole files and no needless events;
//! * a container missing from a non-empty answer is removed, at most `max_removals` per pass;
//! * an empty answer never removes anything while the folder holds containers.

use container_spec::ContainerSpec;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub written: Vec<u32>,
    pub removed: Vec<u32>,
    /// Removals held back by the per-pass cap or the empty-answer rule.
    pub held_back: Vec<u32>,
    /// Specs of the answer that failed validation, with the reason.
    pub invalid: Vec<String>,
}

/// The uids that have a spec file in `dir`.
pub fn present(dir: &Path) -> std::io::Result<BTreeSet<u32>> {
    let mut uids = BTreeSet::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(uid) = name.to_str().and_then(|n| n.strip_suffix(".json")).and_then(|s| s.parse().ok()) {
            uids.insert(uid);
        }
    }
    Ok(uids)
}

/// Makes `dir` match `specs` under the rules above. `keep` lists containers the answer named
/// but could not describe (unreadable entries): their files stay as they are.
pub fn apply(dir: &Path, specs: &[ContainerSpec], keep: &[u32], max_removals: usize) -> std::io::Result<Report> {
    let mut report = Report::default();
    let before = present(dir)?;
    let mut wanted: BTreeSet<u32> = keep.iter().copied().collect();
    for spec in specs {
        wanted.insert(spec.uid);
        if let Err(e) = spec.validate() {
            report.invalid.push(e.to_string());
            continue;
        }
        let json = serde_json::to_vec_pretty(spec).expect("a spec always serializes");
        // A spec holds the container's subscription private key: root's alone.
        if write_if_changed(&dir.join(format!("{}.json", spec.uid)), &json, SPEC_MODE)? {
            report.written.push(spec.uid);
        }
    }
    let gone: Vec<u32> = before.difference(&wanted).copied().collect();
    if specs.is_empty() && keep.is_empty() && !gone.is_empty() {
        report.held_back = gone;
        return Ok(report);
    }
    for (i, uid) in gone.into_iter().enumerate() {
        if i < max_removals {
            std::fs::remove_file(dir.join(format!("{uid}.json")))?;
            report.removed.push(uid);
        } else {
            report.held_back.push(uid);
        }
    }
    Ok(report)
}

/// Mode of a container's spec file: it holds the container's subscription private key.
pub const SPEC_MODE: u32 = 0o600;
/// Mode of the domains file: owners' public keys and names, read by the router's processes.
pub const DOMAINS_MODE: u32 = 0o644;

/// Writes `bytes` to `path` atomically (created with `mode`) unless the file already holds
/// exactly them; a file that holds them with another mode gets `mode`.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<bool> {
    write_owned_if_changed(path, bytes, mode, None)
}

/// [`write_if_changed`], and the file's group is `gid` when given (the writer's otherwise).
pub fn write_owned_if_changed(path: &Path, bytes: &[u8], mode: u32, gid: Option<u32>) -> std::io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        // Written before modes were set (or changed by hand): the content stays, the mode not.
        let meta = std::fs::metadata(path)?;
        if gid.is_some_and(|gid| meta.gid() != gid) {
            std::os::unix::fs::chown(path, None, gid)?;
        }
        if meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
        return Ok(false);
    }
    let tmp = temp_path(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    // The group first: the file is never readable by the writer's group with `mode`.
    let written = gid
        .map_or(Ok(()), |gid| std::os::unix::fs::fchown(&f, None, Some(gid)))
        // The umask may have narrowed `mode`; set it exactly.
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.write_all(bytes))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| true)
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests;
