//! Clustering (issue 17) against the real kernel, as root: three nodes of a Legion, each in a
//! network namespace this test creates, joined by a bridge in a fourth namespace (the "LAN",
//! 192.168.250.0/24, where the test's client sits at .254). Each node runs a node Emperor, the
//! HTTP router with its validator, and the fastrouter instance of
//! `vassals-examples/services/fastrouter.ini`: stock uWSGI's Legion member, the fastrouter, the
//! validator of `/subscribe/fastrouter` and the cluster's relay and receiver
//! (`plugins/unbit_cluster`). Node A has the highest valor (the Lord, holding the floating
//! address .100) and no container; B and C each run one container of the same customer with
//! `cluster-domain = cluster.example`.
//!
//! Nothing leaves the namespaces; they go with their descriptors, the instances are stopped by
//! PID, the nodes' folders and cgroups removed, also when a check fails. Uids 31201-31209 are
//! this file's.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use container_net::link::Netlink;
use domains_kit::{domain_entry, eventually, start_router, write_domains, Router, RouterSetup};
use openssl::pkey::{PKey, Private};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use unbit_cluster::message::{self, Announce, Cmd};
use uwsgi_it::node::{key_pair, spec_json, TestNode};
use uwsgi_it::{Instance, InstanceBuilder};

const B_UID: u32 = 31201;
const C_UID: u32 = 31202;
const DOMAIN: &str = "cluster.example";
const FLOATING: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 254);
const T: Duration = Duration::from_secs(90);
const LEGION: &str = "unbit-test";

struct Netns(OwnedFd);

impl Netns {
    fn new() -> Netns {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
            Netns(container_net::setup::current_netns().unwrap())
        })
        .join()
        .unwrap()
    }

    /// Runs `f` on a thread inside the namespace (processes it spawns live there too).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(self.0.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn sh(&self, cmd: &str) {
        self.run(|| {
            let out = std::process::Command::new("sh").args(["-c", cmd]).output().unwrap();
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        })
    }

    fn has_address(&self, dev: &str, ip: Ipv4Addr) -> bool {
        self.run(|| {
            let mut nl = Netlink::open().unwrap();
            nl.index_of(dev).unwrap().is_some_and(|i| nl.has_address(i, ip).unwrap())
        })
    }
}

struct NodeKey {
    key: PKey<Private>,
    hex: String,
}

fn node_key() -> NodeKey {
    let key = PKey::generate_ed25519().unwrap();
    let hex = unbit_cluster::members::public_hex(&key).unwrap();
    NodeKey { key, hex }
}

/// One node. Fields drop in order: the fastrouter instance, the router, the Emperor (and its
/// containers), then the folder and the namespace.
struct Node {
    cluster: Option<Instance>,
    router: Option<Router>,
    emperor: Option<TestNode>,
    name: &'static str,
    ip: Ipv4Addr,
    key: NodeKey,
    dir: tempfile::TempDir,
    ns: Netns,
}

impl Node {
    fn cluster_log(&self) -> String {
        self.cluster.as_ref().map(|c| c.log()).unwrap_or_default()
    }

    /// The nodes of `key` in this node's HTTP router, read in its namespace.
    fn nodes_of(&self, key: &str) -> Vec<String> {
        let r = self.router.as_ref().unwrap();
        self.ns.run(|| r.nodes_of(key))
    }
}

struct Cluster {
    nodes: Vec<Node>,
    lan: Netns,
}

fn write_key(path: &Path, key: &PKey<Private>) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    f.write_all(&key.private_key_to_pem_pkcs8().unwrap()).unwrap();
}

