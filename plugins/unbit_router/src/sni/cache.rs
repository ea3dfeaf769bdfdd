//! One router process's certificates: contexts built from the index on a name's first
//! handshake, kept up to a bound, re-checked against the index while in use.
//!
//! * **Lazy.** Nothing is read at start: a name costs the router nothing until a client asks
//!   for it. The first handshake reads the entry (one small file) and builds its `SSL_CTX`
//!   (a millisecond or two for RSA-2048, mostly the key).
//! * **Bounded.** At most `capacity` contexts per process; the least recently used one goes
//!   when a new one comes (connections still using it keep it alive: OpenSSL counts
//!   references, the memory goes with the last one).
//! * **Fresh.** A context in use is compared with its entry (one `stat`) at most every
//!   [`RECHECK`]: a renewed certificate is served from then on, a removed entry is dropped.
//! * **Two sources.** The validator's index first (this node's own containers' certificates),
//!   then, for a name it has no entry for, the cluster's ([`sni_index::CLUSTER_DIR`]: the
//!   certificates other members of the Legion sealed to this node, for the domains only they
//!   run containers of).
//! * **Cheap misses.** A name without an entry is remembered for [`ABSENT_FOR`], so a client
//!   repeating an unknown name costs no file lookup per handshake; a name that appears is
//!   served at most that much later.

use crate::reload::Identity;
use sni_index::{names, ClientCa, Entry, MAX_ENTRY};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a context in use is compared with its entry.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How long a name without an entry is not looked up again.
pub const ABSENT_FOR: Duration = Duration::from_secs(1);
/// Names remembered as absent, at most (a client inventing names fills it, then it restarts).
const ABSENT_MAX: usize = 16 * 1024;

/// A context chosen for a connection.
#[derive(Clone)]
pub struct Selection {
    /// The entry's name (`shop.example.org`, or `.example.org` for a wildcard).
    pub entry: Arc<str>,
    pub ctx: openssl::ssl::SslContext,
    pub client_ca: ClientCa,
}

struct Slot {
    selection: Selection,
    /// Which of the directories the entry was read from.
    source: usize,
    identity: Identity,
    checked: Instant,
    used: u64,
    /// An entry file that did not load, not tried (nor logged) again.
    failed: Option<Identity>,
}

/// Counters since the process started.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub built: u64,
    pub reloaded: u64,
    pub evicted: u64,
}

pub struct Cache {
    /// Where entries are looked for, first match wins.
    dirs: Vec<PathBuf>,
    capacity: usize,
    slots: HashMap<Arc<str>, Slot>,
    absent: HashMap<String, Instant>,
    tick: u64,
    stats: Stats,
    log: fn(&str),
}

impl Cache {
    pub fn new(dir: PathBuf, capacity: usize, log: fn(&str)) -> Cache {
        Cache {
            dirs: vec![dir],
            capacity: capacity.max(1),
            slots: HashMap::new(),
            absent: HashMap::new(),
            tick: 0,
            stats: Stats::default(),
            log,
        }
    }

    /// Entries of `dir` serve the names the directories before it have none for.
    pub fn then(mut self, dir: PathBuf) -> Cache {
        self.dirs.push(dir);
        self
    }

