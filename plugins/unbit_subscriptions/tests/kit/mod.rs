//! Shared by the domain tests (`tests/domains.rs` at the root, the attack suite here) and the
//! benchmark: the node's HTTP router with the subscription validator, the
//! domains file the node sync would write, and a look at the router's pools.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uwsgi_it::harness::plugin_path;
use uwsgi_it::ports::free_port;
use uwsgi_it::{Instance, InstanceBuilder};

/// The router instance as `vassals-examples/services/http.ini` runs it, on loopback.
pub struct Router {
    pub instance: Instance,
    pub http: String,
    pub stats: String,
    /// 0700: holds the router's private subscription socket.
    pub private: tempfile::TempDir,
    pub domains: PathBuf,
}

pub struct RouterSetup<'a> {
    /// Where containers send (`<subscribe dir>/http`).
    pub socket: &'a Path,
    pub homes: &'a Path,
    pub domains: &'a Path,
    pub processes: u32,
    pub extra: &'a [&'a str],
    /// Runs the http processes as this user (`http-uid`/`http-gid`, the user's own group),
    /// with the validator's pin holder as the same user.
    pub router_user: Option<&'a str>,
}

impl<'a> RouterSetup<'a> {
    /// The router as root, with no extra options.
    pub fn new(socket: &'a Path, homes: &'a Path, domains: &'a Path, processes: u32) -> Self {
        RouterSetup { socket, homes, domains, processes, extra: &[], router_user: None }
    }
}

pub fn start_router(s: RouterSetup) -> Router {
    let private = tempfile::Builder::new().prefix("unbit-http-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut user_args = Vec::new();
    if let Some(user) = s.router_user {
        let u = nix::unistd::User::from_name(user).unwrap().expect("the router user exists");
        // root:<router group> 0710: the http processes follow the pins' names, nothing more.
        std::os::unix::fs::chown(private.path(), Some(0), Some(u.gid.as_raw())).unwrap();
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o710)).unwrap();
        let gid = u.gid.as_raw().to_string();
        user_args = vec![
            "--http-uid".to_string(),
            user.to_string(),
            "--http-gid".to_string(),
            gid,
            "--unbit-subscriptions-router-user".to_string(),
            user.to_string(),
        ];
    }
    let private_socket = private.path().join("subscriptions.sock");
    let (http, stats) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let ini = format!(
        "[uwsgi]\nplugins = http\nmaster = true\nhttp = {http}\nhttp-processes = {processes}\n\
         http-subscription-server = {private}\nhttp-stats-server = {stats}\nsubscription-dotsplit = true\n\
         subscription-tolerance = 30\nunbit-subscriptions-socket = {socket}\nunbit-subscriptions-router = {private}\n\
         unbit-subscriptions-domains = {domains}\nunbit-subscriptions-containers-dir = {homes}\n",
        processes = s.processes,
        private = private_socket.display(),
        socket = s.socket.display(),
        domains = s.domains.display(),
        homes = s.homes.display(),
    );
    let instance = InstanceBuilder::new("http-router")
        .ini(&ini)
        .arg("--plugin")
        .arg(&plugin_path("unbit_subscriptions").to_string_lossy())
        .args(s.extra)
        .args(&user_args)
        .start();
    instance.wait_for_log("validating announces on", Duration::from_secs(20)).unwrap();
    Router { instance, http, stats, private, domains: s.domains.to_path_buf() }
}

impl Router {
    /// `(key, [node names])` of every pool, from the stats server.
    pub fn pools(&self) -> Vec<(String, Vec<String>)> {
        let Ok(mut s) = std::net::TcpStream::connect(&self.stats) else { return vec![] };
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        pools_in_stats(&raw)
    }

    pub fn nodes_of(&self, key: &str) -> Vec<String> {
        self.pools().into_iter().find(|(k, _)| k == key).map(|(_, n)| n).unwrap_or_default()
    }

