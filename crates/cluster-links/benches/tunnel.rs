//! Links across nodes: throughput and TCP round trips between two linked containers on two
//! nodes (through both nodes' tables and `unbit-links`, userspace WireGuard), beside the
//! same between the two nodes without the tunnel (the inter-node bridge alone) and a plain
//! veth between two namespaces, in one run.
//!
//! `sudo cargo bench -p cluster-links --bench tunnel` (root: namespaces). Knobs:
//! `BENCH_BYTES` (bytes per throughput run, default 200 MB), `BENCH_ROUNDS` (round trips,
//! default 2000), `BENCH_RUNS` (throughput runs per path, default 3). Container uids 31360,
//! 31361.

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::{enter, in_ns, ip, Legion, Ns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A server in `ns` for one throughput run and one latency run: the first connection is
/// drained and acknowledged with one byte after EOF, the second echoes one byte at a time.
fn serve(ns: &str, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns = ns.to_string();
    let runs = knob("BENCH_RUNS", 3);
    let t = std::thread::spawn(move || {
        enter(&ns);
        let listener = TcpListener::bind(addr).expect("bind");
        tx.send(()).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        for _ in 0..runs {
            let (mut c, _) = listener.accept().unwrap();
            while c.read(&mut buf).unwrap() > 0 {}
            c.write_all(b"k").unwrap();
        }
        let (mut c, _) = listener.accept().unwrap();
        c.set_nodelay(true).unwrap();
        let mut one = [0u8; 1];
        while c.read(&mut one).unwrap() == 1 {
            c.write_all(&one).unwrap();
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
    t
}

struct Figures {
    gbits: Vec<f64>,
    rtt_us: Vec<f64>,
}

fn measure(server_ns: &str, client_ns: &str, addr: SocketAddr) -> Figures {
    let server = serve(server_ns, addr);
    let bytes = knob("BENCH_BYTES", 200_000_000);
    let rounds = knob("BENCH_ROUNDS", 2000);
    let figures = in_ns(client_ns, || {
        let chunk = vec![0x5au8; 1 << 16];
        let mut gbits = Vec::new();
        for _ in 0..knob("BENCH_RUNS", 3) {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
            let started = Instant::now();
            let mut sent = 0;
            while sent < bytes {
                c.write_all(&chunk).unwrap();
                sent += chunk.len();
            }
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut ack = [0u8; 1];
            c.read_exact(&mut ack).unwrap();
            gbits.push(sent as f64 * 8.0 / started.elapsed().as_secs_f64() / 1e9);
        }
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        c.set_nodelay(true).unwrap();
        let mut rtt_us = Vec::with_capacity(rounds);
        let mut one = [1u8; 1];
        for _ in 0..rounds {
            let t = Instant::now();
            c.write_all(&one).unwrap();
            c.read_exact(&mut one).unwrap();
            rtt_us.push(t.elapsed().as_secs_f64() * 1e6);
        }
        rtt_us.sort_by(f64::total_cmp);
        Figures { gbits, rtt_us }
    });
    server.join().unwrap();
    figures
}

fn print(what: &str, f: &Figures) {
    let pct = |p: f64| f.rtt_us[((f.rtt_us.len() - 1) as f64 * p) as usize];
    let runs: Vec<String> = f.gbits.iter().map(|g| format!("{g:.2}")).collect();
    let best = f.gbits.iter().copied().fold(0.0, f64::max);
    println!(
        "{what:<44} {best:>6.2} Gbit/s (runs {})   round trip median {:>6.1} us, p90 {:>6.1} us, p99 {:>6.1} us",
        runs.join(" / "),
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `--list`: nothing to list or check here.
    }
    let (a1, b1) = (31360, 31361);
    let legion = Legion::new([&[(a1, &[b1])], &[(b1, &[a1])]], &[]);
    let (ca, cb) = (legion.container(a1), legion.container(b1));
    // Let the first handshake happen before measuring.
    in_ns(&ca.ns.0, || {
        for _ in 0..50 {
            // Refused (B1 answers with a reset) once the path works; a timeout while it does not.
            match TcpStream::connect_timeout(&SocketAddr::from((cb.ip(), 9)), Duration::from_millis(200)) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                _ => break,
            }
        }
    });
    let tunnel = measure(&cb.ns.0, &ca.ns.0, SocketAddr::from((cb.ip(), 7100)));
    let (na, nb) = (legion.node("a"), legion.node("b"));
    let wire = measure(&nb.ns.0, &na.ns.0, SocketAddr::from((nb.addr, 7101)));

    let (x, y) = (Ns::new("vx"), Ns::new("vy"));
    ip(&x.0, &format!("link add v0 type veth peer name v1 netns {}", y.0));
    ip(&x.0, "addr add 192.168.78.1/24 dev v0");
    ip(&y.0, "addr add 192.168.78.2/24 dev v1");
    ip(&x.0, "link set v0 up");
    ip(&y.0, "link set v1 up");
    let veth = measure(&y.0, &x.0, "192.168.78.2:7102".parse().unwrap());

    println!();
    println!("links across nodes, 2-core machine, one kernel ({} cores seen)", num_cpus());
    print("linked containers on two nodes (unbit-links)", &tunnel);
    print("node to node over the inter-node bridge", &wire);
    print("plain veth between two namespaces", &veth);
    let best = |f: &Figures| f.gbits.iter().copied().fold(0.0, f64::max);
    println!(
        "tunnel / plain veth: {:.1} % of the throughput, +{:.1} us median round trip",
        100.0 * best(&tunnel) / best(&veth),
        tunnel.rtt_us[tunnel.rtt_us.len() / 2] - veth.rtt_us[veth.rtt_us.len() / 2]
    );
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
