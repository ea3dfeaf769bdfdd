//! HTTPS for customer domains (issue 12), as root, with a real container and real clients: the
//! node's router started from the shipped `vassals-examples/services/http.ini` (rendered as
//! `make run` renders it, with `http-processes = 2`), the validator reading the customer's
//! `ssl-domain` / `ssl-ca-domain` files, and `openssl s_client` / `curl --resolve` on loopback.
//! Each test is what a customer or a visitor does and what they must see: the certificate
//! served, the answer, the refusal, the message in the customer's log.
//!
//! The node, the container and the router are shared by the tests of this file; the last test
//! to finish stops them.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, write_domains};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use uwsgi_it::http;
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};
use uwsgi_it::platform::{configs, LocalPlatform};
use uwsgi_it::Instance;

const T: Duration = Duration::from_secs(90);
const UID: u32 = 30361;

/// An app that says which vassal it is and what the router told it about the connection.
fn app(name: &str) -> String {
    format!(
        "import json\n\
         def application(env, start_response):\n    \
             body = json.dumps({{'app': '{name}', 'host': env.get('HTTP_HOST'), 'https': env.get('HTTPS'), 'dn': env.get('HTTPS_DN')}}).encode()\n    \
             start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])\n    \
             return [body]\n"
    )
}

struct Fixture {
    // Dropped in this order: the router, then the node (its containers), then the run dir.
    router: Instance,
    node: TestNode,
    platform: LocalPlatform,
    http: String,
    https_port: u16,
    home: PathBuf,
    /// Certificates and keys the visitors hold (the customer's CA, client certificates).
    client: tempfile::TempDir,
    default_cert: PathBuf,
}

/// `openssl` with these arguments; panics with its output when it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A new RSA-2048 key and a self-signed certificate with this subject: `dir/<file>.{key,crt}`.
fn req_x509(dir: &Path, file: &str, subject: &str, extra: &[&str]) {
    let (key, crt) = (dir.join(format!("{file}.key")), dir.join(format!("{file}.crt")));
    let mut args = vec!["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", subject];
    args.extend(extra);
    args.extend(["-keyout", key.to_str().unwrap(), "-out", crt.to_str().unwrap()]);
    openssl(&args);
}

/// A key and a self-signed certificate `dir/<file>.{key,crt}` for `names` (the first is the
/// CN), as the quickstart makes them.
fn self_signed(dir: &Path, file: &str, names: &[&str]) {
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    req_x509(dir, file, &format!("/CN={}", names[0]), &["-addext", &format!("subjectAltName={}", san.join(","))]);
}

/// `dir/<file>.{key,crt}`: a client certificate `/O=Customer/CN=<cn>` signed by `dir/ca`.
fn client_cert(dir: &Path, file: &str, cn: &str) {
    let p = |ext: &str| dir.join(format!("{file}.{ext}")).to_string_lossy().into_owned();
    let ca = |ext: &str| dir.join(format!("ca.{ext}")).to_string_lossy().into_owned();
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("key"),
        "-out",
        &p("csr"),
        "-subj",
        &format!("/O=Customer/CN={cn}"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-days",
        "30",
        "-in",
        &p("csr"),
        "-CA",
        &ca("crt"),
        "-CAkey",
        &ca("key"),
        "-set_serial",
        "01",
        "-out",
        &p("crt"),
    ]);
}

