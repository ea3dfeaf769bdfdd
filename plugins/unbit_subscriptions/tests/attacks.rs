//! The attack suite, as root, against stock uWSGI's HTTP router (two processes) with the
//! validator in front: every forged, foreign, replayed, flipped, misdirected, oversized,
//! garbled or flooding announce is refused with a log line naming the container, the domain
//! and the reason, the container is told on its notify socket, and the router's pools do not
//! change. Containers are played by processes running as the container uids, sending from
//! the host, with homes laid out as the container manager makes them.

mod kit;

use kit::{
    container_ip, domain_entry, eventually, flood_as, send_as, send_as_in_netns, start_router, write_domains,
    ContainerNet, FakeHome, Router, RouterSetup,
};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use unbit_subscriptions::stock::StockAnnounce;
use unbit_subscriptions::wire::{Command, PacketBuilder};

const T: Duration = Duration::from_secs(20);
const DOMAIN: &str = "alice.example";
/// Alice's second domain.
const DOMAIN2: &str = "alice.net";

struct Lab {
    _root: tempfile::TempDir,
    socket: PathBuf,
    alice_key: PKey<Private>,
    bob_key: PKey<Private>,
    /// Alice's two containers and Bob's one.
    alice: FakeHome,
    _alice2: FakeHome,
    bob: FakeHome,
    router: Router,
}

