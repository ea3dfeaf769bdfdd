//! Clustering (issue 17) against the real kernel, as root: three nodes of a Legion, each in a
//! network namespace this test creates, joined by a bridge in a fourth namespace (the "LAN",
//! 192.168.250.0/24, where the test's client sits at .254). Each node runs a node Emperor, the
//! HTTP router of `vassals-examples/services/http.ini` (rendered as `make run` renders it, with
//! the node's folders and addresses), and the fastrouter instance of
//! `vassals-examples/legion/fastrouter.ini`: stock uWSGI's Legion member, the fastrouter, the
//! validator of `/subscribe/fastrouter` and the cluster's relay and receiver
//! (`plugins/unbit_cluster`). Node A has the highest valor (the Lord, holding the floating
//! address .100) and no container; B and C each run one container of the same customer with
//! `cluster-domain = cluster.example`.
//!
//! HTTPS: every node's router has an https socket with the node's own default certificate and
//! the front door (`plugins/unbit_router`); an `ssl-cluster-domain` served by a container on
//! C only is answered on the Lord with the customer's certificate, which C's relay sealed to
//! each member's X25519 key.
//!
//! Nothing leaves the namespaces; they go with their descriptors, the instances are stopped by
//! PID, the nodes' folders and cgroups removed, also when a check fails. Uids 31201-31209,
//! 31251 and 31252 are this file's.

mod cluster_kit;

use cluster_kit::domains_kit::eventually;
use cluster_kit::*;
use std::time::Instant;
use unbit_cluster::message::{self, Announce, Cmd};
use unbit_cluster::sealed::{self, Header, Op};

