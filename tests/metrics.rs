//! Metrics end to end, as root: a real container under load behind the node's HTTP router as
//! the shipped `vassals-examples/services/http.ini` runs it (rendered as `make run` renders it,
//! four http processes, the subscription validator and the front door), `unbit-metrics` (the
//! release binary, as the node Emperor runs it) reading its cgroups and the router's domain
//! table and pushing to the real `unbit-api`; the customer then reads the day's series and a
//! chart through the API, and the operator's Prometheus exposition passes `promtool check
//! metrics`. Needs `make plugins binaries`.

#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, write_domains};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use uwsgi_it::harness::project_root;
use uwsgi_it::node::{key_pair, spec_json, TestNode};
use uwsgi_it::platform::{configs, LocalPlatform};

const T: Duration = Duration::from_secs(90);
const DOMAIN: &str = "metrics-test.example";
/// The container's uid: the API numbers containers from 30001, so the test moves its sequence
/// to 749 first (uids 30750-30799 are this suite's and the alarm relay's btrfs test's).
const UID: u32 = 30750;

/// Every request reads its body, burns some CPU and keeps 200 KB more alive (what the cgroup
/// must account), and answers `RESPONSE` bytes.
const APP: &str = concat!(
    "kept = []\n",
    "def application(environ, start_response):\n",
    "    body = environ['wsgi.input'].read()\n",
    "    kept.append(bytearray(200 * 1024))\n",
    "    n = sum(i * i for i in range(300000))\n",
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n",
    "    return [b'busy %d %d ' % (n % 7, len(body)), b'r' * 8192]\n",
);
/// Request and response bodies: what the router's byte counters must at least show per request.
const BODY: usize = 16 * 1024;
const RESPONSE: usize = 8192;
/// Chunked request bodies (through the de-chunking proxy): together more than all the others,
/// so that the domain's rx cannot reach what was sent without them.
const CHUNKED_BODY: usize = 512 * 1024;

