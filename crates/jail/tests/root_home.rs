//! `prepare_home` for real, as root, in a temp dir: layout, ownership and modes on a real
//! filesystem, and symlink / hard-link attacks against "host" files that live outside the
//! home (stand-ins for /etc/shadow: a bug must not be able to damage the test machine), plus
//! a racing attacker swapping directories and links while root works.

mod common;

use common::{paths_under, require_root, spec, UID};
use jail::quota::NoQuota;
use jail::{append_to_customer_log, prepare_home, write_authorized_keys, NodePaths};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

struct Node {
    _tmp: tempfile::TempDir,
    paths: NodePaths,
    home: PathBuf,
    /// Root-owned "host" files and directory outside the home.
    victim_file: PathBuf,
    victim_dir: PathBuf,
}

fn node() -> Node {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_under(tmp.path());
    fs::create_dir_all(&paths.containers).unwrap();
    let host = tmp.path().join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    let victim_file = host.join("etc/shadow");
    fs::write(&victim_file, "root:secret\n").unwrap();
    fs::set_permissions(&victim_file, fs::Permissions::from_mode(0o600)).unwrap();
    let victim_dir = host.join("etc");
    let home = paths.containers.join(UID.to_string());
    Node { _tmp: tmp, paths, home, victim_file, victim_dir }
}

impl Node {
    fn assert_victims_intact(&self) {
        let m = fs::metadata(&self.victim_file).unwrap();
        assert_eq!(fs::read_to_string(&self.victim_file).unwrap(), "root:secret\n");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o600), "victim file changed");
        let d = fs::metadata(&self.victim_dir).unwrap();
        assert_eq!((d.uid(), d.gid()), (0, 0), "victim dir chowned");
        let names: Vec<_> = fs::read_dir(&self.victim_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shadow")], "something was written into the victim dir");
    }

    fn meta(&self, rel: &str) -> fs::Metadata {
        fs::symlink_metadata(self.home.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

fn plant(link: &Path, target: &Path) {
    if let Ok(m) = fs::symlink_metadata(link) {
        if m.is_dir() {
            fs::remove_dir_all(link).unwrap();
        } else {
            fs::remove_file(link).unwrap();
        }
    }
    std::os::unix::fs::symlink(target, link).unwrap();
}

#[test]
fn real_layout_ownership_and_modes() {
    let n = node();
    let s = spec(UID);
    prepare_home(&n.paths, &s, &NoQuota).unwrap();
    // Idempotent.
    prepare_home(&n.paths, &s, &NoQuota).unwrap();
    let check = |rel: &str, uid: u32, mode: u32, dir: bool| {
        let m = n.meta(rel);
        assert_eq!(m.is_dir(), dir, "{rel}");
        assert!(!m.file_type().is_symlink());
        assert_eq!((m.uid(), m.gid()), (uid, uid), "owner of {rel}");
        assert_eq!(m.mode() & 0o7777, mode, "mode of {rel}: {:o}", m.mode() & 0o7777);
    };
    check("", UID, 0o755, true);
    for d in ["vassals", "logs", "etc", "run", "tmp", "run/spool"] {
        check(d, UID, 0o755, true);
    }
    check(".ssh", UID, 0o700, true);
    check("run/subscribe", 0, 0o755, true);
    check("run/shm", 0, 0o755, true);
    check("etc/uwsgi.key", UID, 0o400, false);
    check("etc/uwsgi.pubkey", UID, 0o444, false);
    check(".ssh/uwsgi_authorized_keys", UID, 0o600, false);
    check("logs/emperor.log", UID, 0o644, false);
    check("etc/hostname", UID, 0o644, false);
    assert_eq!(fs::read_to_string(n.home.join("etc/hostname")).unwrap(), "my-app\n");
    // No temp file left anywhere.
    for d in ["etc", ".ssh", "logs"] {
        for e in fs::read_dir(n.home.join(d)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.contains(".unbit-"), "leftover temp file {d}/{name}");
        }
    }
}

#[test]
fn the_subscription_key_is_readable_by_the_container_only() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    let key = n.home.join("etc/uwsgi.key");
    // `cat` run as the given uid (std drops the supplementary groups when root sets a uid).
    let read_as = |uid: u32| -> bool {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("cat")
            .arg(&key)
            .uid(uid)
            .gid(uid)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(read_as(UID), "the container reads its key");
    assert!(!read_as(UID + 1), "another container cannot");
    assert!(!read_as(65534), "nobody cannot");
}

#[test]
fn planted_symlinks_never_make_root_write_or_chown_outside() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    let h = &n.home;
    plant(&h.join("etc/hostname"), &n.victim_file);
    plant(&h.join("etc/hosts"), &n.victim_file);
    plant(&h.join("etc/uwsgi.key"), &n.victim_file);
    plant(&h.join("etc/uwsgi.pubkey"), &n.victim_file);
    plant(&h.join(".ssh/uwsgi_authorized_keys"), &n.victim_file);
    plant(&h.join("logs"), &n.victim_dir);
    plant(&h.join("vassals"), &n.victim_dir);
    plant(&h.join("run"), &n.victim_dir);
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    n.assert_victims_intact();
    for rel in ["logs", "vassals", "run", "run/shm"] {
        assert!(n.meta(rel).is_dir(), "{rel} repaired");
    }
    for rel in ["etc/hostname", "etc/hosts", "etc/uwsgi.key", ".ssh/uwsgi_authorized_keys", "logs/emperor.log"] {
        assert!(n.meta(rel).is_file(), "{rel} repaired");
        assert_eq!(n.meta(rel).uid(), UID);
    }

    // A whole .ssh swapped for a link: write_authorized_keys alone (no restart path).
    plant(&h.join(".ssh"), &n.victim_dir);
    write_authorized_keys(&n.paths, &spec(UID)).unwrap();
    n.assert_victims_intact();
    assert!(n.meta(".ssh").is_dir());

    // The home itself replaced by a link (only root can do that in /containers, but still).
    fs::remove_dir_all(h).unwrap();
    plant(h, &n.victim_dir);
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    n.assert_victims_intact();
    assert!(fs::symlink_metadata(h).unwrap().is_dir());
}

