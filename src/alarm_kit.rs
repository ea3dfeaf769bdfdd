//! The alarms test kit: the real `unbit-api` on loopback (SQLite), a local HTTP receiver
//! standing in for Slack, Pushover and Pushbullet (it records every request and answers as
//! scripted: 200, 429 with `Retry-After`, or a stall past the relay's timeout), a real
//! prosody XMPP server on loopback with real accounts, and the node's alarm relay
//! (`unbit-alarmd`) wired to them. Everything is stopped by PID when dropped.

use crate::harness::{project_root, Instance, InstanceBuilder};
use crate::node::TestNode;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn release_binary(name: &str) -> PathBuf {
    let p = project_root().join("target/release").join(name);
    assert!(p.exists(), "{} is missing: run `make binaries` first", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    crate::host::wait_until(&format!("{what} listening on {port}"), Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------------------
// The control API

/// `unbit-api serve` on a free loopback port with a fresh SQLite file, a node (`local`), a
/// customer and one container whose uid is the one asked for.
pub struct LocalApi {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub node_token: String,
    pub customer: (String, String),
    db: PathBuf,
    _serve: Instance,
}

impl LocalApi {
    pub fn start(uid: u32) -> LocalApi {
        let dir = tempfile::Builder::new().prefix("unbit-alarms-api-").tempdir().unwrap();
        let db = dir.path().join("api.sqlite");
        let customer = ("alarmed".to_string(), "alarmed-pass-1234".to_string());
        let admin =
            |args: &[&str]| run(Command::new(release_binary("unbit-api")).arg("admin").arg("--db").arg(&db).args(args));
        let node_token = admin(&[
            "server",
            "add",
            "--name",
            "local",
            "--address",
            "127.0.0.1",
            "--memory",
            "8192",
            "--storage",
            "20000",
        ]);
        admin(&[
            "customer",
            "add",
            "--username",
            &customer.0,
            "--password",
            &customer.1,
            "--email",
            "alarmed@example.com",
        ]);
        // Container uids are 30000 + the row id: start the numbering where this test's uid is.
        let seq = i64::from(uid) - 30_000 - 1;
        run(Command::new("sqlite3")
            .arg(&db)
            .arg(format!("INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('containers', {seq});")));
        let got = admin(&[
            "container",
            "add",
            "--customer",
            &customer.0,
            "--server",
            "local",
            "--name",
            "alarmed",
            "--memory",
            "256",
            "--storage",
            "200",
        ]);
        assert_eq!(got, uid.to_string(), "the API numbered the container differently");
        let port = free_port();
        let serve = InstanceBuilder::new("unbit-api")
            .binary(release_binary("unbit-api").to_str().unwrap())
            .args(["serve", "--db", db.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
            .start();
        wait_for_port(port, "unbit-api");
        LocalApi { dir, url: format!("http://127.0.0.1:{port}"), node_token, customer, db, _serve: serve }
    }

    /// `GET /api/<path>` as the customer, with curl.
    pub fn get(&self, path: &str) -> serde_json::Value {
        let auth = format!("{}:{}", self.customer.0, self.customer.1);
        let body = run(Command::new("curl")
            .args(["-sS", "--fail-with-body", "-u", &auth])
            .arg(format!("{}/api/{path}", self.url)));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// The container's alarm records, newest first.
    pub fn alarms(&self, uid: u32) -> Vec<serde_json::Value> {
        self.get(&format!("alarms/?container={uid}")).as_array().cloned().unwrap_or_default()
    }

    /// The node's connection file, as `unbit-node-sync` and the relay read it (root, 0600).
    pub fn node_sync_conf(&self) -> PathBuf {
        let token = self.dir.path().join("node.token");
        std::fs::write(&token, &self.node_token).unwrap();
        let conf = self.dir.path().join("node-sync.conf");
        std::fs::write(&conf, format!("api = {}\ntoken-file = {}\n", self.url, token.display())).unwrap();
        for f in [&token, &conf] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        conf
    }

    pub fn db(&self) -> &Path {
        &self.db
    }
}

// ---------------------------------------------------------------------------------------
// The receiver standing in for Slack, Pushover and Pushbullet

#[derive(Clone, Debug)]
pub struct Received {
    /// Arrival order across every path.
    pub seq: usize,
    /// When the request was complete (before the answer).
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{} body is not JSON ({e})", self.path))
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(&self) -> BTreeMap<String, String> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A status (200 unless scripted otherwise); with `Some(secs)`, a `Retry-After` header.
    Status(u16, Option<u64>),
    /// Waits this long before answering 200 (past the relay's timeout: the relay gave up).
    Stall(Duration),
}

#[derive(Default)]
struct Inner {
    got: Mutex<Vec<Received>>,
    script: Mutex<Vec<(String, VecDeque<Answer>)>>,
    seq: AtomicUsize,
    stop: AtomicBool,
}

pub struct Receiver {
    pub base: String,
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner::default());
        let shared = inner.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve(&shared, conn));
            }
        });
        Receiver { base, inner, thread: Some(thread) }
    }

    /// The next answers for paths starting with `prefix`, in order; 200 after them.
    pub fn script(&self, prefix: &str, answers: Vec<Answer>) {
        self.inner.script.lock().unwrap().push((prefix.to_string(), answers.into()));
    }

    pub fn requests(&self, prefix: &str) -> Vec<Received> {
        self.inner.got.lock().unwrap().iter().filter(|r| r.path.starts_with(prefix)).cloned().collect()
    }

    /// Waits until at least `count` requests came for paths starting with `prefix`.
    pub fn wait_for(&self, prefix: &str, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests(prefix);
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{prefix}: {} request(s) after {timeout:?}, expected {count}; got so far: {:?}",
                got.len(),
                self.inner.got.lock().unwrap().iter().map(|r| &r.path).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(inner: &Inner, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (first.next().unwrap_or("").to_string(), first.next().unwrap_or("").to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let seq = inner.seq.fetch_add(1, Ordering::SeqCst);
    let answer = {
        let mut script = inner.script.lock().unwrap();
        script.iter_mut().find(|(p, _)| path.starts_with(p.as_str())).and_then(|(_, q)| q.pop_front())
    };
    inner.got.lock().unwrap().push(Received { seq, at: Instant::now(), method, path, headers, body });
    let (status, retry_after) = match answer {
        None => (200, None),
        Some(Answer::Status(s, r)) => (s, r),
        Some(Answer::Stall(d)) => {
            std::thread::sleep(d);
            (200, None)
        }
    };
    let reply = if status == 200 { "{\"status\":1}" } else { "{\"error\":\"scripted\"}" };
    let extra = retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
    let _ = write!(
        conn,
        "HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{reply}",
        reply.len()
    );
}

// ---------------------------------------------------------------------------------------
// prosody

/// Debian's prosody on a free loopback port, serving `alarms.test` with a self-signed
/// certificate (STARTTLS required) and the given accounts; messages to an account that is
/// not logged in are kept by `mod_offline`, where [`Prosody::offline_messages`] reads them.
pub struct Prosody {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub ca: PathBuf,
    _server: Instance,
}

pub const XMPP_DOMAIN: &str = "alarms.test";

impl Prosody {
    pub fn start(accounts: &[(&str, &str)]) -> Prosody {
        assert!(Path::new("/usr/bin/prosody").exists(), "prosody is missing: run scripts/install-deps.sh");
        let dir = tempfile::Builder::new().prefix("unbit-prosody-").tempdir().unwrap();
        let d = dir.path();
        let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN={XMPP_DOMAIN}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{XMPP_DOMAIN}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::create_dir_all(d.join("certs")).unwrap();
        let port = free_port();
        let cfg = d.join("prosody.cfg.lua");
        std::fs::write(
            &cfg,
            format!(
                r#"run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
log = {{ info = "{d}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "ping", "offline", "posix" }}
modules_disabled = {{ "s2s" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
VirtualHost "{XMPP_DOMAIN}"
  ssl = {{ certificate = "{cert}", key = "{key}" }}
"#,
                d = d.display(),
                cert = cert.display(),
                key = key.display()
            ),
        )
        .unwrap();
        for (user, pass) in accounts {
            run(Command::new("prosodyctl").arg("--config").arg(&cfg).args(["register", user, XMPP_DOMAIN, pass]));
        }
        let server = InstanceBuilder::new("prosody")
            .binary("/usr/bin/prosody")
            .args(["--config", cfg.to_str().unwrap(), "-F"])
            .start();
        wait_for_port(port, "prosody");
        Prosody { ca: cert, port, dir, _server: server }
    }

    /// What prosody keeps for `user` while they are offline (its internal storage file).
    pub fn offline_messages(&self, user: &str) -> String {
        let domain = XMPP_DOMAIN.replace('.', "%2e");
        std::fs::read_to_string(self.dir.path().join("data").join(domain).join("offline").join(format!("{user}.list")))
            .unwrap_or_default()
    }

    pub fn wait_for_message(&self, user: &str, needle: &str, count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.offline_messages(user);
            if got.matches(needle).count() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "{user}@{XMPP_DOMAIN} got {count} x `{needle}`? only: {got}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The relay

/// `unbit-alarmd` for `node`, as the node Emperor starts it, with every third-party base URL
/// on `receiver`, XMPP on `prosody` (if any), the node's cgroup subtree, a 2 s timeout, a
/// quota and memory check every second, and `extra` flags.
pub fn start_relay(
    node: &TestNode,
    api: &LocalApi,
    receiver: &Receiver,
    prosody: Option<&Prosody>,
    extra: &[&str],
) -> Instance {
    let mut args = vec![
        "--settings".to_string(),
        api.node_sync_conf().display().to_string(),
        "--specs".into(),
        node.root.path().join("specs").display().to_string(),
        "--containers-dir".into(),
        node.containers_dir().display().to_string(),
        "--socket".into(),
        node.subscribe_dir().join("alarms").display().to_string(),
        "--node-name".into(),
        "test-node".into(),
        "--slack-base".into(),
        receiver.base.clone(),
        "--pushover-base".into(),
        receiver.base.clone(),
        "--pushbullet-base".into(),
        receiver.base.clone(),
        "--timeout".into(),
        "2".into(),
        "--quota-interval".into(),
        "1".into(),
        "--cgroup-name".into(),
        node.cgroup_name.clone(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    if let Some(p) = prosody {
        args.extend([
            "--xmpp-server".into(),
            format!("127.0.0.1:{}", p.port),
            "--xmpp-ca".into(),
            p.ca.display().to_string(),
        ]);
    }
    let relay = InstanceBuilder::new("unbit-alarmd")
        .binary(release_binary("unbit-alarmd").to_str().unwrap())
        .args(args)
        .start();
    relay.wait_for_log("listening on", Duration::from_secs(20)).unwrap();
    relay
}
