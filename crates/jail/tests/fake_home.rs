//! Home preparation against the recording fake: no root needed. Checks the layout, the
//! ownership and modes, that every lookup under the home is symlink-safe, and that planted
//! symlinks and hard links never make root write or chown outside the home.

mod common;

use common::{fake_node, spec, PRIVATE_PEM, PUBLIC_PEM, UID};
use jail::fake::{Call, Fake};
use jail::quota::NoQuota;
use jail::syscalls::{FileKind, RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS};
use jail::{
    append_to_customer_log_with, prepare_home_with, revoke_authorized_keys_with, write_authorized_keys_with, Displaced,
    JailError,
};
use std::path::{Path, PathBuf};

fn home() -> PathBuf {
    PathBuf::from(format!("/containers/{UID}"))
}

fn assert_node(f: &Fake, rel: &str, kind: FileKind, uid: u32, mode: u32) {
    let p = home().join(rel);
    let n = f.node(&p).unwrap_or_else(|| panic!("{} missing", p.display()));
    assert_eq!(n.kind, kind, "{}", p.display());
    assert_eq!((n.uid, n.gid), (uid, uid), "owner of {}", p.display());
    assert_eq!(n.mode, mode, "mode of {:o} {}", n.mode, p.display());
}

/// No call may have touched anything outside the home except reading the trusted roots.
fn assert_confined(f: &Fake) {
    let h = home();
    for c in f.calls() {
        let touched: Option<&Path> = match &c {
            Call::Chown { path, .. }
            | Call::Chmod { path, .. }
            | Call::Write { path, .. }
            | Call::Unlink { path }
            | Call::Mkdir { path, .. } => Some(path),
            Call::Rename { to, .. } => Some(to),
            _ => None,
        };
        if let Some(p) = touched {
            assert!(p.starts_with(&h) || p == h, "{c:?} reaches outside the home");
        }
        if let Call::Open { path, resolve, .. } = &c {
            if path.starts_with(&h) && path != &h {
                assert_eq!(
                    resolve & (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS),
                    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
                    "{c:?} may follow symlinks"
                );
            }
        }
    }
}

#[test]
fn fresh_home_has_the_original_layout_owned_by_the_container() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    assert_node(&f, "", FileKind::Dir, UID, 0o755);
    for d in ["vassals", "logs", "etc", "run", "tmp", "run/spool"] {
        assert_node(&f, d, FileKind::Dir, UID, 0o755);
    }
    assert_node(&f, ".ssh", FileKind::Dir, UID, 0o700);
    for d in ["run/subscribe", "run/shm"] {
        assert_node(&f, d, FileKind::Dir, 0, 0o755);
    }
    assert_node(&f, "etc/uwsgi.key", FileKind::File, UID, 0o400);
    assert_node(&f, "etc/uwsgi.pubkey", FileKind::File, UID, 0o444);
    assert_node(&f, ".ssh/uwsgi_authorized_keys", FileKind::File, UID, 0o600);
    assert_node(&f, "logs/emperor.log", FileKind::File, UID, 0o644);
    for name in ["hosts", "hostname", "resolv.conf"] {
        assert_node(&f, &format!("etc/{name}"), FileKind::File, UID, 0o644);
    }
    let text = |rel: &str| f.text(home().join(rel)).unwrap();
    assert_eq!(text("etc/hostname"), "my-app\n");
    assert_eq!(text("etc/hosts"), "127.0.0.1 localhost\n10.0.0.1 gateway\n");
    assert_eq!(text("etc/resolv.conf"), "nameserver 10.0.0.1\n");
    assert_eq!(text("etc/uwsgi.key"), PRIVATE_PEM);
    assert_eq!(text("etc/uwsgi.pubkey"), PUBLIC_PEM);
    assert_eq!(text(".ssh/uwsgi_authorized_keys"), "ssh-ed25519 AAAA one@example\nssh-ed25519 BBBB two@example\n");
    assert!(f.node(home().join("distros")).is_none(), "only when asked");
    assert_confined(&f);
}

#[test]
fn files_are_written_through_a_temp_file_and_renamed() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    let calls = f.calls();
    let hostname = home().join("etc/hostname");
    let rename = calls
        .iter()
        .position(|c| matches!(c, Call::Rename { to, .. } if *to == hostname))
        .expect("hostname renamed into place");
    let Call::Rename { from, .. } = &calls[rename] else { unreachable!() };
    let write = calls.iter().position(|c| matches!(c, Call::Write { path, .. } if path == from)).unwrap();
    assert!(write < rename, "the temp file must be complete before it is renamed into place");
    // No temp file is left behind.
    assert!(!calls.iter().any(|c| matches!(c, Call::Write { path, .. } if *path == hostname)));
}

