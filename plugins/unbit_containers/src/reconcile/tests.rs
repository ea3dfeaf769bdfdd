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

#[test]
fn a_failed_restart_is_retried_at_the_next_pass_with_a_newer_generation() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut lowered = spec(30001);
    lowered.memory_mb = 32;
    assert_eq!(
        r.plan(&[lowered.clone()], &[30001], 1001, 5),
        vec![Action::Run { spec: lowered.clone(), generation: 1001, restart: true }]
    );
    // Its home could not be prepared: the node stopped it, the Emperor still lists it while
    // it goes down. The same spec is run again, not forgotten until the next spec change.
    r.failed(30001);
    assert_eq!(
        r.plan(&[lowered.clone()], &[30001], 1001, 5),
        vec![Action::Run { spec: lowered.clone(), generation: 1002, restart: true }]
    );
    // Failing again keeps it coming back, now that it is gone from the Emperor.
    r.failed(30001);
    assert_eq!(
        r.plan(&[lowered.clone()], &[], 1010, 5),
        vec![Action::Run { spec: lowered.clone(), generation: 1010, restart: false }]
    );
    // Once it worked, nothing more to do.
    assert!(r.plan(&[lowered], &[30001], 1011, 5).is_empty());
}

#[test]
fn a_failed_key_update_becomes_a_full_run() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut rekeyed = spec(30001);
    rekeyed.ssh_keys.clear();
    assert_eq!(r.plan(&[rekeyed.clone()], &[30001], 1001, 5), vec![Action::UpdateKeys { spec: rekeyed.clone() }]);
    r.failed(30001);
    // A run prepares the whole home, keys included.
    assert_eq!(
        r.plan(&[rekeyed.clone()], &[30001], 1002, 5),
        vec![Action::Run { spec: rekeyed.clone(), generation: 1002, restart: true }]
    );
    assert_eq!(r.spec(30001), Some(&rekeyed));
}

#[test]
fn a_spec_change_while_a_retry_is_pending_is_one_run_of_the_newest_spec() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut first = spec(30001);
    first.memory_mb = 32;
    r.plan(&[first], &[30001], 1001, 5);
    r.failed(30001);
    let mut second = spec(30001);
    second.memory_mb = 48;
    assert_eq!(
        r.plan(&[second.clone()], &[30001], 1001, 5),
        vec![Action::Run { spec: second, generation: 1002, restart: true }]
    );
}

#[test]
fn failures_of_unknown_or_removed_containers_are_ignored() {
    let mut r = Reconciler::default();
    r.failed(30001);
    assert_eq!(r.plan(&[], &[], 1000, 5), vec![]);
    r.plan(&[spec(30002)], &[], 1000, 5);
    assert_eq!(r.plan(&[], &[30002], 1001, 5), vec![Action::Stop { uid: 30002 }]);
    r.failed(30002);
    assert_eq!(r.plan(&[], &[30002], 1002, 5), vec![]);
}

#[test]
fn new_keys_for_a_container_that_is_not_running_come_with_its_run() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut rekeyed = spec(30001);
    rekeyed.ssh_keys.push("ssh-rsa BBBB other".into());
    // One action: a failure of a separate key update could not be told from the run's.
    assert_eq!(
        r.plan(&[rekeyed.clone()], &[], 1001, 5),
        vec![Action::Run { spec: rekeyed, generation: 1000, restart: false }]
    );
}

#[test]
fn a_link_change_updates_the_network_and_restarts_nothing() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut linked = spec(30001);
    linked.links = vec![30002];
    assert_eq!(r.plan(&[linked.clone()], &[30001], 1001, 5), vec![Action::UpdateNetwork { spec: linked.clone() }]);
    // Unlinking likewise; keys and links together are both updates, still no restart.
    let mut both = spec(30001);
    both.ssh_keys.push("ssh-ed25519 BBBB other".into());
    assert_eq!(
        r.plan(&[both.clone()], &[30001], 1002, 5),
        vec![Action::UpdateKeys { spec: both.clone() }, Action::UpdateNetwork { spec: both }]
    );
}

#[test]
fn a_link_change_of_a_container_that_is_not_running_comes_with_its_run() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut linked = spec(30001);
    linked.links = vec![30002];
    assert_eq!(
        r.plan(&[linked.clone()], &[], 1001, 5),
        vec![Action::Run { spec: linked, generation: 1000, restart: false }]
    );
}

#[test]
fn a_dmz_change_or_a_link_change_with_another_change_restarts() {
    let mut r = Reconciler::default();
    r.plan(&[spec(30001)], &[], 1000, 5);
    let mut dmz = spec(30001);
    dmz.dmz = true;
    assert!(matches!(r.plan(&[dmz.clone()], &[30001], 1001, 5)[..], [Action::Run { restart: true, .. }]));
    let mut more = dmz.clone();
    more.links = vec![30003];
    more.memory_mb += 1;
    assert!(matches!(r.plan(&[more], &[30001], 1002, 5)[..], [Action::Run { restart: true, .. }]));
}
