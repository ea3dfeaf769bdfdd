//! Per-domain hits and bytes of the node's HTTP router, counted by every router process into
//! one table they share, and read by `unbit-metrics` (docs/metrics.md).
//!
//! Stock uWSGI keeps a subscription table, and the counters of its nodes, per http process,
//! and serves them from the first process only (`http-stats-server`): with `http-processes =
//! 4` the metrics saw a quarter of the traffic. The front door (`plugins/unbit_router`), which
//! runs in every router process, copies what each process's nodes count into this table
//! instead, keyed by (container uid, domain), so the collector reads every request, whichever
//! process served it.
//!
//! The table is a file (`/run/unbit-http/domain-counters`, root's, 0600) that the router's
//! master creates at start and maps shared before it forks the http processes and the
//! de-chunking proxy, which inherit the mapping (they run as the router's user and never open
//! the file). The collector maps it read-only. Layout, in native-endian 64-bit words, every one
//! accessed atomically:
//!
//! * a 64-byte header: the magic `UNBITDC1`; `capacity << 32 | ENTRY_WORDS`; the overflow's
//!   hits, request bytes and response bytes; three words reserved;
//! * `capacity` entries of [`ENTRY_WORDS`] words: `state << 32 | uid`, hits, rx, tx, then the
//!   domain: its length in the first byte and up to 255 bytes, in 32 words.
//!
//! An entry is claimed once, by a compare-and-swap of its first word from 0, and published by
//! storing the ready state after its name (release/acquire), so a reader or another process
//! never sees half a name. Entries are never freed: the table holds each (uid, domain) the
//! router served since it started (a router restart makes a new table; counters start again at
//! 0, as stock uWSGI's do). The slot is found by open addressing (FNV-1a of the uid and the
//! name, linear probing); a process finds a pair's slot once and keeps its index. When every
//! slot is taken, what a new pair counts goes to the header's overflow totals, which the
//! collector reports (and logs), so nothing is counted twice and no count is silently lost. An
//! entry another process is still writing is passed over; the pair may then get a second entry,
//! and the reader adds the entries of one pair up.
//!
//! The file is written by processes that parse what the Internet sends: the reader trusts
//! nothing in it beyond its size (names are checked, sums saturate).

mod map;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use map::Words;

const MAGIC: u64 = u64::from_ne_bytes(*b"UNBITDC1");
const HEADER_WORDS: usize = 8;
/// Words per entry: `state << 32 | uid`, hits, rx, tx, and 32 of name (length byte + 255).
pub const ENTRY_WORDS: usize = 36;
const NAME_WORDS: usize = 32;
/// Entries a table holds unless the router says otherwise (`unbit-router-domain-slots`): 16 384
/// (container, domain) pairs in 4.5 MiB, of which only the pages in use take memory.
pub const DEFAULT_CAPACITY: u32 = 16_384;
/// The largest table: 1 048 576 pairs, 288 MiB of file.
pub const MAX_CAPACITY: u32 = 1 << 20;
/// Where the router's master makes the table (`unbit-router-domain-counters`) and the
/// collector reads it: beside the router's private sockets.
pub const DEFAULT_PATH: &str = "/run/unbit-http/domain-counters";

const FREE: u64 = 0;
const CLAIMING: u64 = 1;
const READY: u64 = 2;

/// What one (container, domain) served, or a change of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests the router passed to the container for the domain.
    pub hits: u64,
    /// Bytes the router (or its de-chunking proxy) wrote to the container (the requests as
    /// uwsgi packets, and bodies).
    pub rx: u64,
    /// Bytes the router (or its de-chunking proxy) read from the container (the responses).
    pub tx: u64,
}

impl Counts {
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    fn saturating_add(self, o: Counts) -> Counts {
        Counts {
            hits: self.hits.saturating_add(o.hits),
            rx: self.rx.saturating_add(o.rx),
            tx: self.tx.saturating_add(o.tx),
        }
    }
}

/// The router's side: the table, created in the master, inherited by the http processes.
pub struct Table {
    words: Words,
    capacity: usize,
}

