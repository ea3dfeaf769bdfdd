//! HTTPS benchmark (issue 12): the platform's lazy SNI (`unbit_router`'s `sni` module, reading
//! the certificate index the validator keeps) next to stock uWSGI 2.0.21's static
//! `sni = name crt,key` entries, measured in one run on the same machine.
//!
//! ```sh
//! make plugins && sudo cargo bench --bench sni
//! ```
//!
//! * **start and memory with N names** (`BENCH_NAMES`, default 0,10000,100000): the time from
//!   `uwsgi` starting to the first completed TLS handshake on its https socket, and the memory
//!   of the router's processes (RSS of each, and PSS: shared pages counted once). Ours starts
//!   with N entries in its index (the http processes never list it); stock with N `sni` lines.
//! * **first handshake of a new name** (ours; RSA-2048, one router process): a full handshake
//!   for a name no process has built yet, next to a full handshake for a cached name; the
//!   difference is what reading the entry and building its context adds.
//! * **handshakes per second for cached names**, full and resumed, 100 names, 2 router
//!   processes, `BENCH_CLIENTS` client threads sending a curl-like ClientHello (key shares for
//!   X25519 then P-256), for `BENCH_SECONDS`; whether the server asked for a HelloRetryRequest.
//! * **memory per 1 000 cached contexts**: one router process's RSS before and after 1 000
//!   names' first handshakes (ours); stock's per 1 000 `sni` entries from the first table.
//!
//! Every certificate is the same RSA-2048 pair (generating 100 000 keys would take an hour; the
//! router builds a context per name either way). Server and clients share the machine's cores:
//! compare the columns, not the absolute numbers. Needs root (the router user, root-only keys).
//! Every process is stopped by PID and every temp dir removed, also on a panic.

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use sni_index::testing::{server, KeyKind};
use sni_index::{Bundle, IndexDir};
use std::net::TcpStream;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use uwsgi_it::harness::plugin_path;
use uwsgi_it::ports::free_port;
use uwsgi_it::{Instance, InstanceBuilder};

const ROUTER_USER: &str = "unbit-router";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn name(i: usize) -> String {
    format!("site{i}.bench.test")
}

/// The files both routers serve: one RSA-2048 pair (PEM for stock, the index entry for ours),
/// and the node's default certificate.
struct Material {
    dir: PathBuf,
    bundle: Bundle,
}

impl Material {
    fn crt(&self) -> String {
        self.dir.join("site.crt").display().to_string()
    }
    fn key(&self) -> String {
        self.dir.join("site.key").display().to_string()
    }
    fn default_pair(&self) -> (String, String) {
        (self.dir.join("node.crt").display().to_string(), self.dir.join("node.key").display().to_string())
    }
}

fn material(dir: &Path) -> Material {
    let pair = server(&["*.bench.test"], KeyKind::Rsa2048, None, 1);
    std::fs::write(dir.join("site.crt"), pair.cert_pem()).unwrap();
    std::fs::write(dir.join("site.key"), pair.key_pem()).unwrap();
    let node = server(&["node.bench.test"], KeyKind::Rsa2048, None, 2);
    std::fs::write(dir.join("node.crt"), node.cert_pem()).unwrap();
    std::fs::write(dir.join("node.key"), node.key_pem()).unwrap();
    for f in ["site.key", "node.key"] {
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let bundle = Bundle::from_pem(&pair.cert_pem(), &pair.key_pem(), None).unwrap();
    Material { dir: dir.to_path_buf(), bundle }
}

/// A router instance and its https address.
struct Router {
    instance: Instance,
    https: String,
}

/// Ours: the stock http router with the platform's front door, `n` names in its index.
fn ours(root: &Path, m: &Material, n: usize, processes: u32, cache: usize) -> Router {
    let index = ours_index(root, m, n, processes);
    ours_start(&index, m, processes, cache)
}

/// The index of `n` names, as the validator writes it, in a private dir of root's.
fn ours_index(root: &Path, m: &Material, n: usize, processes: u32) -> PathBuf {
    let private = root.join(format!("ours-{n}-{processes}"));
    std::fs::create_dir_all(&private).unwrap();
    let user = nix::unistd::User::from_name(ROUTER_USER).unwrap().expect("the router user (install-deps.sh)");
    chown(&private, Some(0), Some(user.gid.as_raw())).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o710)).unwrap();
    let index = private.join("sni");
    let mut dir = IndexDir::create(&index, Some(user.gid.as_raw())).unwrap();
    for i in 0..n {
        let bytes = m.bundle.encode(&name(i), 30001, "~/site.crt").unwrap();
        dir.put(&name(i), &bytes).unwrap();
    }
    index
}

