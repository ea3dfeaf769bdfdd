//! Container start-up benchmark: our `unbit_containers` against stock uWSGI running the
//! original platform's hook chain, and against `crun run`, on this machine, in one run.
//!
//! ```sh
//! make plugins && sudo cargo bench --bench containers
//! ```
//!
//! Measured (see the README's "Benchmarks" section for what each figure means):
//!
//! 1. single starts, interleaved: each round runs every contender once, in an order rotated
//!    by one each round so drift hits them alike; the first `BENCH_WARMUP` rounds are
//!    discarded. A start is timed from the instant before the rename of the container's file
//!    into the watched folder to the container's sub-Emperor printing its start line
//!    ([`readiness`]). The containers stay up;
//!    Two diagnostic rows ride along: `uwsgi --need-app` with and without loading
//!    `unbit_containers`, which isolates what the plugin's load costs every container master;
//! 2. the memory of those idle containers: RSS and anonymous memory ([`footprint`]);
//! 3. `BENCH_BATCH` containers dropped at once on a fresh node, until the last one is ready,
//!    with the timeline of the batch printed under the table.
//!
//! Knobs (environment): `BENCH_STARTS` (20), `BENCH_WARMUP` (2), `BENCH_BATCH` (100),
//! `BENCH_BATCH_ROUNDS` (1), `BENCH_SETTLE_MS` (300, the pause after each start),
//! `BENCH_POLLED` (1: also time the stock Emperor as the original ran it, waiting for its
//! periodic scan), `BENCH_SEED`. Needs root. Every wait has a deadline; every process, cgroup
//! and temp dir it creates is removed when it ends, failed, panicked or interrupted (Ctrl-C).

mod cgroups;
mod crun;
mod footprint;
mod interrupt;
mod original_vassal;
mod ours;
mod readiness;
mod report;
mod stats;
mod stock;

use original_vassal::SuperblockRemounts;
use ours::OursNode;
use readiness::{Readiness, Stages};
use report::{fmt, Results, Row};
use stats::Rng;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use stock::{StockNode, Wakeup};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const BATCH_TIMEOUT: Duration = Duration::from_secs(600);
/// The stock Emperor's default scan period, which the original platform kept.
const STOCK_EMPEROR_FREQ: Duration = Duration::from_secs(3);
/// Time given to the last started containers to finish starting before memory is read.
const IDLE_WAIT: Duration = Duration::from_secs(3);

struct Config {
    starts: usize,
    warmup: usize,
    batch: usize,
    batch_rounds: usize,
    settle: Duration,
    polled: bool,
    seed: u64,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config() -> Config {
    let now_seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
    Config {
        starts: env_or("BENCH_STARTS", 20),
        warmup: env_or("BENCH_WARMUP", 2),
        batch: env_or("BENCH_BATCH", 100),
        batch_rounds: env_or("BENCH_BATCH_ROUNDS", 1),
        settle: Duration::from_millis(env_or("BENCH_SETTLE_MS", 300)),
        polled: env_or("BENCH_POLLED", 1) == 1,
        seed: env_or("BENCH_SEED", now_seed),
    }
}

fn main() {
    if let Ok(bundle) = std::env::var(crun::WORKER_ENV) {
        crun::worker_main(&bundle);
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the containers benchmark needs root (namespaces, cgroups, mounts)");
        std::process::exit(2);
    }
    interrupt::install();
    let cfg = config();
    print_environment(&cfg);
    let distro = uwsgi_it::node::debian_distro();
    let keys = uwsgi_it::node::key_pair();
    let mut results = Results::default();

    if let Err(e) = single_starts_and_footprint(&cfg, &distro, &keys, &mut results) {
        eprintln!("bench: single starts aborted: {e}");
    }
    for round in 0..cfg.batch_rounds {
        if interrupt::requested() {
            break;
        }
        batches(&cfg, &distro, &keys, round, &mut results);
    }
    results.print(cfg.batch);
    print_load("end");
}

/// The instances of the single-start phase. Dropped (stopped, cleaned) when the phase ends.
struct Contenders {
    ours: OursNode,
    stock: StockNode,
    crun: Option<crun::CrunRunner>,
}

#[derive(Clone, Copy, Debug)]
enum Contender {
    Ours,
    StockWoken,
    StockNoRemounts,
    StockPolled,
    Crun,
    UwsgiBare,
    UwsgiWithPlugin,
}

impl Contender {
    fn row(self) -> Row {
        match self {
            Contender::Ours => Row::StartOurs,
            Contender::StockWoken => Row::StartStockWoken,
            Contender::StockNoRemounts => Row::StartStockNoRemounts,
            Contender::StockPolled => Row::StartStockPolled,
            Contender::Crun => Row::StartCrun,
            Contender::UwsgiBare => Row::UwsgiBare,
            Contender::UwsgiWithPlugin => Row::UwsgiWithPlugin,
        }
    }
}

fn single_starts_and_footprint(
    cfg: &Config,
    distro: &Path,
    keys: &(String, String),
    results: &mut Results,
) -> Result<(), String> {
    let crun = match crun::CrunRunner::start(distro) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("bench: crun anchor unavailable: {e}");
            None
        }
    };
    let mut c = Contenders { ours: OursNode::start(keys)?, stock: StockNode::start(distro, keys, "single")?, crun };
    let mut lineup = vec![Contender::Ours, Contender::StockWoken, Contender::StockNoRemounts];
    if cfg.polled {
        lineup.push(Contender::StockPolled);
    }
    if c.crun.is_some() {
        lineup.push(Contender::Crun);
    }
    lineup.extend([Contender::UwsgiBare, Contender::UwsgiWithPlugin]);
    let started = interleaved_rounds(cfg, &mut c, &mut lineup, results);
    if interrupt::requested() {
        return Err("interrupted".into());
    }
    std::thread::sleep(IDLE_WAIT);
    record_footprints(&c, &started, results);
    Ok(())
}

