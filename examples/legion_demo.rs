//! `sudo make legion-demo` (scripts/legion-demo.sh builds and runs this): a small Legion on this
//! machine, step by step, printing what happens. The nodes are `tests/cluster_kit`'s, the ones
//! `tests/clustering.rs` runs: three network namespaces (a, b, c) on a bridge in a fourth (the
//! "LAN", 192.168.250.0/24, the client at .254), each with a node Emperor, the HTTP router
//! (`vassals-examples/services/http.ini` rendered as `make run` renders it, with the node's
//! folders and addresses) and `vassals-examples/legion/fastrouter.ini` (Legion member,
//! fastrouter, relay and receiver; paths, addresses and names replaced, every other line as
//! shipped).
//!
//! 1. the Legion elects its Lord (node a, the highest valor), which takes 192.168.250.100;
//! 2. one container on node b and one on node c, each with a vassal `cluster-domain =
//!    cluster.example`;
//! 3. requests through the floating address, each saying which node's container answered;
//! 4. the control API (if built) answers `legion_address` for a container of these nodes, and
//!    node b's node-sync fetches the Legion's members file from it;
//! 5. the Lord dies: who takes the address and how long until requests succeed again;
//! 6. requests through the new Lord.
//!
//! Everything goes at the end, on a failure or on Ctrl-C (after the step under way): uWSGI
//! instances and the API stopped by PID, namespaces (and with them their interfaces) closed with
//! their last descriptor, temp dirs and cgroups removed. `--keep` waits for Ctrl-C before
//! cleaning up, to look around.
//!
//! Environment: `LEGION_DEMO_UID` (31450: the containers are this uid and the next; 31450-31499
//! are the demo's, apart from tests/clustering.rs's), `LEGION_DEMO_REQUESTS` (10),
//! `LEGION_DEMO_API` (the unbit-api binary; target/release/unbit-api).

#[path = "../tests/cluster_kit/mod.rs"]
mod cluster_kit;

use cluster_kit::domains_kit::{domain_entry, write_domains};
use cluster_kit::*;
use nix::sys::signal::{SigSet, Signal};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use uwsgi_it::node::{key_pair, spec_json};

static STOP: AtomicBool = AtomicBool::new(false);

/// Why the demo ended early.
#[derive(Debug)]
enum Stop {
    Interrupted,
    Failed(String),
}

type Step<T = ()> = Result<T, Stop>;

fn interrupted() -> Step {
    if STOP.load(Ordering::SeqCst) {
        Err(Stop::Interrupted)
    } else {
        Ok(())
    }
}

