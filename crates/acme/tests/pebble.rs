//! `unbit-acme` against a real ACME CA on loopback: Debian's `pebble`, started and stopped by
//! each test (by PID) with the test kit's `uwsgi_it::acme_ca` (its DNS a dnsmasq resolving the
//! test names to 127.0.0.1), its HTTP-01 port pointed at a stock uWSGI http router (`--http-to`
//! the issuer's challenge socket). The node's front door in that place: tests/automatic_https.rs
//! at the repository's root. Never a public CA.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uwsgi_it::acme_ca::{openssl, require, run, wait_for_port, Guard, TestCa};
use uwsgi_it::ports::free_port;

/// Waits for `cond`, failing with `what` and the issuer's log after a minute.
fn wait_until(what: &str, log: &Path, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; issuer log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.mode() & 0o7777, m.uid())
}

const OWNER: u32 = 30001;

/// One test's CA, DNS, challenge front and issuer, all on loopback ports of their own.
struct Lab {
    dir: tempfile::TempDir,
    names: Vec<String>,
    http_port: u16,
    ca: TestCa,
    router: Option<Guard>,
    issuer: Option<Guard>,
}

impl Lab {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn start(names: &[&str]) -> Lab {
        let dir = tempfile::Builder::new().prefix("unbit-acme-test").tempdir().unwrap();
        let d = dir.path();
        let http_port = free_port();
        let ca = TestCa::start(names, http_port);

