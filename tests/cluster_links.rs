//! Links across nodes with the platform's own parts (issue 17, deliverable 4), as root: two
//! nodes in network namespaces joined by a veth (the inter-node network), each with a node
//! Emperor (`--unbit-network true --unbit-network-tunnel unbit-wg`) and `unbit-links run`
//! supervised by the shipped `vassals-examples/legion/links.ini` (only its paths and the node's
//! name replaced; keys made with `unbit-links genkey`/`pubkey`, as an operator makes them). Containers are
//! put through the spec folder like node-sync puts them; their links name a container on the
//! other node. The kernel-level checks (no plaintext on the wire, spoofed sources, routes) are
//! `cargo test -p cluster-links --test kernel`; this is the same through the Emperors.
//!
//! `make plugins binaries`, then `cargo test --test cluster_links`. Uids 31370-31379.

use container_net::link::Netlink;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;
use uwsgi_it::harness::{shipped_config, Instance, InstanceBuilder};
use uwsgi_it::host::{pids_of_uid, wait_until};
use uwsgi_it::netns::{Netns, Server};
use uwsgi_it::node::{key_pair, spec_json, TestNode};
use uwsgi_it::ssh::release_binary;

const A1: u32 = 31370; // on a, links B1
const B1: u32 = 31371; // on b, links A1
const B2: u32 = 31372; // on b, links nobody
/// The interface the shipped links.ini names.
const TUNNEL: &str = "unbit-wg";

fn ip(uid: u32) -> Ipv4Addr {
    container_spec::ip_of(uid)
}

/// `unbit-links <args>` with `input` on stdin: its stdout's first line.
fn links_tool(args: &[&str], input: &str) -> String {
    let mut child = Command::new(release_binary("unbit-links"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "unbit-links {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Node {
    emperor: Option<TestNode>,
    /// The shipped links.ini's uWSGI instance, which runs `unbit-links run`.
    links: Option<Instance>,
    name: &'static str,
    addr: Ipv4Addr,
    ns: Netns,
}

impl Node {
    /// SIGINT to the links instance, as its Emperor stops it; its log.
    fn stop_links(&mut self) -> Option<(std::process::ExitStatus, String)> {
        let mut links = self.links.take()?;
        let status = links.stop()?;
        Some((status, links.log()))
    }

    fn links_log(&self) -> String {
        self.links.as_ref().map(Instance::log).unwrap_or_default()
    }

    fn emperor(&self) -> &TestNode {
        self.emperor.as_ref().unwrap()
    }

    fn has_link(&self, name: &str) -> bool {
        self.ns.run(|| Netlink::open().unwrap().index_of(name).unwrap().is_some())
    }

    fn routes(&self) -> String {
        self.ns.run(|| std::fs::read_to_string("/proc/thread-self/net/route").unwrap())
    }

    fn has_table(&self) -> bool {
        self.ns.run(|| container_net::firewall::Nft::new().list("unbit", false).unwrap().is_some())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut node) = self.emperor.take() {
            if let Some(mut e) = node.emperor.take() {
                e.stop();
            }
        }
        self.stop_links();
    }
}

fn tcp_server(ns: &Netns, at: SocketAddr, tag: &'static str) -> Server {
    ns.tcp_server(at, move |_| tag.to_string())
}

fn probe(ns: &Netns, to: SocketAddr) -> Option<String> {
    ns.probe(to, Duration::from_millis(1500))
}

/// The container's namespace once its `uwsgi0` is up.
fn container(node: &Node, uid: u32) -> Netns {
    let mut found = None;
    wait_until(&format!("container {uid} running with uwsgi0 on {}", node.name), Duration::from_secs(90), || {
        found = pids_of_uid(uid).into_iter().filter_map(Netns::of_pid).find(|ns| {
            ns.inode() != node.ns.inode() && ns.run(|| Netlink::open().unwrap().index_of("uwsgi0").unwrap().is_some())
        });
        found.is_some()
    });
    found.unwrap()
}

fn put(node: &Node, uid: u32, links: &[u32], keys: &(String, String)) {
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(uid, &format!("xl{uid}"), 256, 256, &["ssh-ed25519 AAAA xl"], keys)).unwrap();
    spec["links"] = serde_json::json!(links);
    node.emperor().put_spec(uid, &spec.to_string());
}

