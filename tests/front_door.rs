//! The node's front door (issue 11), as root, with a real container: the HTTP router started
//! from the shipped `vassals-examples/services/http.ini` (rendered as `make run` renders it,
//! only the paths and ports of `scripts/local-overrides` changed) with the subscription
//! validator and `unbit_router`, and a customer's vassals announcing `domain = example.test`,
//! `.wild.test`, `down.test` and `dead.test`. Each test is one row of what a user sends and what
//! they must see: the app's answer (with the Host it was sent) or a real status with a body.
//!
//! The node, the container and the router are shared by the tests of this file (starting them
//! takes most of a test's time); the last test to finish stops them.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, write_domains};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use uwsgi_it::http::{self, KeepAlive, Response};
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};
use uwsgi_it::platform::LocalPlatform;
use uwsgi_it::{Instance, InstanceBuilder};

const T: Duration = Duration::from_secs(90);
const UID: u32 = 30351;
const NOT_FOUND_PAGE: &str =
    "<!doctype html>\n<title>No site here</title>\n<h1>No site is served under this name</h1>\n";

/// An app that says which vassal it is and what the router sent it.
fn app(name: &str) -> String {
    format!(
        "import json\n\
         def application(env, start_response):\n    \
             body = json.dumps({{'app': '{name}', 'host': env.get('HTTP_HOST'), 'cookie': len(env.get('HTTP_COOKIE', ''))}}).encode()\n    \
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
    home: PathBuf,
}

impl Fixture {
    fn start() -> Fixture {
        let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
        let platform = LocalPlatform::new();
        platform.render_configs();
        let run = platform.run_dir.clone();
        let ini = platform.etc().join("uwsgi/services/http.ini");
        let shipped = std::fs::read_to_string(&ini).unwrap();
        assert!(shipped.contains("unbit_router"), "the shipped router loads the front door:\n{shipped}");
        let http = shipped
            .lines()
            .find_map(|l| l.strip_prefix("http = "))
            .expect("the rendered http.ini has an http socket")
            .trim()
            .to_string();

        // What run-platform.sh prepares before it starts the services.
        std::fs::create_dir_all(run.join("log")).unwrap();
        let user = nix::unistd::User::from_name("unbit-router").unwrap().expect("install-deps made unbit-router");
        let stats = run.join("stats");
        std::fs::create_dir_all(&stats).unwrap();
        std::os::unix::fs::chown(&stats, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();

        let keys = key_pair();
        let domains = ["example.test", ".wild.test", "down.test", "dead.test"];
        let entries: Vec<_> = domains.iter().map(|d| domain_entry(d, &[UID], &keys.1)).collect();
        write_domains(&run.join("domains.json"), &entries);
        let page = run.join("404.html");
        std::fs::write(&page, NOT_FOUND_PAGE).unwrap();

        // The shipped config as it is; only the test node's folders and the operator's page
        // are given on top (later options win).
        let subscribe = node.subscribe_dir().join("http");
        let router = InstanceBuilder::new("front-door")
            .arg("--ini")
            .arg(&ini.to_string_lossy())
            .args(["--unbit-subscriptions-socket", &subscribe.to_string_lossy()])
            .args(["--unbit-subscriptions-containers-dir", &node.containers_dir().to_string_lossy()])
            .args(["--unbit-router-404-page", &page.to_string_lossy()])
            .start();
        let fixture = Fixture { router, node, platform, http, home: PathBuf::new() };
        fixture.wait_log("front door: Host matching normalised");

        fixture.node.put_spec(UID, &spec_json(UID, "frontdoor", 512, 512, &["ssh-ed25519 AAAA front"], &keys));
        let home = fixture.node.home(UID);
        wait_for_path(&home.join("vassals"), T);
        for (name, domain) in
            [("exact", "example.test"), ("wild", ".wild.test"), ("down", "down.test"), ("dead", "dead.test")]
        {
            std::fs::write(home.join(format!("{name}.py")), app(name)).unwrap();
            std::fs::write(
                home.join(format!("vassals/{name}.ini")),
                format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/{name}.py\ndomain = {domain}\n"),
            )
            .unwrap();
        }
        let fixture = Fixture { home, ..fixture };
        for host in ["example.test", "a.wild.test", "down.test", "dead.test"] {
            if let Err(e) = http::wait_for_status(&fixture.http, host, "/", 200, T) {
                panic!("{e}\nrouter log:\n{}", fixture.log());
            }
        }
        fixture
    }

    /// The router's log (the shipped config logs to a file, `logto`).
    fn log(&self) -> String {
        std::fs::read_to_string(self.platform.run_dir.join("log/router.log")).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) {
        if let Err(e) =
            eventually(
                T,
                || if self.log().contains(needle) { Ok(()) } else { Err(format!("no {needle:?} in the log")) },
            )
        {
            panic!("{e}:\n{}\n{}", self.log(), self.router.log());
        }
    }

    fn get(&self, host: &str) -> Response {
        http::get(&self.http, host, "/").unwrap_or_else(|e| panic!("Host {host}: {e}"))
    }

    fn raw(&self, request: &[u8]) -> Response {
        http::raw(&self.http, request)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&request[..60.min(request.len())])))
    }
}