/// Gives the container the files just written in its home (as it would have made them).
fn hand_over(home: &Path, rels: &[&str]) {
    for rel in rels {
        let path = home.join(rel);
        std::os::unix::fs::chown(&path, Some(UID), Some(UID)).unwrap();
        let mode = if rel.ends_with(".key") { 0o600 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

impl Fixture {
    fn start() -> Fixture {
        let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
        let platform = LocalPlatform::new();
        platform.render_configs();
        let run = platform.run_dir.clone();
        let (_, shipped) = platform.router_config();
        let http = configs::option(&shipped, "http");
        let https_port = configs::port(&configs::option(&shipped, "https"));

        let default_cert = platform.prepare_router();

        let keys = key_pair();
        let domains =
            ["example.test", ".wild.test", "secure.test", "opt.test", "rotate.test", "redirect.test", "new.test"];
        let entries: Vec<_> = domains.iter().map(|d| domain_entry(d, &[UID], &keys.1)).collect();
        write_domains(&run.join("domains.json"), &entries);

        // The shipped config as it is; only the test node's folders are given on top, and two
        // http processes (later options win).
        let router = platform
            .router_instance("https", &node.subscribe_dir().join("http"), &node.containers_dir())
            .args(["--http-processes", "2"])
            .start();
        let client = tempfile::tempdir().unwrap();
        let mut f = Fixture { router, node, platform, http, https_port, home: PathBuf::new(), client, default_cert };
        f.wait_log("HTTPS on 127.0.0.1:");

        f.node.put_spec(UID, &spec_json(UID, "https", 512, 512, &["ssh-ed25519 AAAA https"], &keys));
        f.home = f.node.home(UID);
        wait_for_path(&f.home.join("vassals"), T);
        let tls = f.home.join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::os::unix::fs::chown(&tls, Some(UID), Some(UID)).unwrap();
        self_signed(&tls, "example", &["example.test"]);
        self_signed(&tls, "wild", &["*.wild.test"]);
        self_signed(&tls, "secure", &["secure.test"]);
        self_signed(&tls, "opt", &["opt.test"]);
        self_signed(&tls, "rotate", &["rotate.test"]);
        self_signed(&tls, "redirect", &["redirect.test"]);
        // The customer's CA (kept by the customer, here in the visitors' dir) and its public
        // certificate in the home.
        let c = f.client.path();
        f.make_ca();
        std::fs::copy(c.join("ca.crt"), tls.join("ca.crt")).unwrap();
        let files: Vec<String> = ["example", "wild", "secure", "opt", "rotate", "redirect"]
            .iter()
            .flat_map(|n| [format!("tls/{n}.key"), format!("tls/{n}.crt")])
            .chain(["tls/ca.crt".to_string()])
            .collect();
        hand_over(&f.home, &files.iter().map(String::as_str).collect::<Vec<_>>());
        client_cert(c, "alice", "alice");
        self_signed(c, "mallory", &["mallory"]);

        let vassals = [
            ("exact", "ssl-domain = example.test $(HOME)/tls/example.key $(HOME)/tls/example.crt"),
            ("wild", "ssl-domain = .wild.test $(HOME)/tls/wild.key $(HOME)/tls/wild.crt"),
            ("secure", "ssl-ca-domain = secure.test $(HOME)/tls/secure.key $(HOME)/tls/secure.crt !$(HOME)/tls/ca.crt"),
            ("opt", "ssl-ca-domain = opt.test $(HOME)/tls/opt.key $(HOME)/tls/opt.crt $(HOME)/tls/ca.crt"),
            ("rotate", "ssl-domain = rotate.test $(HOME)/tls/rotate.key $(HOME)/tls/rotate.crt"),
            (
                "redirect",
                "ssl-domain = redirect.test $(HOME)/tls/redirect.key $(HOME)/tls/redirect.crt\nplugin = router_redirect\n\
                 route-if-not = equal:${HTTPS};on redirect-permanent:https://${HTTP_HOST}${REQUEST_URI}",
            ),
        ];
        for (name, lines) in vassals {
            f.deploy(name, lines);
        }
        for host in ["example.test", "a.wild.test", "opt.test", "rotate.test"] {
            if let Err(e) = http::wait_for_status(&f.http, host, "/", 200, T) {
                panic!("{e}\nrouter log:\n{}", f.log());
            }
        }
        for name in ["example.test", ".wild.test", "secure.test", "opt.test", "rotate.test", "redirect.test"] {
            wait_for_path(&f.index().join(name), T);
        }
        f
    }

    /// The customer's CA, `ca.{key,crt}` in the visitors' dir.
    fn make_ca(&self) {
        req_x509(self.client.path(), "ca", "/O=Customer/CN=Customer CA", &[]);
    }

    /// `~/<name>.py` and `~/vassals/<name>.ini` with these lines.
    fn deploy(&self, name: &str, lines: &str) {
        std::fs::write(self.home.join(format!("{name}.py")), app(name)).unwrap();
        std::fs::write(
            self.home.join(format!("vassals/{name}.ini")),
            format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/{name}.py\n{lines}\n"),
        )
        .unwrap();
    }

    /// The router's certificate index (the validator writes it, the http processes read it).
    fn index(&self) -> PathBuf {
        self.platform.run_dir.join("router/sni")
    }

    fn log(&self) -> String {
        self.platform.router_log()
    }

    fn wait_log(&self, needle: &str) {
        if let Err(e) = self.platform.wait_router_log(needle, T) {
            panic!("{e}\n{}", self.router.log());
        }
    }

    fn https_addr(&self) -> String {
        format!("127.0.0.1:{}", self.https_port)
    }

    /// `openssl s_client` with these extra arguments: what it printed (the handshake's summary,
    /// the server's certificate subject).
    fn s_client(&self, extra: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &self.https_addr()])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// A full handshake for `name` whose session `openssl s_client -sess_out` keeps in `file`:
    /// one request is made and answered first, so the session tickets a TLS 1.3 server sends
    /// after the handshake have arrived when the client saves the session.
    fn session_out(&self, name: &str, version: &str, file: &str) -> String {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &self.https_addr(), "-servername", name, version, "-ign_eof"])
            .args(["-sess_out", file])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), request.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// The subject of the certificate served for the server name `sni` (`None`: no SNI).
    fn subject(&self, sni: Option<&str>) -> String {
        let out = match sni {
            Some(name) => self.s_client(&["-servername", name]),
            None => self.s_client(&["-noservername"]),
        };
        out.lines()
            .find_map(|l| l.strip_prefix("subject="))
            .unwrap_or_else(|| panic!("no certificate for {sni:?}:\n{out}"))
            .trim()
            .to_string()
    }

    /// `curl --resolve name:port:127.0.0.1 https://name:port/path` with `extra` arguments: the
    /// exit code, the status and the body.
    fn curl(&self, name: &str, extra: &[&str]) -> (i32, u16, String) {
        let resolve = format!("{name}:{}:127.0.0.1", self.https_port);
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--resolve", &resolve])
            .args(extra)
            .arg(format!("https://{name}:{}/", self.https_port))
            .current_dir(self.client.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (out.status.code().unwrap_or(-1), status.parse().unwrap_or(0), body.to_string())
    }

    /// The customer's certificate of `file` in the home, to trust with `--cacert`.
    fn cacert(&self, file: &str) -> String {
        self.home.join(format!("tls/{file}.crt")).to_string_lossy().into_owned()
    }
}

/// The fixture shared by the tests running now; started by the first, stopped with the last.
fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    uwsgi_it::harness::shared(&SHARED, Fixture::start)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the app's JSON ({e}): {body}"))
}

