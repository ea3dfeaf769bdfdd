//! The specs the Emperor runs, shared between the monitor (which sets them) and the vassal
//! callbacks, which run in the Emperor's forked child and read the copy fork gave them. The
//! Emperor is single-threaded, so the lock is never held across a fork.

use container_spec::{ContainerSpec, Distro};
use std::collections::BTreeMap;
use std::sync::Mutex;

static SPECS: Mutex<BTreeMap<u32, ContainerSpec>> = Mutex::new(BTreeMap::new());
/// The distro a container boots from when the node could not use the one its spec names (a
/// custom distro found unusable at its last start): every respawn until the next start uses it.
static FALLBACKS: Mutex<BTreeMap<u32, Distro>> = Mutex::new(BTreeMap::new());

/// Sets (or, with `None`, clears) the distro `uid` boots from instead of its spec's.
pub fn set_fallback(uid: u32, distro: Option<Distro>) {
    let mut f = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    match distro {
        Some(d) => f.insert(uid, d),
        None => f.remove(&uid),
    };
}

pub fn set(spec: ContainerSpec) {
    SPECS.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.uid, spec);
}

pub fn remove(uid: u32) {
    set_fallback(uid, None);
    SPECS.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
}

/// The spec the container runs with: its own, with the fallback distro if it has one.
pub fn get(uid: u32) -> Option<ContainerSpec> {
    let mut spec = SPECS.lock().unwrap_or_else(|e| e.into_inner()).get(&uid).cloned()?;
    if let Some(d) = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner()).get(&uid) {
        spec.distro = d.clone();
    }
    Some(spec)
}
