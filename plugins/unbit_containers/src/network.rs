//! Container networking on the Emperor's side (`unbit-network = true`): the node's address
//! and forwarding once at start, the node's nftables table kept equal to the running
//! containers, their links and dmz flags, the uplink and the port mappings file, checked every
//! few seconds and repaired when someone changed it, and removed when the Emperor exits. The
//! container's own end is built in its cloned child ([`child_setup`]). Design:
//! `docs/networking.md`.

use crate::settings;
use container_net::firewall::{Elements, Firewall, Member, Nft, PortMap};
use container_net::owner::Owner;
use container_net::setup::{self, ContainerNet};
use container_spec::{host_interface, ip_of, ContainerSpec};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The node's network namespace, opened by the Emperor at start and inherited by every cloned
/// child, which creates its container's host end there.
static HOST_NS: OnceLock<OwnedFd> = OnceLock::new();

/// `(pid, table)` of the Emperor that created the table: only that process removes it at exit
/// (its children run the same atexit hooks when they exit without exec).
static OWNER: Mutex<Option<(u32, String)>> = Mutex::new(None);

/// How often the table is compared with what was applied.
const VERIFY_EVERY: Duration = Duration::from_secs(3);

pub struct Network {
    firewall: Firewall,
    members: BTreeMap<u32, Member>,
    uplink: Option<String>,
    portmaps_path: PathBuf,
    /// `(dev, ino, mtime ns, size)` of the port mappings file last read, `None` if missing.
    portmaps_seen: Option<Option<(u64, u64, i128, u64)>>,
    pm: (PortMap, PortMap),
    last_verify: Instant,
}

impl Network {
    /// Once per Emperor start, in the node's namespace.
    pub fn start() -> Result<Network, String> {
        let ns = setup::current_netns().map_err(|e| e.to_string())?;
        let _ = HOST_NS.set(ns);
        setup::node().map_err(|e| format!("container networking: {e}"))?;
        let uplink = match settings::network_uplink() {
            Some(u) => Some(u),
            None => container_net::link::Netlink::open()
                .and_then(|mut nl| nl.default_route_interface())
                .map_err(|e| format!("container networking: {e}"))?,
        };
        let table = settings::network_table();
        let mut net = Network {
            firewall: Firewall::new(&table, nft()),
            members: BTreeMap::new(),
            uplink,
            portmaps_path: settings::portmappings(),
            portmaps_seen: None,
            pm: Default::default(),
            last_verify: Instant::now(),
        };
        net.reload_portmaps();
        net.sync().map_err(|e| format!("container networking: {e}"))?;
        *OWNER.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::process::id(), table.clone()));
        if let Err(e) = uwsgi::process::at_exit(remove_table_at_exit) {
            uwsgi::log!("container networking: table inet {table} will outlive the Emperor: {e}");
        }
        uwsgi::log!(
            "container networking on: table inet {table}, uplink {}, port mappings from {}, links across nodes {}",
            net.uplink.as_deref().unwrap_or("(none: no NAT, no port mappings)"),
            net.portmaps_path.display(),
            settings::network_tunnel().map_or("off".to_string(), |t| format!("through {t}"))
        );
        Ok(net)
    }

    fn elements(&self) -> Elements {
        let mut e = Elements::default();
        for m in self.members.values() {
            e.add_member(m);
        }
        e.uplink.extend(self.uplink.clone());
        e.tunnel.extend(settings::network_tunnel());
        (e.pm_tcp, e.pm_udp) = self.pm.clone();
        e
    }

    /// Makes the table hold every staged change (nothing to do when it already does); says
    /// in the log what a change cost.
    pub fn sync(&mut self) -> Result<(), String> {
        let want = self.elements();
        let started = Instant::now();
        let changed =
            self.firewall.sync(&want).map_err(|e| format!("cannot update table inet {}: {e}", self.firewall.table))?;
        if changed {
            uwsgi::log!(
                "container networking: table inet {} updated in {} ms",
                self.firewall.table,
                started.elapsed().as_millis()
            );
        }
        Ok(())
    }

    /// Records the container's elements (its interface and address, links, dmz) for the next
    /// [`Network::sync`].
    pub fn stage_member(&mut self, spec: &ContainerSpec) {
        let member = Member {
            ifname: host_interface(spec.uid),
            ip: spec.ip(),
            dmz: spec.dmz,
            links: spec.links.iter().map(|&peer| ip_of(peer)).collect(),
        };
        self.members.insert(spec.uid, member);
    }

    /// The container's elements, applied now.
    pub fn set_member(&mut self, spec: &ContainerSpec) -> Result<(), String> {
        self.stage_member(spec);
        self.sync().map_err(|e| format!("container {}: {e}", spec.uid))
    }

    /// Removes the container's elements and its host end (it is gone; its namespace, and so
    /// the pair, may outlive it while the kernel finishes its sockets).
    pub fn remove_member(&mut self, uid: u32) {
        if self.members.remove(&uid).is_some() {
            if let Err(e) = self.sync() {
                uwsgi::log!("container {uid}: cannot remove its firewall elements: {e}");
            }
        }
        let table = &self.firewall.table;
        if let Err(e) = setup::remove_dead_host_ends(table, Some(&host_interface(uid))) {
            uwsgi::log!("container {uid}: cannot remove its interface {}: {e}", host_interface(uid));
        }
    }

    /// Every Emperor pass: a changed port mappings file is applied; every few seconds the
    /// table is compared with what was applied and restored if it differs.
    pub fn tick(&mut self) {
        if self.reload_portmaps() {
            if let Err(e) = self.sync() {
                uwsgi::log!("port mappings: cannot apply them: {e}");
            }
        }
        if self.last_verify.elapsed() >= VERIFY_EVERY {
            self.last_verify = Instant::now();
            match self.firewall.verify() {
                Ok(true) => uwsgi::log!(
                    "container networking: table inet {} was changed or removed by someone else; restored it",
                    self.firewall.table
                ),
                Ok(false) => {}
                Err(e) => uwsgi::log!("container networking: cannot check table inet {}: {e}", self.firewall.table),
            }
        }
    }

    /// Reads the port mappings file when it changed; `true` when the mappings changed. A broken
    /// file keeps the last good mappings (and says why once).
    fn reload_portmaps(&mut self) -> bool {
        let seen = std::fs::metadata(&self.portmaps_path)
            .ok()
            .map(|m| (m.dev(), m.ino(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()), m.size()));
        if self.portmaps_seen == Some(seen) {
            return false;
        }
        self.portmaps_seen = Some(seen);
        match container_net::portmap::read(&self.portmaps_path) {
            Ok(pm) if pm != self.pm => {
                uwsgi::log!("port mappings: {} tcp, {} udp", pm.0.len(), pm.1.len());
                self.pm = pm;
                true
            }
            Ok(_) => false,
            Err(e) => {
                uwsgi::log!("port mappings: {e}; keeping the previous ones");
                false
            }
        }
    }
}

