//! Three nodes of a Legion in network namespaces on one machine, as `tests/clustering.rs` and
//! `benches/cluster` run them (see the test's header and docs/clustering.md).

#![allow(dead_code)]

#[path = "../../plugins/unbit_subscriptions/tests/kit/mod.rs"]
pub mod domains_kit;

use container_net::link::Netlink;
use domains_kit::{domain_entry, pools_in_stats, write_domains};
use openssl::pkey::{PKey, Private};
use sni_index::testing::KeyKind;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use uwsgi_it::netns::Netns;
use uwsgi_it::node::{key_pair, spec_json, TestNode};
use uwsgi_it::platform::{configs, LocalPlatform};
use uwsgi_it::{Instance, InstanceBuilder};

pub const B_UID: u32 = 31201;
pub const C_UID: u32 = 31202;
pub const DOMAIN: &str = "cluster.example";
/// An `ssl-cluster-domain` ([`Cluster::serve_tls`]), its container's uid (31250-31299 are the
/// HTTPS tests').
pub const TLS_DOMAIN: &str = "secure.cluster.example";
pub const TLS_UID: u32 = 31251;
/// An `ssl-ca-cluster-domain` (a client certificate of the customer's CA required,
/// [`Cluster::serve_tls_ca`]) and its container's uid.
pub const PROTECTED_DOMAIN: &str = "protected.cluster.example";
pub const PROTECTED_UID: u32 = 31252;
pub const FLOATING: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 100);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 254);
pub const T: Duration = Duration::from_secs(90);
pub const LEGION: &str = "unbit-test";

/// Whether `dev` in `ns` has `ip`.
pub fn has_address(ns: &Netns, dev: &str, ip: Ipv4Addr) -> bool {
    ns.run(|| {
        let mut nl = Netlink::open().unwrap();
        nl.index_of(dev).unwrap().is_some_and(|i| nl.has_address(i, ip).unwrap())
    })
}

pub struct NodeKey {
    pub key: PKey<Private>,
    pub hex: String,
    /// The key members seal certificates to.
    pub x25519: PKey<Private>,
    pub x25519_hex: String,
}

pub fn node_key() -> NodeKey {
    let key = PKey::generate_ed25519().unwrap();
    let hex = unbit_cluster::members::public_hex(&key).unwrap();
    let x25519 = PKey::generate_x25519().unwrap();
    let x25519_hex = unbit_cluster::members::public_hex(&x25519).unwrap();
    NodeKey { key, hex, x25519, x25519_hex }
}

/// A node's HTTP router: the shipped `vassals-examples/services/http.ini` rendered as `make run`
/// renders it (`LocalPlatform`, a run dir of this node's own), run in the node's namespace with
/// only the node's folders and sockets given on top (see [`NodeRouter::start`]). Fields drop in
/// order: the instance, then the run dir (whose drop removes whatever of it is left).
pub struct NodeRouter {
    pub instance: Instance,
    /// The router's private directory (`/run/unbit-http` on a node): its subscription socket,
    /// which the cluster receiver writes to, and the certificate indexes (`sni/`, `cluster-sni/`).
    pub private: PathBuf,
    /// Its stats socket (`http-stats-server`, a unix socket in the rendered config).
    stats: PathBuf,
    pub platform: LocalPlatform,
}

