//! Front-door benchmark: what the platform's plugins cost the node's HTTP router, measured
//! against the stock router alone, on the same backend, in one run.
//!
//! ```sh
//! make plugins && sudo cargo bench --bench router
//! ```
//!
//! * **stock**: Debian's uWSGI 2.0.21 `http` router (as many processes as the shipped config,
//!   `http-uid = unbit-router`,
//!   subscription server, dotsplit), the backend subscribed to it directly;
//! * **ours**: the router as `vassals-examples/services/http.ini` runs it (rendered as `make run`
//!   renders it): the subscription validator (the backend's signed announce goes through it,
//!   the router reaches the socket through the pin holder) and the front door `unbit_router`
//!   (Host normalisation, error statuses, the de-chunking detour's check, SNI on https).
//!
//! The backend is one stock uWSGI python app (2 processes, `Hello`), running as a container
//! uid with its socket in a home, announcing itself to both routers. The load is `wrk`
//! (`-t2 -c32`) with keep-alive and with `Connection: close`; each round runs both routers in
//! an order that alternates; the table gives the median of the rounds. Server, backend and
//! client share the machine's cores: compare the columns, not the absolute numbers.
//!
//! Knobs: `BENCH_ROUNDS` (3), `BENCH_SECONDS` (10), `BENCH_CONNECTIONS` (32). Needs root and
//! `wrk`. Every process is stopped by PID and every temp dir removed, also on a panic.

#[path = "../../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod kit;

use kit::{domain_entry, eventually, write_domains};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use std::os::unix::fs::{chown, PermissionsExt};
use std::process::Command;
use std::time::Duration;
use uwsgi_it::platform::{configs, LocalPlatform};
use uwsgi_it::ports::free_port;
use uwsgi_it::InstanceBuilder;

const UID: u32 = 30990;
const DOMAIN: &str = "bench.test";
const ROUTER_USER: &str = "unbit-router";
const APP: &str = "def application(environ, start_response):\n    \
                   start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'Hello']\n";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One `wrk` run: requests per second and the 99th percentile latency in milliseconds.
struct Load {
    rps: f64,
    p99_ms: f64,
    errors: u64,
}

