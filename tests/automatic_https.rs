//! Automatic HTTPS through the node's front door (issue 12, deliverable 4), as root, with real
//! parts only: the HTTP router started from the shipped `vassals-examples/services/http.ini`
//! (rendered as `make run` renders it), `unbit-acme` started with the command line of the
//! rendered `emperor.ini` (its settings naming the test CA), Debian's `pebble` on loopback
//! validating HTTP-01 on the router's own port (its DNS a dnsmasq resolving the test names to
//! 127.0.0.1; `uwsgi_it::acme_ca`), a customer container with two apps, and `openssl s_client`
//! and `curl` as the visitors. Never a public CA.
//!
//! What a customer sees: setting `"tls": "auto"` on a domain that already serves gets it a
//! certificate the router serves for its name, without a restart of anything; another name's
//! `/.well-known/acme-challenge/` still reaches that name's app.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, write_domains};
use openssl::x509::X509;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uwsgi_it::acme_ca::{Guard, TestCa};
use uwsgi_it::host::wait_until;
use uwsgi_it::http;
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};
use uwsgi_it::platform::{configs, LocalPlatform};
use uwsgi_it::Instance;

const T: Duration = Duration::from_secs(90);
const UID: u32 = 30371;
/// Served by an app from the start; gets `tls: auto` while everything runs.
const SHOP: &str = "shop.test";
/// `tls: auto` with no app at all: the challenge cannot depend on one.
const BARE: &str = "bare.test";
/// Never `tls: auto`: its owner may answer challenges with its own ACME client.
const OWN: &str = "own.test";
/// The issuer's answer for a path without a pending token (crates/acme/src/responder.rs).
const ISSUER_404: &str = "no pending ACME challenge for this name and token";

/// An app that says which vassal it is and which path it was asked for.
fn app(name: &str) -> String {
    format!(
        "import json\n\
         def application(env, start_response):\n    \
             body = json.dumps({{'app': '{name}', 'path': env.get('PATH_INFO'), 'https': env.get('HTTPS')}}).encode()\n    \
             start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(body)))])\n    \
             return [body]\n"
    )
}

struct Lab {
    // Dropped in this order: the issuer, the router, the node (its containers), the CA, the run dir.
    issuer: Option<Guard>,
    router: Instance,
    node: TestNode,
    ca: TestCa,
    platform: LocalPlatform,
    http: String,
    https_port: u16,
    keys: (String, String),
    issuer_cmd: Vec<String>,
}

impl Lab {
    fn start() -> Lab {
        let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
        let platform = LocalPlatform::new();
        platform.render_configs();
        let run = platform.run_dir.clone();
        let etc = platform.etc();
        let (_, shipped) = platform.router_config();
        let value = |name: &str| configs::option(&shipped, name);
        let http = value("http");
        let https_port = configs::port(&value("https"));
        assert_eq!(
            value("unbit-router-acme-socket"),
            run.join("acme-challenge/http-01.sock").to_string_lossy(),
            "the router sends challenges where the rendered issuer answers them"
        );

        // The CA validates on the router's plain HTTP port, for the names the test uses.
        let ca = TestCa::start(&[SHOP, BARE, OWN], configs::port(&http));

        platform.prepare_router();

        let keys = key_pair();
        write_domains(&run.join("domains.json"), &domains(&keys.1, &[]));

        // The issuer exactly as the node Emperor runs it, but for the containers of the test
        // node, and its settings (the rendered file's `directory = off`) naming the test CA.
        let emperor = std::fs::read_to_string(etc.join("uwsgi/emperor.ini")).unwrap();
        let line = emperor
            .lines()
            .filter_map(|l| l.strip_prefix("attach-daemon2 = cmd="))
            .find(|cmd| cmd.contains("unbit-acme"))
            .expect("the rendered emperor.ini runs unbit-acme");
        let mut issuer_cmd: Vec<String> = line.split_whitespace().map(String::from).collect();
        let flag = |cmd: &[String], name: &str| -> usize {
            1 + cmd.iter().position(|a| a == name).unwrap_or_else(|| panic!("{name} not in {line}"))
        };
        let settings = flag(&issuer_cmd, "--settings");
        ca.write_settings(Path::new(&issuer_cmd[settings]));
        let containers = flag(&issuer_cmd, "--containers-dir");
        issuer_cmd[containers] = node.containers_dir().to_string_lossy().into_owned();
        assert!(
            Path::new(&issuer_cmd[0]).exists(),
            "{} is missing: cargo build --release -p acme (make run builds it)",
            issuer_cmd[0]
        );

        let router = platform
            .router_instance("automatic-https", &node.subscribe_dir().join("http"), &node.containers_dir())
            .start();
        let mut lab = Lab { issuer: None, router, node, ca, platform, http, https_port, keys, issuer_cmd };
        let started = lab.platform.wait_router_log("ACME challenges of tls-auto names answered by", T);
        started.unwrap_or_else(|e| panic!("{e}\n{}", lab.router.log()));
        lab.start_issuer();

        lab.node.put_spec(UID, &spec_json(UID, "acme", 512, 512, &["ssh-ed25519 AAAA acme"], &lab.keys));
        let home = lab.node.home(UID);
        wait_for_path(&home.join("vassals"), T);
        for (name, domain) in [("shop", SHOP), ("own", OWN)] {
            std::fs::write(home.join(format!("{name}.py")), app(name)).unwrap();
            std::fs::write(
                home.join(format!("vassals/{name}.ini")),
                format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/{name}.py\ndomain = {domain}\n"),
            )
            .unwrap();
        }
        for host in [SHOP, OWN] {
            if let Err(e) = http::wait_for_status(&lab.http, host, "/", 200, T) {
                panic!("{e}\nrouter log:\n{}", lab.log());
            }
        }
        lab
    }

