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
//! 2. the memory of those idle containers ([`footprint`]);
//! 3. `BENCH_BATCH` containers dropped at once on a fresh node, until the last one is ready.
//!
//! Knobs (environment): `BENCH_STARTS` (20), `BENCH_WARMUP` (2), `BENCH_BATCH` (100),
//! `BENCH_BATCH_ROUNDS` (1), `BENCH_SETTLE_MS` (300, the pause after each start),
//! `BENCH_POLLED` (1: also time the stock Emperor as the original ran it, waiting for its
//! periodic scan), `BENCH_SEED`. Needs root; every process, cgroup and temp dir it creates
//! is removed when it ends, failed or not.

mod cgroups;
mod crun;
mod footprint;
mod original_vassal;
mod ours;
mod readiness;
mod stats;
mod stock;

use original_vassal::SuperblockRemounts;
use ours::OursNode;
use readiness::Readiness;
use stats::{summarize, Rng};
use std::collections::BTreeMap;
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

/// The rows of the table, in print order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Row {
    StartOurs,
    StartStockWoken,
    StartStockNoRemounts,
    StartStockPolled,
    StartCrun,
    RssOurs,
    RssStock,
    UssOurs,
    UssStock,
    ProcsOurs,
    ProcsStock,
    BatchOurs,
    BatchStock,
}

impl Row {
    fn label(self) -> &'static str {
        match self {
            Row::StartOurs => "start, ours: spec renamed in -> sub-Emperor ready",
            Row::StartStockWoken => "start, stock uWSGI + original chain, Emperor woken at once (SIGWINCH)",
            Row::StartStockNoRemounts => "start, same without the 2 superblock remounts (no host fs sync)",
            Row::StartStockPolled => "start, stock + original chain as the original ran (emperor-freq 3 s)",
            Row::StartCrun => "crun run /bin/sh -c true (same rootfs, limits, namespaces)",
            Row::RssOurs => "RSS per idle container, ours (master + sub-Emperor)",
            Row::RssStock => "RSS per idle container, stock + original chain",
            Row::UssOurs => "USS (private memory) per idle container, ours",
            Row::UssStock => "USS (private memory) per idle container, stock + original chain",
            Row::ProcsOurs => "processes per idle container, ours",
            Row::ProcsStock => "processes per idle container, stock + original chain",
            Row::BatchOurs => "containers dropped at once -> all ready, ours",
            Row::BatchStock => "containers dropped at once -> all ready, stock woken",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Row::RssOurs | Row::RssStock | Row::UssOurs | Row::UssStock => "MiB",
            Row::ProcsOurs | Row::ProcsStock => "",
            Row::BatchOurs | Row::BatchStock => "s",
            _ => "ms",
        }
    }
}

#[derive(Default)]
struct Results {
    samples: BTreeMap<Row, Vec<f64>>,
    failures: BTreeMap<Row, Vec<String>>,
    /// Containers whose readiness was seen late (see `Readiness::late`).
    late: usize,
}

impl Results {
    fn add(&mut self, row: Row, value: f64) {
        self.samples.entry(row).or_default().push(value);
    }

    fn fail(&mut self, row: Row, why: String) {
        eprintln!("bench: {} FAILED: {why}", row.label());
        self.failures.entry(row).or_default().push(why);
    }