#[test]
fn a_hard_link_to_a_host_file_is_replaced_not_chowned() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    for rel in ["etc/hosts", "logs/emperor.log"] {
        let p = n.home.join(rel);
        fs::remove_file(&p).unwrap();
        fs::hard_link(&n.victim_file, &p).unwrap();
    }
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    n.assert_victims_intact();
    assert_eq!(fs::metadata(&n.victim_file).unwrap().nlink(), 1, "both links replaced");
    assert_eq!(fs::read_to_string(n.home.join("etc/hosts")).unwrap(), "127.0.0.1 localhost\n10.0.0.1 gateway\n");
}

#[test]
fn a_fifo_planted_as_a_file_does_not_hang_the_emperor() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    let p = n.home.join(".ssh/uwsgi_authorized_keys");
    fs::remove_file(&p).unwrap();
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // Replaced (the FIFO is opened non-blocking, seen not to be a file, and renamed over).
    write_authorized_keys(&n.paths, &spec(UID)).unwrap();
    assert!(n.meta(".ssh/uwsgi_authorized_keys").is_file());
}

/// A customer replaces the platform's directories with a file, a FIFO and a link, and already
/// has a file at the first name the node would move `.ssh` to: every obstacle is moved aside
/// whole (the link still pointing where it did), nothing is deleted, the victim is untouched.
#[test]
fn obstacles_in_place_of_platform_dirs_are_moved_aside_whole() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    let h = &n.home;
    fs::remove_dir_all(h.join(".ssh")).unwrap();
    fs::write(h.join(".ssh"), "my notes\n").unwrap();
    fs::write(h.join("ssh.displaced"), "older\n").unwrap();
    fs::remove_dir_all(h.join("logs")).unwrap();
    nix::unistd::mkfifo(&h.join("logs"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    plant(&h.join("vassals"), &n.victim_dir);
    fs::remove_dir_all(h.join("run")).unwrap();
    fs::write(h.join("run"), "run as a file\n").unwrap();

    let moved = prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();

    let names: Vec<(String, String, &str)> = moved
        .iter()
        .map(|d| {
            let rel = |p: &Path| p.strip_prefix(h).unwrap().display().to_string();
            (rel(&d.from), rel(&d.to), d.found)
        })
        .collect();
    assert_eq!(
        names,
        [
            ("vassals", "vassals.displaced", "a symlink"),
            ("logs", "logs.displaced", "a special file"),
            ("run", "run.displaced", "a regular file"),
            (".ssh", "ssh.displaced-2", "a regular file"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c))
    );
    assert_eq!(fs::read_to_string(h.join("ssh.displaced-2")).unwrap(), "my notes\n");
    assert_eq!(fs::read_to_string(h.join("ssh.displaced")).unwrap(), "older\n");
    assert_eq!(fs::read_to_string(h.join("run.displaced")).unwrap(), "run as a file\n");
    assert_eq!(fs::read_link(h.join("vassals.displaced")).unwrap(), n.victim_dir);
    assert!(n.meta("logs.displaced").file_type().is_fifo());
    for rel in [".ssh", "logs", "vassals", "run", "run/shm", "run/subscribe"] {
        assert!(n.meta(rel).is_dir(), "{rel} repaired");
    }
    assert!(n.meta(".ssh/uwsgi_authorized_keys").is_file());
    n.assert_victims_intact();
}

/// The node's notes to the customer go into `~/logs/emperor.log` only when it is the
/// container's own regular file: a FIFO does not block the caller, a link or a hard link to
/// a host file is refused, and nothing is written through either.
#[test]
fn the_customer_log_is_written_only_when_it_is_the_containers_own_file() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    let log = n.home.join("logs/emperor.log");
    append_to_customer_log(&n.paths, UID, "first note\n").unwrap();
    append_to_customer_log(&n.paths, UID, "second note\n").unwrap();
    assert_eq!(fs::read_to_string(&log).unwrap(), "first note\nsecond note\n");

    for what in ["symlink", "hard link", "fifo"] {
        prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
        match what {
            "symlink" => plant(&log, &n.victim_file),
            "hard link" => {
                fs::remove_file(&log).unwrap();
                fs::hard_link(&n.victim_file, &log).unwrap();
            }
            _ => {
                fs::remove_file(&log).unwrap();
                nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o666)).unwrap();
            }
        }
        let e = append_to_customer_log(&n.paths, UID, "must not land\n").unwrap_err();
        assert!(e.to_string().contains("container 30001"), "{what}: {e}");
        n.assert_victims_intact();
    }
}

