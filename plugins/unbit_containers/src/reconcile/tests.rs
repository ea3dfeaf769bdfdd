use super::*;
use container_spec::fixtures::spec;

#[test]
fn a_new_spec_starts_a_container() {
    let mut r = Reconciler::default();
    let a = r.plan(&[spec(30001)], &[], 1000, 5);
    assert_eq!(a, vec![Action::Run { spec: spec(30001), generation: 1000, restart: false }]);
}

#[test]
fn an_unchanged_running_spec_does_nothing() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    assert!(r.plan(&[spec(30001)], &[30001], 1001, 5).is_empty());
}

#[test]
fn a_memory_change_restarts_with_a_newer_generation() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut resized = spec(30001);
    resized.memory_mb = 256;
    // Even if the clock did not move, the generation grows, or the Emperor would not reload.
    let a = r.plan(&[resized.clone()], &[30001], 1000, 5);
    assert_eq!(a, vec![Action::Run { spec: resized, generation: 1001, restart: true }]);
}

#[test]
fn an_explicit_reboot_restarts() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut rebooted = spec(30001);
    rebooted.reboot_generation = 1;
    assert!(matches!(
        r.plan(&[rebooted], &[30001], 2000, 5)[..],
        [Action::Run { restart: true, generation: 2000, .. }]
    ));
}

#[test]
fn an_ssh_key_change_rewrites_the_keys_and_restarts_nothing() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut rekeyed = spec(30001);
    rekeyed.ssh_keys.push("ssh-rsa BBBB other".into());
    assert_eq!(r.plan(&[rekeyed.clone()], &[30001], 1001, 5), vec![Action::UpdateKeys { spec: rekeyed }]);
}

#[test]
fn removals_are_capped_per_pass() {
    let mut r = Reconciler::default();
    let all: Vec<_> = (30001..30011).map(spec).collect();
    r.plan(&all, &[], 1000, 5);
    let running: Vec<u32> = (30001..30011).collect();
    let first = r.plan(&[], &running, 1001, 3);
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|a| matches!(a, Action::Stop { .. })));
    assert_eq!(r.plan(&[], &running, 1002, 3).len(), 3);
}

#[test]
fn a_container_that_vanished_from_the_emperor_is_handed_over_again() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let a = r.plan(&[spec(30001)], &[], 1500, 5);
    assert_eq!(a, vec![Action::Run { spec: spec(30001), generation: 1000, restart: false }]);
}