fn count(bodies: &[String], text: &str) -> usize {
    bodies.iter().filter(|b| b.as_str() == text).count()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn announce(node: &str, seq: u64, key: &str) -> Announce {
    Announce { node: node.into(), seq, unix_ms: now_ms(), cmd: Cmd::Subscribe, key: key.into() }
}

#[test]
fn a_cluster_domain_is_balanced_across_nodes_through_the_lord_and_survives_its_death() {
    let mut cluster = Cluster::start(true);
    let lord = cluster.wait_for_lord();
    assert_eq!(lord, "a", "the highest valor is the Lord");

    // A has no container: the domain reaches it from B and C, each through its fastrouter.
    let a = &cluster.nodes[0];
    let nodes = eventually(T, || {
        let n = a.nodes_of(DOMAIN);
        if n.len() == 2 {
            Ok(n)
        } else {
            Err(format!("the Lord's router has {n:?} for {DOMAIN}"))
        }
    })
    .unwrap();
    assert!(nodes.contains(&"192.168.250.2:1999".to_string()) && nodes.contains(&"192.168.250.3:1999".to_string()));
    for peer in ["b", "c"] {
        assert!(
            a.cluster_log().contains(&format!("cluster: accepted {DOMAIN} from member {peer}")),
            "{}",
            a.cluster_log()
        );
    }
    let bodies = cluster.through_floating(20);
    let (on_b, on_c) = (count(&bodies, "served by node b"), count(&bodies, "served by node c"));
    assert!(on_b >= 5 && on_c >= 5, "balanced across both nodes: {bodies:?}");

    // B's own router has its container directly (pinned) and C's fastrouter.
    let b_nodes = cluster.nodes[1].nodes_of(DOMAIN);
    assert_eq!(b_nodes.len(), 2, "{b_nodes:?}");
    assert!(b_nodes.contains(&"192.168.250.3:1999".to_string()), "{b_nodes:?}");

    // C's only vassal of the domain goes: C tells the Legion, the Lord drops C's fastrouter
    // (within seconds, not the routers' 30 s tolerance); it comes back with the vassal.
    let c_vassal = cluster.nodes[2].emperor.as_ref().unwrap().home(C_UID).join("vassals/app.ini");
    let text = std::fs::read_to_string(&c_vassal).unwrap();
    std::fs::remove_file(&c_vassal).unwrap();
    let a = &cluster.nodes[0];
    eventually(T, || match a.nodes_of(DOMAIN) {
        n if n == ["192.168.250.2:1999"] => Ok(()),
        n => Err(format!("the Lord's router still has {n:?}")),
    })
    .unwrap();
    assert!(a.cluster_log().contains(&format!("cluster: member c no longer serves {DOMAIN}")), "{}", a.cluster_log());
    assert_eq!(count(&cluster.through_floating(6), "served by node b"), 6);
    std::fs::write(&c_vassal, text).unwrap();
    eventually(T, || match a.nodes_of(DOMAIN).len() {
        2 => Ok(()),
        n => Err(format!("{n} nodes")),
    })
    .unwrap();

    // The Lord dies: its link goes (the machine is gone for the others), then its processes.
    let killed = Instant::now();
    cluster.nodes[0].ns.sh("ip link set lan0 down");
    let a = cluster.nodes.remove(0);
    drop(a);
    let moved = cluster.wait_for_lord();
    assert_eq!(moved, "b", "the next valor takes the address");
    let address_moved = killed.elapsed();
    eventually(T, || match cluster.lan.run(|| get(FLOATING, DOMAIN)) {
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    })
    .unwrap();
    let resumed = killed.elapsed();
    eprintln!(
        "failover: address on the new Lord {:.1} s, requests served again {:.1} s after the Lord died",
        address_moved.as_secs_f64(),
        resumed.as_secs_f64()
    );
    let bodies = cluster.through_floating(20);
    let (on_b, on_c) = (count(&bodies, "served by node b"), count(&bodies, "served by node c"));
    assert!(on_b >= 5 && on_c >= 5, "still balanced across B and C: {bodies:?}");

    // C dies too: the new Lord's router drops C's fastrouter (at the first refused or timed-out
    // connection, or after 30 s of silence) and B's container serves every request.
    cluster.nodes[1].ns.sh("ip link set lan0 down");
    let c = cluster.nodes.remove(1);
    drop(c);
    eventually(T, || {
        let bodies = cluster.through_floating(6);
        if count(&bodies, "served by node b") == 6 {
            Ok(())
        } else {
            Err(format!("{bodies:?}"))
        }
    })
    .unwrap();
    // ...and leaves its pool when C has been silent for the routers' tolerance (30 s). Stock
    // uWSGI drops a silent node when it looks the domain up for a request (and not while a
    // request's connection to it is pending), so requests keep coming meanwhile.
    let b = &cluster.nodes[0];
    eventually(T, || {
        cluster.through_floating(1);
        match b.nodes_of(DOMAIN) {
            n if n.iter().any(|n| n == "192.168.250.3:1999") => Err(format!("B's router still has {n:?}")),
            _ => Ok(()),
        }
    })
    .unwrap();
}

#[test]
fn forged_replayed_and_foreign_announces_are_refused_and_logged() {
    let cluster = Cluster::start(false);
    let (b, c) = (&cluster.nodes[1], &cluster.nodes[2]);
    let stranger = node_key();

    // A node that is not a member, with a key of its own.
    let foreign = message::seal(&announce("intruder", 1, "foreign.example"), &stranger.key).unwrap();
    cluster.send_from(&cluster.lan, CLIENT, b, &[foreign]);
    b.cluster.as_ref().unwrap().wait_for_log("REFUSED an announce from 192.168.250.254", T).unwrap();
    assert!(b.cluster_log().contains("intruder is not a member of this Legion"), "{}", b.cluster_log());

    // Member C's name, from C's own address, signed with another key.
    let forged = message::seal(&announce("c", u64::MAX / 2, "forged.example"), &stranger.key).unwrap();
    cluster.send_from(&c.ns, c.ip, b, &[forged]);
    b.cluster.as_ref().unwrap().wait_for_log("bad signature for member c (announce of forged.example)", T).unwrap();

    // C's name and key, from another address.
    let elsewhere = message::seal(&announce("c", u64::MAX / 2, "elsewhere.example"), &c.key.key).unwrap();
    cluster.send_from(&cluster.lan, CLIENT, b, &[elsewhere]);
    b.cluster.as_ref().unwrap().wait_for_log("claims to be member c but comes from 192.168.250.254", T).unwrap();

    // A genuine announce by C, then the same bytes again. (Numbered above C's own relay, whose
    // announces B now refuses as replays: this test does not need them.)
    let genuine = message::seal(&announce("c", u64::MAX / 2, "replay.example"), &c.key.key).unwrap();
    cluster.send_from(&c.ns, c.ip, b, std::slice::from_ref(&genuine));
    b.cluster.as_ref().unwrap().wait_for_log("cluster: accepted replay.example from member c", T).unwrap();
    cluster.send_from(&c.ns, c.ip, b, &[genuine]);
    b.cluster.as_ref().unwrap().wait_for_log("announce of replay.example by member c: replayed", T).unwrap();
    // An old announce, never seen, with a fresh sequence number.
    let stale = message::seal(
        &Announce { unix_ms: now_ms() - 3_600_000, ..announce("c", u64::MAX / 2 + 5, "stale.example") },
        &c.key.key,
    )
    .unwrap();
    cluster.send_from(&c.ns, c.ip, b, &[stale]);
    b.cluster.as_ref().unwrap().wait_for_log("announce of stale.example by member c: stale", T).unwrap();

    // What the router got: the genuine announce only, pointing at C's fastrouter.
    assert_eq!(b.nodes_of("replay.example"), ["192.168.250.3:1999"]);
    for refused in ["foreign.example", "forged.example", "elsewhere.example", "stale.example"] {
        assert!(b.nodes_of(refused).is_empty(), "{refused} reached the router");
    }
}

/// The child of `master` whose command line (its process title) contains `name`.
fn child_named(master: u32, name: &str) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse().ok()).find(|p: &i32| {
        std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(name))
    })
}