        // The issuer's inputs: its settings, the node's domains file, a container home whose
        // log hears about the owner's domains.
        ca.write_settings(&d.join("acme.conf"));
        let domains: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"name": n, "owner_uids": [OWNER], "public_key_pem": "unused", "tls": "auto"}))
            .collect();
        std::fs::write(d.join("domains.json"), serde_json::to_vec(&domains).unwrap()).unwrap();
        let logs = d.join("containers").join(OWNER.to_string()).join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("emperor.log"), "").unwrap();
        for p in [logs.parent().unwrap(), &logs, &logs.join("emperor.log")] {
            std::os::unix::fs::chown(p, Some(OWNER), Some(OWNER)).unwrap();
        }
        Lab { dir, names: names.iter().map(|n| n.to_string()).collect(), http_port, ca, router: None, issuer: None }
    }

    fn socket(&self) -> PathBuf {
        self.path("run/unbit-acme/http-01.sock")
    }

    fn store(&self) -> PathBuf {
        self.path("store")
    }

    fn log(&self) -> PathBuf {
        self.path("issuer.log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn customer_log(&self) -> String {
        std::fs::read_to_string(self.path(&format!("containers/{OWNER}/logs/emperor.log"))).unwrap()
    }

    /// Stock uWSGI's http router on pebble's HTTP-01 port, passing every request to the
    /// issuer's challenge socket (uwsgi protocol), as the node's router does for challenges.
    fn start_router(&mut self) {
        let mut cmd = Command::new(require("/usr/bin/uwsgi", "uwsgi-core"));
        cmd.args(["--plugins", "http", "--master", "--http", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--http-to", self.socket().to_str().unwrap(), "--http-processes", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("router.log")).unwrap());
        let mut guard = Guard::new(cmd.spawn().expect("uwsgi starts"));
        guard.signal = nix::sys::signal::Signal::SIGINT;
        wait_for_port(self.http_port, "the uWSGI http router");
        self.router = Some(guard);
    }

    fn start_issuer(&mut self) {
        let cmd = Command::new(env!("CARGO_BIN_EXE_unbit-acme"))
            .args(["--settings", self.path("acme.conf").to_str().unwrap()])
            .args(["--domains-file", self.path("domains.json").to_str().unwrap()])
            .args(["--store", self.store().to_str().unwrap()])
            .args(["--challenge-socket", self.socket().to_str().unwrap()])
            .args(["--containers-dir", self.path("containers").to_str().unwrap()])
            // Seconds instead of minutes, so the backoff shows within the test.
            .args(["--retry-base", "1", "--retry-max", "4", "--order-timeout", "20"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .spawn()
            .expect("unbit-acme starts");
        let mut issuer = Guard::new(cmd);
        let socket = self.socket();
        wait_until("the challenge socket", &self.log(), || {
            assert!(issuer.child.try_wait().unwrap().is_none(), "unbit-acme exited: {}", self.log_text());
            socket.exists()
        });
        self.issuer = Some(issuer);
    }

    fn index(&self) -> Vec<serde_json::Value> {
        std::fs::read(self.store().join("index.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn indexed(&self, name: &str) -> Option<serde_json::Value> {
        self.index().into_iter().find(|e| e["name"] == name)
    }

    /// Pebble's root (made afresh at each start), from its management interface.
    fn pebble_root(&self) -> PathBuf {
        let path = self.path("pebble-root.pem");
        self.ca.write_root(&path);
        path
    }

    fn serial(&self, name: &str) -> String {
        let chain = self.indexed(name).unwrap()["fullchain"].as_str().unwrap().to_string();
        openssl(self.dir.path(), &["x509", "-in", &chain, "-noout", "-serial"]).trim().to_string()
    }

    /// A GET through the challenge front (the stock router) with `host`.
    fn challenge_get(&self, host: &str, token: &str) -> String {
        run(Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("Host: {host}")])
            .arg(format!("http://127.0.0.1:{}/.well-known/acme-challenge/{token}", self.http_port)))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The issuer first (it holds the socket the router forwards to), then the router.
        self.issuer = None;
        self.router = None;
    }
}

/// The issued pair works for a real client trusting pebble's root, for that name: an
/// `openssl s_server` serves it and curl verifies it with `--resolve`.
fn assert_served(lab: &Lab, name: &str, root: &Path) {
    let e = lab.indexed(name).unwrap();
    let port = free_port();
    let server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", e["fullchain"].as_str().unwrap(), "-cert_chain", e["fullchain"].as_str().unwrap()])
        .args(["-key", e["key"].as_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Guard::new(server);
    wait_for_port(port, "openssl s_server");
    let code = run(Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", root.to_str().unwrap()])
        .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
        .arg(format!("https://{name}:{port}/")));
    assert_eq!(code, "200", "curl did not accept the issued certificate for {name}");
}

#[test]
fn certificates_are_issued_renewed_and_kept_root_only() {
    let mut lab = Lab::start(&["shop.example.org", "blog.example.org"]);
    lab.start_router();
    let started = Instant::now();
    lab.start_issuer();
    let log = lab.log();
    wait_until("both certificates in the index", &log, || lab.index().len() == 2);
    let took = started.elapsed();
    let issued_lines: Vec<String> =
        lab.log_text().lines().filter(|l| l.contains("certificate issued in")).map(String::from).collect();
    println!("two names issued {:.1} s after the issuer started; {issued_lines:#?}", took.as_secs_f64());
    assert_eq!(issued_lines.len(), 2, "{}", lab.log_text());

    // The chain verifies against pebble's root and names the domain; the key is the leaf's.
    let root = lab.pebble_root();
    for name in &lab.names {
        let e = lab.indexed(name).unwrap();
        let chain = e["fullchain"].as_str().unwrap();
        let key = e["key"].as_str().unwrap();
        assert_eq!(e["owner_uids"], serde_json::json!([OWNER]));
        assert!(chain.ends_with(&format!("certs/{name}/current/fullchain.pem")), "{chain}");
        let verified =
            openssl(lab.dir.path(), &["verify", "-CAfile", root.to_str().unwrap(), "-untrusted", chain, chain]);
        assert!(verified.contains(": OK"), "{verified}");
        let text = openssl(lab.dir.path(), &["x509", "-in", chain, "-noout", "-ext", "subjectAltName"]);
        assert!(text.contains(&format!("DNS:{name}")), "{text}");
        let pubkey = |args: &[&str]| openssl(lab.dir.path(), args);
        assert_eq!(pubkey(&["x509", "-in", chain, "-noout", "-pubkey"]), pubkey(&["pkey", "-in", key, "-pubout"]));
        assert_served(&lab, name, &root);
    }

    // Keys and the account are root's alone; every directory on the way is 0700.
    let store = lab.store();
    assert_eq!(mode(&store), (0o700, 0));
    assert_eq!(mode(&store.join("certs")), (0o700, 0));
    let accounts: Vec<PathBuf> =
        std::fs::read_dir(store.join("accounts")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0]), (0o600, 0));
    assert_eq!(mode(&store.join("index.json")), (0o600, 0));
    let shop = store.join("certs/shop.example.org");
    assert_eq!(mode(&shop), (0o700, 0));
    assert_eq!(mode(&shop.join("current/key.pem")), (0o600, 0));
    assert_eq!(mode(&shop.join("current/fullchain.pem")), (0o644, 0));
    let version = std::fs::read_link(shop.join("current")).unwrap();
    assert_eq!(mode(&shop.join(&version)), (0o700, 0));
    // The challenge socket: root's, for the router's group only.
    let socket_dir = lab.socket().parent().unwrap().to_path_buf();
    assert_eq!(mode(&socket_dir).0, 0o710);
    assert_eq!(mode(&lab.socket()).0, 0o660);

    // The owner hears about it in the container's log.
    let customer = lab.customer_log();
    assert!(customer.contains("[unbit-acme] shop.example.org: HTTPS certificate issued, valid until"), "{customer}");

    // No challenge is pending now: the responder answers 404 through the router.
    assert_eq!(lab.challenge_get("shop.example.org", "anything"), "404");

    // Renewal: the operator forces it (pebble 2.4's certificates last five years, so the
    // third-of-lifetime rule is covered by unit tests). A new pair replaces the old one under
    // the same paths; the previous version stays for readers that resolved it a moment ago.
    let before = lab.serial("shop.example.org");
    let old_key = std::fs::read(shop.join("current/key.pem")).unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_unbit-acme"))
        .args(["renew", "--store", store.to_str().unwrap()])
        .arg("shop.example.org"));
    wait_until("the renewal", &log, || lab.log_text().contains("shop.example.org: certificate renewed in"));
    wait_until("the new serial in place", &log, || lab.serial("shop.example.org") != before);
    assert_ne!(std::fs::read(shop.join("current/key.pem")).unwrap(), old_key, "renewal makes a new key");
    assert!(shop.join(&version).join("key.pem").exists(), "the previous version is kept");
    assert!(!shop.join("renew").exists());
    assert_served(&lab, "shop.example.org", &root);
    assert!(lab.customer_log().contains("shop.example.org: HTTPS certificate renewed"));
    // The other name was not touched.
    assert_eq!(lab.log_text().matches("blog.example.org: certificate").count(), 1, "{}", lab.log_text());
    let renew_unknown = Command::new(env!("CARGO_BIN_EXE_unbit-acme"))
        .args(["renew", "--store", store.to_str().unwrap(), "nothing.example.org"])
        .output()
        .unwrap();
    assert!(!renew_unknown.status.success());
    assert!(String::from_utf8_lossy(&renew_unknown.stderr).contains("no certificate for nothing.example.org"));

    // A name whose tls goes back to off leaves the index at once; its files wait out the grace.
    std::fs::write(
        lab.path("domains.json"),
        serde_json::to_vec(&serde_json::json!([
            {"name": "shop.example.org", "owner_uids": [OWNER], "public_key_pem": "unused", "tls": "auto"},
            {"name": "blog.example.org", "owner_uids": [OWNER], "public_key_pem": "unused"},
        ]))
        .unwrap(),
    )
    .unwrap();
    wait_until("blog.example.org out of the index", &log, || lab.indexed("blog.example.org").is_none());
    assert!(lab.indexed("shop.example.org").is_some());
    assert!(store.join("certs/blog.example.org/retired").exists());
    assert!(store.join("certs/blog.example.org/current/key.pem").exists());
}

#[test]
fn a_failed_challenge_is_retried_with_backoff_then_succeeds() {
    // Nothing listens on pebble's HTTP-01 port at first: every validation is refused.
    let mut lab = Lab::start(&["late.example.org"]);
    lab.start_issuer();
    let log = lab.log();
    wait_until("three failed attempts", &log, || lab.log_text().contains("certificate attempt 3 failed"));
    let text = lab.log_text();
    // The waits double: 1 s, 2 s, 4 s (the cap).
    for (n, wait) in [(1, 1), (2, 2), (3, 4)] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("late.example.org: certificate attempt {n} failed")))
            .unwrap_or_else(|| panic!("no attempt {n} in:\n{text}"));
        assert!(line.ends_with(&format!("next try in {wait}s")), "{line}");
        assert!(line.contains("could not validate the http-01 challenge"), "{line}");
    }
    assert!(lab.index().is_empty(), "nothing is served before a certificate exists");
    // The state file is written after the attempt's log line: wait for it, not read it once.
    let failures = || -> u64 {
        std::fs::read(lab.store().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|s| s["late.example.org"]["failures"].as_u64())
            .unwrap_or(0)
    };
    wait_until("three failures in state.json", &log, || failures() >= 3);
    let customer = lab.customer_log();
    assert!(
        customer.contains("[unbit-acme] late.example.org: HTTPS certificate failed: the CA could not validate"),
        "{customer}"
    );
    assert!(customer.contains("check that late.example.org points to this server"), "{customer}");
    assert!(customer.lines().all(|l| l.starts_with("[unbit-acme] ")), "one line per message:\n{customer}");

    // The port opens: the next retry gets the certificate and the failures are forgotten.
    lab.start_router();
    wait_until("the certificate after the retries", &log, || lab.indexed("late.example.org").is_some());
    wait_until("the retry state cleared", &log, || {
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(lab.store().join("state.json")).unwrap()).unwrap();
        state.get("late.example.org").is_none()
    });
    assert!(lab.customer_log().contains("late.example.org: HTTPS certificate issued"));
}

#[test]
fn the_issuer_refuses_a_settings_file_others_may_write_and_a_foreign_store() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("acme.conf");
    std::fs::write(&conf, "directory = off\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_unbit-acme")).args(["--settings", conf.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("group or others may write it"));

    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(OWNER), Some(OWNER)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unbit-acme"))
        .args(["--settings", conf.to_str().unwrap(), "--store", store.to_str().unwrap()])
        .args(["--challenge-socket", dir.path().join("s/http-01.sock").to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("belongs to uid {OWNER}")));

    // directory = off: nothing is ordered, the index is written (empty), the run ends.
    let own = dir.path().join("own");
    let mut child = Command::new(env!("CARGO_BIN_EXE_unbit-acme"))
        .args(["--settings", conf.to_str().unwrap(), "--store", own.to_str().unwrap()])
        .args(["--domains-file", dir.path().join("none.json").to_str().unwrap()])
        .args(["--challenge-socket", dir.path().join("s/http-01.sock").to_str().unwrap(), "--once"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    assert_eq!(std::fs::read_to_string(own.join("index.json")).unwrap().trim(), "[]");
}