fn ours_start(index: &Path, m: &Material, processes: u32, cache: usize) -> Router {
    let private = index.parent().unwrap();
    let https = format!("127.0.0.1:{}", free_port());
    let (crt, key) = m.default_pair();
    let p = |f: &str| private.join(f).display().to_string();
    let instance = InstanceBuilder::new("ours-https")
        .args(["--plugin", "http", "--master", "--http-uid", ROUTER_USER, "--http-gid", ROUTER_USER])
        .args(["--plugin", &plugin_path("unbit_subscriptions").display().to_string()])
        .args(["--plugin", &plugin_path("unbit_router").display().to_string()])
        .args(["--https", &format!("{https},{crt},{key},HIGH:!aNULL:!MD5")])
        .args(["--http-processes", &processes.to_string(), "--http-timeout", "60"])
        .args(["--unbit-subscriptions-sni-dir", &index.display().to_string()])
        .args(["--unbit-router-sni-cache", &cache.to_string()])
        .args(["--unbit-router-errors-socket", &p("errors.sock"), "--unbit-router-dechunk-socket", &p("dechunk.sock")])
        .start();
    Router { instance, https }
}

/// Stock: the same http router alone, `n` static `sni` entries.
fn stock(root: &Path, m: &Material, n: usize, processes: u32) -> Router {
    stock_start(&stock_ini(root, m, n, processes))
}

/// The config with `n` `sni` lines and its https address.
fn stock_ini(root: &Path, m: &Material, n: usize, processes: u32) -> (PathBuf, String) {
    let https = format!("127.0.0.1:{}", free_port());
    let (crt, key) = m.default_pair();
    let mut ini = format!(
        "[uwsgi]\nplugin = http\nmaster = true\nhttp-uid = {ROUTER_USER}\nhttp-gid = {ROUTER_USER}\n\
         https = {https},{crt},{key},HIGH:!aNULL:!MD5\nhttp-processes = {processes}\n"
    );
    for i in 0..n {
        ini.push_str(&format!("sni = {} {},{}\n", name(i), m.crt(), m.key()));
    }
    let file = root.join(format!("stock-{n}-{processes}.ini"));
    std::fs::write(&file, ini).unwrap();
    (file, https)
}

fn stock_start((file, https): &(PathBuf, String)) -> Router {
    let instance = InstanceBuilder::new("stock-https").args(["--ini", &file.display().to_string()]).start();
    Router { instance, https: https.clone() }
}

fn connector(groups: &str) -> SslConnector {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    b.set_groups_list(groups).unwrap();
    b.build()
}

/// One full handshake with the server name `sni`.
fn handshake(c: &SslConnector, addr: &str, sni: &str) -> Option<()> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let cfg = c.configure().ok()?.verify_hostname(false);
    cfg.connect(sni, stream).ok().map(drop)
}

