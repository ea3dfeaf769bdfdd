//! The domain shortcuts as a customer uses them, as root, with real containers and stock
//! uWSGI's HTTP router behind the platform's subscription validator (issue 11):
//!
//! * `domain = <a valid 100-character name>` starts and answers (its socket name is bounded);
//! * `domain = Example.ORG` and `domain = bücher.example` serve the names the control API
//!   stores (`example.org`, `xn--bcher-kva.example`), and the customer's log says so;
//! * a name that cannot be a domain is refused with the reason in the customer's log;
//! * 10 KB and 32 KB `Cookie` headers reach a python app, two requests on one keep-alive
//!   connection.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, start_router, write_domains, Router, RouterSetup};
use std::path::{Path, PathBuf};
use std::time::Duration;
use uwsgi_it::http::KeepAlive;
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};

const T: Duration = Duration::from_secs(90);

/// Answers `<name> <length of the Cookie header>`, with a Content-Length (the router keeps a
/// connection alive only when it can tell where an answer ends).
fn app(name: &str) -> String {
    format!(
        "def application(environ, start_response):\n    body = ('{name} %d' % len(environ.get('HTTP_COOKIE', ''))).encode()\n    \
         start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n    return [body]\n"
    )
}

fn put(home: &Path, rel: &str, text: &str) {
    let path = home.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A vassal serving `app(name)` for each `domain = ...` line.
fn deploy(home: &Path, name: &str, domains: &[&str]) {
    put(home, &format!("{name}.py"), &app(name));
    let lines: String = domains.iter().map(|d| format!("domain = {d}\n")).collect();
    put(
        home,
        &format!("vassals/{name}.ini"),
        &format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/{name}.py\n{lines}"),
    );
}

/// `GET /` on a new connection: `(status, body)`.
fn get(router: &Router, host: &str) -> Result<(u16, String), String> {
    let r = KeepAlive::open(&router.http).and_then(|mut c| c.get(host, "/")).map_err(|e| e.to_string())?;
    Ok((r.status, r.body))
}

/// Waits until the customer's log holds `needle`.
fn wait_for_customer_log(node: &TestNode, uid: u32, needle: &str) {
    eventually(T, || {
        let log = node.customer_log(uid);
        if log.contains(needle) {
            Ok(())
        } else {
            Err(format!("{needle:?} not in the customer's log:\n{log}"))
        }
    })
    .unwrap();
}

/// The router, with `names` the domains of container `uid` (as the control API stores them),
/// and the container started: its home.
fn start(node: &TestNode, uid: u32, names: &[&str]) -> (Router, PathBuf) {
    let keys = key_pair();
    let path = node.root.path().join("domains.json");
    write_domains(&path, &names.iter().map(|n| domain_entry(n, &[uid], &keys.1)).collect::<Vec<_>>());
    let (socket, homes) = (node.subscribe_dir().join("http"), node.containers_dir());
    // `http-keepalive` as vassals-examples/services/http.ini sets it.
    let setup = RouterSetup { extra: &["--http-keepalive=5"], ..RouterSetup::new(&socket, &homes, &path, 2) };
    let router = start_router(setup);
    node.put_spec(uid, &spec_json(uid, &format!("c{uid}"), 256, 256, &[&format!("ssh-ed25519 AAAA c{uid}")], &keys));
    let home = node.home(uid);
    wait_for_path(&home.join("vassals"), T);
    (router, home)
}

#[test]
fn a_long_a_mixed_case_and_a_unicode_domain_reach_their_apps_under_the_apis_names() {
    let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
    let uid = 30321;
    let long = format!("{}.{}.example.org", "a".repeat(60), "b".repeat(27));
    assert_eq!(long.len(), 100);
    // The domains file lists the names as the control API stores them.
    let (router, home) = start(&node, uid, &[&long, "example.org", "xn--bcher-kva.example"]);
    deploy(&home, "long", &[&long]);
    deploy(&home, "mixed", &["Example.ORG"]);
    deploy(&home, "unicode", &["bücher.example"]);

    for (host, app) in [(long.as_str(), "long"), ("example.org", "mixed"), ("xn--bcher-kva.example", "unicode")] {
        router.wait_for_nodes(host, 1, T).unwrap();
        assert_eq!(get(&router, host), Ok((200, format!("{app} 0"))), "Host: {host}");
    }
    // The long name's socket: its first 32 bytes, a hash, the vassal's id; under 102 bytes.
    let sockets: Vec<String> = std::fs::read_dir(home.join("run"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&"a".repeat(32)))
        .collect();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert!(format!("/run/{}", sockets[0]).len() <= 102, "{sockets:?}");
    // The customer reads under which name each announce was accepted.
    for (shown, written) in [("example.org", "Example.ORG"), ("xn--bcher-kva.example", "bücher.example")] {
        wait_for_customer_log(
            &node,
            uid,
            &format!("[subscription validator] {shown} (announced as {written}) => /containers/{uid}/run/"),
        );
    }
    assert!(!node.customer_log(uid).contains("invalid socket name"));
}

#[test]
fn a_name_that_cannot_be_a_domain_is_explained_in_the_customers_log() {
    let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
    let uid = 30322;
    let (router, home) = start(&node, uid, &["shop.example"]);
    deploy(&home, "typo", &["shop_example.com", "shop.example"]);
    wait_for_customer_log(
        &node,
        uid,
        "[subscription validator] announce for shop_example.com rejected: \"shop_example.com\" cannot be a domain: \"shop_example\": labels are letters, digits and '-'",
    );
    // The vassal runs and its other domain is served.
    router.wait_for_nodes("shop.example", 1, T).unwrap();
    assert_eq!(get(&router, "shop.example"), Ok((200, "typo 0".to_string())));
    let log = router.instance.log();
    assert!(log.contains("\"shop_example.com\" cannot be a domain"), "{log}");
}

#[test]
fn large_cookies_reach_the_app_on_a_keep_alive_connection() {
    let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
    let uid = 30323;
    let (router, home) = start(&node, uid, &["cookies.example"]);
    deploy(&home, "jar", &["cookies.example"]);
    router.wait_for_nodes("cookies.example", 1, T).unwrap();

    // A JWT-sized session cookie and a 32 KB one, on one connection.
    let cookie = |kb: usize| format!("session={}", "x".repeat(kb * 1024 - "session=".len()));
    let mut conn = KeepAlive::open(&router.http).unwrap();
    for kb in [10, 32] {
        let answer = conn.get_with("cookies.example", "/", &[("Cookie", &cookie(kb))]).map(|r| (r.status, r.body));
        assert_eq!(answer.map_err(|e| e.to_string()), Ok((200, format!("jar {}", kb * 1024))), "{kb} KB cookie");
    }
    assert!(!node.customer_log(uid).contains("invalid request block size"), "{}", node.customer_log(uid));
}
