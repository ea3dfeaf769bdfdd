//! The validator next to stock uWSGI's `subscriptions-sign-check`, in one run, on this
//! machine (root: the validator checks socket ownership, and the sender's uid must be a
//! container of the domain's owner; the benchmark plays container uid 0).
//!
//!     make plugins && cargo bench -p unbit_subscriptions --bench subscriptions
//!
//! Workload: the steady state of a node. `NODES` vassals (one domain each, one socket each)
//! are subscribed, then each re-announces `REFRESHES` times (a vassal does it every 10 s),
//! signed RSA-2048/SHA-256, sent as fast as one sender can. Every packet carries a
//! sequence number in `load`, which the router's stats show, so "done" is when the router
//! holds every node's last value.
//!
//! 1. stock: the HTTP router with `subscriptions-sign-check = SHA256:<keys dir>`, one router
//!    process (signed subscriptions break with more);
//! 2. validator: the same router with the validator gateway in front (1 and 2 processes);
//! 3. the latency the validator adds: announces one at a time to a validator whose "router"
//!    is this program's own socket, send → forwarded, next to the same unix hop without it.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{domain_entry, start_router, write_domains, FakeHome, Router, RouterSetup};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use unbit_subscriptions::stock::StockAnnounce;
use unbit_subscriptions::wire::Command;
use uwsgi_it::harness::plugin_path;
use uwsgi_it::ports::free_port;
use uwsgi_it::InstanceBuilder;

const NODES: usize = 100;
const REFRESHES: usize = 100;
const LATENCY_SAMPLES: usize = 2000;
const UID: u32 = 0;

struct Workload {
    subscribe: Vec<Vec<u8>>,
    refresh: Vec<Vec<u8>>,
    domains: Vec<String>,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the benchmark runs as root (it plays a container and checks socket owners)");
        std::process::exit(1);
    }
    let root = tempfile::Builder::new().prefix("unbit-bench-").tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let homes = root.path().join("containers");
    let mut home = FakeHome::new(&homes, UID);
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let public = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();

    eprintln!("signing {} announces (RSA-2048, SHA-256)...", NODES * (REFRESHES + 1));
    let work = workload(&mut home, &key);

    // The stock router's key dir: <domain>.pem per domain.
    let keys = root.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for d in &work.domains {
        std::fs::write(keys.join(format!("{d}.pem")), &public).unwrap();
    }
    // The validator's domains file.
    let domains_file = root.path().join("domains.json");
    let entries: Vec<_> = work.domains.iter().map(|d| domain_entry(d, &[UID], &public)).collect();
    write_domains(&domains_file, &entries);

    let stock = run_stock(root.path(), &keys, &work);
    let ours1 = run_validator(root.path(), &homes, &domains_file, &work, 1);
    let ours2 = run_validator(root.path(), &homes, &domains_file, &work, 2);
    let lat = latency(root.path(), &homes, &domains_file, &mut home, &key);

    println!();
    println!(
        "subscription announces, {NODES} nodes x {REFRESHES} refreshes, RSA-2048 SHA-256, one sender, {} cores",
        cores()
    );
    println!("{:<60} {:>12} {:>12}", "", "announces/s", "us/announce");
    for (name, per_sec) in [
        ("stock uWSGI subscriptions-sign-check, http-processes 1", stock.per_sec),
        ("validator -> router, http-processes 1", ours1.per_sec),
        ("validator -> router, http-processes 2", ours2.per_sec),
        ("validator alone (forwarding to a socket that drains)", lat.alone),
    ] {
        println!("{name:<60} {per_sec:>12.0} {:>12.1}", 1e6 / per_sec);
    }
    println!();
    println!("latency, one announce at a time ({LATENCY_SAMPLES} samples), microseconds");
    println!("{:<60} {:>8} {:>8} {:>8}", "", "p50", "p90", "p99");
    for (name, (p50, p90, p99)) in [
        ("sender -> validator -> router socket", lat.validator),
        ("sender -> relay checking nothing -> router socket", lat.relay),
    ] {
        println!("{name:<60} {p50:>8.0} {p90:>8.0} {p99:>8.0}");
    }
    println!(
        "{:<60} {:>8.0} {:>8.0} {:>8.0}",
        "added by the validator's checks",
        lat.validator.0 - lat.relay.0,
        lat.validator.1 - lat.relay.1,
        lat.validator.2 - lat.relay.2
    );
    println!("{:<60} {:>8.1}", "the validator's own time per check (its report, mean)", lat.check_us);
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Every packet made (and signed) before any timing starts. Timestamps lie in the past, so
/// the routers run with a wide window (stock's default is a day; the validator's is set to
/// 900 s here).
fn workload(home: &mut FakeHome, key: &PKey<Private>) -> Workload {
    let t0 = now() - 400;
    let mut subscribe = Vec::new();
    let mut refresh = Vec::new();
    let mut domains = Vec::new();
    let mut announces = Vec::new();
    for n in 0..NODES {
        let domain = format!("site{n}.bench.example");
        let address = home.socket(&format!("{domain}_1.socket"));
        let mut a = StockAnnounce::new(&domain, &address, t0);
        a.load = 0;
        subscribe.push(a.signed(Command::Subscribe, key));
        announces.push(a);
        domains.push(domain);
    }
    for r in 1..=REFRESHES {
        for a in &mut announces {
            a.now = t0 + r as i64;
            a.load = r as u64;
            refresh.push(a.signed(Command::Subscribe, key));
        }
    }
    Workload { subscribe, refresh, domains }
}