const ALICE: u32 = 30401;
const ALICE2: u32 = 30402;
const BOB: u32 = 30403;

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn public(k: &PKey<Private>) -> String {
    String::from_utf8(k.public_key_to_pem().unwrap()).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn lab() -> Lab {
    let root = tempfile::Builder::new().prefix("unbit-attacks-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let homes = root.path().join("containers");
    let subscribe = root.path().join("subscribe");
    std::fs::create_dir_all(&subscribe).unwrap();
    let (alice_key, bob_key) = (key(), key());
    let domains = root.path().join("domains.json");
    write_domains(
        &domains,
        &[
            domain_entry(DOMAIN, &[ALICE, ALICE2], &public(&alice_key)),
            domain_entry(DOMAIN2, &[ALICE, ALICE2], &public(&alice_key)),
            domain_entry("bob.example", &[BOB], &public(&bob_key)),
        ],
    );
    let socket = subscribe.join("http");
    let (alice, alice2, bob) =
        (FakeHome::new(&homes, ALICE), FakeHome::new(&homes, ALICE2), FakeHome::new(&homes, BOB));
    let router = start_router(RouterSetup::new(&socket, &homes, &domains, 2));
    Lab { alice, _alice2: alice2, bob, _root: root, socket, alice_key, bob_key, router }
}

impl Lab {
    /// A genuine announce of Alice's first container, accepted: the pool has one node.
    fn alice_subscribed(&mut self) -> (StockAnnounce, Vec<u8>) {
        let address = self.alice.socket("alice.example_1.socket");
        let mut a = StockAnnounce::new(DOMAIN, &address, now());
        a.notify = Some(self.alice.notify_socket("1"));
        let p = a.signed(Command::Subscribe, &self.alice_key);
        send_as(ALICE, &self.socket, std::slice::from_ref(&p));
        self.router.wait_for_nodes(DOMAIN, 1, T).unwrap();
        (a, p)
    }

    /// Waits for the rejection line of `uid` about `domain` containing `reason`.
    fn refused(&self, uid: u32, domain: Option<&str>, reason: &str) -> String {
        let domain = domain.map(|d| format!(" for {d}")).unwrap_or_default();
        let needle = format!("from container {uid} (pid ");
        eventually(T, || {
            let log = self.router.instance.log();
            log.lines()
                .find(|l| {
                    l.contains("REJECTED")
                        && l.contains(&needle)
                        && l.contains(&format!("){domain}: "))
                        && l.contains(reason)
                })
                .map(str::to_string)
                .ok_or_else(|| format!("no rejection of {uid}{domain} with {reason:?} in:\n{log}"))
        })
        .unwrap()
    }
}

#[test]
fn a_forged_signature_is_refused() {
    let mut lab = lab();
    let address = lab.alice.socket("a.socket");
    let mut a = StockAnnounce::new(DOMAIN, &address, now());
    a.notify = Some(lab.alice.notify_socket("1"));
    let mut corrupted = a.signed(Command::Subscribe, &lab.alice_key);
    let last = corrupted.len() - 1;
    corrupted[last] ^= 0xff;
    let made_up = a.signed(Command::Subscribe, &key());
    send_as(ALICE, &lab.socket, &[corrupted, made_up]);
    let line = lab.refused(ALICE, Some(DOMAIN), "signature does not verify with the key of the owner of alice.example");
    assert!(line.contains("[unbit_subscriptions]"), "{line}");
    let messages = eventually(T, || {
        let m = lab.alice.messages();
        if m.is_empty() {
            Err("no message".to_string())
        } else {
            Ok(m)
        }
    })
    .unwrap();
    assert!(messages[0].contains("announce for alice.example rejected: signature does not verify"), "{messages:?}");
    assert!(lab.router.nodes_of(DOMAIN).is_empty());
}

#[test]
fn another_customers_key_and_another_customers_container_are_refused() {
    let mut lab = lab();
    // Alice's container, Bob's key.
    let address = lab.alice.socket("a.socket");
    send_as(
        ALICE,
        &lab.socket,
        &[StockAnnounce::new(DOMAIN, &address, now()).signed(Command::Subscribe, &lab.bob_key)],
    );
    lab.refused(ALICE, Some(DOMAIN), "signature does not verify");
    // Bob's container, Bob's key, Bob's own socket, Alice's domain.
    let bob_address = lab.bob.socket("steal.socket");
    let mut steal = StockAnnounce::new(DOMAIN, &bob_address, now());
    steal.notify = Some(lab.bob.notify_socket("1"));
    send_as(BOB, &lab.socket, &[steal.signed(Command::Subscribe, &lab.bob_key)]);
    lab.refused(BOB, Some(DOMAIN), "container 30403 does not belong to the owner of alice.example");
    // Bob somehow holds Alice's key: the kernel-reported uid still says no.
    send_as(BOB, &lab.socket, &[steal.signed(Command::Subscribe, &lab.alice_key)]);
    eventually(T, || {
        let n =
            lab.router.instance.log().matches("container 30403 does not belong to the owner of alice.example").count();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} rejections"))
        }
    })
    .unwrap();
    assert!(lab.bob.messages().iter().any(|m| m.contains("does not belong to the owner")));
    assert!(lab.router.nodes_of(DOMAIN).is_empty());
}

#[test]
fn a_replayed_packet_is_refused() {
    let mut lab = lab();
    let (a, first) = lab.alice_subscribed();
    // Stock uWSGI sends its first announce twice in the same second: no noise for that.
    // Later, the captured packet is a replay; so is an older one after a newer refresh.
    std::thread::sleep(Duration::from_millis(2100));
    send_as(ALICE, &lab.socket, std::slice::from_ref(&first));
    lab.refused(ALICE, Some(DOMAIN), "replay: this signed subscribe");
    let mut newer = a.clone();
    newer.now = now() + 1;
    let mut older = a;
    older.now -= 1;
    send_as(
        ALICE,
        &lab.socket,
        &[newer.signed(Command::Subscribe, &lab.alice_key), older.signed(Command::Subscribe, &lab.alice_key)],
    );
    lab.refused(ALICE, Some(DOMAIN), "is not newer than the last accepted subscribe");
}

#[test]
fn a_subscribe_flipped_into_an_unsubscribe_is_refused() {
    let mut lab = lab();
    let (_, mut packet) = lab.alice_subscribed();
    packet[3] = 1;
    send_as(ALICE, &lab.socket, &[packet]);
    lab.refused(ALICE, Some(DOMAIN), "the command byte was flipped");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.router.nodes_of(DOMAIN).len(), 1, "the node must still be served");
}

