//! Per-domain hits and bytes of every router process, for `unbit-metrics`.
//!
//! Stock uWSGI counts requests and bytes per subscription node in each http process's own
//! table, and its stats server shows the first process's only. The master makes a
//! [`domain_counters::Table`] before it forks the http processes; in each of them, after every
//! read from a node (`uwsgi::corerouter::NodeTraffic`), [`count`] adds what the node counted
//! since the process last looked to the entry of (the node's container, the node's domain).
//! Each process remembers, per node, the counters it already passed on and the entry's slot,
//! so a read costs a hash lookup and up to three atomic additions; the node's container is
//! found once per node and process (one `stat` of its pinned socket name).
//!
//! What a node counts after its last read (bytes written to it once it stopped answering) is
//! passed on at its next read in that process, or lost with the node.
//!
//! A request the router sends to the de-chunking proxy instead of its node is a hit of that
//! node (reported as it is routed); its bytes go between the proxy and the node, so the proxy
//! counts them ([`Meter`]): the router names the node's pool and recorded uid beside its
//! address, and the proxy, a gateway the master forks after [`init`] (so it inherits the
//! table's mapping like the router processes), adds what it writes to the node and reads from
//! it to the same pair's entry, found the same way.

use domain_counters::{Counts, Full, Table};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use uwsgi::corerouter::NodeTraffic;

/// The table and where to say that it is full (the instance's log).
struct Shared {
    table: Table,
    log: fn(&str),
}

static TABLE: OnceLock<Shared> = OnceLock::new();

/// A node as one process last saw it.
struct Seen {
    /// The node's address, pool key and recorded uid: a node at a reused address is another
    /// node when any differs (one container's socket serves several domains, so the name alone
    /// does not tell the pair).
    name: Vec<u8>,
    domain: Vec<u8>,
    uid: u32,
    slot: Result<usize, Full>,
    counted: Counts,
}

/// The nodes of this process's subscription table it has seen, by identity. A router process
/// is single-threaded: the lock is never contended. It holds one entry per node address the
/// process's allocator gave out (a freed node's address is reused by later nodes).
static SEEN: Mutex<Option<HashMap<usize, Seen>>> = Mutex::new(None);

/// Whether this process said that the table is full.
static FULL_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the table (in the master, before the fork); [`count`] then fills it.
pub fn init(path: &Path, capacity: u32, log: fn(&str)) -> Result<(), String> {
    let table = Table::create(path, capacity)?;
    TABLE.set(Shared { table, log }).map_err(|_| "the domain counters are already set up".to_string())
}

/// `uwsgi::corerouter::FrontDoor::traffic`: in a router process, after a read from a node.
pub fn count(t: &NodeTraffic<'_>) {
    let Some(Shared { table, log }) = TABLE.get() else { return };
    // A panic in here (caught by the hook's guard) poisons the lock; what it guards is only
    // what was passed on, so carry on rather than stop counting for the process's life.
    let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seen = seen.get_or_insert_with(HashMap::new);
    let now = Counts { hits: t.requests, rx: t.rx, tx: t.tx };
    let node = seen.entry(t.node).or_insert_with(|| Seen {
        name: Vec::new(),
        domain: Vec::new(),
        uid: 0,
        slot: Err(Full),
        counted: Counts::default(),
    });
    if node.name != t.name || node.domain != t.domain || node.uid != t.uid {
        let slot = pair_slot(table, *log, owner(t.uid, t.name), t.domain);
        *node = Seen { name: t.name.to_vec(), domain: t.domain.to_vec(), uid: t.uid, slot, counted: Counts::default() };
    }
    // A node that starts again at the same address (freed, then announced anew) counts from 0.
    let base = if now.hits < node.counted.hits || now.rx < node.counted.rx || now.tx < node.counted.tx {
        Counts::default()
    } else {
        node.counted
    };
    let detoured = u64::from(t.detoured);
    let delta = Counts { hits: now.hits - base.hits + detoured, rx: now.rx - base.rx, tx: now.tx - base.tx };
    node.counted = now;
    if delta.is_zero() {
        return;
    }
    match node.slot {
        Ok(slot) => table.add(slot, delta),
        Err(Full) => table.add_overflow(delta),
    }
}

/// The slot of (container, domain), saying once per process that the table is full.
fn pair_slot(table: &Table, log: fn(&str), owner: u32, domain: &[u8]) -> Result<usize, Full> {
    let slot = table.slot(owner, domain);
    if slot.is_err() && !FULL_LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log(&format!(
            "domain counters: all {} slots taken; {} and any other new (container, domain) is \
             counted in the overflow until the router restarts (unbit-router-domain-slots)",
            table.capacity(),
            String::from_utf8_lossy(domain)
        ));
    }
    slot
}

