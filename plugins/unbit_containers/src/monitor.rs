//! `emperor = unbit:///path/to/specs`: the imperial monitor that runs the node's containers.
//!
//! Each pass reads the spec folder, keeps the last good spec of a container whose file became
//! invalid (logging why, with the container and the field), plans with the [`Reconciler`] and
//! applies: prepare the home (symlink-safe, quota), feed the Emperor the container's vassal,
//! rewrite keys, stop removed containers and release their cgroups once they are gone, and
//! report OOM kills.
//!
//! A spec change either takes effect or stops the container: when the home cannot be prepared
//! or the keys cannot be written, the container is stopped (a customer must not be able to
//! keep, say, a memory limit the owner lowered, or a key the owner removed, by planting
//! something in the home), the planner retries at the next pass, and the reason goes to the
//! operator's log and the customer's own `~/logs/emperor.log`. What the node moved out of its
//! way in the home is told to the customer there too.

use crate::loopboxes::Loopboxes;
use crate::network::Network;
use crate::reconcile::{Action, Reconciler};
use crate::spec_folder::SpecFolder;
use crate::vassal_config::{self, uid_of, vassal_name};
use crate::{running_specs, settings};
use container_spec::{ContainerSpec, Distro};
use jail::{Displaced, NodePaths, QuotaBackend};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use uwsgi::{Emperor, ImperialMonitor};

pub struct ContainersMonitor {
    folder: SpecFolder,
    reconciler: Reconciler,
    paths: NodePaths,
    quota: Box<dyn QuotaBackend>,
    watching: bool,
    /// Containers asked to stop whose cgroups are released once the Emperor dropped them.
    stopping: BTreeSet<u32>,
    oom_seen: BTreeMap<u32, u64>,
    /// Last problem logged per file or container, so a bad spec is reported once, not every pass.
    reported: BTreeMap<String, String>,
    /// Container networking (`unbit-network`), when on.
    network: Option<Network>,
    /// The loopboxes mounted into running containers.
    loopboxes: Loopboxes,
    /// This node's custom distro storage containers (uid -> owning customer), from the last
    /// pass's specs: the only homes a custom distro may come from.
    stores: BTreeMap<u32, u64>,
}

impl ContainersMonitor {
    pub fn from_arg(arg: &str) -> Result<Self, String> {
        let dir = arg
            .strip_prefix("unbit://")
            .filter(|d| d.starts_with('/'))
            .ok_or_else(|| format!("{arg}: expected unbit:///absolute/path/to/spec/folder"))?;
        let folder = SpecFolder::open(std::path::Path::new(dir))?;
        let paths = settings::node_paths();
        let quota: Box<dyn QuotaBackend> = match settings::quota() {
            settings::QuotaChoice::None => Box::new(jail::quota::NoQuota),
            settings::QuotaChoice::Auto => jail::detect_quota_backend(&paths.containers).map_err(|e| e.to_string())?,
        };
        let network = if settings::network() { Some(Network::start()?) } else { None };
        uwsgi::log!(
            "managing containers from {dir}: homes in {}, distros in {}, cgroup subtree {}",
            paths.containers.display(),
            paths.distros.display(),
            paths.cgroup_name
        );
        Ok(ContainersMonitor {
            folder,
            reconciler: Reconciler::default(),
            paths,
            quota,
            watching: false,
            stopping: BTreeSet::new(),
            oom_seen: BTreeMap::new(),
            reported: BTreeMap::new(),
            network,
            loopboxes: Loopboxes::new(Path::new(dir)),
            stores: BTreeMap::new(),
        })
    }

    fn report(&mut self, key: String, message: String) {
        if self.reported.get(&key) != Some(&message) {
            uwsgi::log!("{message}");
            self.reported.insert(key, message);
        }
    }

    /// Says `message` in the Emperor's log and in the container's `~/logs/emperor.log`.
    fn tell(&self, uid: u32, message: &str) {
        uwsgi::log!("{message}");
        if let Err(e) = jail::append_to_customer_log(&self.paths, uid, &format!("[unbit node] {message}\n")) {
            uwsgi::log!("container {uid}: cannot tell the customer in their log: {e}");
        }
    }