#[test]
fn an_ssl_cluster_domain_of_another_node_is_served_over_https_by_the_lord_and_after_its_death() {
    let mut cluster = Cluster::start(false);
    let lord = cluster.wait_for_lord();
    assert_eq!(lord, "a");
    // Before any container serves it, the Lord has no certificate for the name: its own.
    assert_eq!(subject_cn(&cluster.served_certificate(FLOATING, TLS_DOMAIN).unwrap()), "node-a.default");

    // Only C runs a container of the domain, with the customer's certificate (serial 1).
    let home = cluster.serve_tls(2);
    let body = eventually(T, || cluster.curl_https(FLOATING, TLS_DOMAIN)).unwrap();
    assert_eq!(body, "served by node c");
    // Every http process of the shipped router (http-processes = 4) serves it within the front
    // door's 1 s re-check of a name it found no entry for.
    eventually(T, || {
        let served = cluster.served_certificate(FLOATING, TLS_DOMAIN)?;
        match (subject_cn(&served), serial(&served)) {
            (cn, 1) if cn == TLS_DOMAIN => Ok(()),
            other => Err(format!("the Lord serves {other:?}, not the customer's certificate")),
        }
    })
    .unwrap();
    let a = &cluster.nodes[0];
    assert!(
        a.cluster_log().contains(&format!("cluster: serving the certificate of {TLS_DOMAIN} from member c")),
        "{}",
        a.cluster_log()
    );
    // On the Lord the pair is a file of the router's cluster index that only root and the
    // router's user (the shipped config's http-uid) read.
    let entry = a.router.as_ref().unwrap().private.join("cluster-sni").join(TLS_DOMAIN);
    let md = std::fs::metadata(&entry).unwrap();
    let router_gid = nix::unistd::Group::from_name("unbit-router").unwrap().unwrap().gid.as_raw();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.mode() & 0o777, md.uid(), md.gid()), (0o440, 0, router_gid), "{}", entry.display());
    // B, not the Lord, has it too: ready for a failover.
    let b_entry = cluster.nodes[1].router.as_ref().unwrap().private.join("cluster-sni").join(TLS_DOMAIN);
    assert!(b_entry.exists());

    // The Lord's receiver dies and its master starts another: the pair stays in the Lord's
    // index (the members send it again within 30 s; meanwhile the previous one is kept), and
    // the Lord goes on serving it.
    let a_cluster = a.cluster.as_ref().unwrap();
    let receiver = child_named(a_cluster.pid(), "unbit-cluster-receiver").expect("the Lord's receiver process");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(receiver), nix::sys::signal::Signal::SIGKILL).unwrap();
    a_cluster.wait_for_log("kept 1 certificates of the previous receiver", T).unwrap();
    assert!(entry.exists(), "the respawned receiver kept {}", entry.display());
    // (past the front door's 1 s re-check of the entry)
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(serial(&cluster.served_certificate(FLOATING, TLS_DOMAIN).unwrap()), 1);

    // Renewal: the customer replaces the pair on C; the Lord serves the new one (at C's
    // vassal's next announce, every 10 s, plus the router's 1 s re-check).
    let renewed = Instant::now();
    cluster.write_tls(&home, 2);
    eventually(T, || match cluster.served_certificate(FLOATING, TLS_DOMAIN).map(|c| serial(&c)) {
        Ok(2) => Ok(()),
        other => Err(format!("the Lord serves {other:?}")),
    })
    .unwrap();
    eprintln!(
        "renewal: the Lord serves the new certificate {:.1} s after it was written",
        renewed.elapsed().as_secs_f64()
    );

    // The Lord dies: B takes the address and serves the domain with the customer's certificate.
    cluster.nodes[0].ns.sh("ip link set lan0 down");
    let a = cluster.nodes.remove(0);
    drop(a);
    let moved = cluster.wait_for_lord();
    assert_eq!(moved, "b");
    let body = eventually(T, || cluster.curl_https(FLOATING, TLS_DOMAIN)).unwrap();
    assert_eq!(body, "served by node c");
    assert_eq!(serial(&cluster.served_certificate(FLOATING, TLS_DOMAIN).unwrap()), 2);

    // C stops serving the domain: the new Lord's cluster index drops the pair; the name gets
    // B's own certificate again (and curl refuses it).
    std::fs::remove_file(home.join("vassals/app.ini")).unwrap();
    let b = &cluster.nodes[0];
    b.cluster.as_ref().unwrap().wait_for_log(&format!("no member serves {TLS_DOMAIN} with a certificate"), T).unwrap();
    assert!(!b_entry.exists());
    eventually(T, || match cluster.served_certificate(FLOATING, TLS_DOMAIN).map(|c| subject_cn(&c)) {
        Ok(cn) if cn == "node-b.default" => Ok(()),
        other => Err(format!("the Lord serves {other:?}")),
    })
    .unwrap();
    // (past the 1 s re-check of every http process that still held the context)
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(cluster.curl_https(FLOATING, TLS_DOMAIN).is_err());
}

