//! `unbit-node-sync` against the real `unbit-api` (SQLite, loopback, dev token): what a
//! customer does through the API reaches the node's spec folder, and an API outage changes
//! nothing on the node.

mod common;

use common::{api_binary, run, Killed};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn admin(db: &Path, args: &[&str]) -> String {
    run(Command::new(api_binary()).arg("admin").arg("--db").arg(db).args(args))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_api(db: &Path, port: u16) -> Killed {
    let child = Command::new(api_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--long-poll-secs", "10", "--db"])
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "unbit-api did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Killed(child)
}

fn customer_post(port: u16, path: &str, body: serde_json::Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/{path}"))
        .basic_auth("kratos", Some("deimos"))
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status();
    assert!(status.is_success(), "POST {path}: {status}: {}", resp.text().unwrap_or_default());
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what} did not happen within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

fn spec(dir: &Path, uid: u32) -> Option<serde_json::Value> {
    std::fs::read(dir.join(format!("{uid}.json"))).ok().map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn customer_changes_reach_the_node_and_an_outage_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("api.sqlite");
    let state = work.path().join("specs");
    std::fs::create_dir(&state).unwrap();
    let domains = work.path().join("domains.json");
    let token = admin(
        &db,
        &["server", "add", "--name", "n1", "--address", "127.0.0.1", "--memory", "4096", "--storage", "10000"],
    );
    let distro = admin(&db, &["distro", "add", "--name", "Debian 12", "--path", "bookworm"]);
    admin(&db, &["customer", "add", "--username", "kratos", "--password", "deimos"]);
    let add = ["container", "add", "--customer", "kratos", "--server", "n1", "--memory", "500", "--storage", "1000"];
    let first: u32 = admin(&db, &[&add[..], &["--name", "web"]].concat()).trim().parse().unwrap();
    let second: u32 = admin(&db, &[&add[..], &["--name", "db"]].concat()).trim().parse().unwrap();
    admin(&db, &["domain", "map", "--customer", "kratos", "--name", "mynewdomain.org"]);

    let port = free_port();
    let mut api = Some(start_api(&db, port));
    // The token as the admin command printed it (trailing newline), in a file: not in `ps`.
    let token_file = work.path().join("node.token");
    std::fs::write(&token_file, &token).unwrap();
    let sync = Command::new(env!("CARGO_BIN_EXE_unbit-node-sync"))
        .args(["--api", &format!("http://127.0.0.1:{port}"), "--long-poll", "10", "--token-file"])
        .arg(&token_file)
        .arg("--state-dir")
        .arg(&state)
        .arg("--domains-file")
        .arg(&domains)
        .stderr(std::fs::File::create(work.path().join("sync.log")).unwrap())
        .spawn()
        .unwrap();
    let _sync = Killed(sync);

    // Not deployable yet (no distro, no key): nothing on the node.
    wait_until("the domains file", Duration::from_secs(10), || domains.exists());
    let listed: serde_json::Value = serde_json::from_slice(&std::fs::read(&domains).unwrap()).unwrap();
    assert_eq!(listed[0]["name"], "mynewdomain.org", "{listed}");
    assert!(spec(&state, first).is_none());

    // The quickstart's two calls make both containers deployable; the node sees them at once,
    // without waiting for a poll period.
    for uid in [first, second] {
        customer_post(
            port,
            &format!("containers/{uid}"),
            serde_json::json!({"distro": distro.trim().parse::<u32>().unwrap()}),
        );
        customer_post(
            port,
            &format!("containers/{uid}"),
            serde_json::json!({"ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kratos@laptop"]}),
        );
    }
    let took = wait_until("both specs", Duration::from_secs(5), || {
        spec(&state, first).is_some() && spec(&state, second).is_some()
    });
    eprintln!("API change -> node spec folder: {took:?}");
    let web = spec(&state, first).unwrap();
    assert_eq!(web["distro"]["path"], "bookworm");
    assert_eq!(
        web["ssh_keys"][0],
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kratos@laptop"
    );
    assert!(web["subscription_key"]["private_pem"].as_str().unwrap().contains("PRIVATE KEY"));

    // An explicit reboot reaches the node as a new reboot generation.
    let generation = web["reboot_generation"].as_u64().unwrap();
    customer_post(port, &format!("containers/{first}"), serde_json::json!({"reboot": 1}));
    wait_until("the reboot", Duration::from_secs(5), || {
        spec(&state, first).is_some_and(|s| s["reboot_generation"].as_u64().unwrap() > generation)
    });

    // The API goes away: the node keeps its last good state.
    drop(api.take());
    std::thread::sleep(Duration::from_secs(3));
    assert!(spec(&state, first).is_some() && spec(&state, second).is_some());

    // Back again: removing the keys of one container removes it from the node (an explicit
    // change in a non-empty answer), the other stays.
    api = Some(start_api(&db, port));
    customer_post(port, &format!("containers/{second}"), serde_json::json!({"ssh_keys": []}));
    wait_until("the removal", Duration::from_secs(40), || spec(&state, second).is_none());
    assert!(spec(&state, first).is_some());
    drop(api);
}

#[test]
fn a_port_mapping_made_through_the_api_reaches_the_nodes_file() {
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("api.sqlite");
    let state = work.path().join("specs");
    std::fs::create_dir(&state).unwrap();
    let mappings = work.path().join("portmappings.json");
    admin(&db, &["customer", "add", "--username", "kratos", "--password", "deimos"]);
    // A dedicated server: its owner maps its public ports.
    let token = admin(
        &db,
        &[
            "server",
            "add",
            "--name",
            "d1",
            "--address",
            "192.0.2.7",
            "--memory",
            "4096",
            "--storage",
            "10000",
            "--owner",
            "kratos",
        ],
    );
    let add = ["container", "add", "--customer", "kratos", "--server", "d1", "--memory", "500", "--storage", "1000"];
    let uid: u32 = admin(&db, &[&add[..], &["--name", "web"]].concat()).trim().parse().unwrap();
    let port = free_port();
    let _api = start_api(&db, port);
    let token_file = work.path().join("node.token");
    std::fs::write(&token_file, &token).unwrap();
    let sync = Command::new(env!("CARGO_BIN_EXE_unbit-node-sync"))
        .args(["--api", &format!("http://127.0.0.1:{port}"), "--long-poll", "10", "--token-file"])
        .arg(&token_file)
        .arg("--state-dir")
        .arg(&state)
        .arg("--portmappings-file")
        .arg(&mappings)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _sync = Killed(sync);
    let read = || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&mappings).unwrap()).unwrap() };
    wait_until("the port mappings file", Duration::from_secs(10), || mappings.exists());
    assert_eq!(read()["mappings"], serde_json::json!([]));
    customer_post(
        port,
        "portmappings/192.0.2.7",
        serde_json::json!({"container": uid, "proto": "tcp", "public_port": 8080, "private_port": 8000}),
    );
    wait_until("the mapping on the node", Duration::from_secs(10), || {
        read()["mappings"].as_array().is_some_and(|m| m.len() == 1)
    });
    let m = &read()["mappings"][0];
    assert_eq!(
        (m["proto"].as_str(), m["public_ip"].as_str(), m["public_port"].as_u64(), m["private_port"].as_u64()),
        (Some("tcp"), Some("192.0.2.7"), Some(8080), Some(8000))
    );
    assert_eq!(m["private_ip"].as_str(), Some(container_spec::ip_of(uid).to_string().as_str()));
}
