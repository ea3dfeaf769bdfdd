//! Container networking benchmark (issue 14): what the platform's design costs two linked
//! containers against stock uWSGI's tuntap router and against a bare veth pair, what it adds to
//! a container's start, and what a link change costs with 10, 1 000 and 5 000 containers, in
//! one run.
//!
//! ```sh
//! sudo cargo bench --bench network
//! ```
//!
//! * **ours**: a node namespace set up by `container_net::setup::node`, the platform's real
//!   nftables table (`Firewall`, the Emperor's own) holding both containers as elements with a
//!   mutual link, and two container namespaces whose ends are built by
//!   `container_net::setup::container`, the function the containers' cloned child runs: veth
//!   `uwsgi0`/`uw<uid>`, /32 routes, proxy ARP, every packet through the node's forward path and
//!   the table's rules.
//! * **tuntap**: stock Debian uWSGI 2.0.21 with `tuntap_plugin.so`, as the original ran it: one
//!   `tuntap-router` process (`emperor0`, 10.0.0.1/8, `ip_forward`) in a node namespace, and in
//!   each container namespace a uWSGI master with `tuntap-device = uwsgi0 <socket>` (`jailed`,
//!   dropped to the container uid) and the original's per-link device rules; `uwsgi0` gets
//!   10.x/8 and goes up as the original's `ifconfig` hook did. IPv6 is off in these namespaces:
//!   the router drops a peer whose first packet has no IPv4 source, which is what the kernel's
//!   first IPv6 packet on a new interface looks like to it.
//! * **veth**: two namespaces and one veth pair between them, addresses on both ends, no
//!   routing, no firewall: the ceiling.
//!
//! Throughput is one TCP connection sending `BENCH_BYTES` (1 GiB) in 128 KiB writes, timed until
//! the receiver has read the last byte and said so; latency is `BENCH_PINGS` (20 000) one-byte
//! request/response round trips on one `TCP_NODELAY` connection. Sender and receiver are threads
//! of this program that entered the two namespaces (`setns`), so they share the machine's two
//! cores with the forwarding (the tuntap router is a third process). Each of `BENCH_ROUNDS` (3)
//! rounds measures the three paths in a rotated order; the table gives medians. `BENCH_STARTS`
//! (30): how many child-side setups and element edits are timed for the start cost.
//!
//! Needs root. Every namespace is anonymous, held only by this program's descriptors, so the
//! kernel removes it (and every interface and route in it) when the program ends, also on a
//! panic; the uWSGI processes are stopped by PID with SIGINT; the temp dir is removed. No packet
//! leaves these namespaces.

use container_net::firewall::{Elements, Firewall, Member, Nft};
use container_net::link::Netlink;
use container_net::setup::{self, ContainerNet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use uwsgi_it::netns::Netns;

/// This file's uids (30801-30809): the two linked containers and the start-up probe.
const A: u32 = 30801;
const B: u32 = 30802;
const PROBE: u32 = 30803;
const PORT: u16 = 5201;
const CHUNK: usize = 128 * 1024;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ip(uid: u32) -> Ipv4Addr {
    container_spec::ip_of(uid)
}

/// A table name no other run (or CI job) on this machine uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}x{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn lo_up() {
    let mut nl = Netlink::open().unwrap();
    let lo = nl.index_of("lo").unwrap().unwrap();
    nl.set_up(lo).unwrap();
}

fn address_up(ifname: &str, addr: Ipv4Addr, len: u8) {
    let mut nl = Netlink::open().unwrap();
    let index = nl.index_of(ifname).unwrap().unwrap_or_else(|| panic!("no {ifname}"));
    nl.add_address(index, addr, len).unwrap();
    nl.set_up(index).unwrap();
}

/// Two namespaces that can talk, and the address the second one listens on.
struct Path {
    name: &'static str,
    a: Netns,
    b: Netns,
    b_ip: Ipv4Addr,
}

// ---- the three paths ----

fn raw_veth() -> Path {
    let (a, b) = (Netns::new(), Netns::new());
    let b_fd = b.0.try_clone().unwrap();
    a.run(move || {
        lo_up();
        Netlink::open().unwrap().create_veth("rawa", "rawb", b_fd.as_fd()).unwrap();
        address_up("rawa", ip(A), 8);
    });
    b.run(|| {
        lo_up();
        address_up("rawb", ip(B), 8);
    });
    Path { name: "raw veth", a, b, b_ip: ip(B) }
}