#[test]
fn planted_symlinks_are_replaced_never_followed() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    // The customer plants links to host files in place of everything root writes or chowns.
    let h = home();
    f.symlink(h.join("etc/hostname"), "/etc/shadow")
        .symlink(h.join("etc/hosts"), "/etc/passwd")
        .symlink(h.join("etc/resolv.conf"), "../../../etc/shadow")
        .symlink(h.join("etc/uwsgi.key"), "/etc/shadow")
        .symlink(h.join(".ssh/uwsgi_authorized_keys"), "/root/.ssh/authorized_keys")
        .symlink(h.join("vassals"), "/etc");
    // A whole directory swapped for a link: logs -> / (emperor.log would be /emperor.log).
    f.symlink(h.join("logs"), "/");
    f.clear_calls();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();

    assert_eq!(f.text("/etc/shadow").unwrap(), "root:secret");
    assert_eq!(f.text("/etc/passwd").unwrap(), "root:x:0:0");
    assert_eq!(f.text("/root/.ssh/authorized_keys").unwrap(), "ssh-ed25519 ROOT");
    for host in ["/etc/shadow", "/etc/passwd", "/root/.ssh/authorized_keys", "/etc"] {
        assert_eq!(f.node(host).unwrap().uid, 0, "{host} chowned");
    }
    assert!(f.node("/emperor.log").is_none());
    // And the home is whole again.
    assert_node(&f, "logs", FileKind::Dir, UID, 0o755);
    assert_node(&f, "vassals", FileKind::Dir, UID, 0o755);
    assert_node(&f, "logs/emperor.log", FileKind::File, UID, 0o644);
    assert_node(&f, "etc/uwsgi.key", FileKind::File, UID, 0o400);
    assert_eq!(f.text(h.join("etc/hostname")).unwrap(), "my-app\n");
    assert_eq!(
        f.text(h.join("etc/hosts")).unwrap(),
        "127.0.0.1 localhost\n10.0.0.1 gateway\n",
        "a planted link counts as missing: re-seeded"
    );
    assert_confined(&f);
}

#[test]
fn customer_edits_of_hosts_and_resolv_conf_are_kept() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    f.file(home().join("etc/hosts"), UID, b"10.9.9.9 db\n");
    f.file(home().join("etc/resolv.conf"), UID, b"nameserver 1.1.1.1\n");
    let mut renamed = spec(UID);
    renamed.name = "other".into();
    prepare_home_with(&f, &paths, &renamed, &NoQuota).unwrap();
    assert_eq!(f.text(home().join("etc/hosts")).unwrap(), "10.9.9.9 db\n");
    assert_eq!(f.text(home().join("etc/resolv.conf")).unwrap(), "nameserver 1.1.1.1\n");
    assert_eq!(f.text(home().join("etc/hostname")).unwrap(), "other\n");
}

#[test]
fn a_hard_link_or_foreign_file_in_place_of_hosts_is_replaced_not_chowned() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    // What a hard link to a root file looks like from inside the home.
    f.file(home().join("etc/hosts"), 0, b"root:secret");
    f.edit(home().join("etc/hosts"), |n| n.nlink = 2);
    f.clear_calls();
    f.file(home().join("logs/emperor.log"), 0, b"");
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    assert!(!f.calls().iter().any(|c| matches!(c, Call::Chown { path, uid: 0, .. } if path.ends_with("etc/hosts"))));
    assert_node(&f, "etc/hosts", FileKind::File, UID, 0o644);
    // A root-owned log with a single name is simply given back to the container.
    assert_node(&f, "logs/emperor.log", FileKind::File, UID, 0o644);
}

