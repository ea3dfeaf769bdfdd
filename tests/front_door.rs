//! The node's front door (issue 11), as root, with a real container: the HTTP router started
//! from the shipped `vassals-examples/services/http.ini` (rendered as `make run` renders it,
//! only the paths and ports of `scripts/local-overrides` changed) with the subscription
//! validator and `unbit_router`, and a customer's vassals announcing `domain = example.test`,
//! `.wild.test`, `down.test`, `dead.test`, `upload.test` (an app that reads its body) and
//! `ws.test` (a websocket echo). Each test is one row of what a user sends and what they must
//! see: the app's answer (with the Host it was sent, the body it read, the frame it echoed) or a
//! real status with a body.
//!
//! The node, the container and the router are shared by the tests of this file (starting them
//! takes most of a test's time); the last test to finish stops them.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, write_domains};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use uwsgi_it::http::{self, KeepAlive, Response};
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};
use uwsgi_it::platform::{configs, LocalPlatform};
use uwsgi_it::Instance;

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

/// [`app`], which waits before it loads while `<name>.hold` stands beside it: uWSGI announces a
/// vassal once its app is loaded, so a respawned vassal cannot replace the dead socket in the
/// router until the test lets it.
fn held_app(name: &str) -> String {
    format!(
        "import os, time\n\
         while os.path.exists(os.path.join(os.path.dirname(__file__), '{name}.hold')):\n    \
             time.sleep(0.1)\n{}",
        app(name)
    )
}

/// Reads its whole body from `wsgi.input` and says what it got: the test compares length and
/// SHA-256 with what the client sent.
const UPLOAD_APP: &str = "import hashlib, json\n\
def application(env, start_response):\n    \
    body = env['wsgi.input'].read()\n    \
    out = json.dumps({'length': len(body), 'sha256': hashlib.sha256(body).hexdigest(),\n        \
        'content_length': env.get('CONTENT_LENGTH'), 'transfer_encoding': env.get('HTTP_TRANSFER_ENCODING')}).encode()\n    \
    start_response('200 OK', [('Content-Type', 'application/json'), ('Content-Length', str(len(out)))])\n    \
    return [out]\n";

