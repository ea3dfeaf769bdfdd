//! Test harness: starts the real `unbit-api` binary on a free loopback port against a fresh
//! SQLite file or a fresh database in a PostgreSQL cluster this process runs, plus helpers to
//! drive the admin CLI and call the API. Every server is stopped by PID when its guard drops
//! (also during a panic), and, as a second line, by PR_SET_PDEATHSIG when this process dies.

#![allow(dead_code)]

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str = "run scripts/install-deps.sh (as root) to install the test servers";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_unbit-api")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Makes the child die with this thread's process (the signal is sent when the spawning
/// thread exits, so long-lived servers are spawned from a thread that never ends).
pub fn die_with_parent(cmd: &mut Command) {
    die_with_parent_by(cmd, libc::SIGKILL)
}

pub fn die_with_parent_by(cmd: &mut Command, signal: libc::c_int) {
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A child process stopped by PID when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn require_binary(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(p.exists(), "{path} is missing (Debian package {package}): {INSTALL_HINT}");
    p
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: one cluster per test process, one database per test.

pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
}

static PG: OnceLock<PgCluster> = OnceLock::new();
static COUNTER: AtomicUsize = AtomicUsize::new(0);
static PG_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static PG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Registered with `atexit`: the test harness ends with `exit()`, so the cluster is shut down
/// (SIGQUIT = immediate shutdown) and its directory removed when the tests are over.
extern "C" fn stop_pg() {
    let pid = PG_PID.load(Ordering::SeqCst);
    if pid > 0 {
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}/stat")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(dir) = PG_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    let dir = dirs.pop().unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    assert!(
        dir.join("postgres").exists(),
        "PostgreSQL server binaries not found under /usr/lib/postgresql (package postgresql): {INSTALL_HINT}"
    );
    dir
}

fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no 'postgres' system user (package postgresql): {INSTALL_HINT}");
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// Data directories of earlier runs whose process is gone are removed first.
fn clean_stale(prefix: &str) {
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

pub fn pg() -> &'static PgCluster {
    PG.get_or_init(|| {
        let bin = pg_bin_dir();
        let (uid, gid) = postgres_ids();
        clean_stale("unbit-api-test-pg-");
        let dir = std::env::temp_dir().join(format!("unbit-api-test-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        let data = dir.join("data");
        let out = Command::new(bin.join("initdb"))
            .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .uid(uid)
            .gid(gid)
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let (tx, rx) = std::sync::mpsc::channel();
        let postgres = bin.join("postgres");
        let sock = dir.clone();
        // The server belongs to a thread that lives as long as the test process.
        std::thread::spawn(move || {
            let mut cmd = Command::new(postgres);
            cmd.args(["-D", data.to_str().unwrap(), "-p", &port.to_string(), "-h", "127.0.0.1"])
                .args(["-k", sock.to_str().unwrap(), "-c", "fsync=off", "-c", "max_connections=400"])
                .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .uid(uid)
                .gid(gid)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // If this process dies without running `atexit`, the kernel still stops postgres.
            die_with_parent_by(&mut cmd, libc::SIGQUIT);
            let mut child = cmd.spawn().expect("postgres starts");
            PG_PID.store(child.id() as i32, Ordering::SeqCst);
            tx.send(()).unwrap();
            let _ = child.wait();
        });
        rx.recv().unwrap();
        let _ = PG_DIR.set(dir.clone());
        unsafe { libc::atexit(stop_pg) };
        wait_for_port(port, "postgres");
        let cluster = PgCluster { port, bin };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.psql("postgres", "SELECT 1") {
            assert!(Instant::now() < deadline, "postgres does not answer queries");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    })
}

impl PgCluster {
    pub fn psql(&self, db: &str, sql: &str) -> bool {
        Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-qAt", "-c", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    pub fn new_database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        assert!(self.psql("postgres", &format!("CREATE DATABASE {name}")), "CREATE DATABASE failed");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

// ---------------------------------------------------------------------------------------
// The API under test.

pub struct Api {
    pub backend: Backend,
    pub db: String,
    pub port: u16,
    pub base: String,
    pub dir: tempfile::TempDir,
    server: Option<Guard>,
    pub client: Client,
}

impl Api {
    /// A fresh database (not served yet: set up with `admin`, then `start`).
    pub fn new(backend: Backend) -> Api {
        let dir = tempfile::Builder::new().prefix("unbit-api-test").tempdir().unwrap();
        let db = match backend {
            Backend::Sqlite => dir.path().join("api.db").to_str().unwrap().to_string(),
            Backend::Postgres => pg().new_database(),
        };
        let port = free_port();
        Api {
            backend,
            db,
            port,
            base: format!("http://127.0.0.1:{port}/api"),
            dir,
            server: None,
            client: Client::builder().timeout(Duration::from_secs(60)).build().unwrap(),
        }
    }

    /// Runs `unbit-api admin --db <db> <args>` and returns its stdout; panics on failure.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.try_admin(args);
        assert!(out.0, "admin {args:?} failed: {}", out.2);
        out.1
    }

    /// (success, stdout, stderr)
    pub fn try_admin(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(bin()).args(["admin", "--db", &self.db]).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    pub fn start(&mut self) {
        self.start_with(&[]);
    }

    pub fn start_with(&mut self, extra: &[&str]) {
        self.stop();
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--db", &self.db, "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut cmd);
        self.server = Some(Guard(cmd.spawn().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Guard(child)) = &mut self.server {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("unbit-api exited with {status}: {}", self.log());
                }
            }
            assert!(Instant::now() < deadline, "unbit-api did not start: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        self.server = None;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, who: &Who, path: &str) -> Reply {
        self.send(who, self.client.get(self.url(path)))
    }

    pub fn post(&self, who: &Who, path: &str, body: &str) -> Reply {
        self.send(who, self.client.post(self.url(path)).body(body.to_string()))
    }

    pub fn post_json(&self, who: &Who, path: &str, body: Value) -> Reply {
        self.post(who, path, &body.to_string())
    }

    pub fn delete(&self, who: &Who, path: &str, body: Option<Value>) -> Reply {
        let mut rb = self.client.delete(self.url(path));
        if let Some(b) = body {
            rb = rb.body(b.to_string());
        }
        self.send(who, rb)
    }

    pub fn send(&self, who: &Who, rb: RequestBuilder) -> Reply {
        let rb = match who {
            Who::Anonymous => rb,
            Who::Customer(u, p) => rb.basic_auth(u, Some(p)),
            Who::Node(token) => rb.header("X-Unbit-Node-Token", token.as_str()),
        };
        Reply::from(rb.send().expect("request sent"))
    }

    /// Runs `sql` on the database behind the API's back: rows the API and its admin CLI
    /// would never write (old data, a hand edit).
    pub fn sql(&self, sql: &str) {
        let done = match self.backend {
            Backend::Sqlite => Command::new("sqlite3").arg(&self.db).arg(sql).status().unwrap().success(),
            Backend::Postgres => pg().psql(&self.db, sql),
        };
        assert!(done, "{sql} failed");
    }

    // -- setup helpers ------------------------------------------------------------------

    pub fn server(&self, name: &str, address: &str, memory: u32, storage: u32) -> Who {
        let token = self.admin(&[
            "server",
            "add",
            "--name",
            name,
            "--address",
            address,
            "--memory",
            &memory.to_string(),
            "--storage",
            &storage.to_string(),
        ]);
        Who::Node(token.trim().to_string())
    }

    pub fn customer(&self, username: &str, password: &str) -> Who {
        self.admin(&["customer", "add", "--username", username, "--password", password]);
        Who::Customer(username.to_string(), password.to_string())
    }

    pub fn container(&self, customer: &Who, server: &str, name: &str, memory: u32, storage: u32) -> u32 {
        let Who::Customer(u, _) = customer else { panic!("not a customer") };
        self.admin(&[
            "container",
            "add",
            "--customer",
            u,
            "--server",
            server,
            "--name",
            name,
            "--memory",
            &memory.to_string(),
            "--storage",
            &storage.to_string(),
        ])
        .trim()
        .parse()
        .unwrap()
    }

    pub fn distro(&self, name: &str, path: &str) -> i64 {
        self.admin(&["distro", "add", "--name", name, "--path", path]).trim().parse().unwrap()
    }
}

#[derive(Clone, Debug)]
pub enum Who {
    Anonymous,
    Customer(String, String),
    Node(String),
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().unwrap_or_default();
        Reply { status, headers, text }
    }
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status, body: {}", self.text);
        self.json()
    }

    /// Asserts an error status naming `field` (when given).
    #[track_caller]
    pub fn expect_error(&self, status: u16, field: Option<&str>) -> Value {
        let v = self.expect(status);
        assert!(v["error"].is_string(), "error body without 'error': {v}");
        if let Some(f) = field {
            assert_eq!(v["field"], f, "wrong field in {v}");
            assert!(v["reason"].is_string(), "no reason in {v}");
        }
        v
    }
}

/// A real OpenSSH public key, made by ssh-keygen.
pub fn ssh_key() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test@example", "-f", path.to_str().unwrap()])
        .status()
        .expect("ssh-keygen (package openssh-client) runs")
        .success();
    assert!(ok);
    std::fs::read_to_string(path.with_extension("pub")).unwrap().trim().to_string()
}

/// Runs a test body once against SQLite and once against PostgreSQL.
#[macro_export]
macro_rules! both {
    ($(fn $name:ident($api:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[allow(unused_mut)]
                fn run(mut $api: $crate::harness::Api) $body
                #[test]
                fn sqlite() {
                    run($crate::harness::Api::new($crate::harness::Backend::Sqlite));
                }
                #[test]
                fn postgres() {
                    run($crate::harness::Api::new($crate::harness::Backend::Postgres));
                }
            }
        )*
    };
}

/// dnsmasq on a loopback port answering TXT records (and nothing else: no upstream, no hosts).
pub fn dnsmasq(records: &[(&str, &str)]) -> (Guard, u16) {
    let bin = require_binary("/usr/sbin/dnsmasq", "dnsmasq-base");
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
        .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file="])
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, text) in records {
        cmd.arg(format!("--txt-record={name},{text}"));
    }
    die_with_parent(&mut cmd);
    let guard = Guard(cmd.spawn().expect("dnsmasq starts"));
    // dnsmasq also listens on TCP: ready when it accepts.
    wait_for_port(port, "dnsmasq");
    (guard, port)
}

pub fn customer_uuid(api: &Api, who: &Who) -> String {
    api.get(who, "/me/").expect(200)["uuid"].as_str().unwrap().to_string()
}