    /// The context for a server name a client sent (already an entry-form name): its own
    /// entry, else its wildcard's, else `None` (the socket's default certificate).
    pub fn select(&mut self, name: &str, now: Instant) -> Option<Selection> {
        names::candidates(name).find_map(|candidate| self.entry(&candidate, now))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn entry(&mut self, name: &str, now: Instant) -> Option<Selection> {
        if let Some(since) = self.absent.get(name) {
            if now.duration_since(*since) < ABSENT_FOR {
                return None;
            }
            self.absent.remove(name);
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(slot) = self.slots.get_mut(name) {
            slot.used = tick;
            if now.duration_since(slot.checked) < RECHECK {
                return Some(slot.selection.clone());
            }
            slot.checked = now;
            let found = self
                .dirs
                .iter()
                .enumerate()
                .find_map(|(i, d)| Some((i, std::fs::symlink_metadata(d.join(name)).ok()?)));
            match found {
                Some((i, md))
                    if i == slot.source
                        && (Identity::of(&md) == slot.identity || Some(Identity::of(&md)) == slot.failed) =>
                {
                    return Some(slot.selection.clone())
                }
                Some(_) => {}
                None => {
                    self.slots.remove(name);
                    self.forget(name, now);
                    return None;
                }
            }
        }
        match self.load(name) {
            Ok(Some((selection, source, identity))) => {
                let reloaded = self.slots.contains_key(name);
                if reloaded {
                    self.stats.reloaded += 1;
                } else {
                    self.stats.built += 1;
                    self.make_room();
                }
                let slot =
                    Slot { selection: selection.clone(), source, identity, checked: now, used: tick, failed: None };
                self.slots.insert(Arc::clone(&selection.entry), slot);
                Some(selection)
            }
            Ok(None) => {
                self.slots.remove(name);
                self.forget(name, now);
                None
            }
            Err((why, bad)) => {
                // The validator checked the pair before writing it: this is a damaged file.
                // A context already built stays in use.
                match self.slots.get_mut(name) {
                    Some(slot) => {
                        if slot.failed != bad {
                            (self.log)(&format!("sni {name}: the new index entry does not load ({why}); keeping the previous certificate"));
                        }
                        slot.failed = bad;
                        Some(slot.selection.clone())
                    }
                    None => {
                        (self.log)(&format!(
                            "sni {name}: the index entry does not load ({why}); serving the default certificate"
                        ));
                        self.forget(name, now);
                        None
                    }
                }
            }
        }
    }

    fn forget(&mut self, name: &str, now: Instant) {
        if self.absent.len() >= ABSENT_MAX {
            self.absent.clear();
        }
        self.absent.insert(name.to_string(), now);
    }

    /// Evicts the least recently used context when the cache is full.
    fn make_room(&mut self) {
        while self.slots.len() >= self.capacity {
            let Some(oldest) = self.slots.iter().min_by_key(|(_, s)| s.used).map(|(n, _)| Arc::clone(n)) else {
                return;
            };
            self.slots.remove(&oldest);
            self.stats.evicted += 1;
        }
    }

    /// Reads and builds the entry of `name` from the first directory that has one, and which
    /// that is: `Ok(None)` when there is none.
    #[allow(clippy::type_complexity)]
    fn load(&self, name: &str) -> Result<Option<(Selection, usize, Identity)>, (String, Option<Identity>)> {
        let mut found = None;
        for (source, dir) in self.dirs.iter().enumerate() {
            // Entries are regular files the validator renamed into place; a symlink is not one.
            match std::fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(dir.join(name)) {
                Ok(f) => {
                    found = Some((f, source));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err((e.to_string(), None)),
            }
        }
        let Some((file, source)) = found else { return Ok(None) };
        let md = file.metadata().map_err(|e| (e.to_string(), None))?;
        let id = Identity::of(&md);
        if !md.is_file() || md.size() > MAX_ENTRY {
            return Err(("not an index entry".into(), Some(id)));
        }
        let mut bytes = Vec::with_capacity(md.size() as usize);
        file.take(MAX_ENTRY).read_to_end(&mut bytes).map_err(|e| (e.to_string(), Some(id)))?;
        let entry = Entry::decode(&bytes).map_err(|e| (e, Some(id)))?;
        let ctx = entry.context().map_err(|e| (e.to_string(), Some(id)))?;
        // Whatever OpenSSL queued while decoding must not fail this connection's handshake.
        let _ = openssl::error::ErrorStack::get();
        Ok(Some((Selection { entry: Arc::from(name), ctx, client_ca: entry.bundle.client_ca }, source, id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sni_index::testing::{server, KeyKind};
    use sni_index::{Bundle, IndexDir};

    fn put(index: &mut IndexDir, name: &str, cn: &str) {
        let p = server(&[cn], KeyKind::P256, None, 1);
        let b = Bundle::from_pem(&p.cert_pem(), &p.key_pem(), None).unwrap();
        index.put(name, &b.encode(name, 30001, "~/a.crt").unwrap()).unwrap();
    }

    fn cn(s: &Selection) -> String {
        let cert = s.ctx.certificate().unwrap();
        cert.subject_name().entries().next().unwrap().data().to_string().unwrap()
    }

    #[test]
    fn exact_then_wildcard_lazily_bounded_and_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sni");
        let mut index = IndexDir::create(&dir, None).unwrap();
        put(&mut index, ".example.org", "wild");
        put(&mut index, "www.example.org", "www");
        let mut cache = Cache::new(dir.clone(), 2, |_| {});
        let t0 = Instant::now();
        assert_eq!(cn(&cache.select("www.example.org", t0).unwrap()), "www");
        let shop = cache.select("shop.example.org", t0).unwrap();
        assert_eq!((cn(&shop), &*shop.entry), ("wild".to_string(), ".example.org"));
        assert!(cache.select("a.shop.example.org", t0).is_none(), "one label deep");
        assert!(cache.select("example.org", t0).is_none());
        assert_eq!(cache.len(), 2);
        // A third name evicts the least recently used.
        put(&mut index, "other.net", "other");
        cache.select("shop.example.org", t0);
        cache.select("other.net", t0).unwrap();
        assert_eq!((cache.len(), cache.stats().evicted), (2, 1));
        // A renewed entry is served after the re-check interval; a removed one goes.
        put(&mut index, ".example.org", "wild2");
        assert_eq!(cn(&cache.select("shop.example.org", t0).unwrap()), "wild");
        let later = t0 + RECHECK + Duration::from_millis(1);
        assert_eq!(cn(&cache.select("shop.example.org", later).unwrap()), "wild2");
        assert_eq!(cache.stats().reloaded, 1);
        index.remove(".example.org").unwrap();
        let later = later + RECHECK + Duration::from_millis(1);
        assert!(cache.select("shop.example.org", later).is_none());
        // A name that appears is found once the absence is forgotten.
        put(&mut index, ".example.org", "wild3");
        assert!(cache.select("shop.example.org", later).is_none());
        assert_eq!(cn(&cache.select("shop.example.org", later + ABSENT_FOR).unwrap()), "wild3");
    }

    #[test]
    fn the_clusters_entries_serve_names_the_index_has_none_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sni");
        let mut index = IndexDir::create(&dir, None).unwrap();
        let mut cluster = IndexDir::create(&sni_index::cluster_dir(&dir), None).unwrap();
        put(&mut cluster, "remote.example", "remote");
        put(&mut cluster, "both.example", "theirs");
        put(&mut index, "both.example", "ours");
        let mut cache = Cache::new(dir.clone(), 10, |_| {}).then(sni_index::cluster_dir(&dir));
        let t0 = Instant::now();
        assert_eq!(cn(&cache.select("remote.example", t0).unwrap()), "remote");
        assert_eq!(cn(&cache.select("both.example", t0).unwrap()), "ours", "this node's own entry wins");
        // The local entry goes: the cluster's serves from the next re-check; then that goes too.
        index.remove("both.example").unwrap();
        let later = t0 + RECHECK + Duration::from_millis(1);
        assert_eq!(cn(&cache.select("both.example", later).unwrap()), "theirs");
        put(&mut cluster, "remote.example", "renewed");
        assert_eq!(cn(&cache.select("remote.example", later).unwrap()), "renewed");
        cluster.remove("remote.example").unwrap();
        let later = later + RECHECK + Duration::from_millis(1);
        assert!(cache.select("remote.example", later).is_none());
    }

    #[test]
    fn a_damaged_entry_keeps_the_context_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sni");
        let mut index = IndexDir::create(&dir, None).unwrap();
        put(&mut index, "a.example", "good");
        static LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let mut cache = Cache::new(dir.clone(), 10, |l| LOG.lock().unwrap().push(l.to_string()));
        let t0 = Instant::now();
        cache.select("a.example", t0).unwrap();
        index.put("a.example", b"unbit-sni 1\ngarbage").unwrap();
        let later = t0 + RECHECK + Duration::from_millis(1);
        assert_eq!(cn(&cache.select("a.example", later).unwrap()), "good");
        assert!(LOG.lock().unwrap().iter().any(|l| l.contains("keeping the previous certificate")));
    }
}