/// A websocket echo with uWSGI's own API (one message, then the app returns); a plain GET is a
/// 200, so the fixture can wait for it like for the others.
const WEBSOCKET_APP: &str = "import uwsgi\n\
def application(env, start_response):\n    \
    if 'HTTP_SEC_WEBSOCKET_KEY' not in env:\n        \
        start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', '6')])\n        \
        return [b'ready\\n']\n    \
    uwsgi.websocket_handshake()\n    \
    message = uwsgi.websocket_recv()\n    \
    uwsgi.websocket_send(b'echo: ' + message)\n    \
    return []\n";

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
        let (_, shipped) = platform.router_config();
        assert!(shipped.contains("unbit_router"), "the shipped router loads the front door:\n{shipped}");
        let http = configs::option(&shipped, "http");

        // What run-platform.sh prepares before it starts the services.
        platform.prepare_router();

        let keys = key_pair();
        let domains = ["example.test", ".wild.test", "down.test", "dead.test", "upload.test", "ws.test"];
        let entries: Vec<_> = domains.iter().map(|d| domain_entry(d, &[UID], &keys.1)).collect();
        write_domains(&run.join("domains.json"), &entries);
        let page = run.join("404.html");
        std::fs::write(&page, NOT_FOUND_PAGE).unwrap();

        // The shipped config as it is; only the test node's folders and the operator's page
        // are given on top (later options win).
        let router = platform
            .router_instance("front-door", &node.subscribe_dir().join("http"), &node.containers_dir())
            .args(["--unbit-router-404-page", &page.to_string_lossy()])
            .start();
        let fixture = Fixture { router, node, platform, http, home: PathBuf::new() };
        fixture.wait_log("front door: Host matching normalised");

        fixture.node.put_spec(UID, &spec_json(UID, "frontdoor", 512, 512, &["ssh-ed25519 AAAA front"], &keys));
        let home = fixture.node.home(UID);
        wait_for_path(&home.join("vassals"), T);
        for (name, domain) in [
            ("exact", "example.test"),
            ("wild", ".wild.test"),
            ("down", "down.test"),
            ("dead", "dead.test"),
            ("upload", "upload.test"),
            ("ws", "ws.test"),
        ] {
            let source = match name {
                "upload" => UPLOAD_APP.to_string(),
                "ws" => WEBSOCKET_APP.to_string(),
                "dead" => held_app(name),
                _ => app(name),
            };
            std::fs::write(home.join(format!("{name}.py")), source).unwrap();
            std::fs::write(
                home.join(format!("vassals/{name}.ini")),
                format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/{name}.py\ndomain = {domain}\n"),
            )
            .unwrap();
        }
        let fixture = Fixture { home, ..fixture };
        for host in ["example.test", "a.wild.test", "down.test", "dead.test", "upload.test", "ws.test"] {
            if let Err(e) = http::wait_for_status(&fixture.http, host, "/", 200, T) {
                panic!("{e}\nrouter log:\n{}", fixture.log());
            }
        }
        fixture
    }

    /// The router's log (the shipped config logs to a file, `logto`).
    fn log(&self) -> String {
        self.platform.router_log()
    }

    fn wait_log(&self, needle: &str) {
        if let Err(e) = self.platform.wait_router_log(needle, T) {
            panic!("{e}\n{}", self.router.log());
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
    uwsgi_it::harness::shared(&SHARED, Fixture::start)
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
    // A large cookie below that still reaches the app: 32 KB, over uWSGI's 4 KB default, which
    // the domain shortcut's buffer-size lifts in the vassal (tests/domain_names.rs checks it
    // behind the validator kit's router, not the shipped one).
    let request = format!("GET / HTTP/1.0\r\nHost: example.test\r\nCookie: {}\r\n\r\n", "a".repeat(32_768));
    let r = f.raw(request.as_bytes());
    assert_eq!((r.status, json(&r)["cookie"].as_u64()), (200, Some(32_768)), "{r:?}");
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
    // The container's Emperor respawns the vassal at once (it has lived long enough not to be
    // throttled): held, the new one does not announce itself before the request below.
    let hold = f.home.join("dead.hold");
    std::fs::write(&hold, "").unwrap();
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
    std::fs::remove_file(&hold).unwrap();
    assert_eq!(first.status, 502, "{first:?}\nrouter log:\n{}", f.log());
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
    assert_router_users_socket(&f.platform.run_dir.join("router/errors.sock"));
}

fn router_user() -> nix::unistd::User {
    nix::unistd::User::from_name("unbit-router").unwrap().expect("install-deps made unbit-router")
}

/// Only the router's user (and root) can connect: mode 0600, in a directory of root's that
/// others cannot enter.
fn assert_router_users_socket(socket: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(socket).unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o777), (router_user().uid.as_raw(), 0o600));
    assert_private_dir(socket.parent().unwrap());
}

/// What `curl -T` sends when told to stream (or when it reads from a pipe): the body in chunks,
/// no Content-Length. A stock vassal hands such a body to the app as 0 bytes.
/// Held by the tests that send chunked bodies: one of them takes the proxy's socket away.
static PROXY: Mutex<()> = Mutex::new(());

#[test]
fn a_chunked_upload_reaches_the_app_whole() {
    let f = fixture();
    let _proxy = PROXY.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::Builder::new().prefix("front-door-upload-").tempdir().unwrap();
    let body: Vec<u8> = (0..1_000_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, &body).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "-v", "--max-time", "60", "-w", "\n%{http_code}", "-T"])
        .arg(&file)
        .args(["-H", "Transfer-Encoding: chunked", "-H", "Host: Upload.Test"])
        .arg(format!("http://{}/upload", f.http))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "curl failed: {stderr}\nrouter log:\n{}", f.log());
    assert!(stderr.contains("> Transfer-Encoding: chunked"), "curl did not send a chunked body:\n{stderr}");
    let (answer, status) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{stdout}\n{stderr}\nrouter log:\n{}", f.log());
    let answer: serde_json::Value = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let sha256: String = openssl::sha::sha256(&body).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(answer["length"], body.len(), "{answer}");
    assert_eq!(answer["sha256"], sha256, "{answer}");
    // The app sees a body of known length, not the client's framing.
    assert_eq!(answer["content_length"], body.len().to_string(), "{answer}");
    assert_eq!(answer["transfer_encoding"], serde_json::Value::Null, "{answer}");
}