impl Cluster {
    /// The Legion; with `containers`, B and C run one each, serving the domain.
    fn start(containers: bool) -> Cluster {
        let lan = Netns::new();
        lan.sh(&format!(
            "ip link set lo up && ip link add br0 type bridge && ip link set br0 up && ip addr add {CLIENT}/24 dev br0 \
             && sysctl -qw net.ipv4.neigh.br0.base_reachable_time_ms=1000 net.ipv4.neigh.br0.delay_first_probe_time=1"
        ));
        let customer = key_pair();
        let names = ["a", "b", "c"];
        let mut nodes: Vec<Node> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let ns = Netns::new();
                let ip = Ipv4Addr::new(192, 168, 250, i as u8 + 1);
                let peer = format!("n{name}");
                let lan_fd = lan.0.try_clone().unwrap();
                ns.run(|| {
                    let mut nl = Netlink::open().unwrap();
                    nl.create_veth("lan0", &peer, lan_fd.as_fd()).unwrap();
                    let i = nl.index_of("lan0").unwrap().unwrap();
                    nl.add_address(i, ip, 24).unwrap();
                    nl.set_up(i).unwrap();
                    let lo = nl.index_of("lo").unwrap().unwrap();
                    nl.set_up(lo).unwrap();
                });
                lan.sh(&format!("ip link set {peer} master br0 up"));
                let dir = tempfile::Builder::new().prefix("unbit-cluster-").tempdir().unwrap();
                Node { cluster: None, router: None, emperor: None, name, ip, key: node_key(), dir, ns }
            })
            .collect();
        let members = serde_json::json!({
            "members": nodes.iter().map(|n| serde_json::json!({
                "name": n.name,
                "cluster": format!("{}:3022", n.ip),
                "fastrouter": format!("{}:1999", n.ip),
                "public_key": n.key.hex,
            })).collect::<Vec<_>>()
        });
        // The Legion's shared secret (32 bytes of key for aes-256-cbc, see docs/clustering.md).
        let mut raw = [0u8; 16];
        openssl::rand::rand_bytes(&mut raw).unwrap();
        let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let legion_nodes: Vec<String> = nodes.iter().map(|n| format!("{}:4242", n.ip)).collect();
        for (i, node) in nodes.iter_mut().enumerate() {
            let d = node.dir.path();
            std::fs::write(d.join("members.json"), members.to_string()).unwrap();
            write_key(&d.join("node.key"), &node.key.key);
            let domains = d.join("domains.json");
            write_domains(&domains, &[domain_entry(DOMAIN, &[B_UID, C_UID], &customer.1)]);
            let emperor = node.ns.run(|| TestNode::start_with_shortcuts(&["--unbit-quota", "none"]));
            let (subscribe, homes) = (emperor.subscribe_dir(), emperor.containers_dir());
            let http_socket = subscribe.join("http");
            let router = node.ns.run(|| {
                start_router(RouterSetup {
                    extra: &["--http=0.0.0.0:80"],
                    ..RouterSetup::new(&http_socket, &homes, &domains, 1)
                })
            });
            let fr = d.join("fastrouter");
            std::fs::create_dir(&fr).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fr, std::fs::Permissions::from_mode(0o700)).unwrap();
            let valor = 300 - 100 * i;
            let others: Vec<String> = legion_nodes
                .iter()
                .filter(|a| !a.starts_with(&format!("{}:", node.ip)))
                .map(|a| format!("{LEGION} {a}"))
                .collect();
            let fr_ = fr.display().to_string();
            let legion = vec![format!("{LEGION} {}:4242 {valor} aes-256-cbc:{secret}", node.ip)];
            let ini = shipped_fastrouter_ini(&[
                ("plugins", vec!["fastrouter".into()]),
                ("fastrouter", vec![format!("{}:1999", node.ip)]),
                ("fastrouter-subscription-server", vec![format!("{fr_}/subscriptions.sock")]),
                ("unbit-subscriptions-socket", vec![format!("{}/fastrouter", subscribe.display())]),
                ("unbit-subscriptions-router", vec![format!("{fr_}/cluster.sock")]),
                ("unbit-subscriptions-domains", vec![domains.display().to_string()]),
                ("unbit-subscriptions-containers-dir", vec![homes.display().to_string()]),
                ("unbit-cluster-node", vec![node.name.to_string()]),
                ("unbit-cluster-members", vec![format!("{}/members.json", d.display())]),
                ("unbit-cluster-key", vec![format!("{}/node.key", d.display())]),
                ("unbit-cluster-relay", vec![format!("{fr_}/cluster.sock")]),
                ("unbit-cluster-relay-to", vec![format!("{fr_}/subscriptions.sock")]),
                ("unbit-cluster-router", vec![format!("{}/subscriptions.sock", router.private.path().display())]),
                ("legion", legion),
                ("legion-node", others),
                ("legion-lord", vec![format!("{LEGION} cmd:ip addr add {FLOATING}/24 dev lan0")]),
                ("legion-unlord", vec![format!("{LEGION} cmd:ip addr del {FLOATING}/24 dev lan0")]),
            ]);
            let cluster = node.ns.run(|| {
                InstanceBuilder::new(&format!("cluster-{}", node.name))
                    .ini(&ini)
                    .project_plugin("unbit_subscriptions")
                    .project_plugin("unbit_cluster")
                    .start()
            });
            cluster.wait_for_log("cluster receiver: members' announces on", T).unwrap();
            node.cluster = Some(cluster);
            node.router = Some(router);
            node.emperor = Some(emperor);
        }
        let cluster = Cluster { nodes, lan };
        for (node, uid) in [(1, B_UID), (2, C_UID)].into_iter().filter(|_| containers) {
            let n = &cluster.nodes[node];
            let e = n.emperor.as_ref().unwrap();
            e.put_spec(uid, &spec_json(uid, &format!("cl{uid}"), 256, 256, &["ssh-ed25519 AAAA cl"], &customer));
            let home = e.home(uid);
            uwsgi_it::node::wait_for_path(&home.join("vassals"), T);
            let app = format!(
                "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'served by node {}']\n",
                n.name
            );
            std::fs::write(home.join("app.py"), app).unwrap();
            std::fs::write(
                home.join("vassals/app.ini"),
                format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/app.py\ncluster-domain = {DOMAIN}\n"),
            )
            .unwrap();
        }
        cluster
    }

    /// `count` requests for the domain through the floating address, from the LAN: their
    /// bodies (an error's text for a failed one).
    fn through_floating(&self, count: usize) -> Vec<String> {
        self.lan.run(|| (0..count).map(|_| get(FLOATING, DOMAIN).unwrap_or_else(|e| format!("error: {e}"))).collect())
    }

    fn lord(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.ns.has_address("lan0", FLOATING))
    }

    /// Sends raw datagrams to `to`'s cluster listener from `from`'s namespace and address.
    fn send_from(&self, from: &Netns, src: Ipv4Addr, to: &Node, datagrams: &[Vec<u8>]) {
        let dst = SocketAddr::new(to.ip.into(), 3022);
        from.run(|| {
            let s = UdpSocket::bind(SocketAddr::new(src.into(), 0)).unwrap();
            for d in datagrams {
                s.send_to(d, dst).unwrap();
            }
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                let log = n.cluster_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} fastrouter instance ----", n.name);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        // Instances first (their Drop stops them by PID), then folders and namespaces.
        for n in &mut self.nodes {
            n.cluster.take();
            n.router.take();
            n.emperor.take();
        }
    }
}