    fn start_issuer(&mut self) {
        let log = std::fs::File::options().create(true).append(true).open(self.issuer_log_path()).unwrap();
        let child = Command::new(&self.issuer_cmd[0])
            .args(&self.issuer_cmd[1..])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("unbit-acme starts");
        self.issuer = Some(Guard::new(child));
        let socket = self.platform.run_dir.join("acme-challenge/http-01.sock");
        wait_until("the issuer's challenge socket", T, || socket.exists());
    }

    fn issuer_log_path(&self) -> PathBuf {
        self.platform.run_dir.join("log/acme.log")
    }

    fn issuer_log(&self) -> String {
        std::fs::read_to_string(self.issuer_log_path()).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.platform.router_log()
    }

    /// A plain-HTTP GET through the router: status and body.
    fn get(&self, host: &str, path: &str) -> (u16, String) {
        let r = http::get(&self.http, host, path).unwrap_or_else(|e| panic!("{host}{path}: {e}"));
        (r.status, r.body)
    }

    /// The leaf certificate the router's https port serves for the server name `name`.
    fn served(&self, name: &str) -> Option<X509> {
        let out = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", self.https_port), "-servername", name])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        X509::from_pem(&out.stdout).ok()
    }

    /// The leaf the issuer installed for `name` (DER), once it did.
    fn issued(&self, name: &str) -> Option<Vec<u8>> {
        let chain = self.platform.run_dir.join(format!("acme/certs/{name}/current/fullchain.pem"));
        X509::from_pem(&std::fs::read(chain).ok()?).ok()?.to_der().ok()
    }

