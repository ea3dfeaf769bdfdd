//! Shared by the domain tests: the node's HTTP router with the subscription validator, the
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
}

pub fn start_router(s: RouterSetup) -> Router {
    let private = tempfile::Builder::new().prefix("unbit-http-").tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
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
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&raw) else { return vec![] };
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