impl NodeRouter {
    /// The rendered `services/http.ini` for a node whose Emperor is `emperor`, with `default`
    /// as the node's default certificate; HTTP on :80 and HTTPS on :443 of every address of
    /// the namespace it is started in (besides the rendered loopback ports).
    pub fn start(emperor: &TestNode, default: &sni_index::testing::Pair, domains: &[serde_json::Value]) -> NodeRouter {
        let platform = LocalPlatform::new();
        platform.render_configs();
        let (_, ini) = platform.router_config();
        // The node's own default certificate where the rendered config names it: the script
        // that makes one at the first run keeps an existing pair.
        let ssl = platform.run_dir.join("ssl");
        std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&ssl).unwrap();
        std::fs::write(ssl.join("node.crt"), default.cert_pem()).unwrap();
        write_pem(&ssl.join("node.key"), &default.key_pem());
        platform.prepare_router();
        write_domains(Path::new(&configs::option(&ini, "unbit-subscriptions-domains")), domains);
        let private = PathBuf::from(configs::option(&ini, "http-subscription-server"));
        let private = private.parent().unwrap().to_path_buf();
        let stats = PathBuf::from(configs::option(&ini, "http-stats-server"));
        // The same certificate files and ciphers as the rendered https socket, on the node's
        // addresses.
        let https = configs::option(&ini, "https");
        let (_, files) = https.split_once(',').unwrap();
        let instance = platform
            .router_instance("cluster-http", &emperor.subscribe_dir().join("http"), &emperor.containers_dir())
            .args(["--http", "0.0.0.0:80", "--https", &format!("0.0.0.0:443,{files}")])
            .start();
        platform.wait_router_log("validating announces on", T).unwrap();
        NodeRouter { instance, private, stats, platform }
    }

    /// The domains file the router's validator reads (`unbit-subscriptions-domains`).
    pub fn domains(&self) -> PathBuf {
        let (_, ini) = self.platform.router_config();
        PathBuf::from(configs::option(&ini, "unbit-subscriptions-domains"))
    }

    /// `(key, [node names])` of every pool, from the stats socket.
    pub fn pools(&self) -> Vec<(String, Vec<String>)> {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.stats) else { return vec![] };
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        pools_in_stats(&raw)
    }

    pub fn nodes_of(&self, key: &str) -> Vec<String> {
        self.pools().into_iter().find(|(k, _)| k == key).map(|(_, n)| n).unwrap_or_default()
    }

    /// The router's log (the rendered config's `logto`).
    pub fn log(&self) -> String {
        self.platform.router_log()
    }

    pub fn log_path(&self) -> PathBuf {
        self.platform.run_dir.join("log/router.log")
    }
}

/// One node. Fields drop in order: the fastrouter instance, the router, the Emperor (and its
/// containers), then the folder and the namespace.
pub struct Node {
    pub cluster: Option<Instance>,
    pub router: Option<NodeRouter>,
    pub emperor: Option<TestNode>,
    pub name: &'static str,
    pub ip: Ipv4Addr,
    pub key: NodeKey,
    pub dir: tempfile::TempDir,
    pub ns: Netns,
}

impl Node {
    pub fn cluster_log(&self) -> String {
        self.cluster.as_ref().map(|c| c.log()).unwrap_or_default()
    }

    /// The nodes of `key` in this node's HTTP router, read in its namespace.
    pub fn nodes_of(&self, key: &str) -> Vec<String> {
        let r = self.router.as_ref().unwrap();
        self.ns.run(|| r.nodes_of(key))
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub lan: Netns,
    /// The customer's key pair (owner of every domain of the test).
    customer: (String, String),
    /// The CA of the customer's certificates, which the test's clients trust.
    pub tls_ca: sni_index::testing::Pair,
    /// Where the clients' trust (the CA's certificate) is.
    pub client_dir: tempfile::TempDir,
}

pub fn write_key(path: &Path, key: &PKey<Private>) {
    write_pem(path, &key.private_key_to_pem_pkcs8().unwrap());
}

/// A private key's PEM, root's alone (0600) from its creation.
fn write_pem(path: &Path, pem: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).unwrap();
    f.write_all(pem).unwrap();
}

impl Cluster {
    /// The Legion; with `containers`, B and C run one each, serving the domain.
    pub fn start(containers: bool) -> Cluster {
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
                "x25519_key": n.key.x25519_hex,
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
            write_key(&d.join("x25519.key"), &node.key.x25519);
            // The router's own certificate, served for names it has no entry for.
            let default = sni_index::testing::server(&[&format!("node-{}.default", node.name)], KeyKind::P256, None, 1);
            let emperor = node.ns.run(|| TestNode::start_with_shortcuts(&["--unbit-quota", "none"]));
            let (subscribe, homes) = (emperor.subscribe_dir(), emperor.containers_dir());
            let entries = [
                domain_entry(DOMAIN, &[B_UID, C_UID], &customer.1),
                domain_entry(TLS_DOMAIN, &[TLS_UID], &customer.1),
                domain_entry(PROTECTED_DOMAIN, &[PROTECTED_UID], &customer.1),
            ];
            let router = node.ns.run(|| NodeRouter::start(&emperor, &default, &entries));
            let domains = router.domains();
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
                ("unbit-cluster-x25519-key", vec![format!("{}/x25519.key", d.display())]),
                ("unbit-cluster-relay", vec![format!("{fr_}/cluster.sock")]),
                ("unbit-cluster-relay-to", vec![format!("{fr_}/subscriptions.sock")]),
                ("unbit-cluster-router", vec![format!("{}/subscriptions.sock", router.private.display())]),
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
        let client_dir = tempfile::Builder::new().prefix("unbit-cluster-client-").tempdir().unwrap();
        let tls_ca = sni_index::testing::ca("Customer CA");
        std::fs::write(client_dir.path().join("ca.crt"), tls_ca.cert_pem()).unwrap();
        // A visitor's client certificate from the customer's CA.
        let alice = sni_index::testing::client("alice", &tls_ca, 100);
        std::fs::write(client_dir.path().join("alice.crt"), alice.cert_pem()).unwrap();
        std::fs::write(client_dir.path().join("alice.key"), alice.key_pem()).unwrap();
        let cluster = Cluster { nodes, lan, customer, tls_ca, client_dir };
        for (node, uid) in [(1, B_UID), (2, C_UID)].into_iter().filter(|_| containers) {
            cluster.deploy(node, uid, &format!("cluster-domain = {DOMAIN}"));
        }
        cluster
    }

