use super::*;

fn sample() -> ContainerSpec {
    ContainerSpec { name: "my app".into(), ..crate::fixtures::spec(30009) }
}

#[test]
fn a_sound_spec_round_trips_through_json() {
    let spec = sample();
    let json = serde_json::to_vec(&spec).unwrap();
    assert_eq!(ContainerSpec::from_json(&json).unwrap(), spec);
}

#[test]
fn derived_identity_matches_the_original_platform() {
    let spec = sample();
    assert_eq!(spec.ip().to_string(), "10.0.0.11");
    assert_eq!(spec.hostname(), "my-app");
}

#[test]
fn a_newline_in_any_customer_field_is_rejected_with_the_field_named() {
    let mut spec = sample();
    spec.name = "x\nhook-asap = exec:id".into();
    spec.alarms.slack_webhook = Some("https://hooks\r\nexample".into());
    let err = spec.validate().unwrap_err();
    let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["name", "alarms.slack_webhook"]);
    assert!(err.to_string().starts_with("container 30009: invalid spec: name: contains the control character U+000A"));
}

#[test]
fn traversal_in_distro_paths_is_rejected() {
    for bad in ["..", ".", "a/b", "", "../etc"] {
        let mut spec = sample();
        spec.distro = Distro::Platform { path: bad.into() };
        assert!(spec.validate().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn custom_distro_paths_stay_inside_the_storage_containers_distros_dir() {
    for bad in ["..", ".", "a/b", "", "../../30001", "/etc"] {
        let mut spec = sample();
        spec.distro = Distro::Custom { storage_uid: 30010, path: bad.into(), fallback: None };
        assert!(spec.validate().is_err(), "path {bad:?} accepted");
        spec.distro = Distro::Custom { storage_uid: 30010, path: "img".into(), fallback: Some(bad.into()) };
        assert!(spec.validate().is_err(), "fallback {bad:?} accepted");
    }
    let mut spec = sample();
    spec.distro = Distro::Custom { storage_uid: 30010, path: "img".into(), fallback: Some("bookworm".into()) };
    assert!(spec.validate().is_ok());
    // A storage container serves images; it never boots from one.
    spec.custom_distros_storage = true;
    assert!(spec.validate().is_err());
}

#[test]
fn specs_without_the_custom_distro_fields_keep_their_boot_identity() {
    let spec = sample();
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("custom_distros_storage") && !json.contains("customer"), "{json}");
}

#[test]
fn out_of_range_uids_are_rejected() {
    for uid in [0, 29_999, MAX_UID + 1] {
        let mut spec = sample();
        spec.uid = uid;
        assert_eq!(spec.validate().unwrap_err().errors[0].field, "uid");
    }
}

#[test]
fn unknown_fields_are_refused_rather_than_ignored() {
    let mut v = serde_json::to_value(sample()).unwrap();
    v["hook_asap"] = "exec:id".into();
    let err = ContainerSpec::from_json(v.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, SpecError::Syntax(ref m) if m.contains("hook_asap")), "{err}");
}

#[test]
fn ssh_key_changes_do_not_restart_but_memory_changes_do() {
    let a = sample();
    let mut b = a.clone();
    b.ssh_keys.push("ssh-rsa BBBB other".into());
    assert!(!a.needs_restart_for(&b));
    b.memory_mb = 600;
    assert!(a.needs_restart_for(&b));
    let mut c = a.clone();
    c.reboot_generation += 1;
    assert!(a.needs_restart_for(&c));
}

#[test]
fn alarm_setting_changes_do_not_restart() {
    let a = sample();
    let mut b = a.clone();
    b.alarms.freq = 600;
    b.alarms.quota_threshold = 10;
    b.alarms.slack_webhook = Some("https://hooks.slack.com/services/T/B/new".into());
    b.alarms.jid_secret = Some("rotated".into());
    assert!(!a.needs_restart_for(&b));
}

#[test]
fn loopbox_paths_cannot_escape_or_cover_managed_folders() {
    let ok = LoopboxSpec { id: 1, uid: 30017, filename: "zeus001".into(), mountpoint: "zeus".into(), ro: false };
    assert!(ok.validate().is_ok());
    for (f, m) in [("../x; id", "zeus"), ("zeus001", "vassals"), ("/abs", "zeus"), ("a//b", "z"), ("a", "etc/sub")] {
        let lb = LoopboxSpec { filename: f.into(), mountpoint: m.into(), ..ok.clone() };
        assert!(lb.validate().is_err(), "{f} -> {m} accepted");
    }
}
