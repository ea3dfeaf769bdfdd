//! The rows of the result table, what each holds, and how it is printed (a Markdown table, so
//! it can go into the README as is).

use crate::readiness::Stages;
use crate::stats::summarize;
use std::collections::BTreeMap;

/// The rows of the table, in print order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Row {
    StartOurs,
    StartStockWoken,
    StartStockNoRemounts,
    StartStockPolled,
    StartCrun,
    UwsgiBare,
    UwsgiWithPlugin,
    RssOurs,
    RssStock,
    AnonOurs,
    AnonStock,
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
            Row::UwsgiBare => "diagnostic: `uwsgi --need-app` start to exit, no plugin",
            Row::UwsgiWithPlugin => "diagnostic: same, loading unbit_containers (as every container master does)",
            Row::RssOurs => "RSS per idle container, ours (master + sub-Emperor)",
            Row::RssStock => "RSS per idle container, stock + original chain",
            Row::AnonOurs => "anonymous memory per idle container, ours",
            Row::AnonStock => "anonymous memory per idle container, stock + original chain",
            Row::ProcsOurs => "processes per idle container, ours",
            Row::ProcsStock => "processes per idle container, stock + original chain",
            Row::BatchOurs => "containers dropped at once -> all ready, ours",
            Row::BatchStock => "containers dropped at once -> all ready, stock woken",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Row::RssOurs | Row::RssStock | Row::AnonOurs | Row::AnonStock => "MiB",
            Row::ProcsOurs | Row::ProcsStock => "",
            Row::BatchOurs | Row::BatchStock => "s",
            _ => "ms",
        }
    }
}

#[derive(Default)]
pub struct Results {
    samples: BTreeMap<Row, Vec<f64>>,
    failures: BTreeMap<Row, Vec<String>>,
    /// Per row, the samples whose readiness was seen late (see `Readiness::late`).
    late: BTreeMap<Row, usize>,
    /// Per start row, where each start's time went.
    stages: BTreeMap<Row, Vec<Stages>>,
    /// Lines printed under the table (batch timelines).
    notes: Vec<String>,
}

impl Results {
    pub fn add(&mut self, row: Row, value: f64) {
        self.samples.entry(row).or_default().push(value);
    }

    pub fn fail(&mut self, row: Row, why: String) {
        eprintln!("bench: {} FAILED: {why}", row.label());
        self.failures.entry(row).or_default().push(why);
    }

    pub fn record(&mut self, row: Row, outcome: Result<f64, String>) {
        match outcome {
            Ok(v) => self.add(row, v),
            Err(e) => self.fail(row, e),
        }
    }

    pub fn late(&mut self, row: Row, count: usize) {
        if count > 0 {
            *self.late.entry(row).or_default() += count;
        }
    }

    pub fn stages(&mut self, row: Row, stages: Stages) {
        self.stages.entry(row).or_default().push(stages);
    }

    pub fn note(&mut self, line: String) {
        eprintln!("bench: {line}");
        self.notes.push(line);
    }

    pub fn print(&self, batch: usize) {
        println!();
        println!("| measurement | n | median | p90 | min | failed | late |");
        println!("|---|---|---|---|---|---|---|");
        let mut rows: Vec<Row> = self.samples.keys().chain(self.failures.keys()).copied().collect();
        rows.sort();
        rows.dedup();
        for row in rows {
            self.print_row(row, batch);
        }
        println!();
        self.print_stages();
        for n in &self.notes {
            println!("{n}");
        }
        println!("late = readiness found without seeing its log write as an event: that time is an upper bound");
    }

    /// Medians of each stage of the starts (they need not add up to the median total).
    fn print_stages(&self) {
        let ms = |v: Vec<f64>| summarize(&v).map_or("-".into(), |s| format!("{} ms", fmt(s.median)));
        for (row, stages) in &self.stages {
            let pick =
                |f: fn(&Stages) -> std::time::Duration| stages.iter().map(|s| f(s).as_secs_f64() * 1e3).collect();
            println!(
                "stages of \"{}\" (medians): drop -> home created {}, -> first emperor.log line {}, -> ready {}",
                row.label(),
                ms(pick(|s| s.to_home)),
                ms(pick(|s| s.to_first_log)),
                ms(pick(|s| s.to_ready))
            );
        }
    }

    fn print_row(&self, row: Row, batch: usize) {
        let failed = self.failures.get(&row).map_or(0, Vec::len);
        let late = self.late.get(&row).copied().unwrap_or(0);
        let label = match row {
            Row::BatchOurs | Row::BatchStock => format!("{batch} {}", row.label()),
            _ => row.label().to_string(),
        };
        let unit = row.unit();
        match self.samples.get(&row).and_then(|s| summarize(s)) {
            Some(s) => println!(
                "| {label} | {} | {} {unit} | {} {unit} | {} {unit} | {failed} | {late} |",
                s.n,
                fmt(s.median),
                fmt(s.p90),
                fmt(s.min)
            ),
            None => println!("| {label} | 0 | - | - | - | {failed} | {late} |"),
        }
    }
}

/// Three significant digits are all these figures can honestly carry.
pub fn fmt(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}
