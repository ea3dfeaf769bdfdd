use super::*;
use container_spec::fixtures;

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
fn each_key_is_one_line_restricted_with_a_pty() {
    let mut spec = fixtures::spec(30009);
    spec.ssh_keys = vec!["ssh-ed25519 AAAAone a@example".into(), "  ssh-rsa AAAAtwo b@example ".into()];
    assert_eq!(
        key_lines(&spec).unwrap(),
        "restrict,pty ssh-ed25519 AAAAone a@example\nrestrict,pty ssh-rsa AAAAtwo b@example\n"
    );
    spec.ssh_keys.clear();
    assert_eq!(key_lines(&spec).unwrap(), "");
}

#[test]
fn key_lines_check_control_characters_even_without_validation() {
    for bad in ["ssh-ed25519 AAAA\nssh-ed25519 BBBB", "ssh-ed25519 AAAA\rx", "ssh-ed25519 \u{85}AAAA", "   "] {
        let mut spec = fixtures::spec(30009);
        spec.ssh_keys = vec!["ssh-ed25519 AAAAgood".into(), bad.into()];
        assert!(key_lines(&spec).is_err(), "{bad:?} was printed");
    }
}
