//! The addresses the router is given for pinned sockets, and when a pin may be let go.
//!
//! The validator keeps each verified socket open ([`crate::homes`]) and the router reaches it
//! through `/proc/<pid>/fd/<n>` of the process holding it (the validator, or the pin holder of
//! [`crate::holder`] when the router runs without root). Descriptor numbers are reused by the
//! kernel and pids by the system, so that path must never be handed to the router directly: if
//! the holder closed descriptor 14 while the router still held a node at `/proc/<pid>/fd/14`, the next
//! socket pinned (another customer's) would get 14 and serve the first customer's domain.
//!
//! So every pin gets a name that is never used twice: a symlink `<dir>/<generation>-<n>` to
//! its descriptor, where the generation is random per validator start and `n` only grows. The
//! router is given that name. A pin is let go only when no node the router has from us uses
//! it any more (the validator unsubscribes them all first); its name is unlinked at once and
//! its descriptor closed [`QUARANTINE_SECS`] later, so a lookup the router started just
//! before the unlink still lands on the socket it was meant for. A router node left behind by
//! a lost unsubscribe, or by a validator that died, points at a name that no longer exists:
//! the connection fails (and the router drops the node), it never reaches another socket.

use crate::homes::Pinned;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Identifies a pin for as long as the validator runs.
pub type PinId = u64;

/// Seconds a released descriptor stays open after its name was unlinked.
pub const QUARANTINE_SECS: i64 = 5;

/// Gives pinned sockets the names the router connects to.
pub trait Publish {
    /// A name for `pinned` that was never given out before (an absolute path).
    fn publish(&mut self, pinned: &Pinned) -> Result<String, String>;
    /// Makes `address` unreachable; the socket behind it stays open until dropped. An error
    /// means the name may still resolve: the caller must then never close the socket.
    fn withdraw(&mut self, address: &str) -> Result<(), String>;
    /// The quarantine of a withdrawn name is over: whatever still holds its socket may let go.
    fn forget(&mut self, _address: &str) {}
    /// Called at every housekeeping pass (a few times a second).
    fn tick(&mut self) {}
}

/// The names when the router runs as root: symlinks to `/proc/<validator pid>/fd/<n>` in the
/// router's private directory (beside its private socket). Without root, see
/// [`crate::holder::HolderLink`].
pub struct LinkDir {
    dir: PathBuf,
    generation: String,
    next: u64,
    pid: u32,
}

impl LinkDir {
    /// Creates `dir` (mode 0755 inside the router's private directory) or empties it: names
    /// left by a validator that died must not resolve to anything any more (its process is
    /// gone, and its pid may be reused).
    pub fn create(dir: &Path) -> Result<LinkDir, String> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let md = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                if !md.is_dir() {
                    return Err(format!("{} is not a directory", dir.display()));
                }
                let entries = std::fs::read_dir(dir).map_err(|e| format!("listing {}: {e}", dir.display()))?;
                for entry in entries.flatten() {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| format!("removing the stale {}: {e}", entry.path().display()))?;
                }
            }
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
        let mut random = [0u8; 8];
        openssl::rand::rand_bytes(&mut random).map_err(|e| format!("random generation: {e}"))?;
        let generation = random.iter().map(|b| format!("{b:02x}")).collect();
        Ok(LinkDir { dir: dir.to_path_buf(), generation, next: 0, pid: std::process::id() })
    }

    /// The random part of this validator's names.
    pub fn generation(&self) -> &str {
        &self.generation
    }
}

impl Publish for LinkDir {
    fn publish(&mut self, pinned: &Pinned) -> Result<String, String> {
        let fd = pinned.fd.as_ref().ok_or("the socket is not open")?;
        self.next += 1;
        let name = self.dir.join(format!("{}-{}", self.generation, self.next));
        std::os::unix::fs::symlink(format!("/proc/{}/fd/{}", self.pid, fd.as_raw_fd()), &name)
            .map_err(|e| format!("creating the router's name {}: {e}", name.display()))?;
        Ok(name.display().to_string())
    }

    fn withdraw(&mut self, address: &str) -> Result<(), String> {
        unlink_name(address)
    }
}

/// Removes the router's name `address` (already gone is fine): [`Publish::withdraw`]'s part
/// every publisher shares.
pub fn unlink_name(address: &str) -> Result<(), String> {
    match std::fs::remove_file(address) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("could not remove the router's name {address}: {e}")),
    }
}

struct Pin {
    pinned: Pinned,
    address: String,
    slot: (u32, PathBuf),
    /// Nodes the router has from us at this address.
    users: usize,
}

/// Every pinned socket, the name the router knows it by, and who uses it.
pub struct PinBoard {
    publisher: Box<dyn Publish + Send>,
    pins: HashMap<PinId, Pin>,
    /// The pin currently standing for each socket name, `(uid, path below run/)`.
    current: HashMap<(u32, PathBuf), PinId>,
    next: PinId,
    /// Released descriptors, their former names, and when they may be closed.
    closing: Vec<(i64, String, Pinned)>,
    /// Descriptors whose name could not be removed: kept open for good, so the name can never
    /// come to mean another socket.
    stuck: Vec<Pinned>,
    /// Problems for the operator's log, taken by [`PinBoard::take_problems`].
    problems: Vec<String>,
}

/// What [`PinBoard::pin`] did.
pub struct PinResult {
    pub id: PinId,
    /// The pin that stood for the same name before, now for another socket (the vassal
    /// re-bound it): every node using it must be taken back from the router.
    pub superseded: Option<PinId>,
}

