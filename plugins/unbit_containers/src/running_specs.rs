//! The specs the Emperor runs, shared between the monitor (which sets them) and the vassal
//! callbacks, which run in the Emperor's forked child and read the copy fork gave them. The
//! Emperor is single-threaded, so the lock is never held across a fork.

use container_spec::ContainerSpec;
use std::collections::BTreeMap;
use std::sync::Mutex;

static SPECS: Mutex<BTreeMap<u32, ContainerSpec>> = Mutex::new(BTreeMap::new());

pub fn set(spec: ContainerSpec) {
    SPECS.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.uid, spec);
}

pub fn remove(uid: u32) {
    SPECS.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
}

pub fn get(uid: u32) -> Option<ContainerSpec> {
    SPECS.lock().unwrap_or_else(|e| e.into_inner()).get(&uid).cloned()
}