#[test]
fn an_unsubscribe_from_another_container_is_refused() {
    let mut lab = lab();
    let (a, _) = lab.alice_subscribed();
    // Alice's second container (same owner, same key) tries to drop the first one's node.
    let mut bye = a.clone();
    bye.now = now();
    send_as(ALICE2, &lab.socket, &[bye.signed(Command::Unsubscribe, &lab.alice_key)]);
    lab.refused(ALICE2, Some(DOMAIN), "is in another container's home");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.router.nodes_of(DOMAIN).len(), 1);
    // The owner's own unsubscribe works.
    send_as(ALICE, &lab.socket, &[bye.signed(Command::Unsubscribe, &lab.alice_key)]);
    lab.router.wait_for_nodes(DOMAIN, 0, T).unwrap();
}

#[test]
fn addresses_of_other_containers_or_host_services_are_refused() {
    let mut lab = lab();
    let bob_socket = lab.bob.socket("bob.example_1.socket");
    let stats_port = lab.router.stats.clone();
    // Directly, through the host path, through a symlink planted in Alice's run/, and the
    // router's own stats port.
    let host_path = lab.bob.run.join("bob.example_1.socket");
    std::os::unix::fs::symlink(&host_path, lab.alice.run.join("innocent.socket")).unwrap();
    let cases = [
        (bob_socket.clone(), "is in another container's home"),
        (host_path.display().to_string(), "is in another container's home"),
        (format!("/containers/{ALICE}/run/innocent.socket"), "a symlink is in the way"),
        (stats_port.clone(), "is not the container's own address"),
        ("/run/unbit-http/subscriptions.sock".to_string(), "is outside the container's home"),
    ];
    for (address, _) in &cases {
        let p = StockAnnounce::new(DOMAIN, address, now()).signed(Command::Subscribe, &lab.alice_key);
        send_as(ALICE, &lab.socket, &[p]);
    }
    for (_, why) in &cases {
        lab.refused(ALICE, Some(DOMAIN), why);
    }
    assert!(lab.router.nodes_of(DOMAIN).is_empty());
}

/// Issue 10, finding 1, as found: Alice's vassal announced her domain on a socket, then re-used
/// the socket's name for her other domain; the first domain's router node stayed on the old
/// pin (`/proc/<validator>/fd/14`), the old descriptor was closed, Bob's next pinned socket
/// got descriptor 14, and requests for Alice's domain were answered by Bob's app.
#[test]
fn a_socket_name_reused_for_another_domain_never_lets_another_customer_serve_the_first() {
    let mut lab = lab();
    let first = lab.alice.serve("shared.socket", "alice, first domain");
    let p = StockAnnounce::new(DOMAIN, &first, now()).signed(Command::Subscribe, &lab.alice_key);
    send_as(ALICE, &lab.socket, &[p]);
    lab.router.wait_for_nodes(DOMAIN, 1, T).unwrap();
    assert!(lab.router.bodies(DOMAIN, 2).iter().all(|b| b == "alice, first domain"));

    // The same name, a new socket, for the other domain.
    let again = lab.alice.serve("shared.socket", "alice, second domain");
    let p = StockAnnounce::new(DOMAIN2, &again, now()).signed(Command::Subscribe, &lab.alice_key);
    send_as(ALICE, &lab.socket, &[p]);
    lab.router.wait_for_nodes(DOMAIN2, 1, T).unwrap();
    // Bob deploys ordinary vassals for his own domain: several sockets get pinned.
    let bob_sockets: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            let address = lab.bob.serve(&format!("bob.example_{i}.socket"), "BOB'S APP");
            StockAnnounce::new("bob.example", &address, now()).signed(Command::Subscribe, &lab.bob_key)
        })
        .collect();
    send_as(BOB, &lab.socket, &bob_sockets);
    lab.router.wait_for_nodes("bob.example", 8, T).unwrap();

    let answers = lab.router.bodies(DOMAIN, 10);
    assert!(!answers.iter().any(|b| b.contains("BOB")), "Alice's domain served by Bob's app: {answers:?}");
    assert!(lab.router.nodes_of(DOMAIN).is_empty(), "the old socket's node left the router");
    assert!(lab.router.bodies(DOMAIN2, 3).iter().all(|b| b == "alice, second domain"));
    // Every name the router holds reaches the socket it was given for.
    for node in lab.router.nodes_of("bob.example") {
        assert!(node.starts_with(&lab.router.private.path().display().to_string()), "{node}");
    }
}

