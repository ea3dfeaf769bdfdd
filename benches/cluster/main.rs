//! Clustering benchmark: in one run, on the three-node Legion of `tests/clustering.rs` (network
//! namespaces on this machine, `tests/cluster_kit`):
//!
//! * **announce propagation**: a node's vassal of a `cluster-domain` comes back; from the
//!   moment its own node's HTTP router has it (the local announce) until every other member's
//!   router has that node's fastrouter for the domain (validator of /subscribe/fastrouter,
//!   relay, signed datagram, receiver, router);
//! * **added latency of another node's container**: requests sent to node B's router, which
//!   has B's container (a local pinned socket) and C's fastrouter in the pool; per request the
//!   body says which node served it; median and 90th percentile of each, and through the
//!   Lord's floating address (A has no container: every request crosses to B or C);
//! * **HTTPS on the Lord for a new `ssl-cluster-domain`** served by a container on C only: from
//!   the vassal file written until C's own router serves the customer's certificate, and from
//!   there until the Lord's router has the pair C sealed to it (its cluster index) and serves it
//!   (a real handshake, `openssl s_client`); then a renewed pair on C until the Lord serves it;
//! * **failover**: the Lord's link goes down and its processes stop; until the floating
//!   address is on the new Lord, and until a request through it succeeds again.
//!
//! ```sh
//! make plugins && sudo cargo bench --bench cluster
//! ```
//!
//! Knobs: `BENCH_REQUESTS` (400), `BENCH_PROPAGATION_ROUNDS` (3). Needs root. It uses the test's
//! uids (31201, 31202, 31251): do not run it while `cargo test --test clustering` runs. Everything is
//! stopped by PID and removed at the end, also on a panic (the kit's `Drop`s).

#[path = "../../tests/cluster_kit/mod.rs"]
mod cluster_kit;