    fn record(&mut self, row: Row, outcome: Result<f64, String>) {
        match outcome {
            Ok(v) => self.add(row, v),
            Err(e) => self.fail(row, e),
        }
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
    let cfg = config();
    print_environment(&cfg);
    let distro = uwsgi_it::node::debian_distro();
    let keys = uwsgi_it::node::key_pair();
    let mut results = Results::default();

    if let Err(e) = single_starts_and_footprint(&cfg, &distro, &keys, &mut results) {
        eprintln!("bench: single starts aborted: {e}");
    }
    for round in 0..cfg.batch_rounds {
        batches(&cfg, &distro, &keys, round, &mut results);
    }
    print_table(&cfg, &results);
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
}

impl Contender {
    fn row(self) -> Row {
        match self {
            Contender::Ours => Row::StartOurs,
            Contender::StockWoken => Row::StartStockWoken,
            Contender::StockNoRemounts => Row::StartStockNoRemounts,
            Contender::StockPolled => Row::StartStockPolled,
            Contender::Crun => Row::StartCrun,
        }
    }
}

fn single_starts_and_footprint(
    cfg: &Config,
    distro: &std::path::Path,
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
    let started = interleaved_rounds(cfg, &mut c, &mut lineup, results);
    results.late += c.ours.readiness.late + c.stock.readiness.late;
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
    let (mut next_ours, mut next_stock) = (31_000u32, 32_000u32);
    for round in 0..cfg.warmup + cfg.starts {
        eprintln!("bench: round {}/{} {:?}", round + 1, cfg.warmup + cfg.starts, lineup);
        for &who in lineup.iter() {
            let uid = match who {
                Contender::Ours => bump(&mut next_ours),
                Contender::Crun => 0,
                _ => bump(&mut next_stock),
            };
            let outcome = start_one(c, who, uid, &mut rng).map(|d| d.as_secs_f64() * 1e3);
            match who {
                _ if outcome.is_err() => {}
                Contender::Ours => started.ours.push(uid),
                Contender::Crun => {}
                _ => started.stock.push(uid),
            }
            if round >= cfg.warmup {
                results.record(who.row(), outcome);
            } else if let Err(e) = outcome {
                results.fail(who.row(), format!("(warm-up) {e}"));
            }
            std::thread::sleep(cfg.settle);
        }
        lineup.rotate_left(1);
    }
    started
}

fn bump(counter: &mut u32) -> u32 {
    *counter += 1;
    *counter
}

fn start_one(c: &mut Contenders, who: Contender, uid: u32, rng: &mut Rng) -> Result<Duration, String> {
    match who {
        Contender::Ours => {
            let t0 = c.ours.launch(&[uid])?;
            time_to_ready(&mut c.ours.readiness, &[uid], t0, START_TIMEOUT)
                .map(|t| t[0])
                .map_err(|e| format!("{e}\n{}", c.ours.log_tail()))
        }
        Contender::StockWoken => stock_start(&mut c.stock, uid, SuperblockRemounts::Keep, Wakeup::Signal),
        Contender::StockNoRemounts => stock_start(&mut c.stock, uid, SuperblockRemounts::Skip, Wakeup::Signal),
        Contender::StockPolled => {
            // A random phase against the Emperor's scan timer, as a file landing at any
            // moment would have (the timer restarts at every event the Emperor handles).
            std::thread::sleep(STOCK_EMPEROR_FREQ.mul_f64(rng.next_f64()));
            stock_start(&mut c.stock, uid, SuperblockRemounts::Keep, Wakeup::Poll)
        }
        Contender::Crun => c.crun.as_mut().ok_or("no crun")?.run_once(),
    }
}

fn stock_start(
    stock: &mut StockNode,
    uid: u32,
    remounts: SuperblockRemounts,
    wakeup: Wakeup,
) -> Result<Duration, String> {
    let t0 = stock.launch(&[uid], remounts, wakeup)?;
    time_to_ready(&mut stock.readiness, &[uid], t0, START_TIMEOUT)
        .map(|t| t[0])
        .map_err(|e| format!("{e}\n{}", stock.log_tail(uid)))
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
        results.add(Row::UssOurs, mib(f.uss_kib));
        results.add(Row::ProcsOurs, f.processes as f64);
    }
    for &uid in &started.stock {
        let f = c.stock.footprint(uid);
        if f.processes == 0 {
            results.fail(Row::RssStock, format!("container {uid} has no process left"));
            continue;
        }
        results.add(Row::RssStock, mib(f.rss_kib));
        results.add(Row::UssStock, mib(f.uss_kib));
        results.add(Row::ProcsStock, f.processes as f64);
    }
}

/// One round of batch bring-ups, ours and stock in alternating order, each on a fresh node.
fn batches(cfg: &Config, distro: &std::path::Path, keys: &(String, String), round: usize, results: &mut Results) {
    let uids: Vec<u32> = (0..cfg.batch as u32).map(|i| 40_000 + i).collect();
    // Who goes first alternates between rounds.
    let mut turns = [true, false];
    turns.rotate_left(round % 2);
    for ours_turn in turns {
        eprintln!("bench: batch of {} ({}), round {}", cfg.batch, if ours_turn { "ours" } else { "stock" }, round + 1);
        let (row, outcome) = if ours_turn {
            (Row::BatchOurs, batch_ours(keys, &uids, results))
        } else {
            (Row::BatchStock, batch_stock(distro, keys, &uids, round, results))
        };
        results.record(row, outcome.map(|d| d.as_secs_f64()));
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn batch_ours(keys: &(String, String), uids: &[u32], results: &mut Results) -> Result<Duration, String> {
    let mut node = OursNode::start(keys)?;
    let t0 = node.launch(uids)?;
    let outcome = time_to_ready(&mut node.readiness, uids, t0, BATCH_TIMEOUT);
    results.late += node.readiness.late;
    outcome.map(|t| t.into_iter().max().unwrap_or_default()).map_err(|e| format!("{e}\n{}", node.log_tail()))
}

fn batch_stock(
    distro: &std::path::Path,
    keys: &(String, String),
    uids: &[u32],
    round: usize,
    results: &mut Results,
) -> Result<Duration, String> {
    let mut node = StockNode::start(distro, keys, &format!("batch{round}"))?;
    let t0 = node.launch(uids, SuperblockRemounts::Keep, Wakeup::Signal)?;
    let outcome = time_to_ready(&mut node.readiness, uids, t0, BATCH_TIMEOUT);
    results.late += node.readiness.late;
    outcome.map(|t| t.into_iter().max().unwrap_or_default()).map_err(|e| format!("{e}\n{}", node.log_tail(uids[0])))
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
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

fn print_table(cfg: &Config, results: &Results) {
    println!();
    println!("| measurement | n | median | p90 | min | failed |");
    println!("|---|---|---|---|---|---|");
    let rows: Vec<Row> = results.samples.keys().chain(results.failures.keys()).copied().collect();
    let mut rows = rows;
    rows.sort();
    rows.dedup();
    for row in rows {
        let failed = results.failures.get(&row).map_or(0, Vec::len);
        let label = match row {
            Row::BatchOurs | Row::BatchStock => format!("{} {}", cfg.batch, row.label()),
            _ => row.label().to_string(),
        };
        let unit = row.unit();
        match results.samples.get(&row).and_then(|s| summarize(s)) {
            Some(s) => println!(
                "| {label} | {} | {} {unit} | {} {unit} | {} {unit} | {failed} |",
                s.n,
                fmt(s.median),
                fmt(s.p90),
                fmt(s.min)
            ),
            None => println!("| {label} | 0 | - | - | - | {failed} |"),
        }
    }
    println!();
    println!("readiness seen late (upper bounds, should be 0): {}", results.late);
}

/// Three significant digits are all these figures can honestly carry.
fn fmt(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}