/// A validator that dies leaves the router's nodes pointing at `/proc/<its pid>/fd/<n>`; that
/// pid can be reused by any process. Its names are removed when the next one starts, so those
/// nodes reach nothing.
#[test]
fn names_of_a_dead_validator_reach_nothing() {
    let mut lab = lab();
    lab.alice_subscribed();
    let old = lab.router.nodes_of(DOMAIN).remove(0);
    assert!(std::os::unix::net::UnixStream::connect(&old).is_ok());
    kill_validator(&lab);
    lab.router.instance.wait_for_log_count("validating announces on", 2, T).unwrap();
    let err = std::os::unix::net::UnixStream::connect(&old).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{old}: {err}");
}

/// Issue 10, finding 2: an IP address passes only when the node routes it to the sender's own
/// interface and the sender's namespace holds it.
#[test]
fn ip_addresses_pass_only_when_the_container_really_has_them() {
    let lab = lab();
    let node_ip =
        std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().ok().and_then(
            |o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.split_whitespace()
                    .skip_while(|w| *w != "inet")
                    .nth(1)
                    .map(|a| a.split('/').next().unwrap().to_string())
            },
        );
    let mut cases = vec![
        (format!("{}:8080", container_ip(ALICE)), "container networking is not set up for it"),
        (format!("{}:8080", container_ip(BOB)), "is not the container's own address"),
        ("127.0.0.1:8080".to_string(), "is not the container's own address"),
        ("10.0.0.42:8080".to_string(), "is not the container's own address"),
        ("192.0.2.10:80".to_string(), "is not the container's own address"),
    ];
    if let Some(ip) = node_ip {
        cases.push((format!("{ip}:22"), "is not the container's own address"));
    }
    for (address, _) in &cases {
        let p = StockAnnounce::new(DOMAIN, address, now()).signed(Command::Subscribe, &lab.alice_key);
        send_as(ALICE, &lab.socket, &[p]);
    }
    for (address, why) in &cases {
        eventually(T, || {
            let log = lab.router.instance.log();
            log.lines()
                .find(|l| l.contains("REJECTED") && l.contains(address.as_str()) && l.contains(why))
                .map(drop)
                .ok_or_else(|| format!("{address} not refused with {why:?}:\n{log}"))
        })
        .unwrap();
    }
    assert!(lab.router.nodes_of(DOMAIN).is_empty());

    // Bob's container announcing Alice's address from a namespace that holds it is still
    // refused: the node routes it to Alice's interface.
    let net = ContainerNet::create(ALICE);
    let p = StockAnnounce::new("bob.example", &format!("{}:8080", container_ip(ALICE)), now())
        .signed(Command::Subscribe, &lab.bob_key);
    send_as_in_netns(BOB, &net.netns, &lab.socket, &p);
    lab.refused(BOB, Some("bob.example"), "is not the container's own address");
    // Alice's own address, from her namespace, routed to her interface: accepted.
    let address = format!("{}:8080", container_ip(ALICE));
    let p = StockAnnounce::new(DOMAIN, &address, now()).signed(Command::Subscribe, &lab.alice_key);
    send_as_in_netns(ALICE, &net.netns, &lab.socket, &p);
    assert_eq!(lab.router.wait_for_nodes(DOMAIN, 1, T).unwrap(), [address]);
}