    /// A container `uid` on node `node` with one vassal, `app.ini`, with this line; its app
    /// answers `served by node <name>`. Returns the container's home.
    pub fn deploy(&self, node: usize, uid: u32, line: &str) -> std::path::PathBuf {
        self.deploy_with(node, uid, line, |_| {})
    }

    /// [`Cluster::deploy`], with `prepare` run on the home before the vassal is written.
    pub fn deploy_with(&self, node: usize, uid: u32, line: &str, prepare: impl FnOnce(&Path)) -> std::path::PathBuf {
        let n = &self.nodes[node];
        let e = n.emperor.as_ref().unwrap();
        e.put_spec(uid, &spec_json(uid, &format!("cl{uid}"), 256, 256, &["ssh-ed25519 AAAA cl"], &self.customer));
        let home = e.home(uid);
        uwsgi_it::node::wait_for_path(&home.join("vassals"), T);
        let app = format!(
            "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'served by node {}']\n",
            n.name
        );
        std::fs::write(home.join("app.py"), app).unwrap();
        prepare(&home);
        std::fs::write(
            home.join("vassals/app.ini"),
            format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/app.py\n{line}\n"),
        )
        .unwrap();
        home
    }

    /// [`TLS_DOMAIN`] served by a container ([`TLS_UID`]) on node `node` only, with
    /// `ssl-cluster-domain` and a certificate of the customer's CA (serial 1). Returns the home.
    pub fn serve_tls(&self, node: usize) -> std::path::PathBuf {
        let line = format!("ssl-cluster-domain = {TLS_DOMAIN} $(HOME)/tls.key $(HOME)/tls.crt");
        // The files first: the vassal announces them from its start.
        self.deploy_with(node, TLS_UID, &line, |home| {
            self.write_tls(home, 1);
        })
    }

    /// [`PROTECTED_DOMAIN`] served by a container ([`PROTECTED_UID`]) on node `node` only,
    /// with `ssl-ca-cluster-domain`: a client certificate of the customer's CA required.
    pub fn serve_tls_ca(&self, node: usize) -> std::path::PathBuf {
        let line =
            format!("ssl-ca-cluster-domain = {PROTECTED_DOMAIN} $(HOME)/tls.key $(HOME)/tls.crt !$(HOME)/ca.crt");
        self.deploy_with(node, PROTECTED_UID, &line, |home| {
            self.write_pair(home, PROTECTED_UID, PROTECTED_DOMAIN, 1);
            own_file(home, PROTECTED_UID, "ca.crt", &self.tls_ca.cert_pem());
        })
    }

    /// The customer's certificate for [`TLS_DOMAIN`] with this serial (a renewal is another
    /// serial), written into `home` as the container's own files.
    pub fn write_tls(&self, home: &Path, serial: u32) -> openssl::x509::X509 {
        self.write_pair(home, TLS_UID, TLS_DOMAIN, serial)
    }

    fn write_pair(&self, home: &Path, uid: u32, name: &str, serial: u32) -> openssl::x509::X509 {
        let pair = sni_index::testing::server(&[name], KeyKind::P256, Some(&self.tls_ca), serial);
        own_file(home, uid, "tls.key", &pair.key_pem());
        own_file(home, uid, "tls.crt", &pair.cert_pem());
        pair.cert
    }

