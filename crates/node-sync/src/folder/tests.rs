use super::*;
use container_spec::fixtures::spec;

fn uids(dir: &Path) -> Vec<u32> {
    present(dir).unwrap().into_iter().collect()
}

#[test]
fn an_answer_is_written_as_one_valid_file_per_container() {
    let dir = tempfile::tempdir().unwrap();
    let r = apply(dir.path(), &[spec(30001), spec(30002)], &[], 5).unwrap();
    assert_eq!(r.written, [30001, 30002]);
    assert_eq!(uids(dir.path()), [30001, 30002]);
    let back = ContainerSpec::from_json(&std::fs::read(dir.path().join("30001.json")).unwrap()).unwrap();
    assert_eq!(back, spec(30001));
    // The same answer again touches nothing.
    assert_eq!(apply(dir.path(), &[spec(30001), spec(30002)], &[], 5).unwrap(), Report::default());
}

#[test]
fn spec_files_are_root_only_they_hold_private_keys() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    apply(dir.path(), &[spec(30001)], &[], 5).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let file = dir.path().join("30001.json");
    assert_eq!(mode(&file), 0o600);
    // A file left readable by an older version is narrowed at the next pass.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    apply(dir.path(), &[spec(30001)], &[], 5).unwrap();
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn an_empty_answer_never_removes_containers() {
    let dir = tempfile::tempdir().unwrap();
    apply(dir.path(), &[spec(30001), spec(30002)], &[], 5).unwrap();
    let r = apply(dir.path(), &[], &[], 5).unwrap();
    assert_eq!(r.held_back, [30001, 30002]);
    assert_eq!(uids(dir.path()), [30001, 30002]);
}

#[test]
fn removals_are_capped_per_pass() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<_> = (30001..30011).map(spec).collect();
    apply(dir.path(), &all, &[], 5).unwrap();
    let r = apply(dir.path(), &[spec(30001)], &[], 3).unwrap();
    assert_eq!(r.removed.len(), 3);
    assert_eq!(r.held_back.len(), 6);
    assert_eq!(uids(dir.path()).len(), 7);
}

#[test]
fn an_invalid_spec_keeps_the_last_good_file() {
    let dir = tempfile::tempdir().unwrap();
    apply(dir.path(), &[spec(30001)], &[], 5).unwrap();
    let mut bad = spec(30001);
    bad.name = "x\ny".into();
    let r = apply(dir.path(), &[bad], &[], 5).unwrap();
    assert_eq!(r.invalid.len(), 1);
    assert!(r.invalid[0].contains("container 30001"), "{:?}", r.invalid);
    let kept = ContainerSpec::from_json(&std::fs::read(dir.path().join("30001.json")).unwrap()).unwrap();
    assert_eq!(kept.name, "c30001");
}

#[test]
fn no_temp_file_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    apply(dir.path(), &[spec(30001)], &[], 5).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