fn wrk(address: &str, seconds: u64, connections: u64, keepalive: bool) -> Load {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency", "-H"])
        .arg(format!("Host: {DOMAIN}"));
    if !keepalive {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(format!("http://{address}/")).output().expect("run wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| {
                l.trim_start().strip_prefix(prefix).map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            })
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
    };
    let rps: f64 = field("Requests/sec:").parse().unwrap();
    let p99 = field("99%");
    let p99_ms = if let Some(us) = p99.strip_suffix("us") {
        us.parse::<f64>().unwrap() / 1000.0
    } else if let Some(ms) = p99.strip_suffix("ms") {
        ms.parse().unwrap()
    } else {
        p99.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0
    };
    let errors = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    Load { rps, p99_ms, errors }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the router benchmark needs root (container uid, router user)");
    let (rounds, seconds, connections) =
        (knob("BENCH_ROUNDS", 3), knob("BENCH_SECONDS", 10), knob("BENCH_CONNECTIONS", 32));
    let root = tempfile::Builder::new().prefix("unbit-bench-router-").tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let homes = root.path().join("containers");
    let home = homes.join(UID.to_string());
    for dir in [home.join("run"), home.join("etc")] {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for dir in [&home, &home.join("run"), &home.join("etc")] {
        chown(dir, Some(UID), Some(UID)).unwrap();
    }
    let subscribe = root.path().join("subscribe");
    std::fs::create_dir_all(&subscribe).unwrap();

    // The owner's key, as the container has it in ~/etc/uwsgi.key.
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let key_file = home.join("etc/uwsgi.key");
    std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    chown(&key_file, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o400)).unwrap();
    let domains = root.path().join("domains.json");
    let public = String::from_utf8(key.public_key_to_pem().unwrap()).unwrap();
    write_domains(&domains, &[domain_entry(DOMAIN, &[UID], &public)]);

    // ours: the router exactly as vassals-examples/services/http.ini runs it (rendered as
    // `make run` renders it); only this benchmark's folders are given on top.
    let platform = LocalPlatform::new();
    platform.render_configs();
    let run = platform.run_dir.clone();
    platform.prepare_router();
    std::fs::copy(&domains, run.join("domains.json")).unwrap();
    let (_, shipped) = platform.router_config();
    let (ours_http, processes) = (configs::option(&shipped, "http"), configs::option(&shipped, "http-processes"));
    let socket = subscribe.join("http");
    let ours = platform.router_instance("ours-router", &socket, &homes).start();
    let router_log = run.join("log/router.log");
    eventually(Duration::from_secs(30), || match std::fs::read_to_string(&router_log) {
        Ok(log) if log.contains("validating announces on") => Ok(()),
        _ => Err(format!("the router did not start:\n{}", ours.log())),
    })
    .unwrap();

    // stock: the same router without the platform's plugins; the backend (a container uid)
    // announces to it directly, over UDP on loopback, as stock uWSGI's users do.
    let stock_sub = format!("127.0.0.1:{}", free_port());
    let stock_http = format!("127.0.0.1:{}", free_port());
    let stock = InstanceBuilder::new("stock-router")
        .args(["--plugin", "http", "--master", "--http", &stock_http, "--http-processes", &processes])
        .args(["--http-subscription-server", &stock_sub, "--subscription-dotsplit"])
        .args(["--http-uid", ROUTER_USER, "--http-gid", ROUTER_USER, "--http-keepalive=5"])
        .start();
    stock.wait_for_log("subscription server bound", Duration::from_secs(20)).unwrap();

    // The backend, as a customer vassal: the container's uid, its socket in ~/run.
    let app = home.join("app.py");
    std::fs::write(&app, APP).unwrap();
    let app_socket = home.join("run/app.socket");
    let uid = UID.to_string();
    let backend = InstanceBuilder::new("backend")
        .args(["--plugin", "python3", "--master", "--processes", "2", "--uid", &uid, "--gid", &uid])
        .args(["--socket", &app_socket.display().to_string(), "--chmod-socket=666"])
        .args(["--wsgi-file", &app.display().to_string(), "--disable-logging"])
        .args([
            "--subscribe2",
            &format!("server={stock_sub},key={DOMAIN},addr={}", app_socket.display()),
            "--subscribe2",
            &format!(
                "server={},key={DOMAIN},addr={},sign=SHA256:{}",
                socket.display(),
                app_socket.display(),
                key_file.display()
            ),
        ])
        .start();
    for (name, address) in [("stock", &stock_http), ("ours", &ours_http)] {
        eventually(Duration::from_secs(30), || match uwsgi_it::http::get(address, DOMAIN, "/") {
            Ok(r) if r.status == 200 && r.body == "Hello" => Ok(()),
            other => Err(format!("{name} router: {other:?}")),
        })
        .unwrap();
    }

    println!(
        "front door: {rounds} rounds x {seconds} s, wrk -t2 -c{connections}, {processes} router processes each; \
         ours is the shipped http.ini (validator, pin holder, unbit_router)"
    );
    println!("| mode | stock req/s | ours req/s | ours/stock | stock p99 | ours p99 | non-2xx |");
    println!("|---|---|---|---|---|---|---|");
    for keepalive in [true, false] {
        let (mut s_rps, mut o_rps, mut s_p99, mut o_p99, mut bad) = (vec![], vec![], vec![], vec![], 0);
        for round in 0..rounds {
            let order: [(&str, &String); 2] = if round % 2 == 0 {
                [("stock", &stock_http), ("ours", &ours_http)]
            } else {
                [("ours", &ours_http), ("stock", &stock_http)]
            };
            for (name, address) in order {
                let load = wrk(address, seconds, connections, keepalive);
                bad += load.errors;
                if name == "stock" {
                    s_rps.push(load.rps);
                    s_p99.push(load.p99_ms);
                } else {
                    o_rps.push(load.rps);
                    o_p99.push(load.p99_ms);
                }
            }
        }
        let (s, o) = (median(s_rps), median(o_rps));
        println!(
            "| {} | {s:.0} | {o:.0} | {:.1} % | {:.2} ms | {:.2} ms | {bad} |",
            if keepalive { "keep-alive" } else { "Connection: close" },
            o / s * 100.0,
            median(s_p99),
            median(o_p99)
        );
    }
    drop(backend);
    drop(stock);
    drop(ours);
}
