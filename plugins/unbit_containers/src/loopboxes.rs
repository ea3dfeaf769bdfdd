//! Loopboxes on the node: keeps the loopboxes of every running container mounted as the spec
//! folder's `loopboxes.json` says (written by node-sync from the API), at every pass of the
//! monitor, without restarting anything. `jail::loopbox` does the mounting and checks; this
//! decides what to do and says it:
//!
//! * a loopbox of a running container that is not mounted is mounted (so a restarted
//!   container gets its loopboxes back: its old mounts went with its old mount namespace);
//! * a loopbox gone from the file is unmounted, its image left alone;
//! * a mounted image deleted or replaced is unmounted; one resized is unmounted and mounted
//!   again [`RESIZE_WAIT`] seconds later, when its new size passes the checks;
//! * a loopbox that cannot be mounted is retried after [`RETRY_WAIT`] seconds, then, while it
//!   fails the same way, after twice as long each time up to [`RETRY_MAX`] (a kernel that
//!   refuses a broken image says so in its log at every try), and its reason is told once;
//! * a stopped container is forgotten: its loop devices are freed by the kernel (autoclear)
//!   when its mount namespace goes.
//!
//! Every step and refusal is an [`Event`], which the monitor writes to the customer's
//! `~/logs/emperor.log` and raises as a `loopbox` alarm.

use container_spec::LoopboxSpec;
use jail::loopbox::{self, show, ImageState, Mounted, Unmounted};
use jail::NodePaths;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The file in the spec folder that lists the node's loopboxes.
pub const FILE: &str = "loopboxes.json";
/// Seconds between a resize and the remount (the quickstart's "about 30 seconds").
pub const RESIZE_WAIT: i64 = 30;
/// Seconds between two attempts at a loopbox that could not be mounted.
pub const RETRY_WAIT: i64 = 5;
/// The longest wait between two attempts at a loopbox that keeps failing the same way.
pub const RETRY_MAX: i64 = 60;

/// Seconds before the next attempt after `failures` identical failures in a row (1 or more).
pub fn retry_wait(failures: u32) -> i64 {
    RETRY_WAIT.saturating_mul(1 << failures.saturating_sub(1).min(8)).min(RETRY_MAX)
}

/// Something to tell a container's customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub uid: u32,
    pub message: String,
}

struct Boxes {
    /// The container's pid 1 when its loopboxes were mounted, pinned: when it is no longer
    /// alive the container restarted and nothing of ours is mounted in the new one.
    pidfd: OwnedFd,
    mounted: BTreeMap<u64, Mounted>,
    /// Loopboxes not to be tried before this time (resized, or failed).
    not_before: BTreeMap<u64, i64>,
    /// The last thing said per loopbox, so a retry that fails the same way says nothing.
    said: BTreeMap<u64, String>,
    /// Identical failures in a row per loopbox.
    failures: BTreeMap<u64, u32>,
}

pub struct Loopboxes {
    file: PathBuf,
    containers: BTreeMap<u32, Boxes>,
    /// What is wrong with the file, reported once.
    file_problem: Option<String>,
    /// Containers that could not be entered, with the reason said.
    refused: BTreeMap<u32, String>,
}

impl Loopboxes {
    pub fn new(spec_folder: &Path) -> Self {
        Loopboxes {
            file: spec_folder.join(FILE),
            containers: BTreeMap::new(),
            file_problem: None,
            refused: BTreeMap::new(),
        }
    }

