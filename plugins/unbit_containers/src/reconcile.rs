//! What the node should do to go from the containers it runs to the containers it is told to
//! run. Pure logic, no uWSGI and no syscalls, so every rule is unit-tested:
//!
//! * a new deployable spec starts a container;
//! * a change of the boot identity (anything but the ssh keys) restarts it;
//! * an ssh-key-only change rewrites the keys file and restarts nothing;
//! * a change of the links (alone or with the keys) updates the node's firewall elements and
//!   restarts nothing: a link or unlink takes effect within a second;
//! * a spec that disappeared stops its container, at most `max_stops` per pass, so a source
//!   that suddenly lists nothing cannot wipe a node in one go;
//! * an action the node could not carry out ([`Reconciler::failed`]) is retried at the next
//!   pass as a full run with a newer generation, so a spec change never waits for the next
//!   spec change (the caller stops the container meanwhile, rather than leave it on its old
//!   spec);
//! * an empty or failed read of the source never stops anything (the caller does not call
//!   [`Reconciler::plan`] then).

use container_spec::ContainerSpec;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Prepare the home and hand the Emperor the container's vassal, with this generation
    /// as its mtime (a newer generation makes the Emperor reload, i.e. restart, it).
    Run { spec: ContainerSpec, generation: i64, restart: bool },
    /// Only the ssh keys changed: rewrite `.ssh/uwsgi_authorized_keys` in place.
    UpdateKeys { spec: ContainerSpec },
    /// Only the links changed (maybe with the keys): update the node's firewall elements.
    UpdateNetwork { spec: ContainerSpec },
    /// The container is no longer wanted: stop it (its home stays).
    Stop { uid: u32 },
}

struct Known {
    spec: ContainerSpec,
    generation: i64,
    /// The last action for this container did not take effect: run it again next pass.
    failed: bool,
}

#[derive(Default)]
pub struct Reconciler {
    known: BTreeMap<u32, Known>,
}

impl Reconciler {
    /// The actions for one pass. `desired` holds only valid, deployable specs; `running` the
    /// uids the Emperor still has; `now` is the wall clock in seconds (generations grow from it).
    pub fn plan(&mut self, desired: &[ContainerSpec], running: &[u32], now: i64, max_stops: usize) -> Vec<Action> {
        let mut actions = Vec::new();
        for spec in desired {
            match self.known.get_mut(&spec.uid) {
                None => {
                    self.known.insert(spec.uid, Known { spec: spec.clone(), generation: now, failed: false });
                    actions.push(Action::Run { spec: spec.clone(), generation: now, restart: false });
                }
                Some(k) if needs_restart(&k.spec, spec) || k.failed => {
                    // A retry also gets a newer generation: should the container still run on
                    // its old spec, the Emperor reloads it rather than keep it.
                    k.generation = now.max(k.generation + 1);
                    k.spec = spec.clone();
                    k.failed = false;
                    let restart = running.contains(&spec.uid);
                    actions.push(Action::Run { spec: spec.clone(), generation: k.generation, restart });
                }
                Some(k) => {
                    let keys_changed = k.spec.ssh_keys != spec.ssh_keys;
                    let links_changed = k.spec.links != spec.links;
                    k.spec = spec.clone();
                    if !running.contains(&spec.uid) {
                        // Known but not running (it died for good, or the Emperor dropped it):
                        // hand it over again with the same generation. A run prepares the whole
                        // home, new keys included.
                        actions.push(Action::Run { spec: spec.clone(), generation: k.generation, restart: false });
                    } else {
                        if keys_changed {
                            actions.push(Action::UpdateKeys { spec: spec.clone() });
                        }
                        if links_changed {
                            actions.push(Action::UpdateNetwork { spec: spec.clone() });
                        }
                    }
                }
            }
        }
        let wanted: Vec<u32> = desired.iter().map(|s| s.uid).collect();
        let gone: Vec<u32> = self.known.keys().copied().filter(|uid| !wanted.contains(uid)).collect();
        for uid in gone.into_iter().take(max_stops) {
            self.known.remove(&uid);
            actions.push(Action::Stop { uid });
        }
        actions
    }

    /// The last action planned for `uid` could not be carried out (its home could not be
    /// prepared, its keys could not be written): the next [`plan`](Self::plan) runs the
    /// container again with its current spec. Unknown uids are ignored.
    pub fn failed(&mut self, uid: u32) {
        if let Some(k) = self.known.get_mut(&uid) {
            k.failed = true;
        }
    }

    /// The spec the node runs for `uid`, if any.
    pub fn spec(&self, uid: u32) -> Option<&ContainerSpec> {
        self.known.get(&uid).map(|k| &k.spec)
    }
}

/// Whether going from `old` to `new` restarts the container: any change of its boot identity
/// (everything but the ssh keys) except the links, which live in the node's firewall, not in
/// the container. `dmz` does restart it: the container's default route depends on it.
pub fn needs_restart(old: &ContainerSpec, new: &ContainerSpec) -> bool {
    let mut relinked = old.clone();
    relinked.links.clone_from(&new.links);
    relinked.needs_restart_for(new)
}

#[cfg(test)]
mod tests;