    /// Tells the customer what the node moved out of its way in the home.
    fn tell_moved(&self, uid: u32, moved: &[Displaced]) {
        let home = self.paths.containers.join(uid.to_string());
        let show =
            |p: &Path| p.strip_prefix(&home).map_or_else(|_| p.display().to_string(), |r| format!("~/{}", r.display()));
        for d in moved {
            self.tell(
                uid,
                &format!(
                    "container {uid}: {} was {}, where the platform keeps its own directory; moved it aside to {}",
                    show(&d.from),
                    d.found,
                    show(&d.to)
                ),
            );
        }
    }

    /// The action for `uid` could not be carried out: the container must not go on with its
    /// old spec. It is stopped (if it runs) and its keys file removed (a key the owner removed
    /// must not keep working; the run that succeeds writes the new one), the planner retries
    /// at the next pass, and the reason is told once per distinct reason, not at every retry.
    fn hold_back(&mut self, emperor: &mut Emperor<'_>, uid: u32, why: String) {
        self.reconciler.failed(uid);
        if emperor.stop(&vassal_name(uid)) {
            self.stopping.insert(uid);
        }
        if let Err(e) = jail::revoke_authorized_keys(&self.paths, uid) {
            self.report(format!("revoke {uid}"), format!("container {uid}: cannot remove its old keys file: {e}"));
        }
        let message =
            format!("container {uid}: {why}; it stays stopped until its spec can be applied (retried at every pass)");
        let key = held_key(uid);
        if self.reported.get(&key) != Some(&message) {
            self.tell(uid, &message);
            self.reported.insert(key, message);
        }
    }

    fn desired(&mut self) -> Option<Vec<ContainerSpec>> {
        let snapshot = match self.folder.read() {
            Ok(s) => s,
            Err(e) => {
                // An unreadable source changes nothing: it is not an empty one.
                self.report("folder".into(), format!("{e}; keeping every container as it is"));
                return None;
            }
        };
        self.reported.remove("folder");
        let mut desired: Vec<ContainerSpec> = snapshot.specs.into_iter().filter(ContainerSpec::is_deployable).collect();
        for bad in snapshot.rejected {
            let kept = bad.uid.and_then(|uid| self.reconciler.spec(uid).cloned());
            let note = if kept.is_some() { "; it keeps running with its last good spec" } else { "" };
            self.report(
                bad.file.display().to_string(),
                format!("rejected {}: {}{note}", bad.file.display(), bad.reason),
            );
            desired.extend(kept);
        }
        Some(desired)
    }

