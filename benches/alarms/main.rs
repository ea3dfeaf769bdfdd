//! Alarm latency (issue 15): the time from the kernel's OOM kill in a container to the alarm's
//! record in the API and to the request at the stand-in for Slack.
//!
//! ```sh
//! make plugins binaries
//! sudo cargo bench --bench alarms      # BENCH_OOMS (5)
//! ```
//!
//! A real container (the test kit's `TestNode` with `unbit_alarms`), the real `unbit-api` on
//! loopback (SQLite), `unbit-alarmd` with its Slack base on the kit's receiver. Each round
//! starts a fresh relay (de-duplication is per relay, one OOM alarm a minute otherwise),
//! provokes an OOM kill, and takes its moment from the container's cgroup (`oom_kill` in
//! `memory.events` / `memory.oom_control`, read every millisecond). The Slack time is when the
//! receiver had the whole request; the API time is when a `GET /api/alarms/` (curl, in a loop)
//! first lists the record, so it includes up to one poll (~10 ms). Needs root.

use std::time::{Duration, Instant};
use uwsgi_it::alarm_kit::{start_relay, LocalApi, Receiver};
use uwsgi_it::harness::plugin_path;
use uwsgi_it::http::{get_unix, wait_unix_ok};
use uwsgi_it::node::{key_pair, spec_json, TestNode};

const UID: u32 = 30691;
const SLACK: &str = "/services/TBENCH/BBENCH/bench";

const APP: &str = r#"
def application(env, start_response):
    if env['PATH_INFO'] == '/hog':
        hog = b'x' * (1024 * 1024 * 1024)
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
"#;

fn oom_kills(node: &TestNode) -> u64 {
    node.cgroup_dirs()
        .iter()
        .find_map(|d| {
            ["memory.events", "memory.oom_control"].iter().find_map(|f| {
                let text = std::fs::read_to_string(d.join(UID.to_string()).join(f)).ok()?;
                text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::var("BENCH_OOMS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let api = LocalApi::start(UID);
    let receiver = Receiver::start();
    let node = TestNode::start_with_platform_files(
        &["--unbit-quota", "none"],
        &[("plugins/unbit_alarms_plugin.so", plugin_path("unbit_alarms"))],
    );
    let keys = key_pair();
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(UID, "bench", 128, 128, &["ssh-ed25519 AAAA bench"], &keys)).unwrap();
    spec["alarms"] = serde_json::json!({"freq": 60, "quota_threshold": 90,
        "slack_webhook": format!("https://hooks.slack.com{SLACK}")});
    node.put_spec(UID, &spec.to_string());
    let socket = node.deploy_python(UID, "app", APP);

    let (mut to_api, mut to_slack) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let relay = start_relay(&node, &api, &receiver, None, &["--memory-threshold", "0"]);
        wait_unix_ok(&socket, "/", Duration::from_secs(60)).unwrap();
        let before = oom_kills(&node);
        let hog = {
            let socket = socket.clone();
            std::thread::spawn(move || drop(get_unix(&socket, "localhost", "/hog")))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let killed = loop {
            if oom_kills(&node) > before {
                break Instant::now();
            }
            assert!(Instant::now() < deadline, "no OOM kill");
            std::thread::sleep(Duration::from_millis(1));
        };
        let _ = hog.join();
        let slack = receiver.wait_for(SLACK, round + 1, Duration::from_secs(60))[round].at;
        let recorded = loop {
            if api.alarms(UID).iter().filter(|a| a["class"] == "oom").count() > round {
                break Instant::now();
            }
            assert!(Instant::now() < deadline, "no API record");
            std::thread::sleep(Duration::from_millis(2));
        };
        to_api.push(ms(recorded.saturating_duration_since(killed)));
        to_slack.push(ms(slack.saturating_duration_since(killed)));
        eprintln!("round {}: API record {:.0} ms, Slack {:.0} ms", round + 1, to_api[round], to_slack[round]);
        drop(relay);
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (a, s) = (stats(&mut to_api), stats(&mut to_slack));
    println!("OOM kill to alarm, {rounds} rounds (ms)     min  median    max");
    println!("  record in the API                {:7.0} {:7.0} {:7.0}", a.0, a.1, a.2);
    println!("  request at the Slack receiver    {:7.0} {:7.0} {:7.0}", s.0, s.1, s.2);
}
