//! Two nodes of a Legion on one machine, for the kernel test and the benchmark: each node is a
//! network namespace with containers (namespaces of their own, the platform's routed veth
//! with `uw<uid>` on the node), the platform's table (`container_net::firewall`, with the
//! tunnel set) and `unbit-links run`; the nodes' inter-node link is a bridge in a third
//! namespace, the "wire", where the test captures what crosses between nodes.
//!
//! Every namespace is named `ul<pid>-<n>-<role>` (unique per run) and deleted, with the daemons
//! stopped by PID, when the [`Legion`] is dropped, also on failure.

#![allow(dead_code)]

use cluster_links::Key;
use container_net::firewall::{Elements, Firewall, Member, Nft};
use container_spec::{host_interface, ip_of};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TUNNEL: &str = "unbit-wg";
pub const TABLE: &str = "unbit";
pub const PORT: u16 = 51820;

/// Runs a command, panics with its stderr when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n <ns> <args>`.
pub fn ip(ns: &str, args: &str) -> String {
    let mut v = vec!["ip", "-n", ns];
    v.extend(args.split_whitespace());
    run(&v)
}

/// `ip -n <ns> <args>`, `None` when it fails (an interface that does not exist yet).
pub fn try_ip(ns: &str, args: &str) -> Option<String> {
    let out = Command::new("ip").args(["-n", ns]).args(args.split_whitespace()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace (`ip netns add`), deleted when dropped.
pub struct Ns(pub String);

impl Ns {
    pub fn new(role: &str) -> Ns {
        // Tests of one binary run in parallel: the pid and a sequence number keep names apart.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("ul{}-{seq}-{role}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        ip(&name, "link set lo up");
        Ns(name)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        run(&["ip", "netns", "exec", &self.0, "sysctl", "-qw", &format!("{key}={value}")]);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `f` on a thread inside the namespace (sockets it opens and processes it starts are
/// in that namespace).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns);
            f()
        })
        .join()
        .expect("thread in a namespace")
    })
}