    /// Every loopbox the file lists, per container; `None` when the file cannot be read (then
    /// nothing changes: an unreadable list is not an empty one). A missing file lists none.
    fn desired(&mut self) -> Option<BTreeMap<u32, Vec<LoopboxSpec>>> {
        let parsed = match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice::<Vec<LoopboxSpec>>(&bytes).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(list) => {
                self.file_problem = None;
                let mut out: BTreeMap<u32, Vec<LoopboxSpec>> = BTreeMap::new();
                for spec in list {
                    out.entry(spec.uid).or_default().push(spec);
                }
                Some(out)
            }
            Err(e) => {
                let problem =
                    format!("loopboxes: cannot use {}: {e}; keeping every loopbox as it is", self.file.display());
                if self.file_problem.as_ref() != Some(&problem) {
                    uwsgi::log!("{problem}");
                    self.file_problem = Some(problem);
                }
                None
            }
        }
    }

    /// One pass over the running containers. `now` in seconds.
    pub fn pass(&mut self, paths: &NodePaths, running: &[u32], now: i64) -> Vec<Event> {
        let mut events = Vec::new();
        let Some(desired) = self.desired() else { return events };
        // A container that stopped took its mounts with its mount namespace.
        self.containers.retain(|uid, _| running.contains(uid));
        self.refused.retain(|uid, _| running.contains(uid));
        for &uid in running {
            let want = desired.get(&uid).map(Vec::as_slice).unwrap_or_default();
            self.pass_container(paths, uid, want, now, &mut events);
        }
        events
    }

    fn pass_container(&mut self, paths: &NodePaths, uid: u32, want: &[LoopboxSpec], now: i64, events: &mut Vec<Event>) {
        if want.is_empty() && !self.containers.contains_key(&uid) {
            return;
        }
        if self.containers.get(&uid).is_some_and(|b| !jail::enter::alive(&b.pidfd)) {
            // Restarted (or stopping): whatever was mounted went with the old pid 1.
            self.containers.remove(&uid);
        }
        let mut say = |b: Option<&mut Boxes>, id: u64, message: String| {
            if let Some(b) = b {
                b.said.insert(id, message.clone());
            }
            events.push(Event { uid, message });
        };

        // What the images of mounted loopboxes look like now, and which are no longer wanted.
        let mut unmount: Vec<(u64, String)> = Vec::new();
        if let Some(b) = self.containers.get_mut(&uid) {
            for (id, m) in &b.mounted {
                let what = format!("loopbox {id} ({} on {})", show(&m.spec.filename), show(&m.spec.mountpoint));
                match want.iter().find(|s| s.id == *id) {
                    None => unmount.push((*id, format!("{what}: removed; the image stays"))),
                    Some(s) if s != &m.spec => unmount.push((*id, format!("{what}: changed, remounting it"))),
                    Some(_) => match loopbox::image_state(paths, m) {
                        ImageState::Unchanged => {}
                        ImageState::Gone => unmount.push((*id, format!("{what}: the image was deleted"))),
                        ImageState::Replaced => {
                            unmount.push((*id, format!("{what}: the image was replaced by another file")))
                        }
                        ImageState::Resized { from, to } => {
                            b.not_before.insert(*id, now + RESIZE_WAIT);
                            unmount.push((
                                *id,
                                format!(
                                    "{what}: the image was resized ({from} to {to} bytes); it is mounted again in \
                                     {RESIZE_WAIT} s if the new size is sane (fix it meanwhile with resize2fs or e2fsck)"
                                ),
                            ))
                        }
                    },
                }
            }
        }
        let mounted_ids: Vec<u64> =
            self.containers.get(&uid).map(|b| b.mounted.keys().copied().collect()).unwrap_or_default();
        let not_before = |id: u64| self.containers.get(&uid).and_then(|b| b.not_before.get(&id).copied()).unwrap_or(0);
        let mount: Vec<&LoopboxSpec> = want
            .iter()
            .filter(|s| {
                (!mounted_ids.contains(&s.id) || unmount.iter().any(|(id, _)| *id == s.id)) && not_before(s.id) <= now
            })
            .collect();
        if unmount.is_empty() && mount.is_empty() {
            return;
        }

        let container = match jail::enter::find(std::process::id() as i32, uid) {
            Ok(Some(c)) => c,
            // Still being built (or just gone): the next pass sees.
            Ok(None) => return,
            Err(e) => {
                // A container whose namespaces fail the ownership rule (its pid 1 was made to
                // unshare a user namespace): nothing is mounted into it; said once.
                let message = format!("container {uid}: loopboxes not mounted: {e}");
                if self.refused.get(&uid) != Some(&message) {
                    self.refused.insert(uid, message.clone());
                    say(None, 0, message);
                }
                return;
            }
        };
        self.refused.remove(&uid);
        let b = match self.containers.entry(uid) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => match jail::enter::pidfd_open(container.pid) {
                Ok(pidfd) => e.insert(Boxes {
                    pidfd,
                    mounted: BTreeMap::new(),
                    not_before: BTreeMap::new(),
                    said: BTreeMap::new(),
                    failures: BTreeMap::new(),
                }),
                Err(err) => {
                    uwsgi::log!("loopboxes: container {uid}: pidfd_open({}): {err}", container.pid);
                    return;
                }
            },
        };

        for (id, why) in unmount {
            let Some(m) = b.mounted.get(&id) else { continue };
            let message = match loopbox::unmount(&container, m) {
                Ok(Unmounted::Now) => format!("container {uid}: {why}: unmounted"),
                Ok(Unmounted::Lazily) => {
                    format!("container {uid}: {why}: detached (files were open on it; the device goes when they are closed)")
                }
                Ok(Unmounted::AlreadyGone) => format!("container {uid}: {why}: it was no longer mounted"),
                Err(e) => {
                    say(Some(b), id, format!("container {uid}: {why}: {e}; retried at the next pass"));
                    continue;
                }
            };
            b.mounted.remove(&id);
            say(Some(b), id, message);
        }
        for spec in mount {
            if b.mounted.contains_key(&spec.id) {
                continue; // its unmount failed above
            }
            match loopbox::mount(paths, &container, spec) {
                Ok(m) => {
                    let mode = if spec.ro { "read-only" } else { "read-write" };
                    let message = format!(
                        "container {uid}: loopbox {}: mounted {} on {} ({mode}, /dev/loop{})",
                        spec.id,
                        show(&spec.filename),
                        show(&spec.mountpoint),
                        m.loop_number
                    );
                    b.mounted.insert(spec.id, m);
                    b.not_before.remove(&spec.id);
                    b.failures.remove(&spec.id);
                    say(Some(b), spec.id, message);
                }
                Err(e) => {
                    let message = format!(
                        "container {uid}: loopbox {} ({} on {}) not mounted: {e}",
                        spec.id,
                        show(&spec.filename),
                        show(&spec.mountpoint)
                    );
                    let failures = if b.said.get(&spec.id) == Some(&message) {
                        b.failures.get(&spec.id).copied().unwrap_or(0) + 1
                    } else {
                        say(Some(&mut *b), spec.id, message);
                        1
                    };
                    b.failures.insert(spec.id, failures);
                    b.not_before.insert(spec.id, now + retry_wait(failures));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loopbox_failing_the_same_way_is_tried_less_and_less_often_up_to_a_minute() {
        let waits: Vec<i64> = (1..=6).map(retry_wait).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(retry_wait(u32::MAX), RETRY_MAX);
    }
}
