//! Keeps the domain table in step with `domains.json` without restarting anything: a thread
//! looks at the file twice a second and parses it when its identity (inode, size, mtime)
//! changes. The node sync replaces the file atomically (rename), so a half-written file is
//! never read; a file that does not parse is reported and the last good table stays.

use crate::domains::DomainTable;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);

pub struct DomainsWatcher {
    initial: Option<Arc<DomainTable>>,
    updates: Receiver<Arc<DomainTable>>,
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Identity {
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

fn identity(path: &PathBuf) -> Option<Identity> {
    let md = std::fs::metadata(path).ok()?;
    Some(Identity {
        ino: md.ino(),
        size: md.size(),
        mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
    })
}

/// Reads and parses the file, logging what was loaded or why not.
fn load(path: &PathBuf) -> Option<Arc<DomainTable>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            uwsgi::log!("domains file {}: {e}; every announce is refused until it appears", path.display());
            return None;
        }
    };
    match DomainTable::from_json(&bytes) {
        Ok(loaded) => {
            for s in &loaded.skipped {
                uwsgi::log!("domains file {}: skipped {s}", path.display());
            }
            uwsgi::log!("domains file {}: {} domains loaded", path.display(), loaded.table.len());
            Some(Arc::new(loaded.table))
        }
        Err(e) => {
            uwsgi::log!("domains file {}: {e}; keeping the previous table", path.display());
            None
        }
    }
}

impl DomainsWatcher {
    /// Loads the file once now, then watches it from a thread.
    pub fn start(path: PathBuf) -> Result<DomainsWatcher, String> {
        let mut seen = identity(&path);
        let initial = load(&path);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("domains-watch".into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                let now = identity(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                // A panic here must not take the validator down silently; the guard logs it
                // and the watcher stops (the validator keeps its last table).
                let table = uwsgi::guard("domains watcher", None, || load(&path));
                if let Some(t) = table {
                    if tx.send(t).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the domains watcher: {e}"))?;
        Ok(DomainsWatcher { initial, updates: rx })
    }

    pub fn initial(&self) -> Option<Arc<DomainTable>> {
        self.initial.clone()
    }

    /// The newest table loaded since the last call, if any.
    pub fn latest(&self) -> Option<Arc<DomainTable>> {
        let mut newest = None;
        loop {
            match self.updates.try_recv() {
                Ok(t) => newest = Some(t),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return newest,
            }
        }
    }
}