/// Issue 11: the router's http processes parse what the Internet sends; they run as an
/// unprivileged user, and still reach the pinned sockets through the pin holder, also after the
/// holder was killed and respawned.
#[test]
fn the_http_processes_run_without_root_and_reach_pinned_sockets() {
    let root = tempfile::Builder::new().prefix("unbit-noroot-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (homes, subscribe) = (root.path().join("containers"), root.path().join("subscribe"));
    std::fs::create_dir_all(&subscribe).unwrap();
    let key = key();
    let domains = root.path().join("domains.json");
    write_domains(&domains, &[domain_entry(DOMAIN, &[ALICE], &public(&key))]);
    let socket = subscribe.join("http");
    let mut alice = FakeHome::new(&homes, ALICE);
    let router =
        start_router(RouterSetup { router_user: Some("nobody"), ..RouterSetup::new(&socket, &homes, &domains, 2) });
    let address = alice.serve("app.socket", "hello from alice");
    send_as(ALICE, &socket, &[StockAnnounce::new(DOMAIN, &address, now()).signed(Command::Subscribe, &key)]);
    router.wait_for_nodes(DOMAIN, 1, T).unwrap();
    assert_eq!(router.bodies(DOMAIN, 3), ["hello from alice"; 3]);

    let http = processes_named(&router, "uWSGI http");
    assert_eq!(http.len(), 2, "two http processes");
    for pid in &http {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(field("Uid:").split_whitespace().skip(1).all(|u| u == "65534"), "{}", field("Uid:"));
        assert!(field("CapEff:").ends_with("0000000000000000"), "{}", field("CapEff:"));
    }

    // The holder dies: a new one gets every socket again under the same names.
    let holder = processes_named(&router, "unbit-pin-holder");
    assert_eq!(holder.len(), 1, "{}", router.instance.log());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder[0]), nix::sys::signal::Signal::SIGKILL).unwrap();
    eventually(T, || {
        let b = router.bodies(DOMAIN, 1);
        if b == ["hello from alice"] {
            Ok(())
        } else {
            Err(format!("after the holder's respawn: {b:?}\n{}", router.instance.log()))
        }
    })
    .unwrap();
}

/// Pids of the router instance's gateways called `name` (`uWSGI http`, `unbit-pin-holder`),
/// the latest spawn of each, from the master's log.
fn processes_named(router: &Router, name: &str) -> Vec<i32> {
    let mut latest = std::collections::BTreeMap::new();
    for line in router.instance.log().lines() {
        let Some(rest) = line.strip_prefix("spawned ").or_else(|| line.strip_prefix("respawned ")) else { continue };
        let Some(rest) = rest.strip_prefix(name).and_then(|r| r.strip_prefix(' ')) else { continue };
        let Some((num, pid)) = rest.split_once(" (pid: ") else { continue };
        if let Ok(pid) = pid.trim_end_matches(')').parse::<i32>() {
            latest.insert(num.to_string(), pid);
        }
    }
    latest.into_values().collect()
}

fn kill_validator(lab: &Lab) {
    let log = lab.router.instance.log();
    let pid: i32 = log
        .lines()
        .rev()
        .filter_map(|l| {
            l.strip_prefix("spawned unbit-subscriptions 1 (pid: ")
                .or_else(|| l.strip_prefix("respawned unbit-subscriptions 1 (pid: "))
        })
        .find_map(|rest| rest.trim_end_matches(')').parse().ok())
        .expect("the gateway's spawn line");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    lab.router.instance.wait_for_log("respawned unbit-subscriptions 1 (pid: ", T).unwrap();
}