/// At the Emperor's exit (after its last vassal died): the Emperor that made the table removes
/// it and its dead containers' host ends (and with them their routes).
extern "C" fn remove_table_at_exit() {
    // Nothing may unwind out of an atexit handler.
    let _ = std::panic::catch_unwind(remove_table);
}

fn remove_table() {
    let owner = OWNER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((pid, table)) = owner {
        if pid == std::process::id() {
            if let Err(e) = nft().delete(&table) {
                uwsgi::log!("container networking: cannot remove table inet {table}: {e}");
            }
            if let Err(e) = setup::remove_dead_host_ends(&table, None) {
                uwsgi::log!("container networking: cannot remove the containers' interfaces: {e}");
            }
        }
    }
}

/// `nft` started without the Emperor's descriptors (uWSGI opens many without close-on-exec).
fn nft() -> Nft {
    Nft::new().with_spawn(uwsgi::process::spawn_detached)
}

/// In the container's cloned child, before the jail: builds `uwsgi0` and its host end.
pub fn child_setup(spec: &ContainerSpec) -> Result<(), String> {
    let uid = spec.uid;
    let host = HOST_NS.get().ok_or_else(|| format!("container {uid}: the node's network namespace is unknown"))?;
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let ours = std::fs::metadata("/proc/thread-self/ns/net").map_err(|e| format!("container {uid}: {e}"))?;
    let node = std::fs::File::from(host.try_clone().map_err(|e| format!("container {uid}: {e}"))?)
        .metadata()
        .map_err(|e| format!("container {uid}: {e}"))?;
    if same(&ours, &node) {
        return Err(format!(
            "container {uid}: unbit-network needs emperor-use-clone with net: the container shares the node's network"
        ));
    }
    // Before the jail mounts the container's /proc: the node's still numbers this child.
    let owner =
        Owner::current(&settings::network_table()).map_err(|e| format!("container {uid}: /proc/self/stat: {e}"))?;
    let c = ContainerNet { uid, host_if: host_interface(uid), ip: spec.ip(), dmz: spec.dmz, owner };
    match setup::container(&c, host.as_fd()).map_err(|e| e.to_string())? {
        setup::Built::Yes => {}
        // Only lo: stricter than any network, and the validator refuses its IP announces (no
        // uwsgi0 in its namespace). Taking the name over would cut the other container off.
        setup::Built::NameTaken => uwsgi::log!(
            "container {uid}: {} is taken in the node's network namespace (another platform on this machine runs a \
             container {uid}); it runs without uwsgi0",
            c.host_if
        ),
    }
    Ok(())
}
