//! Platform alarms end to end (issue 15), as root on this machine's kernel: a real container
//! whose vassal is OOM-killed and whose home goes over its quota threshold, the node's alarm
//! relay (`unbit-alarmd`), the real `unbit-api` on loopback, a local receiver checking the
//! exact Slack, Pushover and Pushbullet requests, and a real prosody with real accounts.
//!
//! Needs `make plugins binaries` (the plugins and `target/release/{unbit-api,unbit-alarmd}`).

use std::path::Path;
use std::time::Duration;
use uwsgi_it::alarm_kit::{start_relay, Answer, LocalApi, Prosody, Receiver, XMPP_DOMAIN};
use uwsgi_it::harness::plugin_path;
use uwsgi_it::http::{get_unix, identity, wait_unix_ok};
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};

const UID: u32 = 30601;
const T: Duration = Duration::from_secs(60);
/// "Within seconds": how long any channel may take to show an alarm.
const SECONDS: Duration = Duration::from_secs(30);

const SLACK_PATH: &str = "/services/T0AL/B0AL/slackSECRET";
const SLACK_PATH_2: &str = "/services/T0AL/B0AL/rotatedSECRET";

/// The customer's app: allocates past the memory limit, fills the disk, raises its own alarm.
const APP: &str = r#"
import os, json, uwsgi
HOME = '/containers/30601'
def application(env, start_response):
    path = env['PATH_INFO']
    if path == '/hog':
        hog = b'x' * (1024 * 1024 * 1024)
        body = {'hog': len(hog)}
    elif path == '/fill':
        with open(os.path.join(HOME, 'fill.bin'), 'wb') as f:
            for _ in range(40):
                f.write(b'x' * 1024 * 1024)
            f.flush()
            os.fsync(f.fileno())
        body = {'filled_mb': 40}
    elif path == '/forge':
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.connect('/run/subscribe/alarms')
        s.sendall(b'{"uid": 30602, "kind": "oom", "msg": "forged for another container"}\n')
        s.close()
        body = {'sent': True}
    elif path == '/raise':
        uwsgi.alarm('mine', 'the app says: cache cold')
        body = {'raised': True}
    else:
        body = {'ok': True}
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(body).encode()]
"#;

/// A terminal in the container, as an ssh session has one: a pty from the container's own
/// devpts, whose other side is copied to `~/pty.log`.
const PTY_READER: &str = r#"
import os
m, s = os.openpty()
with open('/containers/30601/pty.ready', 'w') as f:
    f.write(os.ttyname(s))
with open('/containers/30601/pty.log', 'ab', buffering=0) as out:
    while True:
        out.write(os.read(m, 4096))
"#;

fn spec(keys: &(String, String), slack_path: &str) -> String {
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(UID, "alarmed", 128, 128, &["ssh-ed25519 AAAA alarms"], keys)).unwrap();
    spec["storage_mb"] = 64.into();
    spec["alarms"] = serde_json::json!({
        "freq": 60,
        "quota_threshold": 50,
        "jid": format!("bot@{XMPP_DOMAIN}"),
        "jid_secret": "bot-pass",
        "jid_destinations": format!("owner@{XMPP_DOMAIN}, not a jid"),
        "pushover_user": "uPushoverUser",
        "pushover_token": "aPushoverToken",
        "pushover_sound": "siren",
        "pushbullet_token": "o.PushbulletToken",
        "slack_webhook": format!("https://hooks.slack.com{slack_path}"),
    });
    spec.to_string()
}

fn deploy(node: &TestNode) -> std::path::PathBuf {
    let home = node.home(UID);
    wait_for_path(&home.join("vassals"), T);
    std::fs::write(home.join("app.py"), APP).unwrap();
    std::fs::write(home.join("ptyreader.py"), PTY_READER).unwrap();
    let ini = "[uwsgi]\nplugin = python3\nplugins-dir = /opt/unbit/plugins\nplugin = unbit_alarms\n\
               alarm = mine unbit:myapp\nhttp-socket = /containers/30601/run/app.sock\nchmod-socket = 666\n\
               wsgi-file = /containers/30601/app.py\nattach-daemon = python3 /containers/30601/ptyreader.py\n";
    std::fs::write(home.join("vassals/app.ini"), ini).unwrap();
    home.join("run/app.sock")
}