/// A node's container, from its recorded uid and its address (0 when it cannot be told: the
/// collector leaves those out).
fn owner(uid: u32, name: &[u8]) -> u32 {
    std::str::from_utf8(name).ok().and_then(|name| domain_counters::node_owner(uid, name)).unwrap_or(0)
}

/// The entry of one de-chunked request's node pair, where the de-chunking proxy adds the bytes
/// it exchanges with the node.
pub struct Meter {
    table: &'static Table,
    slot: Result<usize, Full>,
}

impl Meter {
    /// The pair of the node the router named (its address, its pool's key, the uid recorded
    /// with its announce: what [`count`] has of it), found as [`count`] finds it: one `stat`
    /// of a socket name and a probe of the table, once per request. `None` in a process
    /// without the table (no [`init`] before its fork).
    pub fn of(name: &[u8], domain: &[u8], uid: u32) -> Option<Meter> {
        let Shared { table, log } = TABLE.get()?;
        Some(Meter { table, slot: pair_slot(table, *log, owner(uid, name), domain) })
    }

    /// Adds bytes written to the node (`rx`) and read from it (`tx`). No hit: the router
    /// counted the request as it sent it to the proxy.
    pub fn add(&self, rx: u64, tx: u64) {
        let delta = Counts { hits: 0, rx, tx };
        match self.slot {
            Ok(slot) => self.table.add(slot, delta),
            Err(Full) => self.table.add_overflow(delta),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_of_each_node_reach_its_pair_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters");
        init(&path, 16, |_| ()).unwrap();
        // a panic while counting (caught by the hook's guard) must not stop later counts
        let _ = std::thread::spawn(|| {
            let _held = SEEN.lock();
            panic!("poisons SEEN");
        })
        .join();
        let report = |node: usize, name: &str, domain: &str, uid: u32, c: (u64, u64, u64)| {
            count(&NodeTraffic {
                node,
                name: name.as_bytes(),
                domain: domain.as_bytes(),
                uid,
                requests: c.0,
                rx: c.1,
                tx: c.2,
                detoured: false,
            })
        };
        // one node, read three times: its cumulative counters, passed on once
        report(1, "/a.sock", "a.test", 30701, (1, 100, 10));
        report(1, "/a.sock", "a.test", 30701, (1, 100, 50));
        report(1, "/a.sock", "a.test", 30701, (2, 200, 60));
        // a second node of the same pair (another vassal) adds up
        report(2, "/b.sock", "a.test", 30701, (3, 3, 3));
        // the first node's address reused by a new node, which starts from 0
        report(1, "/c.sock", "a.test", 30701, (1, 1, 1));
        // the same address, counters that went down: a node that started again
        report(1, "/c.sock", "a.test", 30701, (5, 5, 5));
        report(1, "/c.sock", "a.test", 30701, (1, 1, 1));
        // a node no container owns
        report(3, "/nowhere/x.sock", "b.test", 0, (4, 4, 4));
        // a request of node 2 sent to the de-chunking proxy: a hit its counters do not show
        count(&NodeTraffic {
            node: 2,
            name: b"/b.sock",
            domain: b"a.test",
            uid: 30701,
            requests: 3,
            rx: 3,
            tx: 3,
            detoured: true,
        });
        // the proxy's bytes of that request: to its pair, no second hit
        let meter = Meter::of(b"/b.sock", b"a.test", 30701).unwrap();
        meter.add(1000, 0);
        meter.add(0, 300);
        meter.add(0, 200);
        // a proxied node no container owns
        Meter::of(b"/nowhere/x.sock", b"b.test", 0).unwrap().add(40, 50);
        // node 2's address reused by a node of the same socket for another domain
        report(2, "/b.sock", "c.test", 30701, (1, 7, 7));
        let s = domain_counters::read(&path).unwrap();
        assert_eq!(
            s.pairs[&(30701, "a.test".to_string())],
            Counts { hits: 2 + 3 + 1 + 5 + 1, rx: 200 + 3 + 5 + 1 + 1000, tx: 60 + 3 + 5 + 1 + 500 }
        );
        assert_eq!(s.pairs[&(30701, "c.test".to_string())], Counts { hits: 1, rx: 7, tx: 7 });
        assert_eq!(s.pairs[&(0, "b.test".to_string())], Counts { hits: 4, rx: 4 + 40, tx: 4 + 50 });
    }
}