/// The containers the single-start phase left running, per chain.
#[derive(Default)]
struct Started {
    ours: Vec<u32>,
    stock: Vec<u32>,
}

/// Every contender once per round; the line-up rotates by one after each round.
fn interleaved_rounds(cfg: &Config, c: &mut Contenders, lineup: &mut [Contender], results: &mut Results) -> Started {
    let mut rng = Rng::new(cfg.seed);
    let mut started = Started::default();
    let mut uids = Uids { ours: 31_000, stock: 32_000 };
    for round in 0..cfg.warmup + cfg.starts {
        eprintln!("bench: round {}/{} {:?}", round + 1, cfg.warmup + cfg.starts, lineup);
        for &who in lineup.iter() {
            if interrupt::requested() {
                return started;
            }
            let uid = uids.next_for(who);
            let late_before = c.ours.readiness.late + c.stock.readiness.late;
            let timed = start_one(c, who, uid, &mut rng);
            let late = c.ours.readiness.late + c.stock.readiness.late - late_before;
            match who {
                _ if timed.is_err() || uid == 0 => {}
                Contender::Ours => started.ours.push(uid),
                _ => started.stock.push(uid),
            }
            record_start(results, round < cfg.warmup, who.row(), timed, late);
            std::thread::sleep(cfg.settle);
        }
        lineup.rotate_left(1);
    }
    started
}

/// The last container uid used by each chain (they never share one).
struct Uids {
    ours: u32,
    stock: u32,
}

impl Uids {
    /// A fresh uid for a container start, 0 for the contenders that start no container.
    fn next_for(&mut self, who: Contender) -> u32 {
        let counter = match who {
            Contender::Ours => &mut self.ours,
            Contender::StockWoken | Contender::StockNoRemounts | Contender::StockPolled => &mut self.stock,
            Contender::Crun | Contender::UwsgiBare | Contender::UwsgiWithPlugin => return 0,
        };
        *counter += 1;
        *counter
    }
}

/// Files one start's outcome; warm-up rounds only report their failures.
fn record_start(results: &mut Results, warm_up: bool, row: Row, timed: Result<Timed, String>, late: usize) {
    match (warm_up, timed) {
        (true, Ok(_)) => {}
        (true, Err(e)) => results.fail(row, format!("(warm-up) {e}")),
        (false, Err(e)) => results.fail(row, e),
        (false, Ok((elapsed, stages))) => {
            results.add(row, elapsed.as_secs_f64() * 1e3);
            results.late(row, late);
            if let Some(s) = stages {
                results.stages(row, s);
            }
        }
    }
}

