//! When a container's sub-Emperor is ready, observed without polling.
//!
//! "Ready" is the moment the container's own Emperor writes `*** starting uWSGI sub-Emperor ***`
//! to `<home>/logs/emperor.log`. uWSGI prints that line from `emperor_loop()` once the
//! container is fully built (namespaces, cgroup, root filesystem, privileges dropped), right
//! after its imperial monitors are set up and before it scans `~/vassals` for the first time.
//! Both chains print it the same way (the container master is itself a vassal, hence "sub-").
//!
//! The homes do not exist before a container starts (our plugin creates them in the node
//! Emperor, the original chain in its `hook-asap` hooks), so the watcher follows them as they
//! appear: an inotify watch on the containers dir reports `<uid>/`, one on the home reports
//! `logs/`, one on `logs/` reports every write to `emperor.log`. Each new watch is followed by
//! a look at what already exists, so nothing created between two steps is missed. A write is
//! timestamped when `poll()` returns, before the log is read, so reading costs nothing to the
//! figure. A slow sweep backs the events up. A container whose marker was found without seeing
//! the write as an event (already there when a watch was added, or found by the sweep) is
//! counted as `late`: its time is an upper bound. The count is printed with the results.

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const READY_MARKER: &[u8] = b"*** starting uWSGI sub-Emperor ***";

/// How long the watcher waits for an event before sweeping the pending homes itself.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug)]
enum Watched {
    Containers,
    Home(u32),
    Logs(u32),
}

/// The consecutive parts of one start (see [`Readiness::stages`]).
#[derive(Clone, Copy, Debug)]
pub struct Stages {
    pub to_home: Duration,
    pub to_first_log: Duration,
    pub to_ready: Duration,
}

/// What has been read of one container's `emperor.log` so far.
#[derive(Default)]
struct LogTail {
    offset: u64,
    /// The end of the previous read, in case the marker is split across two writes.
    carry: Vec<u8>,
}

pub struct Readiness {
    inotify: Inotify,
    containers: PathBuf,
    watched: HashMap<WatchDescriptor, Watched>,
    watches_of: HashMap<u32, Vec<WatchDescriptor>>,
    tails: HashMap<u32, LogTail>,
    /// When each home was first seen (created by the chain, not by the watcher).
    homes: HashMap<u32, Instant>,
    /// When each `emperor.log` was first seen written to.
    first_writes: HashMap<u32, Instant>,
    ready: HashMap<u32, Instant>,
    /// Containers whose marker write was not seen as an event: their time is an upper bound.
    pub late: usize,
}