    fn apply(&mut self, emperor: &mut Emperor<'_>, action: Action) {
        match action {
            Action::Run { spec, generation, restart } => {
                let uid = spec.uid;
                // Run again: a stop still pending must not release its cgroup after this.
                self.stopping.remove(&uid);
                match jail::prepare_home(&self.paths, &spec, self.quota.as_ref()) {
                    Ok(moved) => self.tell_moved(uid, &moved),
                    Err(e) => return self.hold_back(emperor, uid, format!("cannot prepare its home: {e}")),
                }
                if spec.custom_distros_storage {
                    match jail::ensure_distros_dir(&self.paths, &spec) {
                        Ok(moved) => self.tell_moved(uid, &moved),
                        Err(e) => return self.hold_back(emperor, uid, format!("cannot create its distros dir: {e}")),
                    }
                }
                let fallback = match self.custom_distro_fallback(&spec) {
                    Ok(f) => f,
                    Err(why) => return self.hold_back(emperor, uid, why),
                };
                if self.reported.remove(&held_key(uid)).is_some() {
                    self.tell(uid, &format!("container {uid}: its spec can be applied again, starting it"));
                }
                // The container's elements are in the table before its child builds the
                // interface: its first packet is already filtered as its own.
                if let Some(net) = self.network.as_mut() {
                    if let Err(e) = net.set_member(&spec) {
                        return self.hold_back(emperor, uid, e);
                    }
                }
                let mut booted = spec.clone();
                if let Some(d) = &fallback {
                    booted.distro = d.clone();
                }
                let config = vassal_config::render(&booted, &self.paths.platform_dir);
                running_specs::set(spec);
                running_specs::set_fallback(uid, fallback);
                match emperor.feed(&vassal_name(uid), &config, generation, 0, 0) {
                    Ok(()) if restart => {
                        let msg = format!("container {uid}: its spec changed, restarting it");
                        uwsgi::log!("{msg}");
                        alarm(&self.paths, uid, "restart", &msg);
                    }
                    Ok(()) => {}
                    Err(e) => uwsgi::log!("container {uid}: {e}"),
                }
            }
            Action::UpdateKeys { spec } => {
                let uid = spec.uid;
                match jail::write_authorized_keys(&self.paths, &spec) {
                    Ok(moved) => {
                        self.tell_moved(uid, &moved);
                        uwsgi::log!("container {uid}: ssh keys updated ({} keys), no restart", spec.ssh_keys.len());
                        running_specs::set(spec);
                    }
                    Err(e) => self.hold_back(emperor, uid, format!("cannot write its new ssh keys: {e}")),
                }
            }
            Action::UpdateNetwork { spec } => {
                let uid = spec.uid;
                if let Some(net) = self.network.as_mut() {
                    if let Err(e) = net.set_member(&spec) {
                        return self.hold_back(emperor, uid, e);
                    }
                    uwsgi::log!("container {uid}: links updated ({} links), no restart", spec.links.len());
                }
                running_specs::set(spec);
            }
            Action::Stop { uid } => {
                uwsgi::log!("container {uid}: removed from the node's specs, stopping it (its home stays)");
                emperor.stop(&vassal_name(uid));
                self.stopping.insert(uid);
            }
        }
    }

    /// For a container on a custom distro: `None` when the image can be booted, else the
    /// platform distro it boots from instead (its spec's fallback), told to the customer in
    /// `~/logs/emperor.log` and raised as a `distro` alarm. An image is usable only from a
    /// storage container of the same owner on this node, below its `distros/`, with every
    /// directory and file the jail needs (custom-distros.md). `Err` when there is no fallback.
    fn custom_distro_fallback(&self, spec: &ContainerSpec) -> Result<Option<Distro>, String> {
        let Distro::Custom { storage_uid, path, fallback } = &spec.distro else { return Ok(None) };
        let uid = spec.uid;
        let problem = match self.stores.get(storage_uid) {
            None => format!(
                "container {storage_uid} (its image store) is not a custom_distros_storage container on this node"
            ),
            Some(owner) if *owner != spec.customer => {
                format!("container {storage_uid} (its image store) belongs to another customer")
            }
            Some(_) => match jail::check_custom_distro(&self.paths, &spec.distro) {
                Ok(()) => return Ok(None),
                Err(e) => as_customer_sees(&self.paths, &e.to_string()),
            },
        };
        let Some(fallback) = fallback else {
            return Err(format!(
                "cannot boot from custom distro {path:?}: {problem}; it has no default distro to fall back to"
            ));
        };
        let msg = format!(
            "container {uid}: cannot boot from custom distro {path:?}: {problem}; falling back to the default distro {fallback:?}"
        );
        self.tell(uid, &msg);
        alarm(&self.paths, uid, "distro", &msg);
        Ok(Some(Distro::Platform { path: fallback.clone() }))
    }

    fn release_stopped(&mut self, running: &[u32]) {
        let gone: Vec<u32> = self.stopping.iter().copied().filter(|uid| !running.contains(uid)).collect();
        for uid in gone {
            self.stopping.remove(&uid);
            running_specs::remove(uid);
            self.oom_seen.remove(&uid);
            if let Some(net) = self.network.as_mut() {
                net.remove_member(uid);
            }
            if let Err(e) = jail::release(&self.paths, uid) {
                uwsgi::log!("container {uid}: cannot release its cgroup: {e}");
            }
        }
    }