/// `vassals-examples/legion/fastrouter.ini` as a node of this test runs it: the options in
/// `set` replaced by these values (each must be in the shipped file, so a renamed option fails
/// here), the host's own paths (the mkdir hooks of /run, the log file) left out, every other
/// line as shipped.
fn shipped_fastrouter_ini(set: &[(&str, Vec<String>)]) -> String {
    let shipped =
        std::fs::read_to_string(uwsgi_it::harness::project_root().join("vassals-examples/legion/fastrouter.ini"))
            .unwrap();
    let host_only = ["if-not-dir", "hook-asap", "endif", "logto", "log-maxsize"];
    let option = |line: &str| -> Option<String> {
        let l = line.trim();
        if l.is_empty() || l.starts_with([';', '#', '[']) {
            return None;
        }
        Some(l.split('=').next().unwrap().trim().to_string())
    };
    let shipped_options: Vec<String> = shipped.lines().filter_map(option).collect();
    for (name, _) in set {
        assert!(shipped_options.iter().any(|o| o == name), "the shipped fastrouter.ini has no {name}");
    }
    let mut out = String::new();
    for line in shipped.lines() {
        match option(line) {
            Some(o) if host_only.contains(&o.as_str()) || set.iter().any(|(n, _)| *n == o) => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (name, values) in set {
        for v in values {
            out.push_str(&format!("{name} = {v}\n"));
        }
    }
    out
}

/// One HTTP/1.0 GET with a Host header; the body on a 200.
fn get(ip: Ipv4Addr, host: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip.into(), 80), Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut r = String::new();
    s.read_to_string(&mut r).map_err(|e| e.to_string())?;
    let (head, body) = r.split_once("\r\n\r\n").ok_or("no header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("").to_string());
    }
    Ok(body.to_string())
}

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
    let lord =
        eventually(T, || cluster.lord().map(|n| n.name).ok_or_else(|| "no node holds the floating address".into()))
            .unwrap();
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
    let moved = eventually(T, || cluster.lord().map(|n| n.name).ok_or_else(|| "no Lord yet".into())).unwrap();
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