/// One start: its time and, for the container chains, where that time went.
type Timed = (Duration, Option<Stages>);

fn start_one(c: &mut Contenders, who: Contender, uid: u32, rng: &mut Rng) -> Result<Timed, String> {
    let without_stages = |d: Duration| (d, None);
    match who {
        Contender::Ours => {
            let t0 = c.ours.launch(&[uid])?;
            let r = &mut c.ours.readiness;
            match time_to_ready(r, &[uid], t0, START_TIMEOUT) {
                Ok(t) => Ok((t[0], r.stages(uid, t0))),
                Err(e) => Err(format!("{e}\n{}", c.ours.log_tail())),
            }
        }
        Contender::StockWoken => stock_start(&mut c.stock, uid, SuperblockRemounts::Keep, Wakeup::Signal),
        Contender::StockNoRemounts => stock_start(&mut c.stock, uid, SuperblockRemounts::Skip, Wakeup::Signal),
        Contender::StockPolled => {
            // A random phase against the Emperor's scan timer, as a file landing at any
            // moment would have (the timer restarts at every event the Emperor handles).
            std::thread::sleep(STOCK_EMPEROR_FREQ.mul_f64(rng.next_f64()));
            stock_start(&mut c.stock, uid, SuperblockRemounts::Keep, Wakeup::Poll)
        }
        Contender::Crun => c.crun.as_mut().ok_or("no crun")?.run_once().map(without_stages),
        Contender::UwsgiBare => time_uwsgi_need_app(false).map(without_stages),
        Contender::UwsgiWithPlugin => time_uwsgi_need_app(true).map(without_stages),
    }
}

/// `uwsgi --need-app`: uWSGI initialises fully, finds no app and exits (status 1). With the
/// plugin, the difference is what loading `unbit_containers` costs a container master.
fn time_uwsgi_need_app(with_plugin: bool) -> Result<Duration, String> {
    let mut cmd = Command::new(uwsgi_it::harness::uwsgi_bin());
    if with_plugin {
        cmd.arg("--plugin").arg(uwsgi_it::harness::plugin_path("unbit_containers"));
    }
    cmd.arg("--need-app").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let started = Instant::now();
    let status = cmd.status().map_err(|e| format!("uwsgi: {e}"))?;
    let elapsed = started.elapsed();
    match status.code() {
        Some(1) => Ok(elapsed),
        _ => Err(format!("uwsgi --need-app ended with {status}, expected exit status 1")),
    }
}

fn stock_start(stock: &mut StockNode, uid: u32, remounts: SuperblockRemounts, wakeup: Wakeup) -> Result<Timed, String> {
    let t0 = stock.launch(&[uid], remounts, wakeup)?;
    match time_to_ready(&mut stock.readiness, &[uid], t0, START_TIMEOUT) {
        Ok(t) => Ok((t[0], stock.readiness.stages(uid, t0))),
        Err(e) => Err(format!("{e}\n{}", stock.log_tail(uid))),
    }
}

/// How long after `t0` each of `uids` became ready.
fn time_to_ready(
    readiness: &mut Readiness,
    uids: &[u32],
    t0: Instant,
    timeout: Duration,
) -> Result<Vec<Duration>, String> {
    readiness.wait_all(uids, t0 + timeout)?;
    Ok(uids
        .iter()
        .map(|u| readiness.ready_at(*u).map_or(Duration::ZERO, |t| t.saturating_duration_since(t0)))
        .collect())
}

fn record_footprints(c: &Contenders, started: &Started, results: &mut Results) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    for &uid in &started.ours {
        let f = c.ours.footprint(uid);
        if f.processes == 0 {
            results.fail(Row::RssOurs, format!("container {uid} has no process left"));
            continue;
        }
        results.add(Row::RssOurs, mib(f.rss_kib));
        results.add(Row::AnonOurs, mib(f.anon_kib));
        results.add(Row::ProcsOurs, f.processes as f64);
    }
    for &uid in &started.stock {
        let f = c.stock.footprint(uid);
        if f.processes == 0 {
            results.fail(Row::RssStock, format!("container {uid} has no process left"));
            continue;
        }
        results.add(Row::RssStock, mib(f.rss_kib));
        results.add(Row::AnonStock, mib(f.anon_kib));
        results.add(Row::ProcsStock, f.processes as f64);
    }
}

