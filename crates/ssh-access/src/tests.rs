use super::*;
use container_spec::fixtures;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A spec folder as the node keeps it (mode 0755), owned by whoever runs the test.
fn folder() -> (tempfile::TempDir, u32) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = std::fs::metadata(dir.path()).unwrap().uid();
    (dir, owner)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

fn write_spec(dir: &Path, spec: &ContainerSpec) {
    write(dir, &format!("{}.json", spec.uid), &serde_json::to_string(spec).unwrap());
}

#[test]
fn user_names_that_are_not_exactly_a_container_uid_are_refused() {
    let huge = "9".repeat(40);
    let above = (MAX_UID + 1).to_string();
    for name in [
        "30009abc",
        "030009",
        "29999",
        "30009/.ssh",
        "../30009",
        "root",
        "+30009",
        "-30009",
        " 30009",
        "30009 ",
        "30009\n",
        "",
        "0",
        "4294967296",
        huge.as_str(),
        above.as_str(),
        "３０００９",
    ] {
        assert!(parse_user(name).is_err(), "{name:?} was accepted");
    }
}

#[test]
fn container_uids_are_accepted() {
    assert_eq!(parse_user("30009"), Ok(30009));
    assert_eq!(parse_user(&BASE_UID.to_string()), Ok(BASE_UID));
    assert_eq!(parse_user(&MAX_UID.to_string()), Ok(MAX_UID));
}

#[test]
fn prints_each_key_restricted_with_a_pty() {
    let (dir, owner) = folder();
    let mut spec = fixtures::spec(30009);
    spec.ssh_keys = vec!["ssh-ed25519 AAAAone a@example".into(), "ssh-rsa AAAAtwo b@example".into()];
    write_spec(dir.path(), &spec);
    write_spec(dir.path(), &fixtures::spec(30010));
    assert_eq!(
        authorized_keys(dir.path(), "30009", owner).unwrap(),
        "restrict,pty ssh-ed25519 AAAAone a@example\nrestrict,pty ssh-rsa AAAAtwo b@example\n"
    );
    assert_eq!(authorized_keys(dir.path(), "30010", owner).unwrap(), "restrict,pty ssh-ed25519 AAAA test@example\n");
    // A name that only starts with the uid never gets that container's keys.
    assert!(authorized_keys(dir.path(), "30009/.ssh", owner).is_err());
}

#[test]
fn a_missing_undeployable_invalid_or_misnamed_spec_gives_no_keys() {
    let (dir, owner) = folder();
    let err = authorized_keys(dir.path(), "30009", owner).unwrap_err();
    assert!(err.contains("container 30009") && err.contains("30009.json"), "{err}");

    let mut keyless = fixtures::spec(30011);
    keyless.ssh_keys.clear();
    write_spec(dir.path(), &keyless);
    assert!(authorized_keys(dir.path(), "30011", owner).unwrap_err().contains("not deployable"));

    let mut invalid = fixtures::spec(30012);
    invalid.memory_mb = 0;
    write_spec(dir.path(), &invalid);
    assert!(authorized_keys(dir.path(), "30012", owner).unwrap_err().contains("memory_mb"));

    write(dir.path(), "30013.json", "{\"uid\": 30013, ");
    assert!(authorized_keys(dir.path(), "30013", owner).unwrap_err().contains("unreadable spec"));

    // 30014.json holding container 30015's spec must not open 30014 with 30015's keys.
    write(dir.path(), "30014.json", &serde_json::to_string(&fixtures::spec(30015)).unwrap());
    assert!(authorized_keys(dir.path(), "30014", owner).unwrap_err().contains("holds uid 30015"));
}

#[test]
fn a_key_with_a_newline_in_the_spec_file_gives_no_keys() {
    let (dir, owner) = folder();
    let mut spec = fixtures::spec(30009);
    spec.ssh_keys = vec!["ssh-ed25519 AAAAone\nssh-ed25519 AAAAevil".into()];
    write_spec(dir.path(), &spec);
    assert!(authorized_keys(dir.path(), "30009", owner).unwrap_err().contains("control character"));
}

#[test]
fn key_lines_check_control_characters_even_without_validation() {
    for bad in ["ssh-ed25519 AAAA\nssh-ed25519 BBBB", "ssh-ed25519 AAAA\rx", "ssh-ed25519 \u{85}AAAA", "   "] {
        let mut spec = fixtures::spec(30009);
        spec.ssh_keys = vec!["ssh-ed25519 AAAAgood".into(), bad.into()];
        assert!(key_lines(&spec).is_err(), "{bad:?} was printed");
    }
}

#[test]
fn a_folder_others_can_write_or_another_uid_owns_is_refused() {
    let (dir, owner) = folder();
    write_spec(dir.path(), &fixtures::spec(30009));
    assert!(authorized_keys(dir.path(), "30009", owner.wrapping_add(1)).unwrap_err().contains("owned by uid"));
    for mode in [0o775, 0o757, 0o1777] {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let err = authorized_keys(dir.path(), "30009", owner).unwrap_err();
        assert!(err.contains("writable by group or others"), "{mode:o}: {err}");
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = dir.path().join("30009.json");
    std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(authorized_keys(dir.path(), "30009", owner).unwrap_err().contains("writable by group or others"));
    std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(authorized_keys(dir.path(), "30009", owner).is_ok());
}

#[test]
fn a_link_fifo_or_directory_in_place_of_a_spec_gives_no_keys_and_does_not_hang() {
    let (dir, owner) = folder();
    let other = tempfile::tempdir().unwrap();
    write_spec(other.path(), &fixtures::spec(30009));
    std::os::unix::fs::symlink(other.path().join("30009.json"), dir.path().join("30009.json")).unwrap();
    assert!(authorized_keys(dir.path(), "30009", owner).is_err());

    let fifo = dir.path().join("30010.json");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    assert!(authorized_keys(dir.path(), "30010", owner).unwrap_err().contains("not a regular file"));

    std::fs::create_dir(dir.path().join("30011.json")).unwrap();
    assert!(authorized_keys(dir.path(), "30011", owner).is_err());
}