struct Throughput {
    per_sec: f64,
}

/// Sends the subscribes, waits for every node, then times the refreshes until the router's
/// stats show every node's last `load`.
fn measure(router: &Router, socket: &Path, work: &Workload) -> Throughput {
    let sender = UnixDatagram::unbound().unwrap();
    for p in &work.subscribe {
        sender.send_to(p, socket).unwrap();
    }
    wait_until(router, |pools| pools.len() == NODES, "every node subscribed");
    let started = Instant::now();
    for p in &work.refresh {
        sender.send_to(p, socket).unwrap();
    }
    wait_until(
        router,
        |pools| pools.len() == NODES && pools.iter().all(|l| *l == REFRESHES as u64),
        "every refresh applied",
    );
    let elapsed = started.elapsed();
    Throughput { per_sec: work.refresh.len() as f64 / elapsed.as_secs_f64() }
}

/// The `load` of each pool's first node, from the stats server.
fn loads(router: &Router) -> Vec<u64> {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(&router.stats) else { return vec![] };
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&raw) else { return vec![] };
    v["subscriptions"]
        .as_array()
        .map(|pools| pools.iter().filter_map(|p| p["nodes"][0]["load"].as_u64()).collect())
        .unwrap_or_default()
}

fn wait_until(router: &Router, done: impl Fn(&[u64]) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if done(&loads(router)) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not reached; router log:\n{}", router.instance.log());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_stock(root: &Path, keys: &Path, work: &Workload) -> Throughput {
    let dir = root.join("stock");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("subscriptions.sock");
    let (http, stats) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let instance = InstanceBuilder::new("stock-router")
        .ini(&format!(
            "[uwsgi]\nplugins = http\nmaster = true\nhttp = {http}\nhttp-subscription-server = {}\n\
             http-stats-server = {stats}\nsubscriptions-sign-check = SHA256:{}\n",
            socket.display(),
            keys.display()
        ))
        .start();
    instance.wait_for_log("spawned uWSGI http 1", Duration::from_secs(20)).unwrap();
    let router = Router { instance, http, stats, private: tempfile::tempdir().unwrap(), domains: PathBuf::new() };
    eprintln!("stock sign-check...");
    measure(&router, &socket, work)
}

fn validator_extra() -> [&'static str; 8] {
    // The benchmark measures verification, not the per-container rate limit.
    [
        "--unbit-subscriptions-rate",
        "100000000",
        "--unbit-subscriptions-burst",
        "100000000",
        "--unbit-subscriptions-window",
        "900",
        "--unbit-subscriptions-report",
        "1",
    ]
}

fn run_validator(root: &Path, homes: &Path, domains: &Path, work: &Workload, processes: u32) -> Throughput {
    let sub = root.join(format!("subscribe{processes}"));
    std::fs::create_dir_all(&sub).unwrap();
    let socket = sub.join("http");
    let extra = validator_extra();
    let router =
        start_router(RouterSetup { socket: &socket, homes, domains, processes, extra: &extra, router_user: None });
    eprintln!("validator, {processes} router process(es)...");
    measure(&router, &socket, work)
}

/// (p50, p90, p99) in microseconds.
fn percentiles(mut us: Vec<f64>) -> (f64, f64, f64) {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 - 1.0) * q) as usize];
    (at(0.5), at(0.9), at(0.99))
}

/// Announces one at a time to a validator that forwards to this program's own socket.
struct Latency {
    /// (p50, p90, p99) microseconds, through the validator and through a plain relay.
    validator: (f64, f64, f64),
    relay: (f64, f64, f64),
    /// Announces per second through the validator alone (its "router" drains at once).
    alone: f64,
    /// Mean time of one check inside the validator, as it reports it.
    check_us: f64,
}

