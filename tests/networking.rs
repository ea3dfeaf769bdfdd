//! Container networking (issue 14) against the real kernel, as root: a node Emperor with
//! `--unbit-network true` in a network namespace this test creates, with a veth "uplink" to a
//! second namespace standing in for the Internet (198.18.0.0/24, the benchmarking range). No
//! packet reaches anything but those namespaces and the containers' own: the node namespace
//! has no other interface than `lo`, the uplink and the containers' veths.
//!
//! The containers are probed from inside their namespaces by threads of this test that
//! entered them (`setns`), as root there: what a customer with root in their container could
//! do at most. Uids 30501-30509 and 30901-30903 (names) are this file's.

use container_net::link::{Netlink, Route};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uwsgi_it::host::{pids_of_uid, wait_until};
use uwsgi_it::netns::{Netns, Server};
use uwsgi_it::node::{key_pair, spec_json, TestNode};

const A: u32 = 30501;
const B: u32 = 30502;
const C: u32 = 30503;
const D: u32 = 30504;
const NODE_UPLINK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

fn ip(uid: u32) -> Ipv4Addr {
    container_spec::ip_of(uid)
}

// ---- namespaces ----

/// What these tests read of a namespace (the kit's `Netns` makes, enters and holds it).
trait Inspect {
    fn nft(&self, args: &[&str]) -> String;
    fn links(&self) -> Vec<String>;
    fn routes(&self) -> String;
}