    /// `curl --resolve` to the router's https port, trusting only pebble's root: exit code,
    /// status and body.
    fn curl(&self, name: &str, root: &Path) -> (i32, u16, String) {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert", &root.to_string_lossy()])
            .args(["--resolve", &format!("{name}:{}:127.0.0.1", self.https_port)])
            .arg(format!("https://{name}:{}/", self.https_port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (out.status.code().unwrap_or(-1), status.parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- unbit-acme ----\n{}", self.issuer_log());
            eprintln!("---- router ----\n{}{}", self.router.log(), self.log());
            eprintln!("---- pebble ----\n{}", self.ca.log());
        }
    }
}

/// When the router served a name's issued certificate, counted from `tls: auto`.
struct Timing {
    name: &'static str,
    first: Option<Duration>,
    /// The start of the current run of handshakes all getting it, and how long it has held.
    streak: Option<Duration>,
    held: Duration,
}

impl Timing {
    fn new(name: &'static str) -> Timing {
        Timing { name, first: None, streak: None, held: Duration::ZERO }
    }

    fn done(&self) -> bool {
        self.streak.is_some() && self.held >= Duration::from_millis(1500)
    }
}

/// The domains file: the three names of the customer, `auto` those with `tls: auto`.
fn domains(public_pem: &str, auto: &[&str]) -> Vec<serde_json::Value> {
    [SHOP, BARE, OWN]
        .iter()
        .map(|name| {
            let mut entry = domain_entry(name, &[UID], public_pem);
            if auto.contains(name) {
                entry["tls"] = "auto".into();
            }
            entry
        })
        .collect()
}

fn app_answer(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the app's JSON ({e}): {body}"))
}

#[test]
fn tls_auto_gets_a_certificate_through_the_front_door_and_the_router_serves_it() {
    let mut lab = Lab::start();
    let challenge = "/.well-known/acme-challenge/some-token";

    // Before tls: auto, the challenge path is the app's like any other path.
    for (host, app) in [(SHOP, "shop"), (OWN, "own")] {
        let (status, body) = lab.get(host, challenge);
        assert_eq!((status, app_answer(&body)["app"].as_str()), (200, Some(app)), "{host}");
        assert_eq!(app_answer(&body)["path"], challenge);
    }
    let default_leaf = lab.served(SHOP).expect("the router serves its default certificate").to_der().unwrap();

    // The customer sets tls: auto on two names (the node sync rewrites the domains file).
    let asked = Instant::now();
    write_domains(&lab.platform.run_dir.join("domains.json"), &domains(&lab.keys.1, &[SHOP, BARE]));
    // Both names are watched together (the issuer orders one name at a time). Each router
    // process looks a name it did not find up again after a second (sni::cache::ABSENT_FOR),
    // so a name is timed twice: the first handshake that gets its issued certificate, and the
    // start of a run of handshakes that all get it, held for 1.5 s (every process serves it).
    let mut timed: Vec<Timing> = [SHOP, BARE].into_iter().map(Timing::new).collect();
    wait_until("both issued certificates served by every router process", T, || {
        for t in timed.iter_mut().filter(|t| !t.done()) {
            let now = asked.elapsed();
            match lab.served(t.name) {
                Some(leaf) if lab.issued(t.name).is_some_and(|issued| issued == leaf.to_der().unwrap()) => {
                    t.first.get_or_insert(now);
                    let since = *t.streak.get_or_insert(now);
                    t.held = now - since;
                }
                Some(leaf) => {
                    assert_eq!(leaf.to_der().unwrap(), default_leaf, "{}: neither default nor issued", t.name);
                    (t.streak, t.held) = (None, Duration::ZERO);
                }
                None => panic!("{}: no handshake\n{}", t.name, lab.log()),
            }
        }
        timed.iter().all(Timing::done)
    });
    for t in &timed {
        println!(
            "{}: tls auto to the issued certificate served by the router: first handshake {:.2} s, every process {:.2} s",
            t.name,
            t.first.unwrap().as_secs_f64(),
            t.streak.unwrap().as_secs_f64()
        );
    }
    let issued: Vec<String> =
        lab.issuer_log().lines().filter(|l| l.contains("certificate issued in")).map(String::from).collect();
    println!("the issuer's own figures (order to installed pair): {issued:#?}");
    assert!(issued.iter().any(|l| l.contains(&format!("{SHOP}: certificate issued"))), "{}", lab.issuer_log());

    // A visitor trusting only pebble's root reaches the app over HTTPS under the name.
    let root = lab.platform.run_dir.join("pebble-root.pem");
    lab.ca.write_root(&root);
    let (rc, status, body) = lab.curl(SHOP, &root);
    assert_eq!((rc, status), (0, 200), "curl --resolve {SHOP}: {body}");
    let answer = app_answer(&body);
    assert_eq!((answer["app"].as_str(), answer["https"].as_str()), (Some("shop"), Some("on")));
    // The name without an app has a valid certificate too; its site is just not up (503).
    let (rc, status, _) = lab.curl(BARE, &root);
    assert_eq!((rc, status), (0, 503));
    // Another name still gets the default certificate, which pebble's root does not vouch for.
    assert_eq!(lab.curl(OWN, &root).0, 60, "{OWN} is not tls auto: no certificate of pebble's");

    // Challenge paths of tls-auto names go to the issuer (no token pending now: its 404),
    // before the name's app, and with or without one; other paths still reach the app.
    for host in [SHOP, BARE, "SHOP.test:80"] {
        let (status, body) = lab.get(host, challenge);
        assert_eq!((status, body.trim()), (404, ISSUER_404), "{host}");
    }
    let (status, body) = lab.get(SHOP, "/.well-known/other");
    assert_eq!((status, app_answer(&body)["app"].as_str()), (200, Some("shop")));
    // The other name's challenge path is its app's, never the issuer's.
    let (status, body) = lab.get(OWN, challenge);
    assert_eq!((status, app_answer(&body)["app"].as_str()), (200, Some("own")));
    assert_eq!(app_answer(&body)["path"], challenge);

    // The customer hears about it in the container's log.
    let customer = lab.node.customer_log(UID);
    assert!(customer.contains(&format!("[unbit-acme] {SHOP}: HTTPS certificate issued")), "{customer}");

    // The issuer stops: its names' challenges get 502 (the CA retries), never the app.
    lab.issuer = None;
    let (status, body) = lab.get(SHOP, challenge);
    assert_eq!(status, 502, "{body}");
    assert!(lab.log().contains(&format!("{SHOP} => detour ")), "the router says why:\n{}", lab.log());
    // It comes back (the Emperor restarts it) and is reached again, the router untouched.
    lab.start_issuer();
    let back = eventually(T, || match lab.get(SHOP, challenge) {
        (404, body) if body.trim() == ISSUER_404 => Ok(()),
        (502, _) => Err("the issuer is not listening yet".to_string()),
        other => panic!("{SHOP}{challenge} while the issuer restarts: {other:?}"),
    });
    back.unwrap_or_else(|e| panic!("{e}\n{}", lab.issuer_log()));
}