/// A customer process keeps swapping `logs` with a symlink to the victim directory (atomic
/// RENAME_EXCHANGE) and `etc/hostname` with a link to the victim file, as fast as it can,
/// while root prepares the home again and again. Some runs may fail with an error naming the
/// path; none may touch the victim.
#[test]
fn racing_swaps_never_redirect_root() {
    let n = node();
    prepare_home(&n.paths, &spec(UID), &NoQuota).unwrap();
    let h = n.home.clone();
    std::os::unix::fs::symlink(&n.victim_dir, h.join("logs-swap")).unwrap();
    std::os::unix::fs::symlink(&n.victim_file, h.join("etc/hostname-swap")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        let h = h.clone();
        let (victim_dir, victim_file) = (n.victim_dir.clone(), n.victim_file.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for (a, b, target) in
                    [("logs", "logs-swap", &victim_dir), ("etc/hostname", "etc/hostname-swap", &victim_file)]
                {
                    // Keep the weapon loaded: after root repaired the swapped-in link, the
                    // spare is a real entry again; turn it back into a link.
                    let spare = h.join(b);
                    if !fs::symlink_metadata(&spare).map(|m| m.file_type().is_symlink()).unwrap_or(false) {
                        let _ = fs::remove_dir_all(&spare).or_else(|_| fs::remove_file(&spare));
                        let _ = std::os::unix::fs::symlink(target, &spare);
                    }
                    if nix::fcntl::renameat2(
                        None,
                        &h.join(a),
                        None,
                        &h.join(b),
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .is_ok()
                    {
                        swaps += 1;
                    }
                }
            }
            swaps
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..300 {
        match prepare_home(&n.paths, &spec(UID), &NoQuota) {
            Ok(_) => ok += 1,
            Err(e) => {
                let s = e.to_string();
                assert!(s.contains("container 30001"), "{s}");
                if refused < 3 {
                    eprintln!("refused: {s}");
                }
                refused += 1;
            }
        }
        n.assert_victims_intact();
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = racer.join().unwrap();
    eprintln!("racing: {swaps} swaps, {ok} runs completed, {refused} refused with an error");
    assert!(swaps > 100, "the racer did race");
    n.assert_victims_intact();
}
