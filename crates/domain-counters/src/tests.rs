use super::*;
use std::collections::BTreeSet;

fn table(capacity: u32) -> (tempfile::TempDir, std::path::PathBuf, Table) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("domain-counters");
    let t = Table::create(&path, capacity).unwrap();
    (dir, path, t)
}

fn c(hits: u64, rx: u64, tx: u64) -> Counts {
    Counts { hits, rx, tx }
}

#[test]
fn each_pair_counts_apart_and_the_reader_sees_every_process_write() {
    let (_d, path, t) = table(64);
    let a = t.slot(30701, b"a.example.com").unwrap();
    let b = t.slot(30702, b"a.example.com").unwrap();
    let w = t.slot(30701, b".wild.example.com").unwrap();
    assert_ne!(a, b);
    assert_eq!(t.slot(30701, b"a.example.com"), Ok(a), "a pair keeps its slot");
    t.add(a, c(1, 100, 1000));
    t.add(a, c(2, 10, 10));
    t.add(b, c(5, 0, 7));
    t.add(w, c(1, 1, 1));
    // a second mapping of the file, as another process has it
    let again = Table {
        words: Words::shared(
            &std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap(),
            (HEADER_WORDS + 64 * ENTRY_WORDS) * 8,
        )
        .unwrap(),
        capacity: 64,
    };
    again.add(again.slot(30701, b"a.example.com").unwrap(), c(1, 1, 1));
    let s = read(&path).unwrap();
    assert_eq!(s.pairs[&(30701, "a.example.com".to_string())], c(4, 111, 1011));
    assert_eq!(s.pairs[&(30702, "a.example.com".to_string())], c(5, 0, 7));
    assert_eq!(s.pairs[&(30701, ".wild.example.com".to_string())], c(1, 1, 1));
    assert_eq!((s.used, s.capacity, s.malformed, s.overflow), (3, 64, 0, Counts::default()));
    assert!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o077 == 0, "root's alone");
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn a_full_table_sends_new_pairs_to_the_overflow_and_keeps_the_old_ones() {
    let (_d, path, t) = table(4);
    let slots: BTreeSet<usize> = (0..4).map(|i| t.slot(30701, format!("d{i}.test").as_bytes()).unwrap()).collect();
    assert_eq!(slots.len(), 4);
    assert_eq!(t.slot(30701, b"d9.test"), Err(Full));
    assert!(t.slot(30701, b"d2.test").is_ok(), "a pair already in a full table still finds its slot");
    t.add_overflow(c(3, 30, 300));
    let s = read(&path).unwrap();
    assert_eq!(s.overflow, c(3, 30, 300));
    assert_eq!(s.used, 4);
}

#[test]
fn concurrent_writers_of_one_pair_lose_nothing() {
    let (_d, path, t) = table(1024);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..2000u32 {
                    let slot = t.slot(30701 + i % 3, b"busy.test").unwrap();
                    t.add(slot, c(1, 2, 3));
                }
            });
        }
    });
    let s = read(&path).unwrap();
    let total = s.pairs.values().fold(Counts::default(), |a, b| a.saturating_add(*b));
    assert_eq!(total, c(8000, 16000, 24000));
    assert_eq!(s.pairs.len(), 3);
}

#[test]
fn a_new_table_replaces_the_old_one_and_starts_from_zero() {
    let (_d, path, t) = table(8);
    t.add(t.slot(30701, b"a.test").unwrap(), c(1, 1, 1));
    let first = read(&path).unwrap();
    let t2 = Table::create(&path, 8).unwrap();
    let second = read(&path).unwrap();
    assert!(second.pairs.is_empty());
    assert_ne!(first.inode, second.inode);
    // the old mapping writes to the replaced file, not the new one
    t.add(0, c(1, 1, 1));
    t2.add(t2.slot(30701, b"a.test").unwrap(), c(2, 0, 0));
    assert_eq!(read(&path).unwrap().pairs[&(30701, "a.test".to_string())], c(2, 0, 0));
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
}

#[test]
fn the_reader_refuses_what_is_not_a_table_and_skips_garbage_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, b"short").unwrap();
    assert!(read(&path).unwrap_err().contains("shorter than the header"));
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    assert!(read(&path).unwrap_err().contains("bad magic"));
    assert!(read(&dir.path().join("absent")).unwrap_err().contains("absent"));
    assert!(Table::create(&path, 0).is_err());

    let t = Table::create(&path, 4).unwrap();
    t.add(t.slot(30701, b"ok.test").unwrap(), c(1, 0, 0));
    // what a compromised router process could write: a name with a quote and newline
    t.add(t.slot(30701, b"bad\"\n.test").unwrap(), c(1, 0, 0));
    let s = read(&path).unwrap();
    assert_eq!(s.pairs.len(), 1);
    assert_eq!(s.malformed, 1);
    // a table truncated behind the reader's back is refused, not read past its end
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();
    assert!(read(&path).unwrap_err().contains("not what 4 entries take"));
}

#[test]
fn nodes_are_attributed_by_uid_address_or_socket_owner() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("app.sock");
    std::fs::write(&sock, "").unwrap();
    std::os::unix::fs::chown(&sock, Some(30703), None).unwrap();
    let pin = t.path().join("pin-1");
    std::os::unix::fs::symlink(&sock, &pin).unwrap();
    let ip = container_spec::ip_of(30702);
    assert_eq!(node_owner(30701, "/nowhere"), Some(30701));
    assert_eq!(node_owner(0, &format!("{ip}:3031")), Some(30702));
    assert_eq!(node_owner(0, pin.to_str().unwrap()), Some(30703));
    assert_eq!(node_owner(0, "/nowhere/else"), None);
    assert_eq!(node_owner(0, "10.255.255.255:80"), Some(container_spec::BASE_UID + 0x00ff_fffd));
    assert_eq!(node_owner(0, "192.168.1.1:80"), None);
    assert_eq!(node_owner(0, "localhost:80"), None);
}

/// A customer who replaces their socket by a symlink to another container's socket after the
/// validator pinned it is still credited with their own traffic, not the link target's: the
/// router's name leads through the holder's descriptor (`/proc/<pid>/fd/<n>`), which holds
/// the inode that was checked, not the path.
#[test]
fn a_socket_swapped_for_a_symlink_after_pinning_stays_its_owners() {
    let t = tempfile::tempdir().unwrap();
    let (customer, other) = (t.path().join("customer.sock"), t.path().join("other.sock"));
    for (path, uid) in [(&customer, 31500), (&other, 31501)] {
        std::fs::write(path, "").unwrap();
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
    }
    // What the validator holds (here: this process) and the name it gives the router.
    let held = std::fs::File::open(&customer).unwrap();
    let pin = t.path().join("0123456789abcdef-1");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    std::os::unix::fs::symlink(format!("/proc/{}/fd/{fd}", std::process::id()), &pin).unwrap();
    assert_eq!(node_owner(0, pin.to_str().unwrap()), Some(31500));

    std::fs::remove_file(&customer).unwrap();
    std::os::unix::fs::symlink(&other, &customer).unwrap();
    assert_eq!(node_owner(0, customer.to_str().unwrap()), Some(31501), "the swap took effect on the path");
    assert_eq!(node_owner(0, pin.to_str().unwrap()), Some(31500), "the pinned name still finds the customer's inode");

    // The pin let go: its name is unlinked first, and then counts for nobody.
    std::fs::remove_file(&pin).unwrap();
    drop(held);
    assert_eq!(node_owner(0, pin.to_str().unwrap()), None);
}