#[test]
fn each_name_gets_its_certificate_exact_and_wildcard_and_others_the_default() {
    let f = fixture();
    assert_eq!(f.subject(Some("example.test")), "CN = example.test");
    assert_eq!(f.subject(Some("EXAMPLE.test")), "CN = example.test", "server names are not case-sensitive");
    assert_eq!(f.subject(Some("shop.wild.test")), "CN = *.wild.test");
    let default = f.subject(None);
    assert_eq!(default, "CN = uwsgi.it local node", "no SNI: the node's default certificate");
    for other in ["unknown.test", "a.b.wild.test", "wild.test"] {
        assert_eq!(f.subject(Some(other)), default, "{other}: not covered, the default certificate");
    }
    // A real client trusting only the customer's certificate gets through, name checks and all.
    let (rc, status, body) = f.curl("example.test", &["--cacert", &f.cacert("example")]);
    assert_eq!((rc, status), (0, 200), "{body}");
    let answer = json(&body);
    assert_eq!((answer["app"].as_str(), answer["https"].as_str()), (Some("exact"), Some("on")));
    let (rc, status, body) = f.curl("shop.wild.test", &["--cacert", &f.cacert("wild")]);
    assert_eq!((rc, status, json(&body)["app"].as_str()), (0, 200, Some("wild")));
    // An unknown name is refused by a client that checks the name: the default certificate.
    let (rc, _, _) = f.curl("unknown.test", &["--cacert", &f.cacert("example")]);
    assert_ne!(rc, 0);
    let (rc, _, _) = f.curl("unknown.test", &["--cacert", &f.default_cert.to_string_lossy()]);
    assert_eq!(rc, 60, "the default certificate does not name unknown.test");
}

#[test]
fn ssl_domain_serves_plain_http_too_and_the_redirect_recipe_works() {
    let f = fixture();
    let r = http::get(&f.http, "example.test", "/").unwrap();
    assert_eq!((r.status, json(&r.body)["https"].clone()), (200, serde_json::Value::Null));
    let r = http::get(&f.http, "redirect.test", "/some/page?x=1").unwrap();
    assert_eq!(r.status, 301, "{r:?}");
    let location = r.headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.as_str());
    assert_eq!(location, Some("https://redirect.test/some/page?x=1"));
    let (rc, status, body) = f.curl("redirect.test", &["--cacert", &f.cacert("redirect")]);
    assert_eq!((rc, status, json(&body)["app"].as_str()), (0, 200, Some("redirect")));
}