/// One round of batch bring-ups, ours and stock in alternating order, each on a fresh node.
fn batches(cfg: &Config, distro: &Path, keys: &(String, String), round: usize, results: &mut Results) {
    let uids: Vec<u32> = (0..cfg.batch as u32).map(|i| 40_000 + i).collect();
    // Who goes first alternates between rounds.
    let mut turns = [true, false];
    turns.rotate_left(round % 2);
    for ours_turn in turns {
        if interrupt::requested() {
            return;
        }
        eprintln!("bench: batch of {} ({}), round {}", cfg.batch, if ours_turn { "ours" } else { "stock" }, round + 1);
        let (row, outcome) = if ours_turn {
            (Row::BatchOurs, batch_ours(keys, &uids, results))
        } else {
            (Row::BatchStock, batch_stock(distro, keys, &uids, round, results))
        };
        results.record(row, outcome.map(|d| d.as_secs_f64()));
        // Let the previous node's teardown settle before the next one starts.
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn batch_ours(keys: &(String, String), uids: &[u32], results: &mut Results) -> Result<Duration, String> {
    let mut node = OursNode::start(keys)?;
    let t0 = node.launch(uids)?;
    let outcome = time_to_ready(&mut node.readiness, uids, t0, BATCH_TIMEOUT);
    note_batch(Row::BatchOurs, "ours", &node.readiness, uids, t0, results);
    outcome.map(slowest).map_err(|e| format!("{e}\n{}", node.log_tail()))
}

fn batch_stock(
    distro: &Path,
    keys: &(String, String),
    uids: &[u32],
    round: usize,
    results: &mut Results,
) -> Result<Duration, String> {
    let mut node = StockNode::start(distro, keys, &format!("batch{round}"))?;
    let t0 = node.launch(uids, SuperblockRemounts::Keep, Wakeup::Signal)?;
    let outcome = time_to_ready(&mut node.readiness, uids, t0, BATCH_TIMEOUT);
    note_batch(Row::BatchStock, "stock woken", &node.readiness, uids, t0, results);
    outcome.map(slowest).map_err(|e| format!("{e}\n{}", node.log_tail(uids[0])))
}

fn slowest(times: Vec<Duration>) -> Duration {
    times.into_iter().max().unwrap_or_default()
}

/// The batch's timeline under the table: when the homes appeared (ours: made by the node
/// Emperor one container after the other; stock: by each container's first hooks) and when
/// the containers became ready, all after the drop.
fn note_batch(row: Row, who: &str, readiness: &Readiness, uids: &[u32], t0: Instant, results: &mut Results) {
    results.late(row, readiness.late);
    let after = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(t0).as_secs_f64());
    let spread = |mut v: Vec<f64>| -> String {
        v.sort_by(f64::total_cmp);
        match (v.first(), v.get(v.len() / 2), v.last()) {
            (Some(a), Some(m), Some(z)) => format!("first +{} s, median +{} s, last +{} s", fmt(*a), fmt(*m), fmt(*z)),
            _ => "none".into(),
        }
    };
    let homes = spread(uids.iter().filter_map(|u| after(readiness.home_seen_at(*u))).collect());
    let ready = spread(uids.iter().filter_map(|u| after(readiness.ready_at(*u))).collect());
    results.note(format!("batch of {}, {who}: homes appeared {homes}; ready {ready}", uids.len()));
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_else(|e| format!("({cmd}: {e})"))
}

fn print_load(when: &str) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at {when}: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
}

fn print_environment(cfg: &Config) {
    println!(
        "kernel {}, {} CPUs, uWSGI {}, {}",
        command_line("uname", &["-r"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        command_line(&uwsgi_it::harness::uwsgi_bin(), &["--version"]),
        command_line("crun", &["--version"]),
    );
    println!(
        "starts {} (+{} warm-up rounds), batch {} x {} round(s), settle {} ms, polled anchor {}, seed {}",
        cfg.starts,
        cfg.warmup,
        cfg.batch,
        cfg.batch_rounds,
        cfg.settle.as_millis(),
        cfg.polled,
        cfg.seed
    );
    print_load("start");
}