#[test]
fn an_ssl_ca_cluster_domain_of_another_node_keeps_its_client_certificate_rule_on_the_lord() {
    let cluster = Cluster::start(false);
    assert_eq!(cluster.wait_for_lord(), "a");
    // Only C runs it: `ssl-ca-cluster-domain` with `!` (a client certificate required).
    cluster.serve_tls_ca(2);
    let body = eventually(T, || cluster.curl_https_as_alice(FLOATING, PROTECTED_DOMAIN)).unwrap();
    assert_eq!(body, "served by node c", "with a client certificate of the customer's CA");
    // Without one, the Lord refuses as C's own router would: the handshake, plain HTTP (403),
    // and another TLS connection with the protected Host (421).
    let refused = cluster.curl_https(FLOATING, PROTECTED_DOMAIN).unwrap_err();
    assert!(!refused.is_empty());
    let plain = cluster.lan.run(|| get(FLOATING, PROTECTED_DOMAIN)).unwrap_err();
    assert!(plain.contains("403"), "{plain}");
    let misdirected = cluster.lan.run(|| {
        std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-H"])
            .arg(format!("Host: {PROTECTED_DOMAIN}"))
            .arg(format!("https://{FLOATING}/"))
            .output()
            .unwrap()
    });
    assert_eq!(
        String::from_utf8_lossy(&misdirected.stdout),
        "421",
        "the Lord's default certificate, the protected Host"
    );
    let a = &cluster.nodes[0];
    let rule = a.router.as_ref().unwrap().private.join("cluster-sni/@client-ca");
    assert_eq!(std::fs::read_to_string(rule).unwrap(), format!("{PROTECTED_DOMAIN} required\n"));
}