#[test]
fn tls_1_2_and_1_3_x25519_and_p256_without_a_hello_retry() {
    let f = fixture();
    for version in ["-tls1_2", "-tls1_3"] {
        let out = f.s_client(&["-servername", "example.test", version]);
        assert!(out.contains("subject=CN = example.test"), "{version}:\n{out}");
        let want = if version == "-tls1_2" { "New, TLSv1.2" } else { "New, TLSv1.3" };
        assert!(out.contains(want), "{version}:\n{out}");
    }
    let x25519 = f.s_client(&["-servername", "example.test", "-groups", "X25519", "-trace"]);
    assert!(x25519.contains("Server Temp Key: X25519"), "an X25519-only client:\n{x25519}");
    let p256 = f.s_client(&["-servername", "example.test", "-groups", "P-256", "-trace"]);
    assert!(p256.contains("Server Temp Key: ECDH, prime256v1"), "a P-256-only client:\n{p256}");
    // What curl and browsers send (X25519 first, P-256 next): answered at once.
    let usual = f.s_client(&["-servername", "example.test", "-groups", "X25519:P-256", "-trace"]);
    // OpenSSL's trace shows a HelloRetryRequest as a first, short ServerHello: one is wanted.
    for out in [&x25519, &p256, &usual] {
        assert_eq!(out.matches("ServerHello, Length=").count(), 1, "a HelloRetryRequest:\n{out}");
    }
    // Older protocols are refused.
    let old = f.s_client(&["-servername", "example.test", "-tls1_1"]);
    assert!(!old.contains("subject=") && old.contains("alert"), "{old}");
}

/// Sessions made in one router process resume in the other: the server side of each resumed
/// connection is found with `ss`, and both processes must have taken some.
#[test]
fn sessions_resume_in_every_router_process_and_only_for_their_own_name() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    for version in ["-tls1_3", "-tls1_2"] {
        let sess = dir.path().join(format!("session{version}")).to_string_lossy().into_owned();
        let first = f.session_out("example.test", version, &sess);
        assert!(first.contains("New,"), "{first}");
        let mut servers = std::collections::BTreeSet::new();
        let started = Instant::now();
        while servers.len() < 2 {
            let (reused, server) = resumed_connection(&f.https_addr(), "example.test", version, &sess);
            assert!(reused, "{version}: a session made by one router process resumes (served by {server:?})");
            servers.extend(server);
            assert!(started.elapsed() < T, "{version}: every resumed connection landed in {servers:?}");
        }
        println!("{version}: sessions resumed in router processes {servers:?}");
        // The same session offered for another name is not resumed there (OpenSSL's client
        // offers it over TLS 1.2 only; Python's, below, over TLS 1.3 too).
        let other = f.s_client(&["-servername", "shop.wild.test", version, "-sess_in", &sess]);
        assert!(other.contains("New,") && other.contains("subject=CN = *.wild.test"), "{other}");
    }
    // A session offered under another name resumes only where the same entry serves it (the
    // wildcard's names), never under another entry, whatever the TLS version.
    for (first, then, resumes) in [
        ("a.wild.test", "b.wild.test", true),
        ("a.wild.test", "example.test", false),
        ("example.test", "opt.test", false),
    ] {
        for version in ["TLSv1_2", "TLSv1_3"] {
            let got = python_resumes(f.https_port, first, then, version);
            assert_eq!(got, resumes, "{version}: a session of {first} offered for {then}");
        }
    }
}

/// Whether CPython's ssl client, offering a session made with `first` when connecting with the
/// server name `then`, has it resumed.
fn python_resumes(port: u16, first: &str, then: &str, version: &str) -> bool {
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n\
         ctx.check_hostname = False\n\
         ctx.verify_mode = ssl.CERT_NONE\n\
         ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.{version}\n\
         def get(name, session=None):\n    \
             s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname=name, session=session)\n    \
             s.sendall(b'GET / HTTP/1.1\\r\\nHost: ' + name.encode() + b'\\r\\nConnection: close\\r\\n\\r\\n')\n    \
             s.recv(65536)\n    \
             reused, session = s.session_reused, s.session\n    \
             s.close()\n    \
             return reused, session\n\
         _, session = get('{first}')\n\
         print(get('{then}', session)[0])\n"
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