impl Inspect for Netns {
    fn nft(&self, args: &[&str]) -> String {
        self.run(|| {
            let out = std::process::Command::new("nft").args(args).output().expect("nft (Debian package nftables)");
            assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    }

    fn links(&self) -> Vec<String> {
        self.run(|| Netlink::open().unwrap().link_names().unwrap())
    }

    fn routes(&self) -> String {
        self.run(|| std::fs::read_to_string("/proc/thread-self/net/route").unwrap())
    }
}

// ---- servers and probes ----

fn tcp_server(ns: &Netns, at: SocketAddr, tag: &str) -> Server {
    let tag = tag.to_string();
    ns.tcp_server(at, move |peer| format!("{tag} {}", peer.ip()))
}

/// A UDP server counting datagrams.
fn udp_server(ns: &Netns, at: &str) -> (Server, Arc<AtomicUsize>) {
    let (server, flag) = Server::new();
    let count = Arc::new(AtomicUsize::new(0));
    let socket = ns.run(|| UdpSocket::bind(at).unwrap_or_else(|e| panic!("bind {at}: {e}")));
    socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let n = count.clone();
    ns.spawn(move || {
        let mut buf = [0u8; 512];
        while !flag.load(Ordering::SeqCst) {
            if socket.recv_from(&mut buf).is_ok() {
                n.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (server, count)
}

/// What a TCP client in `ns` gets from `to`, `None` when it cannot connect (dropped or
/// refused) within the timeout.
fn probe(ns: &Netns, to: SocketAddr) -> Option<String> {
    ns.probe(to, Duration::from_millis(700))
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Waits until `probe` answers `want` (Some) or keeps failing (None) for a while.
fn eventually(what: &str, mut probe: impl FnMut() -> bool) -> Duration {
    wait_until(what, Duration::from_secs(10), &mut probe)
}

// ---- the node ----

struct World {
    node: Option<TestNode>,
    node_ns: Netns,
    internet: Netns,
    keys: (String, String),
    portmaps: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let node_ns = Netns::new();
        let internet = Netns::new();
        // The uplink: upl0 in the node, inet0 in the stand-in Internet, and the node's
        // default route through it. Nothing else leaves the node namespace.
        let inet_fd = internet.0.try_clone().unwrap();
        node_ns.run(move || {
            let mut nl = Netlink::open().unwrap();
            nl.create_veth("upl0", "inet0", inet_fd.as_fd()).unwrap();
            let upl = nl.index_of("upl0").unwrap().unwrap();
            nl.add_address(upl, NODE_UPLINK, 24).unwrap();
            nl.set_up(upl).unwrap();
            let lo = nl.index_of("lo").unwrap().unwrap();
            nl.set_up(lo).unwrap();
            nl.add_route(&Route {
                dst: Ipv4Addr::UNSPECIFIED,
                len: 0,
                dev: upl,
                gateway: Some(INTERNET),
                prefsrc: None,
            })
            .unwrap();
        });
        internet.run(|| {
            let mut nl = Netlink::open().unwrap();
            let i = nl.index_of("inet0").unwrap().unwrap();
            nl.add_address(i, INTERNET, 24).unwrap();
            // A cloud's metadata service, beyond the uplink like the real ones.
            nl.add_address(i, METADATA, 32).unwrap();
            nl.set_up(i).unwrap();
            // Someone on the Internet who tries the containers' private addresses directly.
            nl.add_route(&Route {
                dst: Ipv4Addr::new(10, 0, 0, 0),
                len: 8,
                dev: i,
                gateway: Some(NODE_UPLINK),
                prefsrc: None,
            })
            .unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let portmaps = dir.path().join("portmappings.json");
        let pm = portmaps.to_string_lossy().into_owned();
        let node = node_ns.run(|| {
            TestNode::start(&["--unbit-network", "true", "--unbit-network-uplink", "upl0", "--unbit-portmappings", &pm])
        });
        node.emperor().wait_for_log("container networking on: table inet unbit", Duration::from_secs(10)).unwrap();
        World { node: Some(node), node_ns, internet, keys: key_pair(), portmaps, _dir: dir }
    }

    fn node(&self) -> &TestNode {
        self.node.as_ref().unwrap()
    }

    fn put(&self, uid: u32, links: &[u32], dmz: bool) {
        let mut spec: serde_json::Value = serde_json::from_str(&spec_json(
            uid,
            &format!("net{uid}"),
            256,
            256,
            &["ssh-ed25519 AAAA net"],
            &self.keys,
        ))
        .unwrap();
        spec["links"] = serde_json::json!(links);
        spec["dmz"] = serde_json::json!(dmz);
        self.node().put_spec(uid, &spec.to_string());
    }

    /// The container's namespace once its `uwsgi0` is up.
    fn container(&self, uid: u32) -> Netns {
        let mut found = None;
        wait_until(&format!("container {uid} running with uwsgi0"), Duration::from_secs(60), || {
            found = pids_of_uid(uid).into_iter().filter_map(Netns::of_pid).find(|ns| {
                ns.inode() != self.node_ns.inode()
                    && ns.run(|| Netlink::open().unwrap().index_of("uwsgi0").unwrap().is_some())
            });
            found.is_some()
        });
        found.unwrap()
    }

    fn table_json(&self) -> serde_json::Value {
        normalized(&self.node_ns.nft(&["-j", "list", "table", "inet", "unbit"]))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The Emperor stops from its own namespace's point of view; the namespaces go with
        // their descriptors after it.
        if let Some(mut node) = self.node.take() {
            if let Some(mut e) = node.emperor.take() {
                e.stop();
            }
        }
    }
}

fn normalized(json: &str) -> serde_json::Value {
    container_net::firewall::comparable(json).unwrap()
}

fn tag_of(answer: Option<String>) -> Option<String> {
    answer.and_then(|a| a.split_whitespace().next().map(str::to_string))
}

#[test]
fn containers_are_isolated_linked_natted_and_torn_down() {
    let w = World::start();
    let started = Instant::now();
    // A and D (dmz) link each other later; B links A from the start (one-sided until A links
    // back); C links nobody.
    w.put(A, &[], false);
    w.put(B, &[A], false);
    w.put(C, &[], false);
    w.put(D, &[A], true);
    let (a, b, c, d) = (w.container(A), w.container(B), w.container(C), w.container(D));
    eprintln!("four containers with networking up in {:?}", started.elapsed());
    let mut servers: std::collections::BTreeMap<u32, Server> = [(&a, A, "A"), (&b, B, "B"), (&c, C, "C"), (&d, D, "D")]
        .iter()
        .map(|(ns, uid, t)| (*uid, tcp_server(ns, at(ip(*uid), 7000), t)))
        .collect();
    let _srv_any = tcp_server(&w.node_ns, "0.0.0.0:7101".parse().unwrap(), "node-any");
    let _srv_lo = tcp_server(&w.node_ns, "127.0.0.1:7100".parse().unwrap(), "node-lo");
    let _srv_inet = tcp_server(&w.internet, at(INTERNET, 7200), "internet");

    // The node reaches every container (the router's path to announced ip:port).
    for (uid, tag) in [(A, "A"), (B, "B"), (C, "C"), (D, "D")] {
        assert_eq!(tag_of(probe(&w.node_ns, at(ip(uid), 7000))), Some(tag.to_string()));
    }
    // ... through the route the subscription validator checks.
    let routes = w.node_ns.routes();
    let route_to_a = format!("{:08X}", u32::from_le_bytes(ip(A).octets()));
    assert!(routes.lines().any(|l| l.starts_with("uw30501\t") && l.contains(&route_to_a)), "{routes}");

    // Unlinked: nothing either way. One-sided (B links A, A does not link B): nothing.
    for (from, to) in [(&a, C), (&c, A), (&a, B), (&b, A), (&c, B), (&b, C)] {
        assert_eq!(probe(from, at(ip(to), 7000)), None, "reached container {to} without a mutual link");
    }

    // The node's own services: not via the gateway, not via its uplink address.
    for target in [at(GATEWAY, 7101), at(GATEWAY, 7100), at(NODE_UPLINK, 7101)] {
        assert_eq!(probe(&a, target), None, "a container reached the node's {target}");
    }
    assert_eq!(tag_of(probe(&w.node_ns, "127.0.0.1:7100".parse().unwrap())).as_deref(), Some("node-lo"));
    assert_eq!(tag_of(probe(&w.node_ns, at(GATEWAY, 7101))).as_deref(), Some("node-any"));
    // Even with a route of its own for the node's loopback range (root in the container).
    a.run(|| {
        let mut nl = Netlink::open().unwrap();
        let dev = nl.index_of("uwsgi0").unwrap().unwrap();
        let _ = nl.add_route(&Route {
            dst: Ipv4Addr::new(127, 1, 0, 0),
            len: 16,
            dev,
            gateway: Some(GATEWAY),
            prefsrc: None,
        });
    });
    assert_eq!(probe(&a, "127.1.0.1:7100".parse().unwrap()), None);

    // Outbound NAT: the stand-in Internet sees the node's uplink address; dmz: nothing.
    assert_eq!(probe(&a, at(INTERNET, 7200)), Some(format!("internet {NODE_UPLINK}")));
    assert_eq!(probe(&d, at(INTERNET, 7200)), None, "a dmz container reached the uplink");
    let _srv_meta = tcp_server(&w.internet, at(METADATA, 7200), "metadata");
    assert_eq!(tag_of(probe(&w.node_ns, at(METADATA, 7200))).as_deref(), Some("metadata"));
    assert_eq!(probe(&a, at(METADATA, 7200)), None, "a container reached a link-local metadata service");

    // Mutual link A <-> B and A <-> D: applied without a restart, within about a second.
    let a_ns = a.inode();
    let t = Instant::now();
    w.put(A, &[B, D], false);
    let log = w.node().emperor().wait_for_log("container 30501: links updated", Duration::from_secs(10)).unwrap();
    let applied = t.elapsed();
    let line = log.lines().rev().find(|l| l.contains("updated in")).unwrap_or_default().to_string();
    eprintln!("link change in the table {applied:?} after the spec write ({line})");
    let took = eventually("A and B linked", || tag_of(probe(&a, at(ip(B), 7000))).as_deref() == Some("B"));
    eprintln!("link applied and seen through a connection after {took:?} ({:?} after the spec write)", t.elapsed());
    assert_eq!(tag_of(probe(&b, at(ip(A), 7000))).as_deref(), Some("A"));
    assert_eq!(tag_of(probe(&d, at(ip(A), 7000))).as_deref(), Some("A"), "a dmz container keeps its links");
    assert_eq!(tag_of(probe(&a, at(ip(D), 7000))).as_deref(), Some("D"));
    assert_eq!(probe(&c, at(ip(A), 7000)), None, "a third container got in");
    assert_eq!(probe(&c, at(ip(B), 7000)), None);
    assert_eq!(probe(&b, at(ip(D), 7000)), None, "links are not transitive");
    assert_eq!(w.container(A).inode(), a_ns, "the link change restarted container A");
    assert!(w.node().emperor().log().contains("container 30501: links updated"));

    // Spoofing: C takes A's address and sends to B (who links A) with it: dropped. The same
    // datagram from A arrives, so the probe could see it.
    let (_udp, received) = udp_server(&b, &format!("{}:7001", ip(B)));
    c.run(|| {
        let mut nl = Netlink::open().unwrap();
        let dev = nl.index_of("uwsgi0").unwrap().unwrap();
        nl.add_address(dev, ip(A), 32).unwrap();
        let s = UdpSocket::bind(at(ip(A), 0)).unwrap();
        for _ in 0..5 {
            let _ = s.send_to(b"spoofed", at(ip(B), 7001));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(received.load(Ordering::SeqCst), 0, "a spoofed source got through");
    a.run(|| UdpSocket::bind(at(ip(A), 0)).unwrap().send_to(b"real", at(ip(B), 7001)).unwrap());
    eventually("A's own datagram at B", || received.load(Ordering::SeqCst) == 1);

    // Neighbour spoofing: C, holding A's address, announces it with gratuitous ARP replies
    // on its link; the node keeps sending A's traffic to A (neighbours are per interface and
    // A's /32 route names uw30501).
    let c_pid = pids_of_uid(C)[0];
    let arp = std::process::Command::new("nsenter")
        .args(["-t", &c_pid.to_string(), "-n", "python3", "-c", GARP])
        .arg(ip(A).to_string())
        .output()
        .unwrap();
    assert!(arp.status.success(), "gratuitous ARP: {}", String::from_utf8_lossy(&arp.stderr));
    assert_eq!(tag_of(probe(&b, at(ip(A), 7000))).as_deref(), Some("A"));
    assert_eq!(tag_of(probe(&w.node_ns, at(ip(A), 7000))).as_deref(), Some("A"));

    // IPv6: root in A turns it back on and multicasts to every node on the link: the node
    // (listening on [::]) hears nothing.
    let (_udp6, heard) = udp_server(&w.node_ns, "[::]:7301");
    let a_pid = pids_of_uid(A)[0].to_string();
    let v6 = std::process::Command::new("nsenter")
        .args(["-t", &a_pid, "-n", "sh", "-c"])
        .arg(
            "echo 0 > /proc/sys/net/ipv6/conf/uwsgi0/disable_ipv6 && ip -6 addr add fd00::5/64 dev uwsgi0 nodad && \
              python3 -c 'import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); \
              [s.sendto(b\"x\", (\"ff02::1%uwsgi0\", 7301)) for _ in range(5)]'",
        )
        .output()
        .unwrap();
    assert!(v6.status.success(), "IPv6 probe: {}", String::from_utf8_lossy(&v6.stderr));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(heard.load(Ordering::SeqCst), 0, "IPv6 from a container reached the node");

    // Port mapping 198.18.0.1:8080 -> A:7000, from the file node-sync writes.
    let mapping = serde_json::json!({"revision": 1, "mappings": [{"proto": "tcp", "public_ip": NODE_UPLINK.to_string(),
        "public_port": 8080, "private_ip": ip(A).to_string(), "private_port": 7000}]});
    std::fs::write(&w.portmaps, mapping.to_string()).unwrap();
    eventually("the port mapping", || tag_of(probe(&w.internet, at(NODE_UPLINK, 8080))).as_deref() == Some("A"));
    assert_eq!(probe(&w.internet, at(NODE_UPLINK, 7000)), None, "an unmapped port reached a container");
    assert_eq!(probe(&w.internet, at(ip(A), 7000)), None, "the Internet reached a private address directly");
    assert_eq!(probe(&w.internet, at(ip(B), 7000)), None);
    assert_eq!(probe(&c, at(NODE_UPLINK, 8080)), None, "a port mapping answered a container");

    // Unlink: cut at once, without a restart.
    w.put(A, &[D], false);
    eventually("A and B unlinked", || probe(&a, at(ip(B), 7000)).is_none() && probe(&b, at(ip(A), 7000)).is_none());
    assert_eq!(tag_of(probe(&d, at(ip(A), 7000))).as_deref(), Some("A"));
    assert_eq!(w.container(A).inode(), a_ns, "the unlink restarted container A");

    // An operator's flush is repaired, to the same table.
    let before = w.table_json();
    w.node_ns.nft(&["flush", "ruleset"]);
    eventually("the table restored after a flush", || {
        w.node_ns.run(|| {
            std::process::Command::new("nft")
                .args(["list", "table", "inet", "unbit"])
                .output()
                .unwrap()
                .status
                .success()
        })
    });
    assert_eq!(w.table_json(), before, "the restored table differs");
    assert!(w.node().emperor().log().contains("was changed or removed by someone else; restored it"));
    assert_eq!(tag_of(probe(&d, at(ip(A), 7000))).as_deref(), Some("A"));
    assert_eq!(probe(&c, at(ip(A), 7000)), None);

    // Container stop: its interface, route and elements go, though something still holds its
    // namespace (here this test's descriptor on it; in production, sockets the kernel is
    // still closing, for minutes when the peer went away).
    drop(servers.remove(&C));
    std::thread::sleep(Duration::from_millis(100));
    w.node().remove_spec(C);
    eventually("uw30503 gone", || !w.node_ns.links().contains(&"uw30503".to_string()));
    eventually("C's elements gone", || !w.node_ns.nft(&["list", "table", "inet", "unbit"]).contains("uw30503"));
    assert!(!w.node_ns.routes().lines().any(|l| l.starts_with("uw30503")));

    // Emperor exit: no table, no container interface, no container route (A's namespace still
    // held by this test).
    drop((servers, b, d, _udp));
    std::thread::sleep(Duration::from_millis(100));
    let mut w = w;
    let mut node = w.node.take().unwrap();
    node.emperor.take().unwrap().stop();
    // The platform deletes its dead containers' host ends itself: a namespace the kernel keeps
    // for a while (sockets still closing) must not keep them.
    let left = || w.node_ns.links().into_iter().filter(|l| l.starts_with("uw")).collect::<Vec<_>>();
    let t = Instant::now();
    while !left().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "left 10 s after the Emperor's exit: {:?}", left());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        w.node_ns.run(|| !std::process::Command::new("nft")
            .args(["list", "table", "inet", "unbit"])
            .output()
            .unwrap()
            .status
            .success()),
        "the table outlived the Emperor"
    );
    assert!(!w.node_ns.routes().lines().any(|l| l.starts_with("uw")));
    drop((a, c, node));
}

/// Sends gratuitous ARP replies for the address in argv[1] from uwsgi0 (an AF_PACKET socket:
/// what root in a container can do).
const GARP: &str = r#"
import socket, struct, sys
ip = socket.inet_aton(sys.argv[1])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("uwsgi0", 0))
mac = s.getsockname()[4][:6]
bcast = b"\xff" * 6
frame = bcast + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac + ip + bcast + ip
for _ in range(5):
    s.send(frame)
"#;

#[test]
fn reapplying_after_an_emperor_restart_gives_the_same_table() {
    let mut w = World::start();
    w.put(30505, &[30506], false);
    w.put(30506, &[30505], true);
    w.container(30505);
    w.container(30506);
    let before = w.table_json();
    let mut node = w.node.take().unwrap();
    let node_ns = Netns(w.node_ns.0.try_clone().unwrap());
    node_ns.run(|| node.restart());
    w.node = Some(node);
    w.node().emperor().wait_for_log("container networking on", Duration::from_secs(10)).unwrap();
    w.container(30505);
    w.container(30506);
    eventually("both containers back in the table", || w.table_json() == before);
    assert_eq!(w.table_json(), before);

    // A spec change restarts a container at once: the new instance gets its uwsgi0 although
    // its predecessor's namespace (and uw30505 with it) is torn down asynchronously.
    let old = w.container(30505).inode();
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(30505, "net30505", 300, 256, &["ssh-ed25519 AAAA net"], &w.keys)).unwrap();
    spec["links"] = serde_json::json!([30506]);
    w.node().put_spec(30505, &spec.to_string());
    wait_until("container 30505 restarted with uwsgi0", Duration::from_secs(60), || w.container(30505).inode() != old);
    assert!(!w.node().emperor().log().contains("runs without uwsgi0"), "{}", w.node().emperor().log());
    let (p, q) = (w.container(30505), w.container(30506));
    let _s = tcp_server(&q, at(ip(30506), 7000), "Q");
    eventually("the restarted container linked again", || {
        tag_of(probe(&p, at(ip(30506), 7000))).as_deref() == Some("Q")
    });
}

#[test]
fn two_platforms_share_a_namespace_each_with_its_own_table() {
    let w = World::start();
    w.put(30507, &[30508], false);
    w.put(30508, &[30507], false);
    let (p, q) = (w.container(30507), w.container(30508));
    let _sp = tcp_server(&p, at(ip(30507), 7000), "P");
    let _sq = tcp_server(&q, at(ip(30508), 7000), "Q");
    let _inet = tcp_server(&w.internet, at(INTERNET, 7200), "internet");
    eventually("P and Q linked", || tag_of(probe(&p, at(ip(30508), 7000))).as_deref() == Some("Q"));

    // A second platform in the same namespace, with a table of its own.
    let pm = w.portmaps.with_file_name("second-portmappings.json").to_string_lossy().into_owned();
    let second = w.node_ns.run(|| {
        TestNode::start(&[
            "--unbit-network",
            "true",
            "--unbit-network-uplink",
            "upl0",
            "--unbit-network-table",
            "unbit-second",
            "--unbit-portmappings",
            &pm,
        ])
    });
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(30509, "net30509", 256, 256, &["ssh-ed25519 AAAA net"], &w.keys)).unwrap();
    spec["links"] = serde_json::json!([30507]);
    second.put_spec(30509, &spec.to_string());
    let r = {
        let mut found = None;
        wait_until("the second platform's container", Duration::from_secs(60), || {
            found = pids_of_uid(30509).into_iter().filter_map(Netns::of_pid).find(|ns| {
                ns.inode() != w.node_ns.inode()
                    && ns.run(|| Netlink::open().unwrap().index_of("uwsgi0").unwrap().is_some())
            });
            found.is_some()
        });
        found.unwrap()
    };
    let _sr = tcp_server(&r, at(ip(30509), 7000), "R");
    let tables = w.node_ns.nft(&["list", "tables"]);
    assert!(tables.contains("table inet unbit\n") && tables.contains("table inet unbit-second"), "{tables}");

    // The first platform's links survive the second's start; the two platforms' containers do
    // not reach each other (R links P, P does not link R, and they are not even on one table).
    assert_eq!(tag_of(probe(&p, at(ip(30508), 7000))).as_deref(), Some("Q"));
    assert_eq!(tag_of(probe(&q, at(ip(30507), 7000))).as_deref(), Some("P"));
    assert_eq!(probe(&r, at(ip(30507), 7000)), None);
    assert_eq!(probe(&p, at(ip(30509), 7000)), None);
    // Both platforms' containers reach the stand-in Internet.
    assert_eq!(probe(&r, at(INTERNET, 7200)), Some(format!("internet {NODE_UPLINK}")));
    assert_eq!(probe(&p, at(INTERNET, 7200)), Some(format!("internet {NODE_UPLINK}")));

    // The second platform leaves: its table goes, the first's stays and works.
    drop((_sr, r));
    drop(second);
    let tables = w.node_ns.nft(&["list", "tables"]);
    assert!(!tables.contains("unbit-second") && tables.contains("table inet unbit\n"), "{tables}");
    assert_eq!(tag_of(probe(&p, at(ip(30508), 7000))).as_deref(), Some("Q"));
}

/// `argv` run inside container `uid` (all its namespaces, as its user), as the customer would
/// run it in an ssh session.
fn in_container(uid: u32, argv: &[&str]) -> std::process::Output {
    let pid = pids_of_uid(uid).into_iter().find(|p| Netns::of_pid(*p).is_some()).expect("a process of the container");
    let id = uid.to_string();
    std::process::Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--all", "--setuid", &id, "--setgid", &id])
        .args(argv)
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a client in container `uid` gets from `host:port`, named as the customer names it,
/// resolved by the container's own libc (`getaddrinfo`: the NSS module in the distro).
fn connect_by_name(uid: u32, host: &str, port: u16) -> String {
    let script = "import socket, sys\n\
        try:\n    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)\n    print(b''.join(iter(lambda: s.recv(100), b'')).decode())\n\
        except OSError as e:\n    print('failed', type(e).__name__)";
    let out = in_container(uid, &["python3", "-c", script, host, &port.to_string()]);
    assert!(out.status.success(), "python3 in container {uid}: {out:?}");
    stdout(&out).trim().to_string()
}

#[test]
fn linked_containers_reach_each_other_by_name() {
    let w = World::start();
    let module = w.node().root.path().join("platform/lib").join(uwsgi_it::node::NSS_MODULE);
    assert!(module.exists(), "{} missing: run `make plugins` first", module.display());
    // 30901 links 30902; 30902 links nobody yet; 30903 is unlinked.
    w.put(30901, &[30902], false);
    w.put(30902, &[], false);
    w.put(30903, &[], false);
    let (_a, b, _c) = (w.container(30901), w.container(30902), w.container(30903));
    let _server = tcp_server(&b, at(ip(30902), 7000), "B");

    // The name resolves (the address is computed, whoever asks)...
    let out = in_container(30901, &["getent", "hosts", "30902.local"]);
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        [ip(30902).to_string(), "30902.local".into()],
        "{out:?}"
    );
    let out = in_container(30901, &["getent", "ahostsv4", "30902.LOCAL."]);
    assert!(stdout(&out).starts_with(&format!("{} ", ip(30902))), "{out:?}");
    let out = in_container(30901, &["getent", "hosts", &ip(30903).to_string()]);
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        [ip(30903).to_string(), "30903.local".into()],
        "{out:?}"
    );
    for nobody in ["30902abc.local", "030902.local", "65534.local", "30902.local.example"] {
        let out = in_container(30901, &["getent", "hosts", nobody]);
        assert_eq!((out.status.code(), stdout(&out)), (Some(2), String::new()), "{nobody}: {out:?}");
    }
    // ...but reaches nothing until both linked.
    assert_eq!(connect_by_name(30901, "30902.local", 7000), "failed TimeoutError");

    w.put(30902, &[30901], false);
    let mut last = String::new();
    eventually("30901 connects to 30902.local", || {
        last = connect_by_name(30901, "30902.local", 7000);
        last.starts_with('B')
    });
    assert_eq!(last, format!("B {}", ip(30901)));
    // The unlinked container resolves the name too, and still cannot connect.
    assert_eq!(connect_by_name(30903, "30902.local", 7000), "failed TimeoutError");
}