/// Our design: the node's side, the table with both containers linked, both container ends.
struct Ours {
    path: Path,
    node: Netns,
    firewall: Option<Firewall>,
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(mut fw) = self.firewall.take() {
            let _ = self.node.run(move || fw.remove());
        }
    }
}

fn member(uid: u32, links: &[u32]) -> Member {
    Member { ifname: format!("uw{uid}"), ip: ip(uid), dmz: false, links: links.iter().map(|u| ip(*u)).collect() }
}

/// A container's namespace with its end built by the platform's own child-side function.
fn container(node: &Netns, uid: u32) -> (Netns, Duration) {
    let host = node.0.try_clone().unwrap();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let owner = container_net::owner::Owner::current("bench").unwrap();
        let c = ContainerNet { uid, host_if: format!("uw{uid}"), ip: ip(uid), dmz: false, owner };
        let t = Instant::now();
        let built = setup::container(&c, host.as_fd()).unwrap();
        let took = t.elapsed();
        assert_eq!(built, setup::Built::Yes, "uw{uid} is taken in the bench's own node namespace");
        (Netns(setup::current_netns().unwrap()), took)
    })
    .join()
    .unwrap()
}

fn ours() -> Ours {
    let node = Netns::new();
    let table = unique("unbitbench");
    let firewall = node.run(|| {
        setup::node().unwrap();
        let mut e = Elements::default();
        e.add_member(&member(A, &[B]));
        e.add_member(&member(B, &[A]));
        let mut fw = Firewall::new(&table, Nft::new());
        fw.sync(&e).unwrap();
        fw
    });
    let mut ours = Ours {
        path: Path { name: "ours", a: Netns::new(), b: Netns::new(), b_ip: ip(B) },
        node,
        firewall: Some(firewall),
    };
    ours.path.a = container(&ours.node, A).0;
    ours.path.b = container(&ours.node, B).0;
    ours
}