/// Polls `check` every 100 ms for up to `timeout`, returning early on Ctrl-C.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Step<T> {
    let deadline = Instant::now() + timeout;
    loop {
        interrupted()?;
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(Stop::Failed(format!("{what}: not within {} s", timeout.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn knob(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The node whose fastrouter is `addr` (the members file's `fastrouter`).
fn node_of(cluster: &Cluster, addr: &str) -> &'static str {
    cluster.nodes.iter().find(|n| addr == format!("{}:1999", n.ip)).map(|n| n.name).unwrap_or("?")
}

/// `count` requests through the floating address, one line each; the tally per node.
fn requests(cluster: &Cluster, count: u32) -> Step {
    println!("   (from the LAN namespace: curl -H 'Host: {DOMAIN}' http://{FLOATING}/)");
    let bodies = cluster.through_floating(count as usize);
    let mut tally: Vec<(String, usize)> = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        println!("   request {:>2}: {body}", i + 1);
        match tally.iter_mut().find(|(b, _)| b == body) {
            Some((_, n)) => *n += 1,
            None => tally.push((body.clone(), 1)),
        }
    }
    let summary: Vec<String> = tally.iter().map(|(b, n)| format!("{n} x {b}")).collect();
    println!("   => {}", summary.join(", "));
    interrupted()
}

/// The control API on the LAN namespace's loopback, with a fresh database in `dir` holding
/// these three servers in one Legion and a container on node b; stopped by PID on drop.
struct Api {
    child: Child,
}

impl Drop for Api {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGINT);
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin(api: &str, db: &std::path::Path, args: &[&str]) -> Step<String> {
    let out = Command::new(api)
        .args(["admin", "--db"])
        .arg(db)
        .args(args)
        .output()
        .map_err(|e| Stop::Failed(format!("{api}: {e}")))?;
    if !out.status.success() {
        return Err(Stop::Failed(format!("unbit-api admin {args:?}: {}", String::from_utf8_lossy(&out.stderr))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Step 4: what `GET /api/containers/<uid>` says about the Legion.
fn legion_address_from_api(cluster: &Cluster, dir: &std::path::Path) -> Step<Option<Api>> {
    let root = uwsgi_it::harness::project_root();
    let api = std::env::var("LEGION_DEMO_API")
        .unwrap_or_else(|_| root.join("target/release/unbit-api").display().to_string());
    if !std::path::Path::new(&api).exists() {
        println!("   skipped: {api} is not built (cargo build --release -p unbit-api)");
        return Ok(None);
    }
    let db = dir.join("api.sqlite");
    let mut tokens = Vec::new();
    for n in &cluster.nodes {
        let (ip, name) = (n.ip.to_string(), n.name);
        let add = ["server", "add", "--name", name, "--address", &ip, "--memory", "4096", "--storage", "20000"];
        tokens.push(admin(&api, &db, &add)?);
        // The node's public keys, as an operator gives them once (docs/clustering.md).
        let keys = ["server", "set-cluster-keys", "--name", name, "--public-key", &n.key.hex];
        admin(&api, &db, &[&keys[..], &["--x25519-key", &n.key.x25519_hex]].concat())?;
    }
    admin(&api, &db, &["legion", "add", "--name", "demo", "--address", &FLOATING.to_string()])?;
    for n in &cluster.nodes {
        admin(&api, &db, &["legion", "add-node", "--legion", "demo", "--server", n.name])?;
    }
    let password = "legion-demo-password";
    admin(
        &api,
        &db,
        &["customer", "add", "--username", "demo", "--password", password, "--email", "demo@example.com"],
    )?;
    let uid = admin(
        &api,
        &db,
        &[
            "container",
            "add",
            "--customer",
            "demo",
            "--server",
            "b",
            "--name",
            "web",
            "--memory",
            "256",
            "--storage",
            "1000",
        ],
    )?;
    // On the LAN namespace's own loopback: no port of the host (make run's 8080) is taken.
    let child = cluster
        .lan
        .run(|| {
            Command::new(&api)
                .args(["serve", "--db"])
                .arg(&db)
                .args(["--listen", "127.0.0.1:8080"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("api.log")).unwrap())
                .spawn()
        })
        .map_err(|e| Stop::Failed(format!("{api} serve: {e}")))?;
    let guard = Api { child };
    println!("   unbit-api (pid {}), fresh database: servers a, b, c in Legion \"demo\" with address {FLOATING}, container {uid} on b", guard.child.id());
    let url = format!("http://127.0.0.1:8080/api/containers/{uid}");
    println!("   curl -u demo:{password} {url}");
    let answer = wait_for("the API's answer", Duration::from_secs(30), || {
        let out = cluster.lan.run(|| {
            Command::new("curl").args(["-fsS", "-m", "5", "-u", &format!("demo:{password}"), &url]).output().ok()
        })?;
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok().filter(|_| out.status.success())
    })?;
    println!("   => \"legion_address\": {}  (where the domain's DNS points)", answer["legion_address"]);
    members_through_node_sync(cluster, dir, &api, &tokens[1])?;
    Ok(Some(guard))
}

/// Node b's node-sync, once, with b's token (dev mode: plain HTTP on loopback; a node uses its
/// mTLS certificate): the Legion's members file it writes from the API, against the one the
/// nodes run with.
fn members_through_node_sync(cluster: &Cluster, dir: &std::path::Path, api: &str, token: &str) -> Step {
    let node_sync = std::path::Path::new(api).with_file_name("unbit-node-sync");
    if !node_sync.exists() {
        println!("   (the members file through node-sync skipped: {} is not built)", node_sync.display());
        return Ok(());
    }
    let fail = |e: std::io::Error| Stop::Failed(format!("node-sync for node b: {e}"));
    let (token_file, specs, members) = (dir.join("b.token"), dir.join("b-specs"), dir.join("b-members.json"));
    std::fs::write(&token_file, token).map_err(fail)?;
    std::fs::create_dir(&specs).map_err(fail)?;
    println!("   unbit-node-sync --once --legion-members-file {} (node b's token)", members.display());
    let out = cluster
        .lan
        .run(|| {
            Command::new(&node_sync)
                .args(["--api", "http://127.0.0.1:8080", "--once", "--token-file"])
                .arg(&token_file)
                .arg("--state-dir")
                .arg(&specs)
                .arg("--legion-members-file")
                .arg(&members)
                .output()
        })
        .map_err(fail)?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).unwrap_or_default()
    };
    let fetched = read(&members);
    let names: Vec<&str> =
        fetched["members"].as_array().into_iter().flatten().filter_map(|m| m["name"].as_str()).collect();
    if !out.status.success() || names.is_empty() {
        return Err(Stop::Failed(format!("node-sync: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let same = fetched == read(&cluster.nodes[1].dir.path().join("members.json"));
    println!(
        "   => members {} with their addresses and public keys, {} the file the nodes run with",
        names.join(", "),
        if same { "the same as" } else { "NOT the same as" }
    );
    Ok(())
}

fn demo(cluster: &mut Cluster, base_uid: u32, count: u32, dir: &std::path::Path) -> Step {
    println!("== 1. election (stock uWSGI Legion, legion-freq 1 s, legion-tolerance 3 s)");
    let lord = wait_for("a Lord holding the floating address", T, || cluster.lord().map(|n| n.name))?;
    println!("   node {lord} is the Lord: its legion-lord action added {FLOATING} to its lan0");

    let uids = [base_uid, base_uid + 1];
    println!("== 2. deploying: container {} on node b, {} on node c, each with a vassal:", uids[0], uids[1]);
    println!("        [uwsgi]\n        plugin = 0:python3\n        wsgi-file = $(HOME)/app.py\n        cluster-domain = {DOMAIN}");
    let customer = key_pair();
    for n in &cluster.nodes {
        // The domains file node-sync writes (the router's and the cluster instance's): the customer
        // owns the domain for these two uids.
        write_domains(&n.router.as_ref().unwrap().domains(), &[domain_entry(DOMAIN, &uids, &customer.1)]);
    }
    for (node, uid) in [(1, uids[0]), (2, uids[1])] {
        let n = &cluster.nodes[node];
        let e = n.emperor.as_ref().unwrap();
        e.put_spec(uid, &spec_json(uid, &format!("demo{uid}"), 256, 256, &["ssh-ed25519 AAAA demo"], &customer));
        let home = e.home(uid);
        wait_for("the container's home", T, || home.join("vassals").exists().then_some(()))?;
        let app = format!(
            "def application(e, s):\n    s('200 OK', [('Content-Type', 'text/plain')])\n    return [b'served by node {} (container {uid})']\n",
            n.name
        );
        std::fs::write(home.join("app.py"), app).map_err(|e| Stop::Failed(format!("{}: {e}", home.display())))?;
        std::fs::write(
            home.join("vassals/app.ini"),
            format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/app.py\ncluster-domain = {DOMAIN}\n"),
        )
        .map_err(|e| Stop::Failed(format!("{}: {e}", home.display())))?;
    }
    let lord_node = cluster.lord().ok_or_else(|| Stop::Failed("the Lord lost the address".into()))?;
    let pool = wait_for("the Lord's router having both nodes", T, || {
        Some(lord_node.nodes_of(DOMAIN)).filter(|p| p.len() == 2)
    })?;
    let described: Vec<String> = pool.iter().map(|a| format!("{a} (node {})", node_of(cluster, a))).collect();
    println!("   node {lord}'s router balances {DOMAIN} across {}", described.join(" and "));
    println!("   (its cluster log: \"cluster: accepted {DOMAIN} from member b\", and c: signed announces)");

    println!("== 3. {count} requests through the Lord's address {FLOATING}");
    requests(cluster, count)?;

    println!("== 4. the control API: a container's legion_address, the Legion's members file");
    let api = legion_address_from_api(cluster, dir)?;

    println!("== 5. the Lord (node {lord}) dies: its link goes down, its processes stop");
    let i = cluster.nodes.iter().position(|n| n.name == lord).unwrap();
    let killed = Instant::now();
    cluster.nodes[i].ns.sh("ip link set lan0 down");
    let dead = cluster.nodes.remove(i);
    // Stopped on the side (up to seconds), so the clock below measures the Legion, not that.
    let stopping = std::thread::spawn(move || drop(dead));
    let failover = (|| {
        let new_lord = wait_for("a new Lord", T, || cluster.lord().map(|n| n.name))?;
        println!("   node {new_lord} took {FLOATING} {:.1} s after the Lord died", killed.elapsed().as_secs_f64());
        wait_for("a request through the new Lord", T, || cluster.lan.run(|| get(FLOATING, DOMAIN)).ok())?;
        println!(
            "   requests through {FLOATING} succeed again {:.1} s after the Lord died",
            killed.elapsed().as_secs_f64()
        );
        Ok(new_lord)
    })();
    // Joined on every path: the process must not exit while the old Lord is being stopped.
    stopping.join().map_err(|_| Stop::Failed("stopping the old Lord failed".into()))?;
    let new_lord = failover?;

    println!("== 6. {count} requests through the new Lord (node {new_lord})");
    requests(cluster, count)?;
    drop(api);
    Ok(())
}

fn main() {
    // Ctrl-C and SIGTERM are taken by one thread, which asks the demo to stop; every thread
    // started later inherits the block (child processes do not: std resets the mask on exec).
    let signals: SigSet = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP].into_iter().collect();
    signals.thread_block().expect("block SIGINT, SIGTERM and SIGHUP");
    std::thread::spawn(move || loop {
        if let Ok(s) = signals.wait() {
            eprintln!("\n== {s}: stopping after the step under way, then cleaning up");
            STOP.store(true, Ordering::SeqCst);
        }
    });
    if !nix::unistd::geteuid().is_root() {
        eprintln!("legion-demo: run as root (network namespaces, containers, cgroups)");
        std::process::exit(1);
    }
    let keep = std::env::args().any(|a| a == "--keep");
    let base_uid = knob("LEGION_DEMO_UID", 31450);
    let count = knob("LEGION_DEMO_REQUESTS", 10);
    let dir = tempfile::Builder::new().prefix("unbit-legion-demo-").tempdir().expect("a temp dir");

    println!("== 0. three nodes a, b, c (valors 300, 200, 100), each in its own network namespace,");
    println!("   on a bridge 192.168.250.0/24 in a fourth (the client at {CLIENT}); each runs a node Emperor,");
    println!("   the HTTP router (vassals-examples/services/http.ini, as make run renders it) and");
    println!("   vassals-examples/legion/fastrouter.ini");
    let mut cluster = Cluster::start(false);
    println!(
        "   LAN namespace: nsenter --net=/proc/{}/fd/{} (while the demo runs)",
        std::process::id(),
        cluster.lan.0.as_raw_fd()
    );
    for n in &cluster.nodes {
        let pid = |i: Option<&uwsgi_it::Instance>| i.map(|i| i.pid()).unwrap_or(0);
        println!(
            "   node {} {}: pids emperor {} router {} cluster {}; dirs {} {}; cgroup {}",
            n.name,
            n.ip,
            pid(n.emperor.as_ref().and_then(|e| e.emperor.as_ref())),
            pid(n.router.as_ref().map(|r| &r.instance)),
            pid(n.cluster.as_ref()),
            n.dir.path().display(),
            n.emperor.as_ref().map(|e| e.root.path().display().to_string()).unwrap_or_default(),
            n.emperor.as_ref().map(|e| e.cgroup_name.as_str()).unwrap_or_default(),
        );
    }
    println!("   lan namespace inode {}; demo dir {}", cluster.lan.inode(), dir.path().display());
    let result = interrupted().and_then(|_| demo(&mut cluster, base_uid, count, dir.path()));
    if keep && result.is_ok() {
        println!("== still running (--keep): Ctrl-C cleans up. Logs:");
        for n in &cluster.nodes {
            let log = |i: Option<&uwsgi_it::Instance>| {
                i.map(|i| i.dir().join("instance.log").display().to_string()).unwrap_or_default()
            };
            println!("   node {}: cluster {}", n.name, log(n.cluster.as_ref()));
            let router = n.router.as_ref().map(|r| r.log_path().display().to_string()).unwrap_or_default();
            println!("   node {}: router  {router}", n.name);
        }
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("== cleaning up: instances stopped by PID, namespaces and their interfaces closed, temp dirs and cgroups removed");
    drop(cluster);
    drop(dir);
    match result {
        Ok(()) => println!("== done"),
        Err(Stop::Interrupted) => {
            println!("== interrupted, cleaned up");
            std::process::exit(130);
        }
        Err(Stop::Failed(e)) => {
            println!("== failed: {e}; cleaned up");
            std::process::exit(1);
        }
    }
}