#[test]
fn a_chunked_body_over_the_limit_gets_413_and_another_coding_501() {
    let f = fixture();
    let _proxy = PROXY.lock().unwrap_or_else(|e| e.into_inner());
    // One chunk of 100 MiB + 1 byte: over the shipped unbit-router-max-body, refused as soon as
    // its size line arrives.
    let r = f.raw(b"PUT /upload HTTP/1.1\r\nHost: upload.test\r\nTransfer-Encoding: chunked\r\n\r\n6400001\r\nabc");
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.body.starts_with("413 Content Too Large"), "{r:?}");
    // A coding the app could not undo is refused, not passed on as an empty body.
    let r = f.raw(b"PUT /upload HTTP/1.1\r\nHost: upload.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert_eq!(r.status, 501, "{r:?}");
    assert!(r.body.contains("gzip, chunked"), "{r:?}");
}

/// With the proxy out of reach a chunked request gets a 502, and its body never goes to the
/// app directly (the app would read it as empty); the app's node is not marked failed.
#[test]
fn a_chunked_request_gets_502_while_the_proxy_is_unreachable() {
    let f = fixture();
    let _proxy = PROXY.lock().unwrap_or_else(|e| e.into_inner());
    let socket = f.platform.run_dir.join("router/dechunk.sock");
    let aside = f.platform.run_dir.join("router/dechunk.sock.aside");
    std::fs::rename(&socket, &aside).unwrap();
    let r = http::raw(
        &f.http,
        b"PUT /upload HTTP/1.1\r\nHost: upload.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    std::fs::rename(&aside, &socket).unwrap();
    let r = r.unwrap_or_else(|e| panic!("{e}\nrouter log:\n{}", f.log()));
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("502 Bad Gateway"), "{r:?}");
    assert!(f.log().contains("upload.test => detour"), "{}", f.log());
    assert!(!f.log().contains("upload.test => marking"), "the app's node was marked failed:\n{}", f.log());
    assert_eq!(f.get("upload.test").status, 200);
}

#[test]
fn a_websocket_message_reaches_the_app_and_its_answer_comes_back() {
    let f = fixture();
    let mut s = TcpStream::connect(&f.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The key and its accept value are RFC 6455's example.
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: WS.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");

    // A client's frames are masked (RFC 6455 §5.3): FIN + text, masked length, key, payload.
    let message = b"hello through the front door";
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | message.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(message.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();

    let mut header = [0u8; 2];
    s.read_exact(&mut header).unwrap_or_else(|e| panic!("no frame back ({e}); router log:\n{}", f.log()));
    assert_eq!(header[0], 0x81, "a final text frame");
    assert_eq!(header[1] & 0x80, 0, "a server's frames are not masked");
    let mut payload = vec![0u8; usize::from(header[1] & 0x7f)];
    s.read_exact(&mut payload).unwrap();
    assert_eq!(String::from_utf8_lossy(&payload), "echo: hello through the front door");
}

/// The proxy parses what clients send and connects where the router says: it runs as the
/// router's user, never as root, and its socket is the router user's alone.
#[test]
fn the_dechunking_proxy_runs_as_the_router_user_behind_a_private_socket() {
    let f = fixture();
    assert_router_users_socket(&f.platform.run_dir.join("router/dechunk.sock"));
    let parent_of = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<u32>().ok())
    };
    let proxies: Vec<_> = uwsgi_it::host::processes()
        .into_iter()
        .filter(|p| p.cmdline.contains("unbit-router-dechunk") && parent_of(p.pid) == Some(f.router.pid()))
        .collect();
    assert_eq!(proxies.len(), 1, "one de-chunking gateway under the router {}", f.router.pid());
    assert_eq!(proxies[0].uid, Some(router_user().uid.as_raw()), "{}", proxies[0].cmdline);
}

fn assert_private_dir(dir: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = std::fs::metadata(dir).unwrap();
    assert_eq!((md.uid(), md.permissions().mode() & 0o007), (0, 0), "{}", dir.display());
}