#[test]
fn a_swapped_socket_name_cannot_redirect_the_router() {
    let mut lab = lab();
    let (_, _) = lab.alice_subscribed();
    let node = lab.router.nodes_of(DOMAIN).remove(0);
    assert!(
        std::fs::read_link(&node).unwrap().starts_with("/proc/"),
        "the router connects to the pinned socket: {node}"
    );
    // After the announce, Alice replaces her socket's name with a symlink to Bob's socket:
    // the router's address still reaches the socket that was checked, never Bob's.
    let bob_socket = lab.bob.run.join("bob.example_1.socket");
    lab.bob.socket("bob.example_1.socket");
    let alice_socket = lab.alice.run.join("alice.example_1.socket");
    std::fs::rename(&alice_socket, lab.alice.run.join("moved.socket")).unwrap();
    std::os::unix::fs::symlink(&bob_socket, &alice_socket).unwrap();
    for l in lab.alice.listeners.iter().chain(&lab.bob.listeners) {
        l.set_nonblocking(true).unwrap();
    }
    let _client = std::os::unix::net::UnixStream::connect(&node).unwrap();
    assert!(lab.alice.listeners[0].accept().is_ok(), "the router's address reaches Alice's checked socket");
    assert!(lab.bob.listeners[0].accept().is_err(), "and never Bob's");
    // A plain path would have been redirected.
    let _plain = std::os::unix::net::UnixStream::connect(&alice_socket).unwrap();
    assert!(lab.bob.listeners[0].accept().is_ok());
}

#[test]
fn oversized_garbled_unsigned_and_stale_packets_are_refused() {
    let mut lab = lab();
    lab.alice.container_notify_socket();
    let address = lab.alice.socket("a.socket");
    let mut truncated = PacketBuilder::new().var("key", DOMAIN).finish(Command::Subscribe);
    truncated.extend_from_slice(&[40, 0, b'a']);
    let size = (truncated.len() - 4) as u16;
    truncated[1..3].copy_from_slice(&size.to_le_bytes());
    let mut stale = StockAnnounce::new(DOMAIN, &address, now() - 3 * 86400);
    stale.notify = None;
    let packets = vec![
        vec![224u8; 5000],
        b"\x00\x01garbage".to_vec(),
        truncated,
        StockAnnounce::new(DOMAIN, &address, now()).unsigned(Command::Subscribe),
        stale.signed(Command::Subscribe, &lab.alice_key),
        // A SHA-1 signature, as the original platform's vassals made.
        PacketBuilder::new()
            .var("key", DOMAIN)
            .var("address", &address)
            .var("unix", now().to_string())
            .signed_with(|body| {
                let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &lab.alice_key).unwrap();
                s.update(body).unwrap();
                s.sign_to_vec().unwrap()
            })
            .finish(Command::Subscribe),
    ];
    send_as(ALICE, &lab.socket, &packets);
    lab.refused(ALICE, None, "oversized packet (5000 bytes, at most 4096)");
    lab.refused(ALICE, None, "garbled packet: modifier1 0 is not a subscription");
    lab.refused(ALICE, None, "runs past the end of the packet");
    lab.refused(ALICE, Some(DOMAIN), "unsigned packet");
    lab.refused(ALICE, Some(DOMAIN), "s old (window 60s): a stale or replayed packet");
    lab.refused(ALICE, Some(DOMAIN), "a SHA1 signature");
    // The container hears about the packets the validator could not even read too.
    let messages = eventually(T, || {
        let m = lab.alice.messages();
        if m.len() >= 6 {
            Ok(m)
        } else {
            Err(format!("{m:?}"))
        }
    })
    .unwrap();
    assert!(messages.iter().any(|m| m.contains("oversized packet")), "{messages:?}");
    assert!(lab.router.nodes_of(DOMAIN).is_empty());
}