/// A table with every slot taken: the pair's counts go to the overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Table {
    /// Makes a new, empty table at `path` (replacing one a previous router left), whole before
    /// it appears under its name: a temporary file beside it, sized (sparse), headed, renamed.
    pub fn create(path: &Path, capacity: u32) -> Result<Table, String> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(format!("domain counters {}: capacity {capacity} is not 1..={MAX_CAPACITY}", path.display()));
        }
        let err = |what: &str, e: std::io::Error| format!("domain counters {}: {what}: {e}", path.display());
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| format!("domain counters {}: not a file name", path.display()))?;
        let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err("create", e))?;
        let made = (|| {
            let len = (HEADER_WORDS + capacity as usize * ENTRY_WORDS) * 8;
            file.set_len(len as u64).map_err(|e| err("size", e))?;
            let mut header = Vec::with_capacity(16);
            header.extend_from_slice(&MAGIC.to_ne_bytes());
            header.extend_from_slice(&((u64::from(capacity) << 32) | ENTRY_WORDS as u64).to_ne_bytes());
            (&file).write_all(&header).map_err(|e| err("write", e))?;
            let words = Words::shared(&file, len).map_err(|e| err("map", e))?;
            std::fs::rename(&tmp, path).map_err(|e| err("rename", e))?;
            Ok(Table { words, capacity: capacity as usize })
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The slot of (uid, domain): found, or claimed when the pair is new. `domain` is cut at
    /// 255 bytes (uWSGI's subscription keys are at most that long).
    pub fn slot(&self, uid: u32, domain: &[u8]) -> Result<usize, Full> {
        let domain = &domain[..domain.len().min(255)];
        let name = pack_name(domain);
        let start = (hash(uid, domain) % self.capacity as u64) as usize;
        for i in 0..self.capacity {
            let slot = (start + i) % self.capacity;
            let base = entry_base(slot);
            loop {
                let head = self.words.load(base);
                match head >> 32 {
                    FREE => {
                        if self.words.claim(base, FREE, (CLAIMING << 32) | u64::from(uid)) {
                            for (w, v) in name.iter().enumerate() {
                                self.words.store(base + 4 + w, *v);
                            }
                            self.words.publish(base, (READY << 32) | u64::from(uid));
                            return Ok(slot);
                        }
                        // another process claimed it meanwhile: look at what it holds
                    }
                    READY
                        if head as u32 == uid && (0..NAME_WORDS).all(|w| self.words.load(base + 4 + w) == name[w]) =>
                    {
                        return Ok(slot);
                    }
                    _ => break,
                }
            }
        }
        Err(Full)
    }

    /// Adds `c` to the counters of the slot [`Table::slot`] gave.
    pub fn add(&self, slot: usize, c: Counts) {
        if slot < self.capacity {
            self.add_at(entry_base(slot) + 1, c);
        }
    }

    /// Adds `c` to the overflow: counts of pairs the full table has no slot for.
    pub fn add_overflow(&self, c: Counts) {
        self.add_at(2, c);
    }

    fn add_at(&self, word: usize, c: Counts) {
        for (i, v) in [c.hits, c.rx, c.tx].into_iter().enumerate() {
            if v > 0 {
                self.words.add(word + i, v);
            }
        }
    }
}

fn entry_base(slot: usize) -> usize {
    HEADER_WORDS + slot * ENTRY_WORDS
}

/// FNV-1a over the uid and the name.
fn hash(uid: u32, domain: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in uid.to_le_bytes().iter().chain(domain) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The length byte and the name, in the table's words.
fn pack_name(domain: &[u8]) -> [u64; NAME_WORDS] {
    let mut bytes = [0u8; NAME_WORDS * 8];
    bytes[0] = domain.len() as u8;
    bytes[1..1 + domain.len()].copy_from_slice(domain);
    let mut words = [0u64; NAME_WORDS];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
    }
    words
}

fn unpack_name(words: &[u64; NAME_WORDS]) -> Option<String> {
    let mut bytes = Vec::with_capacity(NAME_WORDS * 8);
    for w in words {
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    let len = usize::from(bytes[0]);
    let name = std::str::from_utf8(&bytes[1..1 + len]).ok()?;
    let plausible = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    plausible.then(|| name.to_string())
}

/// What the table holds, for the collector.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Counts per (uid, domain), entries of one pair added up. uid 0: nodes the router could
    /// not tell the container of.
    pub pairs: BTreeMap<(u32, String), Counts>,
    /// Counts of pairs that found the table full.
    pub overflow: Counts,
    /// Entries in use, and the table's size.
    pub used: usize,
    pub capacity: usize,
    /// Entries whose name is not a plausible domain (left out).
    pub malformed: usize,
    /// The file's inode: a new one means the router restarted (its counters began again).
    pub inode: u64,
}

/// Reads the table at `path` (made by [`Table::create`]).
pub fn read(path: &Path) -> Result<Snapshot, String> {
    let err = |e: String| format!("domain counters {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let md = file.metadata().map_err(|e| err(e.to_string()))?;
    let len = usize::try_from(md.len()).map_err(|e| err(e.to_string()))?;
    if len < HEADER_WORDS * 8 {
        return Err(err(format!("{len} bytes, shorter than the header")));
    }
    let words = Words::read_only(&file, len).map_err(|e| err(format!("map: {e}")))?;
    if words.load(0) != MAGIC {
        return Err(err("not a domain counters table (bad magic)".into()));
    }
    let geometry = words.load(1);
    let (capacity, entry_words) = ((geometry >> 32) as usize, (geometry & 0xffff_ffff) as usize);
    if entry_words != ENTRY_WORDS || capacity == 0 || capacity > MAX_CAPACITY as usize {
        return Err(err(format!("unknown layout: {capacity} entries of {entry_words} words")));
    }
    if len != (HEADER_WORDS + capacity * ENTRY_WORDS) * 8 {
        return Err(err(format!("{len} bytes, not what {capacity} entries take")));
    }
    let mut snap = Snapshot {
        overflow: Counts { hits: words.load(2), rx: words.load(3), tx: words.load(4) },
        capacity,
        inode: md.ino(),
        ..Snapshot::default()
    };
    for slot in 0..capacity {
        let base = entry_base(slot);
        let head = words.load_acquire(base);
        if head >> 32 != READY {
            snap.used += usize::from(head >> 32 != FREE);
            continue;
        }
        snap.used += 1;
        let mut name = [0u64; NAME_WORDS];
        for (w, v) in name.iter_mut().enumerate() {
            *v = words.load(base + 4 + w);
        }
        let Some(domain) = unpack_name(&name) else {
            snap.malformed += 1;
            continue;
        };
        let c = Counts { hits: words.load(base + 1), rx: words.load(base + 2), tx: words.load(base + 3) };
        let e = snap.pairs.entry((head as u32, domain)).or_default();
        *e = e.saturating_add(c);
    }
    Ok(snap)
}

/// The container a subscription node belongs to, by what the router knows of it, or `None`:
/// 1. the sender uid the router recorded (a router taking announces directly, with
///    `subscriptions-use-credentials`);
/// 2. an address on the containers' network (`10.x.y.z:port`, `container_spec::ip_of`);
/// 3. a socket path (the platform's validator hands the router a pinned name that resolves to
///    the container's own socket file, which the validator checked is the container's): its
///    owner (one `stat`, following the links).
pub fn node_owner(recorded_uid: u32, name: &str) -> Option<u32> {
    if recorded_uid > 0 {
        Some(recorded_uid)
    } else if name.starts_with('/') {
        // Following the links cannot credit another customer: no link on the way is the
        // customer's. The router's subscription socket is private to the validator (and the
        // cluster receiver, which hands it ip:port only), and the validator never passes a
        // customer's path on: the name is `<router's private dir>/<generation>-<n>`, a link
        // the validator made (unbit_subscriptions::pins) to `/proc/<pid>/fd/<n>` of the
        // process holding the socket it opened `O_PATH | O_NOFOLLOW` with `openat2(
        // RESOLVE_NO_SYMLINKS)` and checked is a socket owned by the container
        // (unbit_subscriptions::homes). That last link is the kernel's: it leads to the inode
        // the descriptor holds, not to whatever the path names now, so a customer who
        // replaces their socket by a symlink to another container's socket changes only
        // their directory, and this `stat` still finds their own inode. Its owner cannot be
        // made another container's either (chown to another uid needs CAP_CHOWN on the
        // host). A name whose pin was let go is unlinked before its descriptor is closed
        // (pins::QUARANTINE_SECS), so it fails here (`None`) rather than finding a reused
        // descriptor. The router connects along the same links: a name that could mislead
        // this `stat` would mislead the routing first.
        std::fs::metadata(name).ok().map(|m| m.uid())
    } else {
        let ip: std::net::Ipv4Addr = name.rsplit_once(':')?.0.parse().ok()?;
        let n = u32::from(ip) & 0x00ff_ffff;
        let uid = n.wrapping_sub(2).wrapping_add(container_spec::BASE_UID);
        (container_spec::ip_of(uid) == ip).then_some(uid)
    }
}

#[cfg(test)]
mod tests;
