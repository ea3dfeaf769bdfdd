//! The Legion walk-through (`sudo make legion-demo`, docs/clustering.md "Try it") run end to end
//! through `scripts/legion-demo.sh`, as a newcomer runs it, so it cannot rot: what it prints
//! must show a cluster domain balanced across two nodes through the Lord's address, the API's
//! `legion_address` and members file, the failover and the service resuming; and when it ends, normally or on
//! Ctrl-C, none of the processes, directories, cgroups or namespaces it printed may be left.
//!
//! Root, `make plugins` first (the script builds the rest). Uids 31460-31461 and 31470-31471
//! (of the demo's 31450-31499; tests/clustering.rs has 312xx); the demo's namespaces have no
//! names (held by descriptors) and its addresses live inside them, so it runs beside the
//! clustering test. The two cases take turns: each is three nodes with containers.

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn demo(uid: u32) -> Command {
    let root = uwsgi_it::harness::project_root();
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/legion-demo.sh"))
        .env("LEGION_DEMO_UID", uid.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group, as a shell runs a foreground job: Ctrl-C goes to the group.
        .process_group(0);
    cmd
}

/// The lines of step `n` (from `== n.` to the next `== `).
fn step(out: &str, n: u32) -> Vec<&str> {
    let start = format!("== {n}.");
    out.lines().skip_while(|l| !l.starts_with(&start)).skip(1).take_while(|l| !l.starts_with("== ")).collect()
}

/// How many of the step's request lines were answered by `node`.
fn served_by(lines: &[&str], node: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.trim_start().starts_with("request") && l.contains(&format!("served by node {node} ")))
        .count()
}

/// The words after `label` in every line that has it (`pids emperor 12` -> "12").
fn after<'a>(out: &'a str, label: &str) -> Vec<&'a str> {
    out.lines()
        .filter_map(|l| l.split_once(label))
        .filter_map(|(_, rest)| rest.split([' ', ';', ',', ')']).find(|w| !w.is_empty()))
        .collect()
}

/// Everything the demo printed that it made: none may be left once it has exited.
fn assert_nothing_left(out: &str) {
    let mut pids: Vec<&str> =
        ["emperor ", "router ", "cluster ", "unbit-api (pid "].iter().flat_map(|label| after(out, label)).collect();
    pids.retain(|p| p.parse::<u32>().is_ok());
    assert!(pids.len() >= 9, "the demo printed its processes: {pids:?}\n{out}");
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(!cmdline.contains("uwsgi") && !cmdline.contains("unbit-api"), "process {pid} left: {cmdline}");
    }
    let mut dirs: Vec<&str> = after(out, "; dirs ");
    dirs.extend(out.lines().filter_map(|l| l.split_once("; dirs ")).filter_map(|(_, r)| r.split([' ', ';']).nth(1)));
    dirs.extend(after(out, "demo dir "));
    assert!(dirs.len() >= 7, "the demo printed its dirs: {dirs:?}\n{out}");
    for d in dirs {
        assert!(!std::path::Path::new(d).exists(), "{d} left behind");
    }
    let cgroups = after(out, "; cgroup ");
    assert_eq!(cgroups.len(), 3, "{out}");
    for name in cgroups {
        assert!(uwsgi_it::host::cgroup_dirs(name).is_empty(), "cgroup {name} left behind");
    }
    // The LAN namespace (and with it the bridge and the nodes' veth peers): no process is in it.
    let inode = after(out, "lan namespace inode ");
    assert_eq!(inode.len(), 1, "{out}");
    let in_it = format!("net:[{}]", inode[0]);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(target) = std::fs::read_link(entry.path().join("ns/net")) {
            assert_ne!(target.to_string_lossy(), in_it, "process {:?} is still in the demo's LAN", entry.file_name());
        }
    }
}

#[test]
fn the_demo_balances_a_cluster_domain_fails_over_and_leaves_nothing_behind() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = demo(31460).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the demo failed ({:?}):\n{text}", out.status);

    assert!(step(&text, 1).iter().any(|l| l.contains("node a is the Lord")), "{text}");
    let before = step(&text, 3);
    let (b, c) = (served_by(&before, "b"), served_by(&before, "c"));
    assert!(b >= 3 && c >= 3 && b + c == 10, "10 requests through the Lord, balanced across b and c:\n{text}");
    let api = step(&text, 4);
    assert!(api.iter().any(|l| l.contains("\"legion_address\": [\"192.168.250.100\"]")), "{text}");
    assert!(
        api.iter().any(|l| l.contains("members a, b, c") && l.contains(", the same as the file the nodes run with")),
        "node-sync wrote the members file the nodes run with, from the API:\n{text}"
    );
    let failover = step(&text, 5);
    assert!(failover.iter().any(|l| l.contains("node b took 192.168.250.100")), "{text}");
    assert!(failover.iter().any(|l| l.contains("succeed again")), "{text}");
    let after_failover = step(&text, 6);
    let (b, c) = (served_by(&after_failover, "b"), served_by(&after_failover, "c"));
    assert!(b >= 3 && c >= 3 && b + c == 10, "10 requests through the new Lord, balanced:\n{text}");
    assert!(text.contains("== done"), "{text}");
    assert_nothing_left(&text);
}

#[test]
fn ctrl_c_in_the_middle_of_the_demo_cleans_everything_up() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = demo(31470).spawn().unwrap();
    let mut text = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    // Ctrl-C once the containers serve the domain (the most to clean up).
    while lines.read_line(&mut line).unwrap() > 0 {
        text.push_str(&line);
        let reached = line.starts_with("== 3.");
        line.clear();
        if reached {
            break;
        }
    }
    assert!(text.contains("== 3."), "the demo ended before its requests:\n{text}");
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    while lines.read_line(&mut line).unwrap() > 0 {
        text.push_str(&line);
        line.clear();
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?} {:?}\n{text}", status.signal());
    assert!(text.contains("== interrupted, cleaned up"), "{text}");
    assert!(!text.contains("== 5."), "the Lord was not killed after Ctrl-C:\n{text}");
    assert_nothing_left(&text);
}