#[test]
fn tampered_replayed_and_misdirected_sealed_certificates_are_refused_and_logged() {
    let cluster = Cluster::start(false);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let public = |k: &openssl::pkey::PKey<openssl::pkey::Private>| {
        openssl::pkey::PKey::public_key_from_raw_bytes(&k.raw_public_key().unwrap(), openssl::pkey::Id::X25519).unwrap()
    };
    let pair = sni_index::testing::server(&["sealed.example"], sni_index::testing::KeyKind::P256, None, 1);
    let entry = sni_index::Bundle::from_pem(&pair.cert_pem(), &pair.key_pem(), None)
        .unwrap()
        .encode("sealed.example", TLS_UID, "~/tls.crt")
        .unwrap();
    // Numbered as C numbers (its clock in ns), a little ahead: a receiver refuses anything
    // numbered before it started.
    let base = now_ms() as u64 * 1_000_000 + 5_000_000_000;
    let head = |to: &str, seq: u64| Header {
        node: "c".into(),
        to: to.into(),
        seq: base + seq,
        unix_ms: now_ms(),
        op: Op::Put,
        name: "sealed.example".into(),
    };
    let log = |needle: &str| b.cluster.as_ref().unwrap().wait_for_log(needle, T).unwrap();

    // C says it serves the name, then gives B its certificate: B writes it.
    let serves = message::seal(&announce("c", base + 10, "sealed.example"), &c.key.key).unwrap();
    cluster.send_from(&c.ns, c.ip, b, &[serves]);
    let genuine = sealed::seal(&head("b", 11), Some(&entry), &c.key.key, &public(&b.key.x25519)).unwrap();
    cluster.send_from(&c.ns, c.ip, b, std::slice::from_ref(&genuine));
    log("cluster: serving the certificate of sealed.example from member c");
    let index = b.router.as_ref().unwrap().private.join("cluster-sni");
    assert_eq!(std::fs::read(index.join("sealed.example")).unwrap(), entry);

    // The same datagram again.
    cluster.send_from(&c.ns, c.ip, b, std::slice::from_ref(&genuine));
    log("certificate of sealed.example by member c: replayed");

    // A bit of the ciphertext flipped on the way.
    let mut flipped = sealed::seal(&head("b", 12), Some(&entry), &c.key.key, &public(&b.key.x25519)).unwrap();
    let at = flipped.len() - 100;
    flipped[at] ^= 1;
    cluster.send_from(&c.ns, c.ip, b, &[flipped]);
    log("bad signature for member c (certificate of sealed.example)");

    // Signed by C but sealed to another key than B's: it does not open.
    let other = openssl::pkey::PKey::generate_x25519().unwrap();
    let wrong_key = sealed::seal(&head("b", 13), Some(&entry), &c.key.key, &public(&other)).unwrap();
    cluster.send_from(&c.ns, c.ip, b, &[wrong_key]);
    log("does not decrypt with this node's X25519 key");

    // Sealed to A, sent to B.
    let for_a = sealed::seal(&head("a", 14), Some(&entry), &c.key.key, &public(&a.key.x25519)).unwrap();
    cluster.send_from(&c.ns, c.ip, b, &[for_a]);
    log("the certificate of sealed.example by member c is sealed to member a");

    // C's name and key, from the LAN; and a node that is not a member.
    let elsewhere = sealed::seal(&head("b", 15), Some(&entry), &c.key.key, &public(&b.key.x25519)).unwrap();
    cluster.send_from(&cluster.lan, CLIENT, b, &[elsewhere]);
    log("REFUSED a sealed certificate from 192.168.250.254");
    assert!(b.cluster_log().contains("claims to be member c but comes from 192.168.250.254"));

    // None of these changed what B holds: the genuine pair, nothing else.
    assert_eq!(std::fs::read(index.join("sealed.example")).unwrap(), entry);
    let entries: Vec<String> = std::fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('@'))
        .collect();
    assert_eq!(entries, ["sealed.example"]);
}