/// Stock uWSGI's tuntap router and two tuntap devices; the processes are stopped on drop.
struct Tuntap {
    path: Path,
    router_ns: Netns,
    processes: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Tuntap {
    fn drop(&mut self) {
        for c in self.processes.iter_mut().rev() {
            // uWSGI takes SIGTERM as a reload.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGINT);
        }
        for c in &mut self.processes {
            let t = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn no_ipv6() {
    for which in ["all", "default"] {
        container_net::sysctl::disable_ipv6(which).unwrap();
    }
}

fn wait_for_interface(name: &str, log: &std::path::Path) {
    let t = Instant::now();
    let mut nl = Netlink::open().unwrap();
    while nl.index_of(name).unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no {name} from uWSGI:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn uwsgi(dir: &std::path::Path, name: &str, args: &[String]) -> Child {
    let log = dir.join(format!("{name}.log"));
    Command::new("uwsgi")
        .args(["--plugin", "tuntap", "--master"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
        .args(["--logto", &log.display().to_string()])
        .spawn()
        .expect("uwsgi (Debian's uwsgi-core)")
}

fn tuntap() -> Tuntap {
    let dir = tempfile::Builder::new().prefix("unbit-bench-network-").tempdir().unwrap();
    let socket = dir.path().join("tuntap.socket").display().to_string();
    let router_ns = Netns::new();
    let mut t = Tuntap {
        path: Path { name: "stock tuntap", a: Netns::new(), b: Netns::new(), b_ip: ip(B) },
        router_ns,
        processes: Vec::new(),
        dir,
    };
    let d = t.dir.path().to_path_buf();
    let router = t.router_ns.run(|| {
        lo_up();
        no_ipv6();
        container_net::sysctl::enable_forwarding().unwrap();
        let child = uwsgi(&d, "router", &["--tuntap-router".into(), format!("emperor0 {socket}")]);
        wait_for_interface("emperor0", &d.join("router.log"));
        address_up("emperor0", container_net::GATEWAY, 8);
        child
    });
    t.processes.push(router);
    while !std::path::Path::new(&socket).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (uid, peer) in [(A, B), (B, A)] {
        let (me, other) = (ip(uid), ip(peer));
        // The original's per-link rules, then its deny of the rest of 10/8.
        let rules = [
            format!("in {other}/32 {me}/32 allow"),
            format!("out {me}/32 {other}/32 allow"),
            "in 10.0.0.0/8 0.0.0.0/0 deny".to_string(),
            "out 0.0.0.0/0 10.0.0.0/8 deny".to_string(),
        ];
        let mut args = vec![
            "--jailed".to_string(),
            "--uid".into(),
            uid.to_string(),
            "--gid".into(),
            uid.to_string(),
            "--tuntap-device".into(),
            format!("uwsgi0 {socket}"),
            "--socket".into(),
            "127.0.0.1:0".into(),
        ];
        for r in rules {
            args.extend(["--tuntap-device-rule".to_string(), r]);
        }
        let ns = if uid == A { &t.path.a } else { &t.path.b };
        let name = format!("device{uid}");
        let child = ns.run(|| {
            lo_up();
            no_ipv6();
            let child = uwsgi(&d, &name, &args);
            wait_for_interface("uwsgi0", &d.join(format!("{name}.log")));
            address_up("uwsgi0", me, 8);
            child
        });
        t.processes.push(child);
        // The router learns a peer's address from its first packet: a datagram to the gateway.
        ns.run(|| {
            let s = UdpSocket::bind((me, 0)).unwrap();
            s.send_to(b"hello", (container_net::GATEWAY, 9)).unwrap();
        });
    }
    let router_log = t.dir.path().join("router.log");
    let since = Instant::now();
    loop {
        let log = std::fs::read_to_string(&router_log).unwrap_or_default();
        if log.matches("registered new peer").count() >= 2 {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(10), "the tuntap router did not register both peers:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t
}

// ---- measurements ----

/// How long a transfer or a round trip may stall before the path counts as broken (the stock
/// tuntap router drops a peer whose socket is full: `uwsgi_tuntap_peer_enqueue()/write():
/// Resource temporarily unavailable`, and its device process exits).
const STALL: Duration = Duration::from_secs(20);

/// Gbit/s of one bulk TCP transfer from a to b, or what broke it.
fn throughput(p: &Path, bytes: u64) -> Result<f64, String> {
    let to = SocketAddr::from((p.b_ip, PORT));
    let listener = p.b.run(|| TcpListener::bind(to).unwrap_or_else(|e| panic!("{}: bind {to}: {e}", p.name)));
    std::thread::scope(|s| {
        let receiver = s.spawn(|| -> std::io::Result<u64> {
            let (mut c, _) = listener.accept()?;
            c.set_read_timeout(Some(STALL))?;
            let mut buf = vec![0u8; CHUNK];
            let mut got = 0u64;
            loop {
                let n = c.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
            c.write_all(b"k")?;
            Ok(got)
        });
        let sent = p.a.run(|| -> std::io::Result<f64> {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            c.set_write_timeout(Some(STALL))?;
            c.set_read_timeout(Some(STALL))?;
            let buf = vec![0x5au8; CHUNK];
            let t = Instant::now();
            let mut left = bytes;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                c.write_all(&buf[..n])?;
                left -= n as u64;
            }
            c.shutdown(std::net::Shutdown::Write)?;
            let mut ack = [0u8; 1];
            c.read_exact(&mut ack)?;
            Ok(bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e9)
        });
        if sent.is_err() {
            // Unblock a receiver still waiting for the connection.
            let _ = p.a.run(|| TcpStream::connect_timeout(&to, Duration::from_secs(1)));
        }
        let got = receiver.join().unwrap();
        match (sent, got) {
            (Ok(g), Ok(n)) if n == bytes => Ok(g),
            (Ok(_), Ok(n)) => Err(format!("the receiver got {n} of {bytes} bytes")),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        }
    })
}

/// Round trip times in µs of one-byte ping-pongs from a to b, or what broke them.
fn round_trips(p: &Path, pings: usize) -> Result<Vec<f64>, String> {
    let to = SocketAddr::from((p.b_ip, PORT + 1));
    let listener = p.b.run(|| TcpListener::bind(to).unwrap());
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            let (mut c, _) = listener.accept()?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(STALL))?;
            let mut b = [0u8; 1];
            while c.read_exact(&mut b).is_ok() {
                c.write_all(&b)?;
            }
            Ok(())
        });
        let r = p.a.run(|| -> std::io::Result<Vec<f64>> {
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
            c.set_nodelay(true)?;
            c.set_read_timeout(Some(STALL))?;
            let mut b = [1u8; 1];
            let mut rtts = Vec::with_capacity(pings);
            for _ in 0..pings {
                let t = Instant::now();
                c.write_all(&b)?;
                c.read_exact(&mut b)?;
                rtts.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(rtts)
        });
        if r.is_err() {
            let _ = p.a.run(|| TcpStream::connect_timeout(&to, Duration::from_secs(1)));
        }
        r.map_err(|e| e.to_string())
    })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    percentile(&mut v, 0.5)
}

// ---- start-up and link changes ----

/// The child-side setup (`setup::container`) for one container, `runs` times, and the
/// Emperor's element edit that admits it to the table.
fn start_cost(runs: usize) -> (Vec<f64>, Vec<f64>) {
    let node = Netns::new();
    let table = unique("unbitstart");
    let mut fw = node.run(|| {
        setup::node().unwrap();
        let mut e = Elements::default();
        e.add_member(&member(A, &[]));
        let mut fw = Firewall::new(&table, Nft::new());
        fw.sync(&e).unwrap();
        fw
    });
    let (mut child, mut edit) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let took = node.run(|| {
            let mut e = Elements::default();
            e.add_member(&member(A, &[]));
            e.add_member(&member(PROBE, &[]));
            let t = Instant::now();
            fw.sync(&e).unwrap();
            let took = t.elapsed();
            e.ifs.remove(&format!("uw{PROBE}"));
            e.ctr_if_ip.remove(&(format!("uw{PROBE}"), ip(PROBE)));
            fw.sync(&e).unwrap();
            took
        });
        edit.push(took.as_secs_f64() * 1e3);
        let (ns, took) = container(&node, PROBE);
        child.push(took.as_secs_f64() * 1e3);
        drop(ns);
        // The kernel destroys the namespace, and with it the pair, asynchronously: wait for
        // the host end's name outside the timing.
        node.run(|| {
            let mut nl = Netlink::open().unwrap();
            let t = Instant::now();
            while nl.index_of(&format!("uw{PROBE}")).unwrap().is_some() {
                assert!(t.elapsed() < Duration::from_secs(10), "uw{PROBE} outlived its namespace");
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }
    node.run(|| fw.remove()).unwrap();
    (child, edit)
}

/// One link change (a mutual link added, then removed) with `n` containers in the table, as
/// the Emperor does it: `Firewall::sync`, an element edit. Returns the edits' times in ms and
/// the full apply's.
fn link_change(node: &Netns, n: u32, changes: usize) -> (Vec<f64>, f64) {
    node.run(|| {
        let mut e = Elements::default();
        for i in 0..n {
            // Element-only containers: pairs linked to each other, as on a busy node.
            let uid = 40_000 + i;
            e.add_member(&member(uid, &[40_000 + (i ^ 1)]));
        }
        let mut fw = Firewall::new(&unique("unbitlinks"), Nft::new());
        let t = Instant::now();
        fw.sync(&e).unwrap();
        let full = t.elapsed().as_secs_f64() * 1e3;
        let (x, y) = (ip(40_000), ip(40_000 + n - 1));
        let mut times = Vec::new();
        for k in 0..changes {
            // Even changes link the first and the last container, odd ones unlink them.
            let mut want = e.clone();
            if k % 2 == 0 {
                want.links.insert((x, y));
                want.links.insert((y, x));
            }
            let t = Instant::now();
            assert!(fw.sync(&want).unwrap());
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        assert!(!fw.verify().unwrap(), "the edits left a table other than a full apply's");
        fw.remove().unwrap();
        (times, full)
    })
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the network benchmark needs root (namespaces, nftables)");
    let bytes = knob("BENCH_BYTES", 1 << 30);
    let pings = knob("BENCH_PINGS", 20_000) as usize;
    let rounds = knob("BENCH_ROUNDS", 3) as usize;
    let starts = knob("BENCH_STARTS", 30) as usize;

    let veth = raw_veth();
    let ours = ours();
    let mut stock = tuntap();
    // A short warm-up on every path (ARP, the router's first packets, TCP's first windows).
    for p in [&veth, &ours.path] {
        throughput(p, 16 << 20).unwrap_or_else(|e| panic!("{}: warm-up transfer: {e}", p.name));
        round_trips(p, 200).unwrap_or_else(|e| panic!("{}: warm-up round trips: {e}", p.name));
    }
    let names = [veth.name, ours.path.name, stock.path.name];
    let mut gbit: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut rtt: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut broken: Vec<Vec<String>> = vec![Vec::new(); 3];
    // The stock router drops peers under load (see STALL), during the warm-up too.
    for attempt in 1.. {
        match throughput(&stock.path, 16 << 20).and_then(|_| round_trips(&stock.path, 200)) {
            Ok(_) => break,
            Err(e) => {
                eprintln!("stock tuntap broke in the warm-up: {e}");
                broken[2].push(format!("warm-up: {e}"));
                assert!(attempt < 5, "stock tuntap broke in {attempt} warm-ups");
                drop(stock);
                stock = tuntap();
            }
        }
    }
    for round in 0..rounds {
        for k in 0..3 {
            let i = (k + round) % 3;
            let p = [&veth, &ours.path, &stock.path][i];
            let g = throughput(p, bytes);
            let r = if g.is_ok() { round_trips(p, pings) } else { Err("not run".into()) };
            match (g, r) {
                (Ok(g), Ok(r)) => {
                    gbit[i].push(g);
                    rtt[i].extend(r);
                }
                (g, r) => {
                    let e = g.err().or(r.err()).unwrap();
                    eprintln!("round {round}: {} broke: {e}", names[i]);
                    broken[i].push(e);
                    assert!(i == 2, "{} broke: the benchmark's own paths must not", names[i]);
                    // The router dropped a peer (its device process exits): a fresh set, as
                    // the original's containers would have restarted.
                    drop(stock);
                    stock = tuntap();
                }
            }
        }
    }
    let ceiling = median(gbit[0].clone());
    println!(
        "between two containers: {rounds} rounds, {} MiB per transfer, {pings} one-byte round trips per round",
        bytes >> 20
    );
    println!("| path | Gbit/s (median) | min-max | of raw veth | RTT median | RTT p99 | times the path broke |");
    println!("|---|---|---|---|---|---|---|");
    for i in 0..3 {
        if gbit[i].is_empty() {
            println!("| {} | - | - | - | - | - | {} |", names[i], broken[i].len());
            continue;
        }
        let g = median(gbit[i].clone());
        let lo = gbit[i].iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = gbit[i].iter().cloned().fold(0.0, f64::max);
        println!(
            "| {} | {g:.2} | {lo:.2}-{hi:.2} | {:.1} % | {:.1} µs | {:.1} µs | {} |",
            names[i],
            g / ceiling * 100.0,
            percentile(&mut rtt[i], 0.5),
            percentile(&mut rtt[i], 0.99),
            broken[i].len()
        );
    }
    for (i, errors) in broken.iter().enumerate() {
        for e in errors {
            println!("{} broke: {e}", names[i]);
        }
    }
    drop(stock);
    drop(ours);
    drop(veth);

    let (mut child, mut edit) = start_cost(starts);
    println!();
    println!("what networking adds to a container's start ({starts} runs):");
    println!("| part | median | p90 | max |");
    println!("|---|---|---|---|");
    for (what, v) in [
        ("child side: setup::container (veth pair, both ends, route, sysctls)", &mut child),
        ("Emperor side: the container's elements added to the table (one nft run)", &mut edit),
    ] {
        println!(
            "| {what} | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 1.0)
        );
    }

    let node = Netns::new();
    println!();
    println!("a link change (a mutual link added or removed: Firewall::sync, element edits), 10 changes each:");
    println!("| containers in the table | change median | change max | full apply of the table |");
    println!("|---|---|---|---|");
    for n in [10u32, 1_000, 5_000] {
        let (mut times, full) = link_change(&node, n, 10);
        println!(
            "| {n} | {:.2} ms | {:.2} ms | {full:.0} ms |",
            percentile(&mut times, 0.5),
            percentile(&mut times, 1.0)
        );
    }
}