/// A POST with curl to `url` (a name of `DOMAIN` resolved to loopback; `-k` for the router's
/// default certificate): `BODY` bytes, or `CHUNKED_BODY` chunked when asked. Whether the app
/// answered (and read the whole body).
fn post_curl(url: &str, chunked: bool, work: &Path) -> bool {
    let size = if chunked { CHUNKED_BODY } else { BODY };
    let body = work.join(format!("body-{size}"));
    if !body.exists() {
        std::fs::write(&body, vec![b'q'; size]).unwrap();
    }
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--resolve", &format!("{DOMAIN}:{port}:127.0.0.1"), "--data-binary"])
        .arg(format!("@{}", body.display()))
        .args(["-H", "Content-Type: application/octet-stream", "-w", "\n%{http_code}"]);
    if chunked {
        cmd.args(["-H", "Transfer-Encoding: chunked"]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.ends_with("\n200") && text.starts_with("busy") && text.contains(&format!(" {size} "))
}

/// POSTs `BODY` bytes to the router with `Host: DOMAIN`: whether the app answered (the router's
/// own 404 or 503 while the vassal's node is not in every router process yet reaches no app).
fn post(http: &str) -> bool {
    let mut request = format!(
        "POST / HTTP/1.0\r\nHost: {DOMAIN}\r\nContent-Type: application/octet-stream\r\nContent-Length: {BODY}\r\n\r\n"
    )
    .into_bytes();
    request.resize(request.len() + BODY, b'q');
    match uwsgi_it::http::raw(http, &request) {
        Ok(r) if r.status == 200 => {
            assert!(
                r.body.starts_with("busy") && r.body.contains(&format!(" {BODY} ")),
                "{}",
                &r.body[..40.min(r.body.len())]
            );
            true
        }
        _ => false,
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn release_binary(name: &str) -> PathBuf {
    let p = project_root().join("target/release").join(name);
    assert!(p.exists(), "{} is missing: run `make binaries`", p.display());
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `cmd` with `input` on its stdin; its output.
fn fed(cmd: &mut Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A customer's `curl -u` to the API: (status, body).
fn curl(url: &str) -> (u16, String) {
    let out = run(Command::new("curl").args(["-s", "-u", "kratos:deimos-pass", "-w", "\n%{http_code}", url]));
    let (body, status) = out.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_string())
}

fn series(api: &str, path: &str) -> Value {
    let (status, body) = curl(&format!("{api}/metrics/{path}"));
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn values(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|p| p[1].as_i64().unwrap()).collect()
}

struct Api {
    url: String,
    _server: Killed,
}

/// The control API on SQLite with a node, a customer, container `UID` and the domain.
fn start_api(work: &Path) -> (Api, String) {
    let bin = release_binary("unbit-api");
    let db = work.join("api.sqlite");
    let admin = |args: &[&str]| run(Command::new(&bin).arg("admin").arg("--db").arg(&db).args(args));
    let token =
        admin(&["server", "add", "--name", "n1", "--address", "127.0.0.1", "--memory", "4096", "--storage", "9000"]);
    admin(&["distro", "add", "--name", "Debian 12", "--path", "bookworm"]);
    admin(&["customer", "add", "--username", "kratos", "--password", "deimos-pass"]);
    run(Command::new("sqlite3").arg(&db).arg(format!(
        "INSERT INTO sqlite_sequence (name, seq) SELECT 'containers', {} WHERE NOT EXISTS \
         (SELECT 1 FROM sqlite_sequence WHERE name = 'containers'); UPDATE sqlite_sequence SET seq = {} WHERE name = 'containers';",
        UID - 30001,
        UID - 30001
    )));
    let uid = admin(&[
        "container",
        "add",
        "--customer",
        "kratos",
        "--server",
        "n1",
        "--name",
        "busy",
        "--memory",
        "256",
        "--storage",
        "300",
    ]);
    assert_eq!(uid.trim(), UID.to_string());
    admin(&["domain", "map", "--customer", "kratos", "--name", DOMAIN]);
    let port = free_port();
    let server = Command::new(&bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Killed(server);
    eventually(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).map(drop).map_err(|e| e.to_string())
    })
    .unwrap();
    (Api { url: format!("http://127.0.0.1:{port}/api"), _server: server }, token.trim().to_string())
}

#[test]
fn a_loaded_container_and_its_domain_in_the_days_series_a_chart_and_prometheus() {
    let work = tempfile::tempdir().unwrap();
    let (api, token) = start_api(work.path());

    let node = TestNode::start_with_shortcuts(&["--unbit-quota", "auto"]);
    let platform = LocalPlatform::new();
    platform.render_configs();
    let (_, shipped) = platform.router_config();
    let processes: u32 = configs::option(&shipped, "http-processes").parse().unwrap();
    assert!(processes > 1, "the shipped router runs several http processes: {processes}");
    let http = configs::option(&shipped, "http");
    let https_port = configs::port(&configs::option(&shipped, "https"));
    platform.prepare_router();
    let keys = key_pair();
    write_domains(&platform.run_dir.join("domains.json"), &[domain_entry(DOMAIN, &[UID], &keys.1)]);
    let homes = node.containers_dir();
    // The shipped config as it is, with the test node's folders.
    let _router = platform.router_instance("metrics-router", &node.subscribe_dir().join("http"), &homes).start();
    platform.wait_router_log("per-domain hits and bytes of every process", T).unwrap();
    let counters = platform.run_dir.join("router/domain-counters");
    node.put_spec(UID, &spec_json(UID, "busy", 256, 256, &["ssh-ed25519 AAAA busy"], &keys));
    let home = node.home(UID);
    eventually(T, || if home.join("vassals").exists() { Ok(()) } else { Err("no vassals dir".into()) }).unwrap();
    std::fs::write(home.join("busy.py"), APP).unwrap();
    std::fs::write(
        home.join("vassals/busy.ini"),
        format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/busy.py\ndomain = {DOMAIN}\n"),
    )
    .unwrap();
    // Until the vassal's announce reached the router processes, requests get the router's own
    // status; each one the app answers counts.
    let mut answered = 0;
    eventually(T, || {
        if post(&http) {
            answered += 1;
            Ok(())
        } else {
            Err(format!("{DOMAIN} not served yet:\n{}", platform.router_log()))
        }
    })
    .unwrap();

    // The collector as the Emperor runs it, with node-sync's settings file, every second.
    let token_file = work.path().join("node.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let settings = work.path().join("node-sync.conf");
    std::fs::write(
        &settings,
        format!("api = {}\ntoken-file = {}\n", api.url.trim_end_matches("/api"), token_file.display()),
    )
    .unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let log = work.path().join("metrics.log");
    let collector = Command::new(release_binary("unbit-metrics"))
        .arg("--settings")
        .arg(&settings)
        .args(["--cgroup-name", &node.cgroup_name, "--interval", "1"])
        .arg("--router-counters")
        .arg(&counters)
        .arg("--containers-dir")
        .arg(&homes)
        .args(["--prometheus", &prom])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _collector = Killed(collector);

    // Load: 40 requests through the router, 4 connections at a time so that every router
    // process takes some, in two rounds with collections in between; then 4 over HTTPS and 3
    // with chunked bodies.
    let round = |n: usize| {
        let served: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4).map(|_| s.spawn(|| (0..n / 4).filter(|_| post(&http)).count())).collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(served, n, "every request of the round reached the app");
        served
    };
    answered += round(20);
    std::thread::sleep(Duration::from_millis(2500));
    answered += round(20);
    // HTTPS sessions are counted too (their client side is the TLS layer's, not plain HTTP's),
    // and chunked bodies, which go through the front door's de-chunking proxy to the app.
    let https = format!("https://{DOMAIN}:{https_port}/");
    let over_tls = (0..4).filter(|_| post_curl(&https, false, work.path())).count();
    assert_eq!(over_tls, 4, "every HTTPS request reached the app:\n{}", platform.router_log());
    let plain = format!("http://{DOMAIN}:{}/", configs::port(&http));
    let chunked = (0..3).filter(|_| post_curl(&plain, true, work.path())).count();
    assert_eq!(chunked, 3, "every chunked request reached the app:\n{}", platform.router_log());
    answered += over_tls + chunked;
    let sent = answered;

    let domain_id = {
        let (status, body) = curl(&format!("{}/domains/", api.url));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v[0]["id"].as_i64().unwrap()
    };
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // The day's hits reach exactly the requests the app answered, whichever router process
    // served them (stock uWSGI's stats server shows the first process's only).
    let hits = eventually(T, || {
        let v = series(&api.url, &format!("domain.hits/{domain_id}"));
        let last = v[0]["metrics"].as_array().and_then(|m| m.last()).map(|p| p[1].as_i64().unwrap());
        if v[0]["container"] == UID && last == Some(sent as i64) {
            Ok(v)
        } else {
            Err(format!("domain.hits: {v} (sent {sent})\ncollector log:\n{}", show_log()))
        }
    })
    .unwrap();
    let hit_values = values(&hits[0]["metrics"]);
    assert!(hit_values.windows(2).all(|w| w[0] <= w[1]), "hits never go down: {hit_values:?}");
    // Requests and responses are counted apart (the original reported rx as tx): at least the
    // bodies (a cycle may come while the last answer is still being read), and less than twice
    // them (nothing counted twice). The chunked requests' bytes, which go between the
    // de-chunking proxy and the app rather than through the router's node, are counted by the
    // proxy: without them rx would stay under the chunked bodies alone.
    let bodies = (sent - chunked) * BODY + chunked * CHUNKED_BODY;
    let answers = sent * RESPONSE;
    let (rx, tx) = eventually(T, || {
        let rx = values(&series(&api.url, &format!("domain.net.rx/{domain_id}"))[0]["metrics"]);
        let tx = values(&series(&api.url, &format!("domain.net.tx/{domain_id}"))[0]["metrics"]);
        let (rx_last, tx_last) = (*rx.last().unwrap() as usize, *tx.last().unwrap() as usize);
        if rx_last >= bodies && tx_last >= answers {
            Ok((rx, tx))
        } else {
            Err(format!("rx {rx:?} for {bodies} bytes of bodies, tx {tx:?} for {answers} bytes of answers"))
        }
    })
    .unwrap();
    let (rx_last, tx_last) = (*rx.last().unwrap() as usize, *tx.last().unwrap() as usize);
    assert!(rx_last < 2 * bodies, "rx {rx_last} for {bodies} bytes of bodies: {rx:?}");
    assert!(tx_last < 2 * answers, "tx {tx_last} for {answers} bytes of answers: {tx:?}");
    assert!(rx.windows(2).all(|w| w[0] <= w[1]) && tx.windows(2).all(|w| w[0] <= w[1]), "{rx:?} {tx:?}");

    // CPU: a counter that grew with the load; memory: gauges above zero.
    let cpu = values(&series(&api.url, &format!("container.cpu/{UID}")));
    assert!(cpu.len() >= 3, "{cpu:?}\n{}", show_log());
    assert!(cpu.windows(2).all(|w| w[0] <= w[1]), "CPU time never goes down: {cpu:?}");
    assert!(cpu.last() > cpu.first(), "the load shows: {cpu:?}");
    let mem = values(&series(&api.url, &format!("container.mem/{UID}")));
    assert!(!mem.is_empty() && mem.iter().all(|m| *m > 0), "{mem:?}");
    let rss = values(&series(&api.url, &format!("container.mem.rss/{UID}")));
    assert!(rss.last() > Some(&(4 << 20)), "the app keeps 8 MB alive: {rss:?}");
    assert!(!values(&series(&api.url, &format!("container.net.rx/{UID}"))).is_empty());
    let quota = values(&series(&api.url, &format!("container.quota/{UID}")));
    let log_text = show_log();
    if log_text.contains("quota none") {
        assert!(quota.is_empty());
    } else {
        assert!(quota.last() > Some(&0), "the home holds files: {quota:?}\n{log_text}");
    }

    // The chart a customer opens: an SVG document (parsed by a real XML parser) with the line.
    let (status, svg) = curl(&format!("{}/metrics/container.cpu/{UID}.svg", api.url));
    assert_eq!(status, 200, "{svg}");
    let parsed = fed(
        Command::new("python3")
            .args(["-c", "import sys, xml.etree.ElementTree as E; r = E.parse(sys.stdin).getroot(); print(r.tag)"]),
        &svg,
    );
    assert!(parsed.status.success(), "not XML: {svg}");
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "{http://www.w3.org/2000/svg}svg");
    let line =
        svg.lines().find(|l| l.contains("<polyline") && l.contains("stroke-width=\"2\"")).expect("the data line");
    assert!(line.matches(',').count() >= 2, "at least two rates drawn: {line}");
    assert!(svg.contains(&format!("container.cpu of {UID}")));

    // The operator's exposition: promtool accepts it, and it holds the container and domain.
    let scrape = run(Command::new("curl").args(["-sf", &format!("http://{prom}/metrics")]));
    assert!(scrape.contains(&format!("unbit_container_cpu_seconds_total{{uid=\"{UID}\"}}")), "{scrape}");
    assert!(
        scrape.contains(&format!("unbit_domain_requests_total{{uid=\"{UID}\",domain=\"{DOMAIN}\"}} {sent}")),
        "{scrape}"
    );
    let promtool = ["/usr/local/bin/promtool", "/usr/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("promtool is missing: run scripts/install-deps.sh");
    let check = fed(Command::new(promtool).args(["check", "metrics"]), &scrape);
    assert!(
        check.status.success(),
        "promtool: {}{}\n{scrape}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
