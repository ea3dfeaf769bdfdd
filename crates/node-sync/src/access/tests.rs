use super::*;
use container_spec::fixtures::spec;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn spec_folder(specs: &[ContainerSpec]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    folder::apply(dir.path(), specs, &[], 5).unwrap();
    dir
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set(uids: &[u32]) -> BTreeSet<u32> {
    uids.iter().copied().collect()
}

#[test]
fn each_deployable_container_gets_its_keys_restricted_and_nothing_else() {
    let mut two_keys = spec(30001);
    two_keys.ssh_keys = vec!["ssh-ed25519 AAAAone a@x".into(), "ssh-rsa AAAAtwo b@x".into()];
    let mut keyless = spec(30003);
    keyless.ssh_keys.clear();
    let specs = spec_folder(&[two_keys, spec(30002), keyless]);
    let keys = tempfile::tempdir().unwrap();
    let dir = keys.path().join("ssh-keys");

    let logins = logins(specs.path()).unwrap();
    assert_eq!(logins.problems, Vec::<String>::new());
    let r = write_keys(&dir, &logins).unwrap();
    assert_eq!(r, KeysReport { written: vec![30001, 30002], removed: vec![] });
    assert_eq!(read(&dir.join("30001")), "restrict,pty ssh-ed25519 AAAAone a@x\nrestrict,pty ssh-rsa AAAAtwo b@x\n");
    assert_eq!(read(&dir.join("30002")), "restrict,pty ssh-ed25519 AAAA test@example\n");
    // Not deployable (no key): no file, so sshd finds no key for 30003.
    assert!(!dir.join("30003").exists());
    // sshd's StrictModes: the file and its dir are written by root alone.
    assert_eq!(mode(&dir.join("30001")), KEYS_MODE);
    assert_eq!(mode(&dir), 0o755);
    // The same folder again rewrites nothing.
    assert_eq!(write_keys(&dir, &logins).unwrap(), KeysReport::default());
}

#[test]
fn a_key_removed_a_container_removed_or_undeployable_loses_its_file() {
    let mut spec1 = spec(30001);
    spec1.ssh_keys = vec!["ssh-ed25519 AAAAone".into(), "ssh-ed25519 AAAAtwo".into()];
    let specs = spec_folder(&[spec1.clone(), spec(30002), spec(30003)]);
    let keys = tempfile::tempdir().unwrap();
    write_keys(keys.path(), &logins(specs.path()).unwrap()).unwrap();

    spec1.ssh_keys.remove(0);
    let mut undeployable = spec(30003);
    undeployable.ssh_keys.clear();
    folder::apply(specs.path(), &[spec1, undeployable], &[], 5).unwrap();
    let r = write_keys(keys.path(), &logins(specs.path()).unwrap()).unwrap();
    assert_eq!(r, KeysReport { written: vec![30001], removed: vec![30002, 30003] });
    assert_eq!(read(&keys.path().join("30001")), "restrict,pty ssh-ed25519 AAAAtwo\n");
    assert!(!keys.path().join("30002").exists() && !keys.path().join("30003").exists());
}

#[test]
fn an_unreadable_or_misnamed_spec_gives_no_keys_and_says_why() {
    let specs = spec_folder(&[spec(30001), spec(30002)]);
    let keys = tempfile::tempdir().unwrap();
    write_keys(keys.path(), &logins(specs.path()).unwrap()).unwrap();
    // Hand-edited folders (API-less nodes): a broken file or one holding another container.
    std::fs::write(specs.path().join("30001.json"), "{\"uid\": 30001, ").unwrap();
    std::fs::write(specs.path().join("30002.json"), serde_json::to_vec(&spec(30005)).unwrap()).unwrap();
    let mut bad_key = spec(30004);
    bad_key.ssh_keys = vec!["ssh-ed25519 AAAA\nssh-ed25519 BBBB".into()];
    std::fs::write(specs.path().join("30004.json"), serde_json::to_vec(&bad_key).unwrap()).unwrap();

    let l = logins(specs.path()).unwrap();
    assert!(l.keys.is_empty(), "{:?}", l.keys);
    assert_eq!(l.problems.len(), 3, "{:#?}", l.problems);
    assert!(l.problems[0].contains("container 30001") && l.problems[0].contains("30001.json"), "{:?}", l.problems);
    assert!(l.problems[1].contains("holds container 30005"), "{:?}", l.problems);
    assert!(l.problems[2].contains("container 30004"), "{:?}", l.problems);
    let r = write_keys(keys.path(), &l).unwrap();
    assert_eq!(r.removed, [30001, 30002]);
}

#[test]
fn only_container_uid_files_of_the_keys_dir_are_touched() {
    let specs = spec_folder(&[spec(30001)]);
    let keys = tempfile::tempdir().unwrap();
    for other in ["README", "030002", "30002.bak"] {
        std::fs::write(keys.path().join(other), "x").unwrap();
    }
    std::fs::write(keys.path().join("30009"), "restrict,pty ssh-ed25519 AAAAstale\n").unwrap();
    let r = write_keys(keys.path(), &logins(specs.path()).unwrap()).unwrap();
    assert_eq!(r, KeysReport { written: vec![30001], removed: vec![30009] });
    for other in ["README", "030002", "30002.bak"] {
        assert!(keys.path().join(other).exists(), "{other}");
    }
}

#[test]
fn users_are_added_with_the_enter_tool_as_shell_and_a_usable_shadow_entry() {
    let dir = tempfile::tempdir().unwrap();
    let changed = write_users(dir.path(), &set(&[30002, 30001]), &[]).unwrap();
    assert_eq!(changed, ["passwd", "group", "shadow"]);
    assert_eq!(
        read(&dir.path().join("passwd")),
        "30001:x:30001:30001:uwsgi.it container:/:/usr/local/lib/unbit/unbit-ssh-enter\n\
         30002:x:30002:30002:uwsgi.it container:/:/usr/local/lib/unbit/unbit-ssh-enter\n"
    );
    assert_eq!(read(&dir.path().join("group")), "30001:x:30001:\n30002:x:30002:\n");
    assert_eq!(read(&dir.path().join("shadow")), "30001:*:::::::\n30002:*:::::::\n");
    assert_eq!(mode(&dir.path().join("passwd")), 0o644);
    assert_eq!(mode(&dir.path().join("group")), 0o644);
    let shadow = std::fs::metadata(dir.path().join("shadow")).unwrap();
    assert_eq!(shadow.permissions().mode() & 0o7777, 0o640);
    assert_eq!(shadow.gid(), group_id("shadow").unwrap());
    // Nothing changed: nothing rewritten.
    assert!(write_users(dir.path(), &set(&[30001, 30002]), &[]).unwrap().is_empty());
}

#[test]
fn users_of_other_platforms_and_the_system_lines_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Another platform on this machine wrote 30007; an operator added a line of their own.
    let others = "admin:x:1500:1500::/home/admin:/bin/bash\n\
                  30007:x:30007:30007:uwsgi.it container:/:/usr/local/lib/unbit/unbit-ssh-enter\n";
    std::fs::write(dir.path().join("passwd"), others).unwrap();
    write_users(dir.path(), &set(&[30001, 30002]), &[]).unwrap();
    // This node-sync removed 30002: only its line goes.
    write_users(dir.path(), &set(&[30001]), &[30002]).unwrap();
    assert_eq!(
        read(&dir.path().join("passwd")),
        format!("{others}30001:x:30001:30001:uwsgi.it container:/:/usr/local/lib/unbit/unbit-ssh-enter\n")
    );
    assert_eq!(read(&dir.path().join("group")), "30001:x:30001:\n");
    // A stale or doubled line of one of ours is replaced by the one line it must be.
    std::fs::write(dir.path().join("shadow"), "30001:!:::::::\n30001:*:::::::\n").unwrap();
    assert_eq!(write_users(dir.path(), &set(&[30001]), &[]).unwrap(), ["shadow"]);
    assert_eq!(read(&dir.path().join("shadow")), "30001:*:::::::\n");
}

#[test]
fn concurrent_writers_lose_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8u32)
        .map(|i| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                for round in 0..5u32 {
                    write_users(&path, &set(&[31000 + i * 10 + round]), &[]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let passwd = read(&dir.path().join("passwd"));
    assert_eq!(passwd.lines().count(), 40, "{passwd}");
    assert!(!std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".tmp")));
}