impl PinBoard {
    pub fn new(publisher: Box<dyn Publish + Send>) -> PinBoard {
        PinBoard {
            publisher,
            pins: HashMap::new(),
            current: HashMap::new(),
            next: 0,
            closing: Vec::new(),
            stuck: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Pins the socket just verified at `(uid, rel)`, or keeps the existing pin when it is the
    /// same socket.
    pub fn pin(&mut self, uid: u32, rel: &Path, pinned: Pinned) -> Result<PinResult, String> {
        let slot = (uid, rel.to_path_buf());
        let previous = self.current.get(&slot).copied();
        if let Some(id) = previous {
            if self.pins.get(&id).is_some_and(|p| p.pinned.same_file(&pinned)) {
                return Ok(PinResult { id, superseded: None });
            }
        }
        let address = self.publisher.publish(&pinned)?;
        self.next += 1;
        let id = self.next;
        self.pins.insert(id, Pin { pinned, address, slot: slot.clone(), users: 0 });
        self.current.insert(slot, id);
        Ok(PinResult { id, superseded: previous })
    }

    /// The pin standing for `(uid, rel)`, if any.
    pub fn current(&self, uid: u32, rel: &Path) -> Option<PinId> {
        self.current.get(&(uid, rel.to_path_buf())).copied()
    }

    /// The router's name for a pin ("" for an unknown one, which no caller holds).
    pub fn address(&self, id: PinId) -> &str {
        self.pins.get(&id).map_or("", |p| p.address.as_str())
    }

    /// The router got a node at this pin.
    pub fn retain(&mut self, id: PinId) {
        if let Some(p) = self.pins.get_mut(&id) {
            p.users += 1;
        }
    }

    /// The router no longer has a node at this pin (unsubscribed, revoked or expired). The
    /// last one lets the pin go.
    pub fn release(&mut self, id: PinId, now: i64) {
        let Some(p) = self.pins.get_mut(&id) else { return };
        p.users = p.users.saturating_sub(1);
        if p.users == 0 {
            self.retire(id, now);
        }
    }

    /// Lets go of a pin nobody retained (a subscribe that was refused after pinning).
    pub fn release_unused(&mut self, id: PinId, now: i64) {
        if self.pins.get(&id).is_some_and(|p| p.users == 0) {
            self.retire(id, now);
        }
    }

    fn retire(&mut self, id: PinId, now: i64) {
        let Some(p) = self.pins.remove(&id) else { return };
        if self.current.get(&p.slot) == Some(&id) {
            self.current.remove(&p.slot);
        }
        match self.publisher.withdraw(&p.address) {
            Ok(()) => self.closing.push((now + QUARANTINE_SECS, p.address, p.pinned)),
            Err(e) => {
                self.problems.push(format!("{e}; its socket stays open for good"));
                self.stuck.push(p.pinned);
            }
        }
    }

    /// What went wrong since the last call, for the operator's log.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Closes the descriptors whose quarantine is over (housekeeping).
    pub fn expire(&mut self, now: i64) {
        self.publisher.tick();
        let (over, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.closing).into_iter().partition(|c| c.0 <= now);
        self.closing = waiting;
        for (_, address, _) in over {
            self.publisher.forget(&address);
        }
    }

    /// Pins held (for tests and reports).
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::homes::HomeFiles;
    use std::os::unix::net::UnixListener;

    #[test]
    fn names_are_never_reused_and_a_withdrawn_name_reaches_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::getuid().as_raw();
        let run = tmp.path().join(me.to_string()).join("run");
        std::fs::create_dir_all(&run).unwrap();
        let homes = crate::homes::NodeHomes::new(tmp.path());
        let pinned = |_: &Path| homes.open_socket(me, Path::new("a.socket")).unwrap();
        let links = tmp.path().join("pins");
        std::fs::create_dir(&links).unwrap();
        std::os::unix::fs::symlink("/proc/1/fd/0", links.join("stale")).unwrap();
        let mut board = PinBoard::new(Box::new(LinkDir::create(&links).unwrap()));
        assert!(!links.join("stale").exists() && std::fs::read_dir(&links).unwrap().count() == 0);

        let first = run.join("a.socket");
        let _a = UnixListener::bind(&first).unwrap();
        let a = board.pin(1, Path::new("a.socket"), pinned(&first)).unwrap();
        board.retain(a.id);
        let name_a = board.address(a.id).to_string();
        std::os::unix::net::UnixStream::connect(&name_a).expect("the router reaches the socket by its name");

        // The vassal re-binds the name: a new pin, the old one superseded.
        std::fs::remove_file(&first).unwrap();
        let _b = UnixListener::bind(&first).unwrap();
        let b = board.pin(1, Path::new("a.socket"), pinned(&first)).unwrap();
        assert_eq!(b.superseded, Some(a.id));
        let name_b = board.address(b.id).to_string();
        assert_ne!(name_a, name_b);
        board.release(a.id, 100);
        assert!(std::os::unix::net::UnixStream::connect(&name_a).is_err(), "a released name reaches nothing");
        // Same socket again: the same pin.
        let again = board.pin(1, Path::new("a.socket"), pinned(&first)).unwrap();
        assert_eq!((again.id, again.superseded), (b.id, None));
        assert_eq!(board.len(), 1);
        board.expire(100 + QUARANTINE_SECS);
        assert!(board.closing.is_empty());
    }
}