/// The fixture shared by the tests running now; started by the first, stopped with the last.
fn fixture() -> Arc<Fixture> {
    static SHARED: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = shared.upgrade() {
        return f;
    }
    let f = Arc::new(Fixture::start());
    *shared = Arc::downgrade(&f);
    f
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not the app's JSON ({e}): {r:?}"))
}

fn header<'r>(r: &'r Response, name: &str) -> Option<&'r str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn letter_case_a_port_and_a_trailing_dot_reach_the_exact_domains_app() {
    let f = fixture();
    for host in ["EXAMPLE.test", "example.test:80", "example.test:8000", "Example.Test.", "example.test"] {
        let r = f.get(host);
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        let answer = json(&r);
        assert_eq!(answer["app"], "exact", "Host {host}");
        // The app sees the Host the client sent; only the lookup is normalised.
        assert_eq!(answer["host"], host, "Host {host}");
    }
}

#[test]
fn letter_case_and_a_port_reach_the_wildcard_domains_app() {
    let f = fixture();
    for host in ["A.Wild.Test", "a.wild.test:80", "x.y.wild.test:8000", "SHOP.WILD.TEST."] {
        let r = f.get(host);
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        assert_eq!(json(&r)["app"], "wild", "Host {host}");
        assert_eq!(json(&r)["host"], host);
    }
    // The wildcard still does not cover the bare name, whatever its case.
    assert_eq!(f.get("Wild.Test").status, 404);
}

#[test]
fn an_unknown_domain_gets_404_with_the_operators_page() {
    let f = fixture();
    for host in ["nobody.test", "NOBODY.test:8080"] {
        let r = f.get(host);
        assert_eq!(r.status, 404, "Host {host}: {r:?}");
        assert_eq!(r.body, NOT_FOUND_PAGE);
        assert_eq!(header(&r, "content-type"), Some("text/html; charset=utf-8"));
    }
}

#[test]
fn a_request_without_host_gets_400_in_http_1_1_and_1_0() {
    let f = fixture();
    for request in ["GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.1\r\nHost: \r\n\r\n"] {
        let r = f.raw(request.as_bytes());
        assert_eq!(r.status, 400, "{request:?}: {r:?}");
        assert!(r.body.starts_with("400 Bad Request"), "{r:?}");
    }
    // A Host longer than the router's 255-byte key: 400 too, not a closed connection.
    let long = format!("GET / HTTP/1.1\r\nHost: {}.test\r\n\r\n", "a".repeat(300));
    assert_eq!(f.raw(long.as_bytes()).status, 400);
}

