//! Customers' ssh and sftp into their running containers (issue 13), end to end: Debian's
//! sshd with the shipped config, the real `ssh`, `scp` and `sftp` clients on loopback, the
//! broker started by the node Emperor, real containers.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use uwsgi_it::node::{key_pair, spec_json};
use uwsgi_it::ssh::SshNode;

const ALICE: u32 = 30401;
const BOB: u32 = 30402;

struct Fixture {
    ssh: SshNode,
    alice_key: PathBuf,
    bob_key: PathBuf,
}

fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    uwsgi_it::harness::shared(&SHARED, || {
        let mut ssh = SshNode::start();
        let (alice_key, alice_pub) = ssh.client_key("alice");
        let (bob_key, bob_pub) = ssh.client_key("bob");
        let keys = key_pair();
        ssh.put_container(ALICE, &spec_json(ALICE, "alice", 256, 256, &[&alice_pub], &keys));
        ssh.put_container(BOB, &spec_json(BOB, "bob", 256, 256, &[&bob_pub], &keys));
        ssh.wait_running(ALICE);
        ssh.wait_running(BOB);
        Fixture { ssh, alice_key, bob_key }
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_command_runs_inside_the_container_as_its_uid_and_returns_its_status() {
    let f = fixture();
    let user = ALICE.to_string();
    let out = f.ssh.ssh(&f.alice_key, &user, &[], Some("id -u; id -un; hostname; pwd; echo $HOME; exit 42"), b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(42), "stdout {stdout} stderr {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], user, "{stdout}");
    assert_eq!(lines[1], user, "the container knows its user: {stdout}");
    assert_eq!(lines[2], "alice", "the container's hostname: {stdout}");
    assert_eq!(lines[3], format!("/containers/{ALICE}"));
    assert_eq!(lines[4], format!("/containers/{ALICE}"));
}

#[test]
fn the_session_lives_in_the_containers_namespaces_and_sees_only_its_processes() {
    let f = fixture();
    let init = f.ssh.init_pid(ALICE).unwrap();
    let out = f.ssh.ssh(
        &f.alice_key,
        &ALICE.to_string(),
        &[],
        Some("for n in mnt pid net uts ipc; do readlink /proc/self/ns/$n; done; echo ---; ps -eo pid=,comm=; grep CapEff /proc/self/status"),
        b"",
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", text(&out.stderr));
    let (ns, rest) = stdout.split_once("---\n").unwrap();
    for (line, n) in ns.lines().zip(["mnt", "pid", "net", "uts", "ipc"]) {
        let host = std::fs::read_link(format!("/proc/{init}/ns/{n}")).unwrap();
        assert_eq!(line, host.to_string_lossy(), "{n} namespace");
    }
    assert!(rest.lines().next().unwrap().trim().starts_with("1 "), "pid 1 is the container's: {rest}");
    for banned in ["sshd", "unbit-ssh", "systemd", "init"] {
        assert!(!rest.contains(banned), "{banned} visible in the container: {rest}");
    }
    assert!(rest.contains("CapEff:\t0000000000000000"), "{rest}");
}

#[test]
fn a_terminal_session_gets_a_terminal_of_the_container() {
    let f = fixture();
    let out = f.ssh.ssh(&f.alice_key, &ALICE.to_string(), &["-tt"], None, b"tty; echo $TERM; who; exit 3\n");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with(&ALICE.to_string()) && l.contains("pts/")), "who: {stdout}");
}

#[test]
fn sftp_puts_files_in_the_home_as_the_uid() {
    let f = fixture();
    let local = f.ssh.dir.join("upload.txt");
    std::fs::write(&local, "hello from sftp\n").unwrap();
    let out = f.ssh.sftp(&f.alice_key, &ALICE.to_string(), &format!("put {} uploaded.txt\nls -l\n", local.display()));
    assert!(out.status.success(), "{} {}", text(&out.stdout), text(&out.stderr));
    let placed = f.ssh.node.home(ALICE).join("uploaded.txt");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(&placed).unwrap();
    assert_eq!((md.uid(), md.gid()), (ALICE, ALICE));
    assert_eq!(std::fs::read_to_string(&placed).unwrap(), "hello from sftp\n");
}

#[test]
fn one_containers_key_does_not_open_another() {
    let f = fixture();
    let out = f.ssh.ssh(&f.bob_key, &ALICE.to_string(), &[], Some("id -u"), b"");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stdout));
    let out = f.ssh.ssh(&f.alice_key, &BOB.to_string(), &[], Some("id -u"), b"");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stdout));
}