#[test]
fn a_flood_from_one_container_does_not_starve_the_others() {
    let mut lab = lab();
    // Bob floods: forged announces for his own domain (each would cost an RSA verification)
    // as fast as one process can send them.
    let bob_address = lab.bob.socket("b.socket");
    let forged = StockAnnounce::new("bob.example", &bob_address, now()).signed(Command::Subscribe, &key());
    let mut flood = flood_as(BOB, &lab.socket, &forged, 5_000_000);
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile Alice's container announces a new node and is served.
    let address = lab.alice.socket("alice.example_1.socket");
    let started = std::time::Instant::now();
    send_as(
        ALICE,
        &lab.socket,
        &[StockAnnounce::new(DOMAIN, &address, now()).signed(Command::Subscribe, &lab.alice_key)],
    );
    lab.router.wait_for_nodes(DOMAIN, 1, T).unwrap();
    let waited = started.elapsed();
    let flood_still_running = flood.try_wait().unwrap().is_none();
    let _ = flood.kill();
    let _ = flood.wait();
    assert!(flood_still_running, "the flood ended before Alice's announce was served; make it longer");
    eprintln!("Alice's announce reached the router {waited:?} after it was sent, during Bob's flood");
    // Bob's flood is refused at the rate limit and summed up, not logged line by line.
    let log = eventually(Duration::from_secs(15), || {
        let log = lab.router.instance.log();
        if log.contains("more announces from container 30403 in the last 10s, not logged one by one (last reason: rate limit: more than 20 announces/s") {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .unwrap();
    let lines = log.lines().filter(|l| l.contains("REJECTED announce from container 30403")).count();
    assert!(lines <= 30, "{lines} rejection lines for one flooding container");
    assert!(lab.router.nodes_of("bob.example").is_empty());
}

/// The validator is a uWSGI gateway (`uwsgi::gateway::register`): when it dies, the router's
/// master starts a new one, which re-binds the socket and serves again.
#[test]
fn a_killed_validator_is_respawned_by_the_master() {
    let mut lab = lab();
    kill_validator(&lab);
    lab.router.instance.wait_for_log_count("validating announces on", 2, T).unwrap();
    lab.alice_subscribed();
}

/// `ssl-domain` files: the validator reads them as root, so a customer must not be able to make
/// it read (and hand the router) another container's key or certificate, or a host file: by
/// naming it, by a symlink (to the file or to a directory on the way), by a hard link (the
/// inode stays the other owner's), by `..`, or with a FIFO that would block the read. Each is
/// refused with the reason, and the router's certificate index never gets the name; the
/// container's own files pass (so the checks are what refuses the others).
#[test]
fn sni_files_of_another_container_or_of_the_host_never_reach_the_router() {
    use sni_index::testing::{server, KeyKind};
    use std::os::unix::fs::{chown, symlink};
    let mut lab = lab();
    let alice_home = lab.alice.run.parent().unwrap().to_path_buf();
    let bob_home = lab.bob.run.parent().unwrap().to_path_buf();
    let own = |home: &std::path::Path, uid: u32, rel: &str, bytes: &[u8]| {
        let path = home.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        chown(path.parent().unwrap(), Some(uid), Some(uid)).unwrap();
        std::fs::write(&path, bytes).unwrap();
        chown(&path, Some(uid), Some(uid)).unwrap();
    };
    let bobs = server(&["bob.example"], KeyKind::P256, None, 1);
    own(&bob_home, BOB, "tls/bob.key", &bobs.key_pem());
    own(&bob_home, BOB, "tls/bob.crt", &bobs.cert_pem());
    let alices = server(&[DOMAIN], KeyKind::P256, None, 2);
    own(&alice_home, ALICE, "tls/own.key", &alices.key_pem());
    own(&alice_home, ALICE, "tls/own.crt", &alices.cert_pem());
    // What a customer can make in their own home: symlinks anywhere, a FIFO. The hard links
    // are made here as root (the kernel's protected_hardlinks would stop the customer), to show
    // the validator does not rely on that.
    symlink(bob_home.join("tls/bob.key"), alice_home.join("tls/link.key")).unwrap();
    symlink(bob_home.join("tls"), alice_home.join("bobs")).unwrap();
    std::fs::hard_link(bob_home.join("tls/bob.key"), alice_home.join("tls/hard.key")).unwrap();
    let host_key = lab._root.path().join("node.key");
    std::fs::write(&host_key, bobs.key_pem()).unwrap();
    std::fs::hard_link(&host_key, alice_home.join("tls/host.key")).unwrap();
    nix::unistd::mkfifo(&alice_home.join("tls/fifo.key"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    chown(alice_home.join("tls/fifo.key"), Some(ALICE), Some(ALICE)).unwrap();

    let address = lab.alice.socket("alice.example_1.socket");
    let notify = lab.alice.notify_socket("1");
    let inside = format!("/containers/{ALICE}");
    let cases = [
        ("/containers/30403/tls/bob.key".to_string(), "is in another container's home"),
        (format!("{}/tls/bob.key", bob_home.display()), "is in another container's home"),
        (format!("{inside}/../30403/tls/bob.key"), "not a plain path in the home"),
        ("/etc/ssl/private/ssl-cert-snakeoil.key".to_string(), "is outside the container's home"),
        (host_key.display().to_string(), "is outside the container's home"),
        (format!("{inside}/tls/link.key"), "a symlink is in the way"),
        (format!("{inside}/bobs/bob.key"), "a symlink is in the way"),
        (format!("{inside}/tls/hard.key"), "it belongs to uid 30403, not to the container"),
        (format!("{inside}/tls/host.key"), "it belongs to uid 0, not to the container"),
        (format!("{inside}/tls/fifo.key"), "it is not a regular file"),
    ];
    for (i, (key, why)) in cases.iter().enumerate() {
        let mut a = StockAnnounce::new(DOMAIN, &address, now() + i as i64);
        a.notify = Some(notify.clone());
        a.sni = Some((key.clone(), format!("{inside}/tls/own.crt"), None));
        send_as(ALICE, &lab.socket, &[a.signed(Command::Subscribe, &lab.alice_key)]);
        let line = lab.refused(ALICE, Some(DOMAIN), why);
        assert!(line.contains("sni_key refused"), "{key}: {line}");
    }
    // Bob's certificate as hers, or as her client CA: refused the same way (past ten rejections
    // in ten seconds the log sums them up, with the last reason).
    for (i, (crt, ca, why)) in [
        (
            format!("{inside}/bobs/bob.crt"),
            None,
            "sni_crt refused: /containers/30401/bobs/bob.crt: a symlink is in the way",
        ),
        (
            format!("{inside}/tls/own.crt"),
            Some("!/containers/30403/tls/bob.crt".to_string()),
            "sni_ca refused: /containers/30403/tls/bob.crt is in another container's home",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut a = StockAnnounce::new(DOMAIN, &address, now() + 20 + i as i64);
        a.sni = Some((format!("{inside}/tls/own.key"), crt, ca));
        send_as(ALICE, &lab.socket, &[a.signed(Command::Subscribe, &lab.alice_key)]);
        eventually(T, || if lab.router.instance.log().contains(why) { Ok(()) } else { Err(why.to_string()) }).unwrap();
    }
    let messages = lab.alice.messages();
    assert!(messages.iter().any(|m| m.contains("rejected: sni_key refused")), "{messages:?}");
    let index = lab.router.private.path().join("sni");
    assert!(!index.join(DOMAIN).exists(), "no entry made from refused files");
    assert!(lab.router.nodes_of(DOMAIN).is_empty());

    // Her own files: accepted, indexed as hers.
    let mut a = StockAnnounce::new(DOMAIN, &address, now() + 30);
    a.notify = Some(notify);
    a.sni = Some((format!("{inside}/tls/own.key"), format!("{inside}/tls/own.crt"), None));
    send_as(ALICE, &lab.socket, &[a.signed(Command::Subscribe, &lab.alice_key)]);
    lab.router.wait_for_nodes(DOMAIN, 1, T).unwrap();
    let entry = eventually(T, || std::fs::read(index.join(DOMAIN)).map_err(|e| e.to_string())).unwrap();
    let entry = sni_index::Entry::decode(&entry).unwrap();
    assert_eq!(entry.owner, ALICE);
    assert_eq!(entry.bundle.chain[0].to_der().unwrap(), alices.cert.to_der().unwrap());
    // Only root and the router's group may read it: never the other customers.
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(index.join(DOMAIN)).unwrap());
    assert_eq!(mode & 0o007, 0, "mode {mode:o}");
}
