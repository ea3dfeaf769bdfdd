//! `unbit-metrics --settings FILE [--cgroup-name NAME] [--containers-dir DIR]
//!   [--router-counters FILE] [--interval SECS] [--prometheus 127.0.0.1:PORT] [--once]`
//!
//! `--settings` is unbit-node-sync's file (`/etc/unbit/node-sync.conf`): the API's URL and the
//! node's credentials. `--cgroup-name` is the containers plugin's `unbit-cgroup-name`
//! (default `unbit`); `--containers-dir` the homes (quota use; omitted: no quota metric);
//! `--router-counters` the table of per-domain hits and bytes the HTTP router's processes
//! write (its `unbit-router-domain-counters`; omitted: no domain metrics). `--prometheus` serves the last cycle at `/metrics` on a
//! loopback address. `--once`: one cycle, pushed, then exit (status 1 if the push failed).
//! Run by the node Emperor (`attach-daemon2`), which restarts it if it dies.

use metrics::collect::{Collector, Layout, NetSource};
use metrics::prometheus::{self, NodeFigures};
use metrics::router::{self, DomainSamples};
use nix::sys::resource::{getrusage, UsageWho};
use node_sync::client::Api;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    settings: PathBuf,
    cgroup_name: String,
    containers_dir: Option<PathBuf>,
    router_counters: Option<PathBuf>,
    interval: Duration,
    prometheus: Option<SocketAddr>,
    once: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut settings, mut cgroup_name, mut containers_dir, mut router_counters) =
        (None, "unbit".to_string(), None, None);
    let (mut interval, mut prometheus, mut once) = (60u64, None, false);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--settings" => settings = Some(PathBuf::from(value()?)),
            "--cgroup-name" => cgroup_name = value()?,
            "--containers-dir" => containers_dir = Some(PathBuf::from(value()?)),
            "--router-counters" => router_counters = Some(PathBuf::from(value()?)),
            "--interval" => {
                interval = value()?.parse().map_err(|e| format!("--interval: {e}"))?;
                if interval == 0 {
                    return Err("--interval: at least 1 second".into());
                }
            }
            "--prometheus" => {
                let v = value()?;
                let addr: SocketAddr = v.parse().map_err(|e| format!("--prometheus {v}: {e}"))?;
                // Unauthenticated, and it names every customer's domains: loopback only (a
                // local Prometheus or an exporter proxy reaches it).
                if !addr.ip().is_loopback() {
                    return Err(format!("--prometheus {v}: must be a loopback address"));
                }
                prometheus = Some(addr);
            }
            "--once" => once = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        settings: settings
            .ok_or("--settings is required (unbit-node-sync's file: the API and the node's credentials)")?,
        cgroup_name,
        containers_dir,
        router_counters,
        interval: Duration::from_secs(interval),
        prometheus,
        once,
    })
}

fn log(msg: &str) {
    eprintln!("[unbit-metrics] {msg}");
}

fn thread_cpu() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or_default()
}

fn node_figures(figures: &mut NodeFigures) {
    figures.load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()));
    figures.memory_available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| metrics::parse::flat_key(&t.replace(':', ""), "MemAvailable"))
        .map(|kb| kb * 1024);
}

