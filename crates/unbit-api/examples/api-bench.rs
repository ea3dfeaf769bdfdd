//! Benchmark: requests per second and latency percentiles of `GET /api/containers/` and
//! `GET /api/alarms/` with 10 000 containers and 100 000 alarms, on SQLite or PostgreSQL.
//!
//!   cargo run --release -p unbit-api --example api-bench -- --db /tmp/bench.db
//!   cargo run --release -p unbit-api --example api-bench -- --db postgres://postgres@127.0.0.1:5432/bench
//!   crates/unbit-api/benches/run-bench.sh      (both engines, starts a throwaway PostgreSQL)
//!
//! The server runs in this process on a loopback port (the same router and listener as
//! `unbit-api serve`); clients are `--concurrency` keep-alive connections for `--seconds` each.

use std::sync::Arc;
use std::time::{Duration, Instant};
use unbit_api::auth::{hash_password, Authenticator};
use unbit_api::crypto::generate_subscription_key;
use unbit_api::dns_proof::DnsProof;
use unbit_api::revisions::Revisions;
use unbit_api::state::AppState;
use unbit_api::store::Db;

const CONTAINERS: i64 = 10_000;
const ALARMS: i64 = 100_000;

struct Args {
    db: String,
    seconds: u64,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args { db: String::new(), seconds: 10, concurrency: 16 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--db" => a.db = v,
            "--seconds" => a.seconds = v.parse().expect("seconds"),
            "--concurrency" => a.concurrency = v.parse().expect("concurrency"),
            _ => panic!("unknown argument {k}"),
        }
    }
    assert!(!a.db.is_empty(), "--db <sqlite path | postgres URL> is required");
    a
}

async fn seed(db: &Db) {
    let already: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM containers").fetch_one(&db.pool).await.unwrap();
    if already >= CONTAINERS {
        return;
    }
    let keys = generate_subscription_key().unwrap();
    let mut tx = db.write().await.unwrap();
    sqlx::query(
        "INSERT INTO customers (username, password_hash, uuid, rsa_private_pem, rsa_public_pem, ctime, mtime) \
         VALUES ('bench', $1, 'bench-uuid', $2, $3, 0, 0)",
    )
    .bind(hash_password("bench-password"))
    .bind(keys.private_pem)
    .bind(keys.public_pem)
    .execute(&mut **tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO servers (name, address, memory, storage, node_token_sha256, uuid, ctime) \
         VALUES ('bench', '192.0.2.1', 100000000, 1000000000, 'x', 'server-uuid', 0)",
    )
    .execute(&mut **tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO distros (name, path, uuid) VALUES ('Debian 12', 'bookworm', 'distro-uuid')")
        .execute(&mut **tx)
        .await
        .unwrap();
    for chunk in (1..=CONTAINERS).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> =
            chunk.iter().map(|i| format!("('c{i}', 1, 1, 100, 1000, 1, 'uuid-{i}', 0, 0)")).collect();
        sqlx::query(&format!(
            "INSERT INTO containers (name, customer_id, server_id, memory, storage, distro_id, uuid, ctime, mtime) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut **tx)
        .await
        .unwrap();
    }
    for chunk in (0..ALARMS).collect::<Vec<_>>().chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "({}, 1, {}, 1, '#ff0000', 'alarm number {i}', 'app.ini')",
                    1 + i % CONTAINERS,
                    1_700_000_000 + i
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO alarms (container_id, customer_id, unix, level, color, msg, vassal) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut **tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    if db.backend == unbit_api::store::Backend::Postgres {
        sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
    }
}

struct Result {
    path: String,
    requests: usize,
    rps: f64,
    p50: Duration,
    p99: Duration,
    bytes: usize,
}

async fn measure(base: &str, path: &str, args: &Args) -> Result {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build().unwrap();
    let url = format!("{base}{path}");
    // Warm-up: connections, the authentication memory, the database caches.
    for _ in 0..args.concurrency {
        let r = client.get(&url).basic_auth("bench", Some("bench-password")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        r.bytes().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut bytes = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client.get(&url).basic_auth("bench", Some("bench-password")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                bytes = r.bytes().await.unwrap().len();
                latencies.push(t.elapsed());
            }
            (latencies, bytes)
        }));
    }
    let mut all = Vec::new();
    let mut bytes = 0;
    for t in tasks {
        let (l, b) = t.await.unwrap();
        all.extend(l);
        bytes = b;
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
    Result {
        path: path.to_string(),
        requests: all.len(),
        rps: all.len() as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        bytes,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let db = Db::open_with(&args.db, 16).await.expect("database opens");
    let t = Instant::now();
    seed(&db).await;
    eprintln!("seeded {CONTAINERS} containers and {ALARMS} alarms in {:?}", t.elapsed());
    let state = AppState {
        db: Arc::new(db),
        auth: Arc::new(Authenticator::new(None)),
        dns: Arc::new(DnsProof::new(Some("127.0.0.1:9".parse().unwrap())).unwrap()),
        revisions: Arc::new(Revisions::default()),
        long_poll: Duration::from_secs(25),
    };
    let engine = if args.db.starts_with("postgres") { "PostgreSQL" } else { "SQLite" };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(unbit_api::server::serve(listener, None, unbit_api::routes::router(state)));
    println!("| engine | request | items | body | requests | req/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|---|");
    for path in
        ["/containers/", "/containers/?limit=100", "/alarms/", "/alarms/?range=100", "/alarms/?with_total=1&range=100"]
    {
        let r = measure(&base, path, &args).await;
        let items = if path.contains("100") { 100 } else { 1000 };
        println!(
            "| {engine} | GET /api{} | {items} | {} KiB | {} | {:.0} | {:.1} ms | {:.1} ms |",
            r.path,
            r.bytes / 1024,
            r.requests,
            r.rps,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3
        );
    }
}