#[test]
fn containers_linked_across_nodes_talk_through_the_tunnel_and_unlinked_ones_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let peer = ns_b.0.try_clone().unwrap();
    ns_a.run(move || {
        let mut nl = Netlink::open().unwrap();
        nl.create_veth("inter0", "inter1", peer.as_fd()).unwrap();
    });
    let mut nodes = Vec::new();
    for (name, ns, n, dev) in [("a", ns_a, 1, "inter0"), ("b", ns_b, 2, "inter1")] {
        let addr = Ipv4Addr::new(192, 168, 79, n);
        ns.run(|| {
            let mut nl = Netlink::open().unwrap();
            let i = nl.index_of(dev).unwrap().unwrap();
            nl.add_address(i, addr, 24).unwrap();
            nl.set_up(i).unwrap();
            let lo = nl.index_of("lo").unwrap().unwrap();
            nl.set_up(lo).unwrap();
        });
        nodes.push(Node { emperor: None, links: None, name, addr, ns });
    }

    // The operator's steps (links.ini's comments): a key per node, the same members file on
    // every node, the shipped instance that runs unbit-links. /etc/unbit/links is a directory
    // per node here.
    let etc = |node: &Node| dir.path().join(node.name);
    let mut members = Vec::new();
    for (node, containers) in nodes.iter().zip([vec![A1], vec![B1, B2]]) {
        std::fs::create_dir(etc(node)).unwrap();
        let key = links_tool(&["genkey"], "");
        let key_file = etc(node).join("node.key");
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        members.push(serde_json::json!({
            "name": node.name,
            "endpoint": format!("{}:51820", node.addr),
            "public_key": links_tool(&["pubkey"], &key),
            "containers": containers,
        }));
    }
    let members = serde_json::json!({ "members": members }).to_string();
    for node in &mut nodes {
        std::fs::write(etc(node).join("members.json"), &members).unwrap();
        let ini = shipped_config(
            "legion/links.ini",
            &[
                ("/usr/local/bin/unbit-links", release_binary("unbit-links").display().to_string()),
                ("/etc/unbit/links", etc(node).display().to_string()),
                ("--node node1", format!("--node {}", node.name)),
            ],
            &["logto", "log-maxsize"],
        );
        assert!(ini.contains(&format!("--ifname {TUNNEL},")), "the shipped links.ini names another interface:\n{ini}");
        let links = node.ns.run(|| InstanceBuilder::new(&format!("links-{}", node.name)).ini(&ini).start());
        links
            .wait_for_log(&format!("unbit-links: node {}: {TUNNEL} listening", node.name), Duration::from_secs(10))
            .unwrap();
        node.links = Some(links);
        node.emperor =
            Some(node.ns.run(|| TestNode::start(&["--unbit-network", "true", "--unbit-network-tunnel", TUNNEL])));
        node.emperor().emperor().wait_for_log("links across nodes through unbit-wg", Duration::from_secs(10)).unwrap();
    }
    let log_of = |node: &Node| node.links_log();

    let keys = key_pair();
    put(&nodes[0], A1, &[B1], &keys);
    put(&nodes[1], B1, &[A1], &keys);
    put(&nodes[1], B2, &[], &keys);
    let (a1, b1, b2) = (container(&nodes[0], A1), container(&nodes[1], B1), container(&nodes[1], B2));
    let _servers = [
        tcp_server(&a1, SocketAddr::from((ip(A1), 7000)), "A1"),
        tcp_server(&b1, SocketAddr::from((ip(B1), 7000)), "B1"),
        tcp_server(&b2, SocketAddr::from((ip(B2), 7000)), "B2"),
    ];

    // The linked pair, both ways, through both Emperors' tables and the tunnel.
    let mut answer = None;
    wait_until("A1 reaches B1 on the other node", Duration::from_secs(20), || {
        answer = probe(&a1, SocketAddr::from((ip(B1), 7000)));
        answer.is_some()
    });
    assert_eq!(answer.as_deref(), Some("B1"), "a: {}\nb: {}", log_of(&nodes[0]), log_of(&nodes[1]));
    assert_eq!(probe(&b1, SocketAddr::from((ip(A1), 7000))).as_deref(), Some("A1"));
    // B2 runs on b, where the tunnel from a ends, but links nobody: nothing either way.
    assert_eq!(probe(&b2, SocketAddr::from((ip(B2), 7000))).as_deref(), Some("B2"), "B2's server is up");
    assert_eq!(probe(&a1, SocketAddr::from((ip(B2), 7000))), None, "A1 reached the unlinked B2");
    assert_eq!(probe(&b2, SocketAddr::from((ip(A1), 7000))), None, "the unlinked B2 reached A1");

    // A reload of a's links instance (SIGHUP: an Emperor's touch, an operator's reload)
    // restarts unbit-links: a new tunnel with the same peers, and the pair talks again.
    let pid = nix::unistd::Pid::from_raw(nodes[0].links.as_ref().unwrap().pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGHUP).unwrap();
    let listening = format!("unbit-links: node a: {TUNNEL} listening");
    nodes[0].links.as_ref().unwrap().wait_for_log_count(&listening, 2, Duration::from_secs(20)).unwrap();
    assert!(
        log_of(&nodes[0]).contains("SIGINT: closing the tunnel"),
        "the reload killed unbit-links: {}",
        log_of(&nodes[0])
    );
    wait_until("A1 reaches B1 again after the reload", Duration::from_secs(20), || {
        probe(&a1, SocketAddr::from((ip(B1), 7000))).as_deref() == Some("B1")
    });
    assert_eq!(probe(&b1, SocketAddr::from((ip(A1), 7000))).as_deref(), Some("A1"));

    // B1 drops its link through the API's path (the spec file): no restart, and A1 no longer
    // gets in.
    put(&nodes[1], B1, &[], &keys);
    nodes[1].emperor().emperor().wait_for_log("container 31371: links updated", Duration::from_secs(10)).unwrap();
    wait_until("the unlink cuts A1 off", Duration::from_secs(10), || {
        probe(&a1, SocketAddr::from((ip(B1), 7000))).is_none()
    });
    assert_eq!(probe(&b1, SocketAddr::from((ip(A1), 7000))), None, "a one-sided link crossed nodes");

    // Cleanup: the Emperors remove their tables; stopping the links instance (SIGINT, as its
    // Emperor does) stops unbit-links, which takes its interface and routes with it.
    drop((a1, b1, b2));
    for node in &mut nodes {
        if let Some(mut e) = node.emperor.take() {
            if let Some(mut i) = e.emperor.take() {
                i.stop();
            }
        }
        assert!(!node.has_table(), "{}: table inet unbit outlived its Emperor", node.name);
        assert!(node.has_link(TUNNEL), "{}: {TUNNEL} vanished with the Emperor", node.name);
        let (status, log) = node.stop_links().expect("the links instance ran");
        assert!(status.success(), "{}: the links instance exited with {status}: {log}", node.name);
        assert!(log.contains("unbit-links: SIGINT: closing the tunnel"), "{}: {log}", node.name);
        assert!(!log.contains("did not die in time"), "{}: {log}", node.name);
        assert!(!node.has_link(TUNNEL), "{}: {TUNNEL} outlived unbit-links", node.name);
        let routes = node.routes();
        assert!(!routes.lines().any(|l| l.starts_with(&format!("{TUNNEL}\t"))), "{}: {routes}", node.name);
    }
}