#[test]
fn headers_over_64_kb_get_431() {
    let f = fixture();
    // Over the router's 64 KB buffer (the header block never ends inside it), and a block that
    // fits the buffer but not the 64 KB uwsgi packet it would become.
    for cookie in [70_000, 65_300] {
        let request = format!("GET / HTTP/1.1\r\nHost: example.test\r\nCookie: {}\r\n\r\n", "a".repeat(cookie));
        let r = f.raw(request.as_bytes());
        assert_eq!(r.status, 431, "{cookie}-byte cookie: {r:?}");
        assert!(r.body.contains("over 64 KB"), "{r:?}");
    }
    // A large cookie below that still reaches the app.
    let request = format!("GET / HTTP/1.0\r\nHost: example.test\r\nCookie: {}\r\n\r\n", "a".repeat(3000));
    let r = f.raw(request.as_bytes());
    assert_eq!((r.status, json(&r)["cookie"].as_u64()), (200, Some(3000)), "{r:?}");
}

#[test]
fn a_known_domain_whose_app_is_stopped_gets_503() {
    let f = fixture();
    std::fs::remove_file(f.home.join("vassals/down.ini")).unwrap();
    // The vassal unsubscribes on its way out; until the router has dropped it a request may
    // still reach it, or find its socket gone (502): never an empty reply.
    let r = eventually(T, || match http::get(&f.http, "down.test", "/") {
        Ok(r) if r.status == 503 => Ok(r),
        Ok(r) if [200, 502].contains(&r.status) => Err(format!("status {}", r.status)),
        Ok(r) => panic!("Host down.test: {r:?}"),
        Err(e) => panic!("Host down.test: {e}"),
    })
    .unwrap();
    assert!(r.body.contains("503 Service Unavailable"), "{r:?}");
    // A name nobody registered is still 404: the domains file tells them apart.
    assert_eq!(f.get("nobody.test").status, 404);
}

#[test]
fn a_dead_socket_gets_502_and_the_app_comes_back() {
    let f = fixture();
    // The vassal dies at once (SIGKILL): no unsubscribe, the router still lists its socket,
    // which now refuses connections.
    let vassal: Vec<i32> = uwsgi_it::host::processes()
        .into_iter()
        .filter(|p| p.uid == Some(UID) && p.cmdline.contains("dead.ini"))
        .map(|p| p.pid)
        .collect();
    assert!(!vassal.is_empty(), "the dead.test vassal is running");
    for pid in &vassal {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    // Gone (or a zombie): nothing listens on the socket the router knows any more.
    let dead = |pid: &i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
    };
    eventually(T, || if vassal.iter().all(dead) { Ok(()) } else { Err("the vassal is still alive".into()) }).unwrap();
    let first = f.get("dead.test");
    assert_eq!(first.status, 502, "{first:?}");
    assert!(first.body.contains("502 Bad Gateway"), "{first:?}");
    f.wait_log("dead.test => marking");
    // The container's Emperor starts the vassal again; its new socket is announced and the
    // dead one is never tried again by a router process that failed on it.
    http::wait_for_status(&f.http, "dead.test", "/", 200, T).unwrap();
}

#[test]
fn keep_alive_goes_on_across_an_error_answer() {
    let f = fixture();
    let mut conn = KeepAlive::open(&f.http).unwrap();
    let statuses: Vec<u16> = ["example.test", "nobody.test", "Example.Test:80", "down-or-not.test", "a.wild.test"]
        .iter()
        .map(|host| {
            conn.get(host, "/").unwrap_or_else(|e| panic!("Host {host} on the kept-alive connection: {e}")).status
        })
        .collect();
    assert_eq!(statuses, [200, 404, 200, 404, 200]);
}

#[test]
fn the_error_backend_socket_is_the_router_users_alone() {
    let f = fixture();
    let socket = f.platform.run_dir.join("router/errors.sock");
    let md = std::fs::metadata(&socket).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let user = nix::unistd::User::from_name("unbit-router").unwrap().unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o777), (user.uid.as_raw(), 0o600));
    assert_private_dir(socket.parent().unwrap());
}

fn assert_private_dir(dir: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(dir).unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o007), (0, 0), "{}", dir.display());
}