/// What the customer put where one of the platform's directories belongs is moved aside to a
/// visible name in the same directory: never deleted, never followed, never replacing another
/// entry of the customer's (`RENAME_NOREPLACE`), and listed so the customer can be told.
#[test]
fn obstacles_in_place_of_platform_dirs_are_moved_aside_never_deleted_or_followed() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    let h = home();
    f.file(h.join(".ssh"), UID, b"my notes");
    f.file(h.join("ssh.displaced"), UID, b"an older file of mine");
    f.file(h.join("tmp"), UID, b"customer data");
    f.symlink(h.join("logs"), "/etc");
    f.file(h.join("vassals"), UID, b"").edit(h.join("vassals"), |n| n.kind = FileKind::Other);
    f.file(h.join("run/shm"), UID, b"in the way of a mountpoint");
    f.clear_calls();

    let moved = prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();

    let entry = |from: &str, to: &str, found: &'static str| Displaced { from: h.join(from), to: h.join(to), found };
    assert_eq!(
        moved,
        vec![
            entry("vassals", "vassals.displaced", "a special file"),
            entry("logs", "logs.displaced", "a symlink"),
            entry("tmp", "tmp.displaced", "a regular file"),
            entry(".ssh", "ssh.displaced-2", "a regular file"),
            entry("run/shm", "run/shm.displaced", "a regular file"),
        ]
    );
    let text = |rel: &str| f.text(h.join(rel)).unwrap();
    assert_eq!(text("ssh.displaced-2"), "my notes");
    assert_eq!(text("ssh.displaced"), "an older file of mine", "another customer file was replaced");
    assert_eq!(text("tmp.displaced"), "customer data");
    assert_eq!(f.node(h.join("logs.displaced")).unwrap().target, Some(PathBuf::from("/etc")));
    assert_eq!(text("run/shm.displaced"), "in the way of a mountpoint");
    // The platform's layout is whole again, and nothing was deleted or reached through a link.
    assert_node(&f, ".ssh", FileKind::Dir, UID, 0o700);
    assert_node(&f, ".ssh/uwsgi_authorized_keys", FileKind::File, UID, 0o600);
    assert_node(&f, "logs/emperor.log", FileKind::File, UID, 0o644);
    assert_node(&f, "run/shm", FileKind::Dir, 0, 0o755);
    for d in ["tmp", "vassals", "logs"] {
        assert_node(&f, d, FileKind::Dir, UID, 0o755);
    }
    assert!(f.node("/etc/emperor.log").is_none());
    let calls = f.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::Unlink { .. })), "something was deleted: {calls:?}");
    for d in &moved {
        assert!(calls.contains(&Call::Rename { from: d.from.clone(), to: d.to.clone(), exclusive: true }));
    }
    assert_confined(&f);
    // A second pass finds nothing in the way.
    assert_eq!(prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap(), vec![]);
}

#[test]
fn a_key_only_update_moves_an_obstacle_at_ssh_aside() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    f.file(home().join(".ssh"), UID, b"not a directory");
    let mut s = spec(UID);
    s.ssh_keys = vec!["ssh-ed25519 CCCC three@example".into()];
    let moved = write_authorized_keys_with(&f, &paths, &s).unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(f.text(home().join("ssh.displaced")).unwrap(), "not a directory");
    assert_eq!(f.text(home().join(".ssh/uwsgi_authorized_keys")).unwrap(), "ssh-ed25519 CCCC three@example\n");
    assert_confined(&f);
}

#[test]
fn a_race_lost_twice_is_reported_with_its_path() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    f.file(home().join("tmp"), UID, b"customer data");
    // The customer puts something back at the name right after each move, twice.
    let tmp = format!("/containers/{UID}/tmp");
    f.fail("mkdirat", &tmp, libc::EEXIST).fail("mkdirat", &tmp, libc::EEXIST);
    let e = prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap_err();
    let s = e.to_string();
    assert!(s.contains("container 30001") && s.contains(&tmp), "{s}");
    assert_eq!(f.text(home().join("tmp.displaced")).unwrap(), "customer data");
}

#[test]
fn revoking_the_keys_removes_only_the_containers_keys_file() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    revoke_authorized_keys_with(&f, &paths, UID).unwrap();
    assert!(f.node(home().join(".ssh/uwsgi_authorized_keys")).is_none());
    // Nothing left to revoke is fine.
    revoke_authorized_keys_with(&f, &paths, UID).unwrap();

    // A link in place of .ssh is never followed.
    let (f, paths) = fake_node();
    f.dir(home(), UID, 0o755).symlink(home().join(".ssh"), "/root/.ssh");
    revoke_authorized_keys_with(&f, &paths, UID).unwrap();
    assert_eq!(f.text("/root/.ssh/authorized_keys").unwrap(), "ssh-ed25519 ROOT");
    assert!(!f.calls().iter().any(|c| matches!(c, Call::Unlink { .. })));
}