impl Readiness {
    /// Starts watching `containers` (the parent of the homes); call it before any spec lands.
    pub fn watch(containers: &Path) -> Result<Readiness, String> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| format!("inotify_init: {e}"))?;
        let mut r = Readiness {
            inotify,
            containers: containers.to_path_buf(),
            watched: HashMap::new(),
            watches_of: HashMap::new(),
            tails: HashMap::new(),
            homes: HashMap::new(),
            first_writes: HashMap::new(),
            ready: HashMap::new(),
            late: 0,
        };
        r.add_watch(containers, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO, Watched::Containers)?;
        Ok(r)
    }

    /// When `uid` was seen ready, if it was.
    pub fn ready_at(&self, uid: u32) -> Option<Instant> {
        self.ready.get(&uid).copied()
    }

    /// When the home of `uid` was seen created, if it was.
    pub fn home_seen_at(&self, uid: u32) -> Option<Instant> {
        self.homes.get(&uid).copied()
    }

    /// Where the time of a start went, as far as the home's files show it: from `t0` to the
    /// home appearing, to the first line in `emperor.log`, to the ready line.
    pub fn stages(&self, uid: u32, t0: Instant) -> Option<Stages> {
        let (home, first, ready) = (self.homes.get(&uid)?, self.first_writes.get(&uid)?, self.ready.get(&uid)?);
        Some(Stages {
            to_home: home.saturating_duration_since(t0),
            to_first_log: first.saturating_duration_since(*home),
            to_ready: ready.saturating_duration_since(*first),
        })
    }

    /// Waits until every container in `uids` is ready, or `deadline`.
    pub fn wait_all(&mut self, uids: &[u32], deadline: Instant) -> Result<(), String> {
        loop {
            let pending: Vec<u32> = uids.iter().copied().filter(|u| !self.ready.contains_key(u)).collect();
            if pending.is_empty() {
                return Ok(());
            }
            if crate::interrupt::requested() {
                return Err("interrupted".into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{} container(s) not ready in time, e.g. {}", pending.len(), pending[0]));
            }
            if self.wait_readable((deadline - now).min(SWEEP_INTERVAL))? {
                let woke = Instant::now();
                self.dispatch_events(woke)?;
            } else {
                self.sweep(&pending)?;
            }
        }
    }

    /// `poll(2)` on the inotify descriptor (nix's poll feature is not enabled for this crate).
    fn wait_readable(&self, timeout: Duration) -> Result<bool, String> {
        let mut pfd = libc::pollfd { fd: self.inotify.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, owned by this frame, for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        match n {
            n if n > 0 => Ok(true),
            0 => Ok(false),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => Ok(false),
            _ => Err(format!("poll: {}", std::io::Error::last_os_error())),
        }
    }

    fn dispatch_events(&mut self, woke: Instant) -> Result<(), String> {
        loop {
            let events = match self.inotify.read_events() {
                Ok(ev) if !ev.is_empty() => ev,
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(format!("inotify read: {e}")),
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost: the sweep will find what they said, counted as late.
                    continue;
                }
                let (Some(&what), Some(name)) = (self.watched.get(&ev.wd), ev.name) else { continue };
                let name = name.to_string_lossy().into_owned();
                match what {
                    Watched::Containers => {
                        if let Ok(uid) = name.parse::<u32>() {
                            self.homes.entry(uid).or_insert(woke);
                            self.follow_home(uid)?;
                        }
                    }
                    Watched::Home(uid) if name == "logs" => self.follow_logs(uid)?,
                    Watched::Logs(uid) if name == "emperor.log" => {
                        self.check_log(uid, woke);
                    }
                    _ => {}
                }
            }
        }
    }

    fn home(&self, uid: u32) -> PathBuf {
        self.containers.join(uid.to_string())
    }

    fn follow_home(&mut self, uid: u32) -> Result<(), String> {
        if self.ready.contains_key(&uid) || self.is_watched(uid, |w| matches!(w, Watched::Home(_))) {
            return Ok(());
        }
        let home = self.home(uid);
        if !self.add_watch(&home, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO, Watched::Home(uid))? {
            return Ok(());
        }
        // `logs/` may have been created before the watch was in place.
        self.follow_logs(uid)
    }

    fn follow_logs(&mut self, uid: u32) -> Result<(), String> {
        if self.ready.contains_key(&uid) || self.is_watched(uid, |w| matches!(w, Watched::Logs(_))) {
            return Ok(());
        }
        let logs = self.home(uid).join("logs");
        let flags = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_MOVED_TO;
        // Written before the watch was in place: the write itself was not seen, so its time is late.
        if self.add_watch(&logs, flags, Watched::Logs(uid))? && self.check_log(uid, Instant::now()) {
            self.late += 1;
        }
        Ok(())
    }

    fn is_watched(&self, uid: u32, kind: impl Fn(&Watched) -> bool) -> bool {
        self.watches_of.get(&uid).is_some_and(|wds| wds.iter().any(|wd| self.watched.get(wd).is_some_and(&kind)))
    }

    /// Adds a watch; `Ok(false)` when the directory does not exist (yet, or any more).
    fn add_watch(&mut self, dir: &Path, flags: AddWatchFlags, what: Watched) -> Result<bool, String> {
        match self.inotify.add_watch(dir, flags | AddWatchFlags::IN_ONLYDIR) {
            Ok(wd) => {
                self.watched.insert(wd, what);
                if let Watched::Home(uid) | Watched::Logs(uid) = what {
                    self.watches_of.entry(uid).or_default().push(wd);
                }
                Ok(true)
            }
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(false),
            Err(e) => Err(format!("inotify_add_watch {}: {e}", dir.display())),
        }
    }

    /// Reads what `emperor.log` gained since the last look; marks the container ready at `now`
    /// when the marker shows up, and says whether it did.
    fn check_log(&mut self, uid: u32, now: Instant) -> bool {
        if self.ready.contains_key(&uid) {
            return false;
        }
        let path = self.home(uid).join("logs/emperor.log");
        let tail = self.tails.entry(uid).or_default();
        let found = read_new_bytes(&path, tail).unwrap_or(false);
        if tail.offset > 0 {
            self.first_writes.entry(uid).or_insert(now);
        }
        if found {
            self.mark_ready(uid, now);
        }
        found
    }

    fn mark_ready(&mut self, uid: u32, at: Instant) {
        self.ready.insert(uid, at);
        self.tails.remove(&uid);
        // A ready container's later log lines are of no interest: stop hearing about them.
        for wd in self.watches_of.remove(&uid).unwrap_or_default() {
            self.watched.remove(&wd);
            let _ = self.inotify.rm_watch(wd);
        }
    }

    /// The safety net: looks at every pending home directly. Whatever it finds ready was
    /// missed by the events, so it counts as late.
    fn sweep(&mut self, pending: &[u32]) -> Result<(), String> {
        for &uid in pending {
            if !self.home(uid).is_dir() {
                continue;
            }
            self.follow_home(uid)?;
            self.follow_logs(uid)?;
            if self.check_log(uid, Instant::now()) {
                self.late += 1;
            }
        }
        Ok(())
    }
}

/// Appends the file's new bytes to the search window; `Some(true)` when the marker is in it.
fn read_new_bytes(path: &Path, tail: &mut LogTail) -> Option<bool> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(tail.offset)).ok()?;
    let mut fresh = Vec::new();
    file.read_to_end(&mut fresh).ok()?;
    tail.offset += fresh.len() as u64;
    let mut window = std::mem::take(&mut tail.carry);
    window.extend_from_slice(&fresh);
    if window.windows(READY_MARKER.len()).any(|w| w == READY_MARKER) {
        return Some(true);
    }
    let keep = window.len().saturating_sub(READY_MARKER.len() - 1);
    tail.carry = window.split_off(keep);
    Some(false)
}