    /// The certificate the router at `ip`:443 serves for `name` (SNI), from the LAN.
    pub fn served_certificate(&self, ip: Ipv4Addr, name: &str) -> Result<openssl::x509::X509, String> {
        let out = self.lan.run(|| {
            std::process::Command::new("openssl")
                .args(["s_client", "-connect", &format!("{ip}:443"), "-servername", name])
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap()
        });
        let text = String::from_utf8_lossy(&out.stdout);
        let begin = text.find("-----BEGIN CERTIFICATE-----").ok_or_else(|| format!("no certificate: {text}"))?;
        openssl::x509::X509::from_pem(text[begin..].as_bytes()).map_err(|e| e.to_string())
    }

    /// `curl --resolve NAME:443:IP https://NAME/` from the LAN, trusting the customer's CA only:
    /// the body, or curl's error (a wrong certificate is one).
    pub fn curl_https(&self, ip: Ipv4Addr, name: &str) -> Result<String, String> {
        self.curl_https_with(ip, name, &[])
    }

    /// [`Cluster::curl_https`] with the visitor's client certificate (`alice`, of the customer's
    /// CA).
    pub fn curl_https_as_alice(&self, ip: Ipv4Addr, name: &str) -> Result<String, String> {
        let c = self.client_dir.path();
        let (crt, key) = (c.join("alice.crt").display().to_string(), c.join("alice.key").display().to_string());
        self.curl_https_with(ip, name, &["--cert", &crt, "--key", &key])
    }

    fn curl_https_with(&self, ip: Ipv4Addr, name: &str, extra: &[&str]) -> Result<String, String> {
        let out = self.lan.run(|| {
            std::process::Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "5"])
                .args(extra)
                .arg("--cacert")
                .arg(self.client_dir.path().join("ca.crt"))
                .args(["--resolve", &format!("{name}:443:{ip}"), &format!("https://{name}/")])
                .output()
                .unwrap()
        });
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// `count` requests for the domain through the floating address, from the LAN: their
    /// bodies (an error's text for a failed one).
    pub fn through_floating(&self, count: usize) -> Vec<String> {
        self.lan.run(|| (0..count).map(|_| get(FLOATING, DOMAIN).unwrap_or_else(|e| format!("error: {e}"))).collect())
    }

    pub fn lord(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| has_address(&n.ns, "lan0", FLOATING))
    }

    /// The name of the node holding the floating address, once one does.
    pub fn wait_for_lord(&self) -> &'static str {
        domains_kit::eventually(T, || {
            self.lord().map(|n| n.name).ok_or_else(|| "no node holds the floating address".into())
        })
        .unwrap()
    }

    /// Sends raw datagrams to `to`'s cluster listener from `from`'s namespace and address.
    pub fn send_from(&self, from: &Netns, src: Ipv4Addr, to: &Node, datagrams: &[Vec<u8>]) {
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
                let router_log = n.router.as_ref().map(|r| r.log()).unwrap_or_default();
                for (what, log) in [("fastrouter instance", n.cluster_log()), ("HTTP router", router_log)] {
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    eprintln!("---- node {} {what} ----", n.name);
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
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
pub fn shipped_fastrouter_ini(set: &[(&str, Vec<String>)]) -> String {
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

/// `bytes` as the container's own file `home/file` (complete, then renamed: the validator never
/// reads half a file).
fn own_file(home: &Path, uid: u32, file: &str, bytes: &[u8]) {
    let tmp = home.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::os::unix::fs::chown(&tmp, Some(uid), Some(uid)).unwrap();
    std::fs::rename(&tmp, home.join(file)).unwrap();
}

/// The serial number of a certificate, as a number.
pub fn serial(cert: &openssl::x509::X509) -> u32 {
    cert.serial_number().to_bn().unwrap().to_dec_str().unwrap().parse().unwrap()
}

/// The first entry of a certificate's subject (its CN, for the test's certificates).
pub fn subject_cn(cert: &openssl::x509::X509) -> String {
    cert.subject_name().entries().next().unwrap().data().to_string().unwrap()
}

/// One HTTP/1.0 GET with a Host header; the body on a 200.
pub fn get(ip: Ipv4Addr, host: &str) -> Result<String, String> {
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