fn latency(root: &Path, homes: &Path, domains: &Path, home: &mut FakeHome, key: &PKey<Private>) -> Latency {
    let private = root.join("latency-private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let fake_router = private.join("router.sock");
    let receiver = UnixDatagram::bind(&fake_router).unwrap();
    receiver.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let sub = root.join("subscribe-latency");
    std::fs::create_dir_all(&sub).unwrap();
    let socket = sub.join("http");
    let (http, stats) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let mut args = vec![
        "--plugin".to_string(),
        plugin_path("unbit_subscriptions").display().to_string(),
        "--plugins".into(),
        "http".into(),
        "--master".into(),
        "--http".into(),
        http,
        "--http-stats-server".into(),
        stats,
        "--unbit-subscriptions-socket".into(),
        socket.display().to_string(),
        "--unbit-subscriptions-router".into(),
        fake_router.display().to_string(),
        "--unbit-subscriptions-domains".into(),
        domains.display().to_string(),
        "--unbit-subscriptions-containers-dir".into(),
        homes.display().to_string(),
    ];
    args.extend(validator_extra().iter().map(|s| s.to_string()));
    let instance = InstanceBuilder::new("latency-validator").args(&args).start();
    instance.wait_for_log("validating announces on", Duration::from_secs(20)).unwrap();

    // Each announce must be newer than its node's previous one, within the window: spread
    // the samples over a few nodes.
    const SOCKETS: usize = 20;
    let addresses: Vec<String> = (0..SOCKETS).map(|i| home.socket(&format!("latency{i}.socket"))).collect();
    let t0 = now() - 300;
    let packets: Vec<Vec<u8>> = (0..LATENCY_SAMPLES)
        .map(|i| {
            let mut a = StockAnnounce::new("site0.bench.example", &addresses[i % SOCKETS], t0 + (i / SOCKETS) as i64);
            a.load = i as u64;
            a.signed(Command::Subscribe, key)
        })
        .collect();
    eprintln!("latency...");
    let sender = UnixDatagram::unbound().unwrap();
    let mut buf = [0u8; 4096];
    let mut with_validator = Vec::new();
    for p in &packets {
        let started = Instant::now();
        sender.send_to(p, &socket).unwrap();
        receiver.recv(&mut buf).expect("the validator forwarded nothing");
        with_validator.push(started.elapsed().as_secs_f64() * 1e6);
    }
    // Validator alone: the same announces again (fresh timestamps), blasted, drained here.
    let t1 = t0 + (LATENCY_SAMPLES / SOCKETS) as i64 + 1;
    let blast: Vec<Vec<u8>> = (0..LATENCY_SAMPLES)
        .map(|i| {
            let mut a = StockAnnounce::new("site0.bench.example", &addresses[i % SOCKETS], t1 + (i / SOCKETS) as i64);
            a.load = i as u64;
            a.signed(Command::Subscribe, key)
        })
        .collect();
    let drain = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        for _ in 0..LATENCY_SAMPLES {
            receiver.recv(&mut buf).expect("the validator forwarded nothing");
        }
        receiver
    });
    let started = Instant::now();
    for p in &blast {
        sender.send_to(p, &socket).unwrap();
    }
    let receiver = drain.join().unwrap();
    let alone = LATENCY_SAMPLES as f64 / started.elapsed().as_secs_f64();
    // The validator's own account: time spent in its checks, without the socket hops and
    // scheduling around them (its activity report, every second here).
    std::thread::sleep(Duration::from_millis(1500));
    let check_us = instance
        .log()
        .lines()
        .filter_map(|l| {
            let (count, rest) = l.strip_prefix("[unbit_subscriptions] ")?.split_once(" announces checked")?;
            let us = rest.split(", ").find_map(|p| p.strip_suffix(" us per check"))?;
            Some((count.parse::<u64>().ok()?, us.parse::<f64>().ok()?))
        })
        .max_by_key(|(count, _)| *count)
        .map_or(f64::NAN, |(_, us)| us);
    drop(instance);
    // The same two unix hops and process wakeups through a relay that checks nothing.
    let relay_path = sub.join("relay");
    let relay = UnixDatagram::bind(&relay_path).unwrap();
    let target = fake_router.clone();
    std::thread::spawn(move || {
        let out = UnixDatagram::unbound().unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = relay.recv(&mut buf) {
            let _ = out.send_to(&buf[..n], &target);
        }
    });
    let mut relayed = Vec::new();
    for p in &packets {
        let started = Instant::now();
        sender.send_to(p, &relay_path).unwrap();
        receiver.recv(&mut buf).unwrap();
        relayed.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Latency { validator: percentiles(with_validator), relay: percentiles(relayed), alone, check_us }
}
