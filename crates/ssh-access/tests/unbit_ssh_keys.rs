//! The command as sshd runs it: `unbit-ssh-keys --specs <dir> <user>`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

fn run(dir: &std::path::Path, user: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unbit-ssh-keys")).arg("--specs").arg(dir).arg(user).output().unwrap()
}

#[test]
fn refusals_print_no_keys_one_reason_and_exit_zero() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = container_spec::fixtures::spec(30009);
    let file = dir.path().join("30009.json");
    std::fs::write(&file, serde_json::to_string(&spec).unwrap()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    for user in ["30009/.ssh", "030009", "root", "30010"] {
        let out = run(dir.path(), user);
        assert_eq!(out.status.code(), Some(0), "{user}");
        assert!(out.stdout.is_empty(), "{user}: {}", String::from_utf8_lossy(&out.stdout));
        let reason = String::from_utf8(out.stderr).unwrap();
        assert_eq!(reason.lines().count(), 1, "{user}: {reason}");
    }

    // The command trusts only a root-owned folder.
    let out = run(dir.path(), "30009");
    assert_eq!(out.status.code(), Some(0));
    if std::fs::metadata(dir.path()).unwrap().uid() == 0 {
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "restrict,pty ssh-ed25519 AAAA test@example\n");
    } else {
        assert!(out.stdout.is_empty());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not 0"));
    }
}

#[test]
fn a_wrong_command_line_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_unbit-ssh-keys")).arg("30009").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