    fn check_oom(&mut self, running: &[u32]) {
        for &uid in running {
            let Ok(count) = jail::oom_kill_count(&self.paths, uid) else { continue };
            let seen = self.oom_seen.entry(uid).or_insert(count);
            if count > *seen {
                let msg = format!(
                    "container {uid}: OUT OF MEMORY: the kernel killed {} process(es) at its memory limit ({} so far)",
                    count - *seen,
                    count
                );
                uwsgi::log!("{msg}");
                alarm(&self.paths, uid, "oom", &msg);
                *seen = count;
            }
        }
    }
}

/// Hands a platform alarm to the node's alarm relay (`unbit-alarmd`, on its socket in the
/// subscription dir) without waiting: a relay that is down loses the alarm, never a pass (the
/// outage is logged once, with the count of lost alarms when it ends).
fn alarm(paths: &NodePaths, uid: u32, kind: &str, msg: &str) {
    let Some(dir) = &paths.subscribe_dir else { return };
    let request = alarms::protocol::Request::alarm(Some(uid), kind, msg);
    static RELAY: alarms::protocol::RelayHealth = alarms::protocol::RelayHealth::new();
    let socket = dir.join(alarms::protocol::SOCKET_NAME);
    let sent = alarms::protocol::send_now(&socket, &request);
    if let Some(line) = RELAY.note(&sent, &socket) {
        uwsgi::log!("container {uid}: alarm {kind}: {line}");
    }
}

/// `text` with the node's containers dir written as the customer sees it inside every
/// container (`/containers/<uid>/...`): alarms and `~/logs/emperor.log` go to the customer
/// (and on to Slack or Pushover), who has no business with the operator's paths.
fn as_customer_sees(paths: &NodePaths, text: &str) -> String {
    let host = paths.containers.display().to_string();
    text.replace(&format!("{}/", host.trim_end_matches('/')), "/containers/")
}

/// The `reported` key of a container held back by [`ContainersMonitor::hold_back`].
fn held_key(uid: u32) -> String {
    format!("held {uid}")
}

impl ImperialMonitor for ContainersMonitor {
    fn scan(&mut self, emperor: &mut Emperor<'_>) {
        if !self.watching {
            if let Some(fd) = self.folder.event_fd() {
                emperor.watch_fd(fd);
            }
            self.watching = true;
        }
        if let Some(net) = self.network.as_mut() {
            net.tick();
        }
        let Some(desired) = self.desired() else { return };
        self.stores = desired.iter().filter(|s| s.custom_distros_storage).map(|s| (s.uid, s.customer)).collect();
        let running: Vec<u32> = emperor.vassal_names().iter().filter_map(|name| uid_of(name)).collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let actions = self.reconciler.plan(&desired, &running, now, settings::max_stops());
        if let Some(net) = self.network.as_mut() {
            // Every container this pass starts or relinks in one table edit (a node booting
            // with thousands of containers makes one nft run, not thousands); `apply` then
            // finds its elements in place, or retries and holds the container back.
            for action in &actions {
                if let Action::Run { spec, .. } | Action::UpdateNetwork { spec } = action {
                    net.stage_member(spec);
                }
            }
            if let Err(e) = net.sync() {
                uwsgi::log!("container networking: {e}");
            }
        }
        for action in actions {
            self.apply(emperor, action);
        }
        self.release_stopped(&running);
        self.check_oom(&running);
        for event in self.loopboxes.pass(&self.paths, &running, now) {
            self.tell(event.uid, &event.message);
            alarm(&self.paths, event.uid, "loopbox", &event.message);
        }
    }

    fn on_event(&mut self, emperor: &mut Emperor<'_>) {
        self.folder.drain();
        self.scan(emperor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_customer_sees_container_paths_not_the_nodes() {
        let paths = NodePaths { containers: "/srv/unbit/containers/".into(), ..NodePaths::default() };
        assert_eq!(
            as_customer_sees(
                &paths,
                "/srv/unbit/containers/30002/distros/x is not a usable distro: it lacks /.old_root"
            ),
            "/containers/30002/distros/x is not a usable distro: it lacks /.old_root"
        );
    }
}