/// Waits for the first completed handshake on `addr`; the time since `started`.
fn first_handshake(addr: &str, started: Instant, limit: Duration) -> Duration {
    let c = connector("X25519:P-256");
    loop {
        if handshake(&c, addr, "probe.bench.test").is_some() {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no TLS handshake on {addr} within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `(kB RSS, kB PSS)` of one process.
fn memory(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |f: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(f))
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// The router's http processes, as the master's log names them (`spawned uWSGI http 1 (pid:
/// N)`): the other gateways (error backend, pin holder) hold no TLS context.
fn http_processes(r: &Router) -> Vec<u32> {
    r.instance
        .log()
        .lines()
        .filter_map(|l| l.strip_prefix("spawned uWSGI http ")?.split("(pid: ").nth(1)?.strip_suffix(')')?.parse().ok())
        .collect()
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the HTTPS benchmark needs root (router user, root-only keys)");
    let names: Vec<usize> = std::env::var("BENCH_NAMES")
        .unwrap_or_else(|_| "0,10000,100000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let (seconds, clients, fresh) = (knob("BENCH_SECONDS", 5), knob("BENCH_CLIENTS", 2), knob("BENCH_NEW_NAMES", 200));
    let root = tempfile::Builder::new().prefix("unbit-bench-sni-").tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = material(root.path());
    let limit = Duration::from_secs(3600);

    // 1. Start time and memory with N names.
    println!("start and memory: uWSGI started to first TLS handshake; memory of master + 2 http processes");
    println!("| names | ours start | ours RSS | ours PSS | stock start | stock RSS | stock PSS |");
    println!("|---|---|---|---|---|---|---|");
    let mut stock_rss_per_1000 = None;
    let mut base: Option<(u64, u64)> = None;
    for &n in &names {
        let mut row = vec![n.to_string()];
        let mut stock_http_rss = 0;
        for kind in ["ours", "stock"] {
            // Written before the clock starts: the validator keeps the index as announces come.
            let (index, ini) = if kind == "ours" {
                (Some(ours_index(root.path(), &m, n, 2)), None)
            } else {
                (None, Some(stock_ini(root.path(), &m, n, 2)))
            };
            let started = Instant::now();
            let r = match (&index, &ini) {
                (Some(index), _) => ours_start(index, &m, 2, 1000),
                (_, Some(ini)) => stock_start(ini),
                _ => unreachable!(),
            };
            let took = first_handshake(&r.https, started, limit);
            // The master builds stock's contexts before it forks: shared pages, counted once in PSS.
            let routers = http_processes(&r);
            let mut keep: Vec<u32> = vec![r.instance.pid()];
            keep.extend(&routers);
            let (rss, pss) = keep.iter().map(|p| memory(*p)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            if kind == "stock" {
                stock_http_rss = routers.iter().map(|p| memory(*p).0).max().unwrap_or(0);
            }
            row.push(format!("{:.0} ms", took.as_secs_f64() * 1000.0));
            row.push(format!("{:.1} MiB", mib(rss)));
            row.push(format!("{:.1} MiB", mib(pss)));
            drop(r);
        }
        if n == 0 {
            base = Some((stock_http_rss, 0));
        } else if let Some((b, _)) = base {
            stock_rss_per_1000.get_or_insert(((stock_http_rss.saturating_sub(b)) as f64 / (n as f64 / 1000.0), n));
        }
        println!("| {} |", row.join(" | "));
    }

    // 2. The first handshake of a new name, against a cached one (one router process).
    let r = ours(root.path(), &m, fresh as usize, 1, 1000);
    first_handshake(&r.https, Instant::now(), limit);
    let c = connector("X25519:P-256");
    let (mut first, mut cached) = (Vec::new(), Vec::new());
    for i in 0..fresh as usize {
        let n = name(i);
        let t = Instant::now();
        handshake(&c, &r.https, &n).expect("a handshake for a new name");
        first.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        handshake(&c, &r.https, &n).expect("a handshake for a cached name");
        cached.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let added: Vec<f64> = first.iter().zip(&cached).map(|(f, c)| f - c).collect();
    println!();
    println!(
        "first handshake of a new name (ours, RSA-2048, {fresh} names, 1 router process): median {:.2} ms, \
         cached name {:.2} ms: {:.2} ms added (p90 {:.2} ms)",
        median(first.clone()),
        median(cached.clone()),
        median(added.clone()),
        {
            let mut a = added.clone();
            a.sort_by(|x, y| x.total_cmp(y));
            a[a.len() * 9 / 10]
        }
    );
    drop(r);

    // 3. Handshakes per second for cached names.
    println!();
    println!("handshakes per second, 100 cached names, 2 router processes, {clients} client threads, {seconds} s, curl-like ClientHello (X25519, P-256 key shares)");
    println!("| router | full/s | resumed/s | HelloRetryRequest |");
    println!("|---|---|---|---|");
    for kind in ["stock", "ours"] {
        let r = if kind == "ours" { ours(root.path(), &m, 100, 2, 1000) } else { stock(root.path(), &m, 100, 2) };
        first_handshake(&r.https, Instant::now(), limit);
        // Warm every name in every process.
        let c = connector("X25519:P-256");
        for _ in 0..4 {
            for i in 0..100 {
                handshake(&c, &r.https, &name(i));
            }
        }
        let full = rate(&r.https, clients, seconds, false);
        let resumed = rate(&r.https, clients, seconds, true);
        let trace = Command::new("openssl")
            .args(["s_client", "-connect", &r.https, "-servername", &name(0), "-groups", "X25519:P-256", "-trace"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        // OpenSSL's trace shows a HelloRetryRequest as a first, short ServerHello.
        let hrr = String::from_utf8_lossy(&trace.stdout).matches("ServerHello, Length=").count() > 1;
        println!("| {kind} | {full:.0} | {resumed:.0} | {} |", if hrr { "yes" } else { "no" });
    }

    // 4. Memory per 1 000 cached contexts.
    let r = ours(root.path(), &m, 1000, 1, 2000);
    first_handshake(&r.https, Instant::now(), limit);
    let router = http_processes(&r);
    let before = router.iter().map(|p| memory(*p).0).sum::<u64>();
    let c = connector("X25519:P-256");
    for i in 0..1000 {
        handshake(&c, &r.https, &name(i)).expect("a handshake");
    }
    let after = router.iter().map(|p| memory(*p).0).sum::<u64>();
    println!();
    print!(
        "memory per 1 000 cached contexts: ours {:.1} MiB (one router process, 1 000 first handshakes)",
        mib(after.saturating_sub(before))
    );
    match stock_rss_per_1000 {
        Some((kb, n)) => {
            println!("; stock {:.1} MiB per 1 000 sni entries (each http process, from {n} entries)", kb / 1024.0)
        }
        None => println!(),
    }
    drop(r);
}

/// Handshakes per second over `seconds` from `clients` client processes (CPython's ssl: a
/// ClientHello like curl's, X25519 key share first), round robin over the 100 names. Resumed:
/// each client first makes one session per name (reading until the TLS 1.3 tickets came), then
/// offers it again and again (OpenSSL resumes a ticket more than once); only resumed
/// handshakes are counted.
fn rate(addr: &str, clients: u64, seconds: u64, resume: bool) -> f64 {
    const CLIENT: &str = r#"
import socket, ssl, sys, time
host, port = sys.argv[1].rsplit(':', 1)
seconds, resume, offset = float(sys.argv[2]), sys.argv[3] == '1', int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
names = ['site%d.bench.test' % i for i in range(100)]
def connect(name, session=None):
    return ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=name, session=session)
sessions = {}
if resume:
    for name in names:
        t = connect(name)
        t.sendall(b'GET / HTTP/1.1\r\nHost: ' + name.encode() + b'\r\nConnection: close\r\n\r\n')
        try:
            t.recv(4096)
        except OSError:
            pass
        sessions[name] = t.session
        t.close()
count, i, end = 0, offset, time.time() + seconds
while time.time() < end:
    name = names[i % 100]
    i += 1
    t = connect(name, sessions.get(name))
    if not resume or t.session_reused:
        count += 1
    t.close()
print(count / seconds)
"#;
    let children: Vec<_> = (0..clients)
        .map(|c| {
            Command::new("python3")
                .args(["-c", CLIENT, addr, &seconds.to_string(), if resume { "1" } else { "0" }, &(c * 37).to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse::<f64>().unwrap_or(0.0)
        })
        .sum()
}