/// Logs a problem when it differs from the last one logged under `slot`: a down API or router
/// is one line, not one a minute.
fn log_change(slot: &mut Option<String>, now: Option<String>) {
    if *slot != now {
        match &now {
            Some(msg) => log(msg),
            None => log(&format!("recovered from: {}", slot.as_deref().unwrap_or(""))),
        }
        *slot = now;
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            log(&e);
            std::process::exit(2);
        }
    };
    let setup = || -> Result<(Api, Collector), String> {
        let (base, auth) = node_sync::settings::connection(&args.settings)?;
        let api = Api::new(&base, auth, Duration::from_secs(15))?;
        let layout = Layout::detect(&args.cgroup_name)?;
        Ok((api, Collector::new(layout, args.containers_dir.as_deref())?))
    };
    let (api, mut collector) = match setup() {
        Ok(s) => s,
        Err(e) => {
            log(&e);
            std::process::exit(1);
        }
    };
    let latest = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = args.prometheus {
        match TcpListener::bind(addr) {
            Ok(l) => {
                let latest = latest.clone();
                std::thread::spawn(move || prometheus::serve(l, latest));
            }
            // Collection goes on: the API's series matter more than the operator's scrape
            // (e.g. a second platform on a development machine finds the port taken).
            Err(e) => log(&format!("--prometheus {addr}: {e}; serving no Prometheus exposition")),
        }
    }
    log(&format!(
        "collecting every {}s: cgroup {} subtree {:?}, quota {}, router counters {}, Prometheus {}",
        args.interval.as_secs(),
        collector.layout.version(),
        args.cgroup_name,
        collector.quota_backend(),
        args.router_counters.as_ref().map_or("off".to_string(), |p| p.display().to_string()),
        args.prometheus.map_or("off".to_string(), |a| format!("http://{a}/metrics")),
    ));
    let mut figures = NodeFigures::default();
    let (mut push_problem, mut router_problem, mut skipped_seen) = (None, None, Vec::<Value>::new());
    let mut overflow_problem = None;
    let mut net_logged = false;
    loop {
        let started = Instant::now();
        let cpu_before = thread_cpu();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let (containers, net) = collector.cycle();
        if !net_logged {
            if let Some(net) = net {
                log(match net {
                    NetSource::HostInterface => "network bytes from the containers' host-side interfaces (uw<uid>)",
                    NetSource::Namespace => "network bytes from the containers' namespaces (/proc/<init>/net/dev)",
                });
                net_logged = true;
            }
        }
        let mut domains = DomainSamples::new();
        if let Some(path) = &args.router_counters {
            let uids: BTreeSet<u32> = containers.iter().map(|c| c.uid).collect();
            match router::collect(path, &uids) {
                Ok(reading) => {
                    log_change(&mut router_problem, None);
                    log_change(&mut overflow_problem, overflow_note(&reading));
                    figures.router_overflow_requests = reading.overflow.hits;
                    figures.router_slots = Some((reading.slots_used, reading.slots));
                    domains = reading.domains;
                }
                Err(e) => {
                    figures.router_failures += 1;
                    log_change(&mut router_problem, Some(e));
                }
            }
        }
        let parts = metrics::batches(unix, &containers, &domains, metrics::MAX_REQUEST);
        figures.cycle_cpu_seconds = (thread_cpu() - cpu_before).as_secs_f64();
        // Every part is sent even after one failed: each is stored on its own.
        let (mut skipped, mut failure) = (Vec::new(), None);
        for part in &parts {
            match api.post("/api/node/v1/metrics", part) {
                Ok(answer) => skipped.extend(answer["skipped"].as_array().cloned().unwrap_or_default()),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        figures.cycle_wall_seconds = started.elapsed().as_secs_f64();
        let ok = failure.is_none();
        if ok {
            figures.last_push = unix;
        } else {
            figures.push_failures += 1;
        }
        log_change(&mut push_problem, failure);
        if skipped != skipped_seen {
            for s in skipped.iter().filter(|s| !skipped_seen.contains(s)) {
                log(&format!("the API skipped: {}", s.as_str().unwrap_or_default()));
            }
            skipped_seen = skipped;
        }
        node_figures(&mut figures);
        if let Ok(mut text) = latest.lock() {
            *text = prometheus::render(&containers, &domains, &figures);
        }
        if args.once {
            std::process::exit(if ok { 0 } else { 1 });
        }
        std::thread::sleep(args.interval.saturating_sub(started.elapsed()));
    }
}

/// What the log says about the router's table beyond its counts: a table that was full or
/// held garbage (None: neither).
fn overflow_note(r: &router::RouterReading) -> Option<String> {
    let mut notes = Vec::new();
    if !r.overflow.is_zero() {
        notes.push(format!(
            "the router's domain counters table is full ({} slots): new (container, domain) pairs are counted \
             only in unbit_router_overflow_requests_total (raise unbit-router-domain-slots)",
            r.slots
        ));
    }
    if r.malformed > 0 {
        notes.push(format!("{} entries of the router's domain counters are not domain names (left out)", r.malformed));
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}
