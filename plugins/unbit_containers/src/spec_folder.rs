//! The spec folder: `<uid>.json` files, one per container. It is the source for API-less
//! nodes and tests, and the on-disk "last good state" the API fetcher writes into, so a node
//! restarted while the API is down brings its containers back.

use container_spec::ContainerSpec;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// One spec file that could not be used, with the reason (it names the container and field).
#[derive(Debug)]
pub struct Rejected {
    pub file: PathBuf,
    /// The container the file is about, when its name says so.
    pub uid: Option<u32>,
    pub reason: String,
}

/// The result of reading the folder: the usable specs and the rejected files.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub specs: Vec<ContainerSpec>,
    pub rejected: Vec<Rejected>,
}

pub struct SpecFolder {
    dir: PathBuf,
    inotify: Option<Inotify>,
}

impl SpecFolder {
    pub fn open(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!("spec folder {} does not exist", dir.display()));
        }
        // Push mode: changes reach the Emperor as soon as a file is renamed into place.
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| {
                i.add_watch(
                    dir,
                    AddWatchFlags::IN_CLOSE_WRITE
                        | AddWatchFlags::IN_MOVED_TO
                        | AddWatchFlags::IN_MOVED_FROM
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_CREATE,
                )?;
                Ok(i)
            })
            .ok();
        Ok(SpecFolder { dir: dir.to_path_buf(), inotify })
    }

    /// The inotify descriptor to hand the Emperor's event loop, if inotify is available.
    pub fn event_fd(&self) -> Option<RawFd> {
        self.inotify.as_ref().map(|i| i.as_fd().as_raw_fd())
    }

    /// Empties the inotify queue (the Emperor would spin on a readable fd otherwise).
    pub fn drain(&self) {
        if let Some(i) = &self.inotify {
            while matches!(i.read_events(), Ok(ev) if !ev.is_empty()) {}
        }
    }

    /// Reads every `<uid>.json`. `Err` when the folder itself cannot be read: the caller then
    /// changes nothing, rather than taking an unreadable folder for an empty one.
    pub fn read(&self) -> Result<Snapshot, String> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| format!("cannot read {}: {e}", self.dir.display()))?;
        let mut snap = Snapshot::default();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue; // temp files of an atomic writer, editors' backups...
            };
            if path.file_name().is_some_and(|n| n == crate::loopboxes::FILE) {
                continue; // the node's loopboxes, read by the monitor's loopbox pass
            }
            let parsed_uid = stem.parse::<u32>().ok();
            let reject = |reason: String| Rejected { file: path.clone(), uid: parsed_uid, reason };
            let Some(uid) = parsed_uid else {
                snap.rejected.push(reject(format!("file name {stem:?} is not <uid>.json")));
                continue;
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    snap.rejected.push(reject(format!("container {uid}: unreadable: {e}")));
                    continue;
                }
            };
            match ContainerSpec::from_json(&bytes) {
                Ok(spec) if spec.uid == uid => snap.specs.push(spec),
                Ok(spec) => snap.rejected.push(reject(format!("container {uid}: the file holds uid {}", spec.uid))),
                Err(container_spec::SpecError::Syntax(e)) => {
                    snap.rejected.push(reject(format!("container {uid}: unreadable spec: {e}")))
                }
                Err(e) => snap.rejected.push(reject(e.to_string())),
            }
        }
        snap.specs.sort_by_key(|s| s.uid);
        Ok(snap)
    }
}