/// One `openssl s_client -sess_in` connection, held open until the router process on its other
/// end is known: whether it resumed, and that process.
fn resumed_connection(addr: &str, name: &str, version: &str, sess: &str) -> (bool, Option<i32>) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", name, version, "-sess_in", sess])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reused = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("Reused,") || line.starts_with("New,") {
            reused = Some(line.starts_with("Reused,"));
            break;
        }
    }
    let server = server_of(child.id() as i32, addr);
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    (reused.unwrap_or(false), server)
}

/// The process holding the server end of the TCP connection `client` made to `addr`.
fn server_of(client: i32, addr: &str) -> Option<i32> {
    let out = Command::new("ss").args(["-Htnp", "state", "established"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid_of = |l: &str| l.split("pid=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<i32>().ok();
    let local = text.lines().find(|l| pid_of(l) == Some(client))?.split_whitespace().nth(2)?.to_string();
    text.lines()
        .find(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(2) == Some(&addr) && cols.get(3) == Some(&local.as_str())
        })
        .and_then(pid_of)
}

#[test]
fn the_first_handshake_of_a_new_name_succeeds() {
    let f = fixture();
    let tls = f.home.join("tls");
    self_signed(&tls, "new", &["new.test"]);
    hand_over(&f.home, &["tls/new.key", "tls/new.crt"]);
    f.deploy("new", "ssl-domain = new.test $(HOME)/tls/new.key $(HOME)/tls/new.crt");
    // The validator wrote its entry: no router process has seen the name yet.
    wait_for_path(&f.index().join("new.test"), T);
    let (rc, status, body) = f.curl("new.test", &["--cacert", &f.cacert("new")]);
    assert_eq!((rc, status), (0, 200), "the very first handshake for new.test: {body}\n{}", f.log());
    assert_eq!(json(&body)["app"], "new");
    assert!(!f.log().contains("does not load"), "{}", f.log());
}

#[test]
fn a_renewed_certificate_is_served_within_seconds_and_a_broken_one_keeps_the_old() {
    let f = fixture();
    assert_eq!(f.subject(Some("rotate.test")), "CN = rotate.test");
    // Renewal as certbot or an editor does it: new files renamed over the old ones.
    let scratch = tempfile::tempdir().unwrap();
    self_signed(scratch.path(), "renewed", &["rotate.test", "www.rotate.test"]);
    let tls = f.home.join("tls");
    for ext in ["key", "crt"] {
        let tmp = tls.join(format!(".rotate.{ext}.new"));
        std::fs::copy(scratch.path().join(format!("renewed.{ext}")), &tmp).unwrap();
        hand_over(&f.home, &[&format!("tls/.rotate.{ext}.new")]);
        std::fs::rename(&tmp, tls.join(format!("rotate.{ext}"))).unwrap();
    }
    let renewed = Instant::now();
    let serial = |out: &str| -> Option<String> {
        let pem = out.split("-----BEGIN CERTIFICATE-----").nth(1)?;
        Some(pem.split("-----END").next()?.to_string())
    };
    let new_pem = std::fs::read_to_string(tls.join("rotate.crt")).unwrap();
    let wanted = serial(&new_pem).unwrap().split_whitespace().collect::<String>();
    eventually(T, || {
        let out = f.s_client(&["-servername", "rotate.test"]);
        let got = serial(&out).map(|s| s.split_whitespace().collect::<String>());
        if got.as_deref() == Some(wanted.as_str()) {
            Ok(())
        } else {
            Err(format!("still the old certificate:\n{out}"))
        }
    })
    .unwrap();
    println!("a renewed certificate was served {:.1} s after its files were replaced", renewed.elapsed().as_secs_f64());
    eventually(T, || {
        let log = f.node.customer_log(UID);
        if log.contains("HTTPS for rotate.test: new certificate ~/tls/rotate.crt") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .unwrap();

    // Half a renewal: a certificate of another key. The previous pair stays served, and the
    // customer's log says why.
    std::fs::copy(tls.join("example.crt"), tls.join("rotate.crt")).unwrap();
    hand_over(&f.home, &["tls/rotate.crt"]);
    eventually(T, || {
        let log = f.node.customer_log(UID);
        let line = "HTTPS for rotate.test: ~/tls/rotate.crt not loaded: the key does not belong to the certificate";
        if log.contains(line) && log.contains("still serving the previous certificate (CN=rotate.test") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .unwrap();
    let out = f.s_client(&["-servername", "rotate.test"]);
    let got = serial(&out).map(|s| s.split_whitespace().collect::<String>());
    assert_eq!(got.as_deref(), Some(wanted.as_str()), "the broken pair is not served:\n{out}");
    let (rc, status, _) = f.curl("rotate.test", &["-k"]);
    assert_eq!((rc, status), (0, 200));
}

#[test]
fn a_required_client_certificate_is_checked_and_its_dn_reaches_the_app() {
    let f = fixture();
    let (rc, status, _) = f.curl("secure.test", &["--cacert", &f.cacert("secure")]);
    assert!(rc != 0 && status != 200, "no client certificate: refused in the handshake (curl {rc}, {status})");
    let alice = ["--cacert", &f.cacert("secure"), "--cert", "alice.crt", "--key", "alice.key"];
    let (rc, status, body) = f.curl("secure.test", &alice);
    assert_eq!((rc, status), (0, 200), "{body}");
    let answer = json(&body);
    assert_eq!(answer["dn"], "/O=Customer/CN=alice");
    assert_eq!(answer["https"], "on");
    let mallory = ["--cacert", &f.cacert("secure"), "--cert", "mallory.crt", "--key", "mallory.key"];
    let (rc, status, _) = f.curl("secure.test", &mallory);
    assert!(rc != 0 && status != 200, "a certificate of another CA: refused (curl {rc}, {status})");
    // Plain HTTP never reaches the app.
    let r = http::get(&f.http, "secure.test", "/").unwrap();
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.body.contains("client certificate"), "{r:?}");
}

#[test]
fn an_optional_client_certificate_may_be_absent_but_not_foreign() {
    let f = fixture();
    let (rc, status, body) = f.curl("opt.test", &["--cacert", &f.cacert("opt")]);
    assert_eq!((rc, status), (0, 200), "{body}\n{}", f.log());
    assert_eq!(json(&body)["dn"], serde_json::Value::Null);
    let alice = ["--cacert", &f.cacert("opt"), "--cert", "alice.crt", "--key", "alice.key"];
    let (rc, status, body) = f.curl("opt.test", &alice);
    assert_eq!((rc, status, json(&body)["dn"].as_str()), (0, 200, Some("/O=Customer/CN=alice")));
    let mallory = ["--cacert", &f.cacert("opt"), "--cert", "mallory.crt", "--key", "mallory.key"];
    let (rc, status, _) = f.curl("opt.test", &mallory);
    assert!(rc != 0 && status != 200, "a certificate that does not verify: refused (curl {rc}, {status})");
    let r = http::get(&f.http, "opt.test", "/").unwrap();
    assert_eq!((r.status, json(&r.body)["dn"].clone()), (200, serde_json::Value::Null));
}

#[test]
fn the_sni_of_one_domain_with_the_host_of_a_protected_one_is_refused() {
    let f = fixture();
    let host = |h: &str| format!("Host: {h}");
    // SNI example.test (no client CA), Host secure.test (required): stock uWSGI served it.
    let (rc, status, body) = f.curl("example.test", &["-k", "-H", &host("secure.test")]);
    assert_eq!((rc, status), (0, 421), "{body}");
    assert!(body.contains("421 Misdirected Request"), "{body}");
    // Alice's verified certificate for secure.test does not make her connection good for
    // another site, nor does the CA of opt.test vouch for secure.test.
    let alice = ["-k", "--cert", "alice.crt", "--key", "alice.key"];
    let (_, status, _) = f.curl("secure.test", &[&alice[..], &["-H", &host("example.test")]].concat());
    assert_eq!(status, 421);
    let (_, status, _) = f.curl("opt.test", &[&alice[..], &["-H", &host("secure.test")]].concat());
    assert_eq!(status, 421);
    // No SNI at all (a client connecting by address).
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", &host("secure.test")])
        .arg(format!("https://{}/", f.https_addr()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "421");
    // Without a client CA on either side, the Host decides as over plain HTTP.
    let (_, status, body) = f.curl("example.test", &["-k", "-H", &host("shop.wild.test")]);
    assert_eq!((status, json(&body)["app"].as_str()), (200, Some("wild")));
}