    /// Waits until the pool of `key` has exactly `n` nodes.
    pub fn wait_for_nodes(&self, key: &str, n: usize, timeout: Duration) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let nodes = self.nodes_of(key);
            if nodes.len() == n {
                return Ok(nodes);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{key}: {} nodes, not {n}, after {timeout:?}: {nodes:?}\n{}",
                    nodes.len(),
                    self.instance.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `/` with `Host: host`, `count` times: the bodies.
    pub fn bodies(&self, host: &str, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| match uwsgi_it::http::get(&self.http, host, "/") {
                Ok(r) if r.status == 200 => r.body,
                Ok(r) => format!("status {}", r.status),
                Err(e) => format!("error {e}"),
            })
            .collect()
    }
}

/// `(key, [node names])` of every pool in a stats server's answer (nothing when it is not JSON).
pub fn pools_in_stats(raw: &str) -> Vec<(String, Vec<String>)> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else { return vec![] };
    v["subscriptions"]
        .as_array()
        .map(|pools| {
            pools
                .iter()
                .map(|p| {
                    let nodes = p["nodes"].as_array().map_or(vec![], |n| {
                        n.iter().map(|n| n["name"].as_str().unwrap_or_default().to_string()).collect()
                    });
                    (p["key"].as_str().unwrap_or_default().to_string(), nodes)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One entry of `domains.json`, as the API's `GET /api/node/v1/domains` answers.
pub fn domain_entry(name: &str, owner_uids: &[u32], public_pem: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "owner_uids": owner_uids, "public_key_pem": public_pem})
}

/// Writes the domains file atomically, as the node sync does.
pub fn write_domains(path: &Path, entries: &[serde_json::Value]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(entries).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Retries `check` until it holds or `timeout` passes; the error describes the last state.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Sends each packet as one datagram to `socket`, from a process running as `uid` (the kernel
/// reports that uid to the validator, as it does for a container's vassal).
pub fn send_as(uid: u32, socket: &Path, packets: &[Vec<u8>]) {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("packets");
    let mut data = Vec::new();
    for p in packets {
        data.extend_from_slice(&(p.len() as u32).to_le_bytes());
        data.extend_from_slice(p);
    }
    std::fs::write(&file, data).unwrap();
    let script = "import socket, struct, sys\n\
                  data = open(sys.argv[1], 'rb').read()\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  pos = 0\n\
                  while pos < len(data):\n    n = struct.unpack('<I', data[pos:pos + 4])[0]\n    s.sendto(data[pos + 4:pos + 4 + n], sys.argv[2])\n    pos += 4 + n\n";
    run_as(uid, &["-c", script, &file.to_string_lossy(), &socket.to_string_lossy()]);
}

/// Like [`send_as`], from a process in the network namespace `/run/netns/<netns>` that stays
/// alive a few seconds after sending (the validator looks at the sender's namespace).
pub fn send_as_in_netns(uid: u32, netns: &str, socket: &Path, packet: &[u8]) {
    let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(bytes.fromhex('{hex}'), '{}')\ntime.sleep(3)\n",
        socket.display()
    );
    let (u, ns) = (uid.to_string(), format!("--net=/run/netns/{netns}"));
    let out = std::process::Command::new("nsenter")
        .args([&ns, "setpriv", &format!("--reuid={u}"), &format!("--regid={u}"), "--clear-groups"])
        .args(["/usr/bin/python3", "-c", &script])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "sender in {netns} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A container's network as the platform lays it out: a network namespace whose `uwsgi0` holds
/// the container's address, the host end `uw<uid>` and a host route to the address through
/// it. Removed on drop.
pub struct ContainerNet {
    pub netns: String,
    pub host_if: String,
}

impl ContainerNet {
    pub fn create(uid: u32) -> ContainerNet {
        let netns = format!("unbit-test-{}-{uid}", std::process::id());
        let host_if = format!("uw{uid}");
        let ip = container_ip(uid).to_string();
        let net = ContainerNet { netns: netns.clone(), host_if: host_if.clone() };
        for args in [
            vec!["netns", "add", &netns],
            vec!["link", "add", &host_if, "type", "veth", "peer", "name", "uwsgi0", "netns", &netns],
            vec!["link", "set", &host_if, "up"],
            vec!["route", "add", &format!("{ip}/32"), "dev", &host_if],
            vec!["-n", &netns, "addr", "add", &format!("{ip}/8"), "dev", "uwsgi0"],
            vec!["-n", &netns, "link", "set", "uwsgi0", "up"],
            vec!["-n", &netns, "link", "set", "lo", "up"],
        ] {
            let out = std::process::Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        net
    }
}

impl Drop for ContainerNet {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

/// The platform's address for a container uid (10.0.0.0/8, as the control API shows it).
pub fn container_ip(uid: u32) -> std::net::Ipv4Addr {
    container_spec::ip_of(uid)
}

/// Sends `packet` `count` times as fast as a process running as `uid` can.
pub fn flood_as(uid: u32, socket: &Path, packet: &[u8], count: usize) -> std::process::Child {
    let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket\np = bytes.fromhex('{hex}')\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         for _ in range({count}):\n    s.sendto(p, '{}')\n",
        socket.display()
    );
    python_as(uid).args(["-c", &script]).spawn().unwrap()
}

fn python_as(uid: u32) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("python3");
    cmd.uid(uid).gid(uid).current_dir("/");
    cmd
}

fn run_as(uid: u32, args: &[&str]) {
    let out = python_as(uid).args(args).output().unwrap();
    assert!(out.status.success(), "sender as uid {uid} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A container's home on the host as the validator sees it: `<homes>/<uid>/run`, owned by
/// the container, with sockets bound in it.
pub struct FakeHome {
    pub uid: u32,
    pub run: PathBuf,
    /// Held open so the sockets stay alive.
    pub listeners: Vec<std::os::unix::net::UnixListener>,
    pub notify: Option<std::os::unix::net::UnixDatagram>,
}

impl FakeHome {
    pub fn new(homes: &Path, uid: u32) -> FakeHome {
        let home = homes.join(uid.to_string());
        let run = home.join("run");
        std::fs::create_dir_all(&run).unwrap();
        for d in [&home, &run] {
            std::os::unix::fs::chown(d, Some(uid), Some(uid)).unwrap();
        }
        FakeHome { uid, run, listeners: Vec::new(), notify: None }
    }

    /// Binds `run/<name>` (a stream socket, as a vassal's) owned by the container.
    pub fn socket(&mut self, name: &str) -> String {
        let path = self.run.join(name);
        self.listeners.push(std::os::unix::net::UnixListener::bind(&path).unwrap());
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.uid)).unwrap();
        format!("/containers/{}/run/{name}", self.uid)
    }

    /// Binds `run/<name>` and answers every connection with `200 <body>`, as a vassal's app
    /// would (the router speaks the uwsgi protocol to it and relays the raw HTTP answer).
    /// A name already bound is re-bound (a new socket, as a restarted vassal's).
    pub fn serve(&mut self, name: &str, body: &str) -> String {
        let path = self.run.join(name);
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.uid)).unwrap();
        // As `chmod-socket = 666` in the domain shortcut: the router is another user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        std::thread::spawn(move || {
            use std::io::Write;
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        format!("/containers/{}/run/{name}", self.uid)
    }

    /// Binds the vassal's notify socket, `run/notify_<id>.socket`; returns its in-container path.
    pub fn notify_socket(&mut self, id: &str) -> String {
        self.bind_notify(&format!("notify_{id}.socket"))
    }

    /// Binds the container-wide notify socket, `run/notify.socket` (where the validator
    /// reports packets that name no notify socket of their own).
    pub fn container_notify_socket(&mut self) -> String {
        self.bind_notify("notify.socket")
    }

    fn bind_notify(&mut self, name: &str) -> String {
        let path = self.run.join(name);
        let s = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.uid)).unwrap();
        self.notify = Some(s);
        format!("/containers/{}/run/{name}", self.uid)
    }

    /// Every message waiting on the notify socket.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        if let Some(s) = &self.notify {
            while let Ok(n) = s.recv(&mut buf) {
                out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        out
    }
}