/// Moves the calling thread into the namespace (for threads that outlive a call).
pub fn enter(ns: &str) {
    let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace file");
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A container: its namespace, `uwsgi0` with its address, the host end `uw<uid>` on its node,
/// routed as the platform routes it (/32 to the host end, proxy ARP, default via 10.0.0.1).
pub struct Container {
    pub uid: u32,
    pub ns: Ns,
    /// The uids it accepts traffic from.
    pub links: Vec<u32>,
}

impl Container {
    pub fn ip(&self) -> Ipv4Addr {
        ip_of(self.uid)
    }
}

pub struct Node {
    pub name: String,
    pub ns: Ns,
    pub addr: Ipv4Addr,
    pub containers: Vec<Container>,
    pub key: Key,
    pub daemon: Option<Child>,
    pub log: PathBuf,
}

impl Node {
    pub fn elements(&self) -> Elements {
        let mut e = Elements::default();
        for c in &self.containers {
            e.add_member(&Member {
                ifname: host_interface(c.uid),
                ip: c.ip(),
                dmz: false,
                links: c.links.iter().map(|&u| ip_of(u)).collect(),
            });
        }
        e.tunnel.insert(TUNNEL.into());
        e
    }

    /// The platform's table in this node's namespace, as the Emperor would apply it.
    pub fn apply_table(&self, e: &Elements) {
        in_ns(&self.ns.0, || Firewall::new(TABLE, Nft::new()).sync(e).expect("apply the node's table"));
    }

    pub fn container(&self, uid: u32) -> &Container {
        self.containers.iter().find(|c| c.uid == uid).expect("container of this node")
    }

    /// Stops `unbit-links` by its PID (SIGINT) and waits for it.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("unbit-links on {} ignored SIGINT for 10 s", self.name);
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a node runs: `(uid, links)` per container.
pub type Plan<'a> = &'a [(u32, &'a [u32])];

pub struct Legion {
    pub nodes: Vec<Node>,
    pub wire: Ns,
    pub dir: PathBuf,
    /// A member in the file that never comes up (its containers are routed to it and no one
    /// else may use their addresses).
    pub ghost_containers: Vec<u32>,
}

impl Legion {
    /// Nodes `a` (192.168.77.1) and `b` (192.168.77.2), each with its containers, and in the
    /// members file a third member `c` that never comes up, with `ghost` containers.
    pub fn new(plans: [Plan; 2], ghost: &[u32]) -> Legion {
        let wire = Ns::new("wire");
        let dir = std::env::temp_dir().join(format!("cluster-links-{}", wire.0));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ip(&wire.0, "link add br0 type bridge");
        ip(&wire.0, "link set br0 up");
        let mut legion = Legion { nodes: Vec::new(), wire, dir, ghost_containers: ghost.to_vec() };
        for (i, (name, plan)) in ["a", "b"].into_iter().zip(plans).enumerate() {
            let node = legion.build_node(name, i as u8 + 1, plan);
            legion.nodes.push(node);
        }
        legion.write_members();
        for i in 0..2 {
            legion.start_daemon(i);
        }
        for node in &legion.nodes {
            node.apply_table(&node.elements());
        }
        legion.wait_routed();
        legion
    }

    fn build_node(&self, name: &str, n: u8, plan: Plan) -> Node {
        let ns = Ns::new(name);
        ns.sysctl("net.ipv4.ip_forward", "1");
        let addr = Ipv4Addr::new(192, 168, 77, n);
        let (inner, outer) = (format!("ul-{name}"), format!("w{name}"));
        ip(&ns.0, &format!("link add {inner} type veth peer name {outer} netns {}", self.wire.0));
        ip(&ns.0, &format!("addr add {addr}/24 dev {inner}"));
        ip(&ns.0, &format!("link set {inner} up"));
        ip(&self.wire.0, &format!("link set {outer} master br0 up"));
        ip(&ns.0, "addr add 10.0.0.1/32 dev lo");
        let mut containers = Vec::new();
        for &(uid, links) in plan {
            let c = Ns::new(&uid.to_string());
            let host = host_interface(uid);
            ip(&ns.0, &format!("link add {host} type veth peer name uwsgi0 netns {}", c.0));
            ip(&c.0, &format!("addr add {}/8 dev uwsgi0", ip_of(uid)));
            ip(&c.0, "link set uwsgi0 up");
            ip(&c.0, "route add default via 10.0.0.1");
            ns.sysctl(&format!("net.ipv4.conf.{host}.proxy_arp"), "1");
            ns.sysctl(&format!("net.ipv4.neigh.{host}.proxy_delay"), "0");
            ip(&ns.0, &format!("link set {host} up"));
            ip(&ns.0, &format!("route add {}/32 dev {host} src 10.0.0.1", ip_of(uid)));
            containers.push(Container { uid, ns: c, links: links.to_vec() });
        }
        let key = Key::generate().unwrap();
        let key_file = self.dir.join(format!("{name}.key"));
        std::fs::write(&key_file, format!("{}\n", key.to_base64())).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let log = self.dir.join(format!("{name}.log"));
        Node { name: name.into(), ns, addr, containers, key, daemon: None, log }
    }

    pub fn members_file(&self) -> PathBuf {
        self.dir.join("members.json")
    }

    /// The members file every node reads; `c` never comes up.
    pub fn write_members(&self) {
        let mut members: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "name": n.name,
                    "endpoint": format!("{}:{PORT}", n.addr),
                    "public_key": n.key.public().to_base64(),
                    "containers": n.containers.iter().map(|c| c.uid).collect::<Vec<_>>(),
                })
            })
            .collect();
        members.push(serde_json::json!({
            "name": "c",
            "endpoint": format!("192.168.77.3:{PORT}"),
            "public_key": Key([7; 32]).public().to_base64(),
            "containers": self.ghost_containers,
        }));
        let text = serde_json::to_string_pretty(&serde_json::json!({ "members": members })).unwrap();
        let tmp = self.dir.join("members.json.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.members_file()).unwrap();
    }

    fn start_daemon(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = std::fs::File::create(&node.log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns.0, env!("CARGO_BIN_EXE_unbit-links"), "run", "--node", &node.name])
            .arg("--key")
            .arg(self.dir.join(format!("{}.key", node.name)))
            .arg("--members")
            .arg(self.members_file())
            .args(["--ifname", TUNNEL])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start unbit-links");
        self.nodes[i].daemon = Some(child);
    }

    /// Until each node routes the other's containers into its tunnel.
    fn wait_routed(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..2 {
            let other = &self.nodes[1 - i];
            let Some(want) = other.containers.first().map(|c| c.ip().to_string()) else { continue };
            loop {
                let node = &mut self.nodes[i];
                if let Some(Ok(Some(status))) = node.daemon.as_mut().map(|c| c.try_wait()) {
                    panic!("unbit-links on {} exited ({status}): {}", node.name, node.daemon_log());
                }
                let routes = try_ip(&node.ns.0, &format!("route show dev {TUNNEL}")).unwrap_or_default();
                if routes.contains(&want) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{}: no route to {want} in {TUNNEL}: {}",
                    node.name,
                    node.daemon_log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap()
    }

    pub fn container(&self, uid: u32) -> &Container {
        self.nodes.iter().flat_map(|n| &n.containers).find(|c| c.uid == uid).expect("a container of the Legion")
    }
}

impl Drop for Legion {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.daemon.take() {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGINT);
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