fn wait_file_contains(path: &Path, needle: &str, count: usize, timeout: Duration) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{}: {count} x `{needle}`? it has:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_records(api: &LocalApi, class: &str, count: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + SECONDS;
    loop {
        let all = api.alarms(UID);
        let of: Vec<_> = all.iter().filter(|a| a["class"] == class).cloned().collect();
        if of.len() >= count {
            return of;
        }
        assert!(std::time::Instant::now() < deadline, "{count} `{class}` record(s)? the API has {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn oom_and_quota_alarms_reach_every_channel_once_per_period_and_a_slow_channel_delays_nothing_else() {
    let api = LocalApi::start(UID);
    let receiver = Receiver::start();
    // Slack is rate limited at first, Pushbullet is too slow at first: both must still get
    // the OOM alarm, and neither may hold back Pushover, the API record or the log.
    receiver.script("/services/", vec![Answer::Status(429, Some(1))]);
    receiver.script("/v2/pushes", vec![Answer::Stall(Duration::from_secs(4))]);
    let prosody = Prosody::start(&[("bot", "bot-pass"), ("owner", "owner-pass")]);
    let node = TestNode::start_with_platform_files(
        &["--unbit-quota", "auto"],
        &[("plugins/unbit_alarms_plugin.so", plugin_path("unbit_alarms"))],
    );
    let relay = start_relay(&node, &api, &receiver, Some(&prosody), &["--memory-threshold", "0"]);
    let keys = key_pair();
    node.put_spec(UID, &spec(&keys, SLACK_PATH));
    let socket = deploy(&node);
    wait_unix_ok(&socket, "/", T).unwrap();
    let home = node.home(UID);
    wait_for_path(&home.join("pty.ready"), T);
    // The container master's console listener is connected before anything is raised.
    relay.wait_for_log(&format!("container {UID}: console listener connected"), T).unwrap();

    // --- OOM ---------------------------------------------------------------------------
    let hog = get_unix(&socket, "localhost", "/hog");
    assert!(!matches!(hog, Ok(ref r) if r.status == 200), "1 GiB was allocated under a 128 MB limit");
    node.emperor().wait_for_log(&format!("container {UID}: OUT OF MEMORY"), T).unwrap();

    let oom = wait_records(&api, "oom", 1);
    assert_eq!(oom[0]["level"], 0, "a platform alarm");
    assert!(oom[0]["msg"].as_str().unwrap().contains("OUT OF MEMORY"), "{oom:?}");
    wait_file_contains(&home.join("logs/emperor.log"), "[unbit alarm oom]", 1, SECONDS);
    wait_file_contains(&home.join("pty.log"), "ALARM oom: container 30601: OUT OF MEMORY", 1, SECONDS);

    let pushover = receiver.wait_for("/1/messages.json", 1, SECONDS);
    let p = &pushover[0];
    assert_eq!(p.method, "POST");
    assert_eq!(p.header("content-type"), Some("application/x-www-form-urlencoded"));
    let form = p.form();
    assert_eq!(form["token"], "aPushoverToken");
    assert_eq!(form["user"], "uPushoverUser");
    assert_eq!(form["sound"], "siren");
    assert_eq!(form["title"], format!("uwsgi.it container {UID}"));
    assert!(form["message"].contains("OUT OF MEMORY"), "{form:?}");
    assert!(form["timestamp"].parse::<i64>().unwrap() > 1_600_000_000);

    let slack = receiver.wait_for("/services/", 2, SECONDS);
    assert_eq!(slack.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), [SLACK_PATH, SLACK_PATH]);
    let s = &slack[1];
    assert_eq!((s.method.as_str(), s.header("content-type")), ("POST", Some("application/json")));
    let body = s.json();
    assert!(body["text"].as_str().unwrap().contains("OUT OF MEMORY"), "{body}");
    assert_eq!(body["username"], format!("test-node/{UID}"));
    assert_eq!(body["icon_emoji"], ":heavy_exclamation_mark:");
    assert_eq!(s.json(), slack[0].json(), "the retry sends the same request");

    let pushbullet = receiver.wait_for("/v2/pushes", 2, SECONDS);
    let b = &pushbullet[1];
    assert_eq!((b.method.as_str(), b.header("content-type")), ("POST", Some("application/json")));
    assert_eq!(b.header("access-token"), Some("o.PushbulletToken"));
    assert_eq!(b.json()["type"], "note");
    assert_eq!(b.json()["title"], format!("uwsgi.it container {UID}"));
    assert!(b.json()["body"].as_str().unwrap().contains("OUT OF MEMORY"));

    // Neither the 429 nor the stall delayed Pushover: it was served before either retry.
    assert!(p.seq < slack[1].seq && p.seq < pushbullet[1].seq, "pushover {} slack {:?}", p.seq, slack);
    let log = relay.log();
    assert!(log.contains("Slack: attempt 1 failed (429 Too Many Requests), retrying in 1s"), "{log}");
    assert!(log.contains("Pushbullet: attempt 1 failed (timed out)"), "{log}");

    prosody.wait_for_message("owner", "OUT OF MEMORY", 1, SECONDS);

    // No secret in the relay's log.
    for secret in ["slackSECRET", "aPushoverToken", "uPushoverUser", "o.PushbulletToken", "bot-pass"] {
        assert!(!relay.log().contains(secret), "{secret} in the relay's log");
    }

    // --- De-duplication: a second OOM within alarm_freq reaches nobody -------------------
    let _ = get_unix(&socket, "localhost", "/hog");
    node.emperor().wait_for_log_count(&format!("container {UID}: OUT OF MEMORY"), 2, T).unwrap();
    relay.wait_for_log(&format!("container {UID}: alarm oom suppressed (one per 60s)"), SECONDS).unwrap();

    // --- Quota ---------------------------------------------------------------------------
    wait_unix_ok(&socket, "/", T).unwrap();
    let fill = wait_unix_ok(&socket, "/fill", T).unwrap();
    assert!(fill.body.contains("filled_mb"), "{}", fill.body);
    let quota = wait_records(&api, "quota", 1);
    assert!(quota[0]["msg"].as_str().unwrap().contains("over the 50% alarm threshold"), "{quota:?}");
    wait_file_contains(&home.join("logs/emperor.log"), "[unbit alarm quota]", 1, SECONDS);
    wait_file_contains(&home.join("pty.log"), "ALARM quota", 1, SECONDS);
    let pushover = receiver.wait_for("/1/messages.json", 2, SECONDS);
    assert!(pushover[1].form()["message"].contains("disk usage"));
    let slack = receiver.wait_for("/services/", 3, SECONDS);
    assert!(slack[2].json()["text"].as_str().unwrap().contains("disk usage"));
    let pushbullet = receiver.wait_for("/v2/pushes", 3, SECONDS);
    assert!(pushbullet[2].json()["body"].as_str().unwrap().contains("disk usage"));
    prosody.wait_for_message("owner", "disk usage", 1, SECONDS);

    // Only one OOM record, one Pushover OOM message: the second OOM was de-duplicated.
    assert_eq!(api.alarms(UID).iter().filter(|a| a["class"] == "oom").count(), 1);
    let oom_pushes =
        receiver.requests("/1/messages.json").iter().filter(|r| r.form()["message"].contains("MEMORY")).count();
    assert_eq!(oom_pushes, 1);

    // --- A customer vassal's own alarm, with settings changed through the spec: no restart -
    let before_restarts = relay.log().matches("alarm restart").count();
    let app_before = identity(&socket);
    node.put_spec(UID, &spec(&keys, SLACK_PATH_2));
    std::thread::sleep(Duration::from_secs(2)); // the monitor's pass; the spec file is read per alarm anyway
    let raised = wait_unix_ok(&socket, "/raise", T).unwrap();
    assert!(raised.body.contains("raised"), "{}", raised.body);
    let mine = wait_records(&api, "myapp", 1);
    assert_eq!(mine[0]["msg"], "the app says: cache cold");
    let slack = receiver.wait_for(SLACK_PATH_2, 1, SECONDS);
    assert_eq!(slack[0].json()["text"], "the app says: cache cold");
    wait_file_contains(&home.join("pty.log"), "ALARM myapp: the app says: cache cold", 1, SECONDS);
    assert_eq!(
        relay.log().matches("alarm restart").count(),
        before_restarts,
        "an alarm setting restarted the container"
    );
    assert_eq!(identity(&socket), app_before, "an alarm setting restarted the container");

    // --- A container cannot alarm for another one: the relay knows it by its uid
    let forged = wait_unix_ok(&socket, "/forge", T).unwrap();
    assert!(forged.body.contains("sent"), "{}", forged.body);
    relay.wait_for_log(&format!("refused an alarm from container {UID} naming container 30602"), SECONDS).unwrap();
    assert!(!relay.log().contains("forged for another container"));

    // --- A vassal in a crash loop: the container's own Emperor throttles it, its master raises
    std::fs::write(home.join("vassals/crash.ini"), "[uwsgi]\nhttp-socket = /nonexistent/dir/crash.sock\n").unwrap();
    let crash = wait_records(&api, "crash-loop", 1);
    assert!(crash[0]["msg"].as_str().unwrap().contains("unloyal bad behaving vassal found: crash.ini"), "{crash:?}");
    wait_file_contains(&home.join("logs/emperor.log"), "[unbit alarm crash-loop]", 1, SECONDS);
    std::fs::remove_file(home.join("vassals/crash.ini")).unwrap();
}

/// Holds `mb` MB until the next call.
const HOLDER: &str = r#"
import json
held = []
def application(env, start_response):
    mb = int(env['PATH_INFO'].strip('/') or 0)
    held.clear()
    held.append(b'x' * (mb * 1024 * 1024))
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps({'held_mb': mb}).encode()]
"#;