#[test]
fn the_customer_log_is_appended_to_only_when_it_is_the_containers_own_file() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    let log = home().join("logs/emperor.log");
    f.file(&log, UID, b"earlier\n");
    append_to_customer_log_with(&f, &paths, UID, "from the node\n").unwrap();
    assert_eq!(f.text(&log).unwrap(), "earlier\nfrom the node\n");
    let open = f.calls().into_iter().rev().find_map(|c| match c {
        Call::Open { path, flags, resolve } if path == log => Some((flags, resolve)),
        _ => None,
    });
    let (flags, resolve) = open.expect("the log was opened");
    for flag in [libc::O_APPEND, libc::O_NOFOLLOW, libc::O_NONBLOCK] {
        assert_ne!(flags & flag, 0, "flags {flags:#x} lack {flag:#x}");
    }
    assert_eq!(resolve & (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS);

    // A symlink, a hard link (what it looks like from the home), a file of root's, a link in
    // place of `logs`: nothing is written.
    for what in ["symlink", "hard link", "root's file", "linked logs dir"] {
        let (f, paths) = fake_node();
        prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
        match what {
            "symlink" => f.symlink(&log, "/etc/passwd"),
            "hard link" => f.file(&log, UID, b"").edit(&log, |n| n.nlink = 2),
            "root's file" => f.file(&log, 0, b""),
            _ => f.symlink(home().join("logs"), "/etc"),
        };
        f.clear_calls();
        let e = append_to_customer_log_with(&f, &paths, UID, "from the node\n").unwrap_err();
        assert!(e.to_string().contains("container 30001"), "{what}: {e}");
        assert!(!f.calls().iter().any(|c| matches!(c, Call::Write { .. })), "{what}: written");
        assert_eq!(f.text("/etc/passwd").unwrap(), "root:x:0:0");
    }
}

#[test]
fn unchanged_keys_are_not_rewritten_changed_keys_are_replaced_atomically() {
    let (f, paths) = fake_node();
    let mut s = spec(UID);
    prepare_home_with(&f, &paths, &s, &NoQuota).unwrap();
    f.clear_calls();
    write_authorized_keys_with(&f, &paths, &s).unwrap();
    assert!(
        !f.calls().iter().any(|c| matches!(c, Call::Write { .. } | Call::Rename { .. })),
        "no write when nothing changed: {:?}",
        f.calls()
    );
    s.ssh_keys = vec!["ssh-ed25519 CCCC three@example".into()];
    write_authorized_keys_with(&f, &paths, &s).unwrap();
    let keys = home().join(".ssh/uwsgi_authorized_keys");
    assert!(f.calls().iter().any(|c| matches!(c, Call::Rename { to, .. } if *to == keys)));
    assert_eq!(f.text(&keys).unwrap(), "ssh-ed25519 CCCC three@example\n");
    // Replaced by a link meanwhile: rewritten, the link's target untouched.
    f.symlink(&keys, "/root/.ssh/authorized_keys");
    write_authorized_keys_with(&f, &paths, &s).unwrap();
    assert_eq!(f.text("/root/.ssh/authorized_keys").unwrap(), "ssh-ed25519 ROOT");
    assert_eq!(f.node(&keys).unwrap().kind, FileKind::File);
    assert_confined(&f);
}

#[test]
fn an_invalid_spec_touches_nothing() {
    let (f, paths) = fake_node();
    let mut s = spec(UID);
    s.name = "evil\nhook-asap = exec:id".into();
    let e = prepare_home_with(&f, &paths, &s, &NoQuota).unwrap_err();
    assert!(matches!(e, JailError::InvalidSpec(_)));
    assert!(f.calls().is_empty());
    s = spec(0);
    assert!(prepare_home_with(&f, &paths, &s, &NoQuota).is_err());
    assert!(f.calls().is_empty());
}

#[test]
fn distros_dir_only_when_asked() {
    let (f, paths) = fake_node();
    prepare_home_with(&f, &paths, &spec(UID), &NoQuota).unwrap();
    jail::ensure_distros_dir_with(&f, &paths, &spec(UID)).unwrap();
    assert_node(&f, "distros", FileKind::Dir, UID, 0o755);
    assert_eq!(Path::new("/containers").join(UID.to_string()), home());
}