use cluster_kit::*;
use std::time::{Duration, Instant};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Polls every 5 ms until `done`, returning when it first held.
fn until(what: &str, mut done: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + T;
    loop {
        if done() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let requests = knob("BENCH_REQUESTS", 400);
    let rounds = knob("BENCH_PROPAGATION_ROUNDS", 3);
    let mut cluster = Cluster::start(true);
    cluster.wait_for_lord();
    let c_fr = "192.168.250.3:1999".to_string();
    until("the Lord's pool of both nodes", || cluster.nodes[0].nodes_of(DOMAIN).len() == 2);

    // Announce propagation.
    let c_vassal = cluster.nodes[2].emperor.as_ref().unwrap().home(C_UID).join("vassals/app.ini");
    let text = std::fs::read_to_string(&c_vassal).unwrap();
    let mut propagation = Vec::new();
    for _ in 0..rounds {
        std::fs::remove_file(&c_vassal).unwrap();
        // (a local container is a pinned socket's path in its node's pool, another node an address)
        let local_pin = |pool: Vec<String>| pool.iter().any(|n| n.starts_with('/'));
        until("C out of every pool", || {
            !cluster.nodes[0].nodes_of(DOMAIN).contains(&c_fr)
                && !cluster.nodes[1].nodes_of(DOMAIN).contains(&c_fr)
                && !local_pin(cluster.nodes[2].nodes_of(DOMAIN))
        });
        let written = Instant::now();
        std::fs::write(&c_vassal, &text).unwrap();
        let local = until("C's own router", || local_pin(cluster.nodes[2].nodes_of(DOMAIN)));
        let (mut on_a, mut on_b) = (None, None);
        until("C's fastrouter on A and B", || {
            if on_a.is_none() && cluster.nodes[0].nodes_of(DOMAIN).contains(&c_fr) {
                on_a = Some(Instant::now());
            }
            if on_b.is_none() && cluster.nodes[1].nodes_of(DOMAIN).contains(&c_fr) {
                on_b = Some(Instant::now());
            }
            on_a.is_some() && on_b.is_some()
        });
        let all = on_a.unwrap().max(on_b.unwrap());
        propagation.push((local - written, all.saturating_duration_since(local)));
    }

    // Latency: B's router, local container against C's through C's fastrouter.
    let b_ip = cluster.nodes[1].ip;
    let timed = |ip| {
        cluster.lan.run(|| {
            (0..requests)
                .filter_map(|_| {
                    let t = Instant::now();
                    get(ip, DOMAIN).ok().map(|body| (body, t.elapsed()))
                })
                .collect::<Vec<_>>()
        })
    };
    let split = |samples: &[(String, Duration)], node: &str| {
        let mut d: Vec<Duration> =
            samples.iter().filter(|(b, _)| b == &format!("served by node {node}")).map(|(_, d)| *d).collect();
        d.sort();
        d
    };
    let via_b = timed(b_ip);
    let (local, remote) = (split(&via_b, "b"), split(&via_b, "c"));
    let via_lord = timed(FLOATING);
    let mut lord_all: Vec<Duration> = via_lord.iter().map(|(_, d)| *d).collect();
    lord_all.sort();

    // HTTPS on the Lord for an ssl-cluster-domain only C serves.
    let c_ip = cluster.nodes[2].ip;
    let cn = |ip| cluster.served_certificate(ip, TLS_DOMAIN).map(|c| subject_cn(&c));
    let a_entry = cluster.nodes[0].router.as_ref().unwrap().private.join("cluster-sni").join(TLS_DOMAIN);
    let mut tls_rounds = Vec::new();
    let mut home = None;
    for _ in 0..rounds {
        let written = match &home {
            None => {
                home = Some(cluster.serve_tls(2));
                Instant::now()
            }
            Some(home) => {
                let vassal = home.join("vassals/app.ini");
                let text = std::fs::read_to_string(&vassal).unwrap();
                std::fs::remove_file(&vassal).unwrap();
                until("the Lord back to its own certificate", || {
                    !a_entry.exists()
                        && cn(FLOATING).is_ok_and(|n| n != TLS_DOMAIN)
                        && cn(c_ip).is_ok_and(|n| n != TLS_DOMAIN)
                });
                let t = Instant::now();
                std::fs::write(&vassal, text).unwrap();
                t
            }
        };
        let own = until("C's router serving the certificate", || cn(c_ip).is_ok_and(|n| n == TLS_DOMAIN));
        let sealed_in = until("the pair in the Lord's cluster index", || a_entry.exists());
        let served = until("the Lord serving the certificate", || cn(FLOATING).is_ok_and(|n| n == TLS_DOMAIN));
        tls_rounds.push((
            own - written,
            sealed_in.saturating_duration_since(own),
            served.saturating_duration_since(own),
        ));
    }
    let renewed_at = Instant::now();
    cluster.write_tls(home.as_ref().unwrap(), 2);
    let renewal = until("the Lord serving the renewed certificate", || {
        cluster.served_certificate(FLOATING, TLS_DOMAIN).is_ok_and(|c| serial(&c) == 2)
    }) - renewed_at;

    // Failover.
    let killed = Instant::now();
    cluster.nodes[0].ns.sh("ip link set lan0 down");
    let a = cluster.nodes.remove(0);
    drop(a);
    let moved = until("a new Lord", || cluster.lord().is_some()) - killed;
    let resumed =
        until("a request through the floating address", || cluster.lan.run(|| get(FLOATING, DOMAIN).is_ok())) - killed;

    println!("\nclustering benchmark: 3 nodes in network namespaces, legion-freq 1 s, legion-tolerance 3 s\n");
    println!("announce propagation ({rounds} rounds): vassal written -> own router | own router -> every other member's router");
    for (i, (local, all)) in propagation.iter().enumerate() {
        println!("  round {}: {:>10} | {:>10}", i + 1, ms(*local), ms(*all));
    }
    println!("\nlatency, {requests} requests to node B's router (HTTP/1.0, one connection each):");
    for (what, d) in [("B's own container (local socket)", &local), ("C's container (via C's fastrouter)", &remote)] {
        println!(
            "  {what:<36} n={:<4} median {:>10}  p90 {:>10}",
            d.len(),
            ms(percentile(d, 0.5)),
            ms(percentile(d, 0.9))
        );
    }
    println!(
        "  added by another node's container: median {}",
        ms(percentile(&remote, 0.5).saturating_sub(percentile(&local, 0.5)))
    );
    println!(
        "  through the Lord (A, no container): n={} median {} p90 {}",
        lord_all.len(),
        ms(percentile(&lord_all, 0.5)),
        ms(percentile(&lord_all, 0.9))
    );
    println!("\nHTTPS on the Lord for a new ssl-cluster-domain of C ({rounds} rounds):");
    println!("  vassal written -> C's router serves it | C's router -> pair in the Lord's index | C's router -> the Lord serves it");
    for (i, (own, sealed, served)) in tls_rounds.iter().enumerate() {
        println!("  round {}: {:>10} | {:>10} | {:>10}", i + 1, ms(*own), ms(*sealed), ms(*served));
    }
    println!("  renewed pair written on C -> the Lord serves it: {}", ms(renewal));
    println!(
        "\nfailover: address on the new Lord after {:.2} s, requests served again after {:.2} s",
        moved.as_secs_f64(),
        resumed.as_secs_f64()
    );
}