#[test]
fn memory_use_over_the_threshold_raises_an_alarm() {
    const UID2: u32 = 30602;
    let api = LocalApi::start(UID2);
    let receiver = Receiver::start();
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let relay = start_relay(&node, &api, &receiver, None, &["--memory-threshold", "60"]);
    let keys = key_pair();
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(UID2, "memory", 128, 128, &["ssh-ed25519 AAAA memory"], &keys)).unwrap();
    spec["alarms"]["slack_webhook"] = format!("https://hooks.slack.com{SLACK_PATH}").into();
    node.put_spec(UID2, &spec.to_string());
    let socket = node.deploy_python(UID2, "holder", HOLDER);
    wait_unix_ok(&socket, "/0", T).unwrap();
    // Below the threshold: the relay checks every second and says nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert!(api.alarms(UID2).is_empty(), "an alarm below the threshold: {:?}", api.alarms(UID2));
    // 90 MB of 128 MB held: over 60 %, under the limit.
    let held = wait_unix_ok(&socket, "/90", T).unwrap();
    assert!(held.body.contains("\"held_mb\": 90"), "{}", held.body);
    let deadline = std::time::Instant::now() + SECONDS;
    let record = loop {
        if let Some(a) = api.alarms(UID2).into_iter().find(|a| a["class"] == "memory") {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "no memory alarm; relay log:\n{}", relay.log());
        std::thread::sleep(Duration::from_millis(200));
    };
    let msg = record["msg"].as_str().unwrap();
    assert!(msg.contains("of 128 MB") && msg.contains("over the 60% alarm threshold"), "{msg}");
    let slack = receiver.wait_for(SLACK_PATH, 1, SECONDS);
    assert_eq!(slack[0].json()["text"], msg);
    assert!(node.emperor().log().matches("OUT OF MEMORY").count() == 0, "the holder was OOM-killed");
}
