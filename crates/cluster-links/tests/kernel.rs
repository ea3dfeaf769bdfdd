//! Links across nodes on the real kernel (root): two nodes in network namespaces, each with
//! its containers, the platform's table and `unbit-links run`, joined by a bridge in a third
//! namespace. Container uids 31350-31399.

mod kit;

use kit::{enter, in_ns, ip, try_ip, Legion, TUNNEL};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const A1: u32 = 31350; // on a: linked with B1 (both ways) and with the ghost node's G1
const A2: u32 = 31353; // on a: links nobody
const B1: u32 = 31351; // on b: linked with A1
const B2: u32 = 31352; // on b: lists A1, which does not list it (one-sided)
const G1: u32 = 31354; // on c, a member that never comes up

fn legion() -> Legion {
    Legion::new([&[(A1, &[B1, G1]), (A2, &[])], &[(B1, &[A1]), (B2, &[A1])]], &[G1])
}

/// An echo server in a namespace until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(ns: &str, addr: SocketAddr) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ns, flag) = (ns.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let listener = TcpListener::bind(addr).expect("bind the echo server");
            listener.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let flag = flag.clone();
                        std::thread::spawn(move || {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                            let mut buf = [0u8; 65536];
                            while !flag.load(Ordering::Relaxed) {
                                match conn.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if conn.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("echo server up");
        Echo { stop, thread: Some(thread) }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from the namespace, sends `payload`, reads it back: `Err` says what failed.
fn exchange(ns: &str, to: SocketAddr, payload: &[u8], connect_within: Duration) -> Result<(), String> {
    in_ns(ns, || {
        let mut s = TcpStream::connect_timeout(&to, connect_within).map_err(|e| format!("connect {to}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        echo_round(&mut s, payload)
    })
}

fn echo_round(s: &mut TcpStream, payload: &[u8]) -> Result<(), String> {
    s.write_all(payload).map_err(|e| format!("send: {e}"))?;
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).map_err(|e| format!("read the echo: {e}"))?;
    if back == payload {
        Ok(())
    } else {
        Err("the echo differs".into())
    }
}

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Frames seen on the wire (every port of the inter-node bridge) while it runs.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    fn start(ns: &str) -> Capture {
        use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockProtocol, SockType};
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ns, flag) = (ns.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            enter(&ns);
            let fd = socket::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)
                .expect("AF_PACKET socket");
            socket::setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(0, 100_000)).unwrap();
            tx.send(()).unwrap();
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = socket::recv(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf, socket::MsgFlags::empty()) {
                    frames.push(buf[..n].to_vec());
                }
            }
            frames
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("capture up");
        Capture { stop, thread: Some(thread) }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// IPv4 over Ethernet, UDP, to or from the tunnel's port.
fn is_tunnel_datagram(frame: &[u8]) -> bool {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[14 + 9] != 17 {
        return false;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let udp = &frame[14 + ihl..];
    let (sport, dport) = (u16::from_be_bytes([udp[0], udp[1]]), u16::from_be_bytes([udp[2], udp[3]]));
    sport == kit::PORT || dport == kit::PORT
}

#[test]
fn linked_containers_on_two_nodes_talk_encrypted_and_nothing_else_crosses() {
    let mut legion = legion();
    let (a, b) = (legion.node("a"), legion.node("b"));
    let marker = format!("UNBIT-LINK-PLAINTEXT-{}", std::process::id());
    let payload = marker.repeat(2000).into_bytes();

    // A linked pair across nodes, both ways, while the wire sees only WireGuard datagrams.
    let wire = Capture::start(&legion.wire.0);
    let echo_b1 = Echo::start(&legion.container(B1).ns.0, sock(legion.container(B1).ip(), 7000));
    let echo_a1 = Echo::start(&legion.container(A1).ns.0, sock(legion.container(A1).ip(), 7000));
    exchange(&legion.container(A1).ns.0, sock(legion.container(B1).ip(), 7000), &payload, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("A1 -> B1 over the tunnel: {e}\na: {}\nb: {}", a.daemon_log(), b.daemon_log()));
    exchange(&legion.container(B1).ns.0, sock(legion.container(A1).ip(), 7000), &payload, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("B1 -> A1 over the tunnel: {e}"));
    // The capture works: the same marker sent in clear between the nodes is seen.
    in_ns(&a.ns.0, || {
        let udp = UdpSocket::bind((a.addr, 0)).unwrap();
        udp.send_to(format!("clear {marker}").as_bytes(), (b.addr, 9)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let frames = wire.finish();
    let clear = format!("clear {marker}").into_bytes();
    assert!(frames.iter().any(|f| contains(f, &clear)), "the capture on the wire saw nothing sent in clear");
    let tunnel = frames.iter().filter(|f| is_tunnel_datagram(f)).count();
    assert!(tunnel >= 2 * payload.len() / 1500, "only {tunnel} WireGuard datagrams on the wire");
    let leaked = frames.iter().filter(|f| contains(f, marker.as_bytes()) && !contains(f, &clear)).count();
    assert_eq!(leaked, 0, "{leaked} frames on the inter-node wire carry the containers' payload in clear");

    // Nothing else crosses: an unlinked container, a one-sided link, in both directions.
    let echo_a2 = Echo::start(&legion.container(A2).ns.0, sock(legion.container(A2).ip(), 7000));
    let echo_b2 = Echo::start(&legion.container(B2).ns.0, sock(legion.container(B2).ip(), 7000));
    for (from, to) in [(B1, A2), (B2, A1), (A1, B2), (A2, B1)] {
        let to_ip = legion.container(to).ip();
        // The server is up: it answers in its own namespace.
        exchange(&legion.container(to).ns.0, sock(to_ip, 7000), b"up?", Duration::from_secs(2)).unwrap();
        let r = exchange(&legion.container(from).ns.0, sock(to_ip, 7000), b"hello", Duration::from_secs(2));
        assert!(r.is_err(), "{from} reached {to} across nodes without a mutual link");
    }

    // What a compromised node b can do at most: send into the tunnel with any source, past its
    // own table (IP_TRANSPARENT from the node itself). The tunnel on a drops every source b
    // does not own (c's container G1, which A1 links; b's gateway; a's own A2); a's table drops
    // b's own containers' datagrams to a container that does not link them (B1 to A2, B2 to
    // A1); only B1 to A1, a linked pair, arrives.
    let send_as = |src: Ipv4Addr, to: u32| {
        in_ns(&b.ns.0, || {
            use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
            let fd = socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).unwrap();
            socket::setsockopt(&fd, sockopt::IpTransparent, &true).unwrap();
            socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)))
                .unwrap();
            let s = UdpSocket::from(fd);
            s.send_to(format!("from {src}").as_bytes(), (legion.container(to).ip(), 7001)).unwrap();
        })
    };
    let receive = |uid: u32, sends: &(dyn Fn() + Sync)| -> Vec<String> {
        let c = legion.container(uid);
        in_ns(&c.ns.0, || {
            let s = UdpSocket::bind((c.ip(), 7001)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            sends();
            let mut got = Vec::new();
            let mut buf = [0u8; 256];
            while let Ok(n) = s.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            got
        })
    };
    let (b1, b2) = (legion.container(B1).ip(), legion.container(B2).ip());
    let at_a1 = receive(A1, &|| {
        send_as(container_spec::ip_of(G1), A1);
        send_as(kit_gateway(), A1);
        send_as(legion.container(A2).ip(), A1);
        send_as(b2, A1);
        send_as(b1, A1);
    });
    assert_eq!(at_a1, vec![format!("from {b1}")], "only B1's datagram reaches A1");
    let at_a2 = receive(A2, &|| send_as(b1, A2));
    assert!(at_a2.is_empty(), "A2 got {at_a2:?} from b although it links nobody");

    // An unlink on b cuts an open connection across nodes at once.
    let mut conn = in_ns(&legion.container(A1).ns.0, || {
        TcpStream::connect_timeout(&sock(b1, 7000), Duration::from_secs(5)).expect("connect A1 -> B1")
    });
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    echo_round(&mut conn, b"before the unlink").expect("an open connection across nodes");
    let mut unlinked = b.elements();
    unlinked.links.remove(&(b1, legion.container(A1).ip()));
    b.apply_table(&unlinked);
    assert!(echo_round(&mut conn, b"after the unlink").is_err(), "the connection survived the unlink on b");
    drop(conn);
    drop((echo_a1, echo_a2, echo_b1, echo_b2));

    // Cleanup: the daemons end on SIGINT and take their interface and every route with them;
    // the table goes with the Emperor (here: removed as it removes it).
    for i in 0..2 {
        legion.nodes[i].stop_daemon();
        let node = &legion.nodes[i];
        assert!(node.daemon_log().contains("closing the tunnel"), "{}", node.daemon_log());
        assert!(try_ip(&node.ns.0, &format!("link show {TUNNEL}")).is_none(), "{TUNNEL} outlived unbit-links");
        let routes = ip(&node.ns.0, "route show table all");
        for c in legion.nodes[1 - i].containers.iter().map(|c| c.ip()).chain([container_spec::ip_of(G1)]) {
            assert!(
                !routes.contains(&format!("{c} ")),
                "{}: a route to {c} outlived unbit-links:\n{routes}",
                node.name
            );
        }
        in_ns(&node.ns.0, || {
            let mut fw = container_net::firewall::Firewall::new(kit::TABLE, container_net::firewall::Nft::new());
            fw.remove().unwrap();
            assert_eq!(container_net::firewall::Nft::new().list(kit::TABLE, false).unwrap(), None);
        });
    }
    let names: Vec<String> = legion.nodes.iter().map(|n| n.ns.0.clone()).collect();
    drop(legion);
    let netns = std::fs::read_dir("/run/netns").map(|d| d.flatten().count()).unwrap_or(0);
    for n in names {
        assert!(!std::path::Path::new(&format!("/run/netns/{n}")).exists(), "namespace {n} left behind ({netns})");
    }
}

/// The node's own address on the container network.
fn kit_gateway() -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1)
}

#[test]
fn a_node_whose_key_is_not_its_members_entry_refuses_to_start() {
    let dir = std::env::temp_dir().join(format!("cluster-links-badkey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("node.key");
    std::fs::write(&key, format!("{}\n", cluster_links::Key::generate().unwrap().to_base64())).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let other = cluster_links::Key::generate().unwrap().public().to_base64();
    std::fs::write(
        dir.join("members.json"),
        format!(r#"{{"members": [{{"name": "a", "endpoint": "192.168.77.1:51820", "public_key": "{other}"}}]}}"#),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unbit-links"))
        .args(["run", "--node", "a", "--ifname", "ulbad0"])
        .arg("--key")
        .arg(&key)
        .arg("--members")
        .arg(dir.join("members.json"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("the members file lists public key"), "{err}");
}

#[test]
fn a_changed_members_file_is_followed_and_a_broken_one_keeps_the_peers() {
    const A5: u32 = 31355;
    const B6: u32 = 31356;
    const B7: u32 = 31357;
    let mut legion = Legion::new([&[(A5, &[B6])], &[(B6, &[A5])]], &[]);
    let routes = |l: &Legion| ip(&l.node("a").ns.0, &format!("route show dev {TUNNEL}"));
    let b7 = container_spec::ip_of(B7).to_string();
    assert!(!routes(&legion).contains(&b7));

    // b starts B7: once the file says so, a routes it into the tunnel (and b's peer entry on a
    // accepts it as a source).
    legion.nodes[1].containers.push(kit::Container { uid: B7, ns: kit::Ns::new("b7"), links: vec![] });
    legion.write_members();
    let t = std::time::Instant::now();
    while !routes(&legion).contains(&b7) {
        assert!(t.elapsed() < Duration::from_secs(10), "B7 never routed: {}", legion.node("a").daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // A broken file is refused whole; the peers and routes stay.
    std::fs::write(legion.members_file(), "{\"members\": [{\"name\": \"a\"}]}").unwrap();
    let t = std::time::Instant::now();
    while !legion.node("a").daemon_log().contains("keeping the previous peers") {
        assert!(t.elapsed() < Duration::from_secs(10), "no refusal logged: {}", legion.node("a").daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(routes(&legion).contains(&b7), "a broken members file dropped routes");
    let b6 = legion.container(B6).ip();
    let echo = Echo::start(&legion.container(B6).ns.0, sock(b6, 7000));
    exchange(&legion.container(A5).ns.0, sock(b6, 7000), b"still linked", Duration::from_secs(10)).unwrap();
    drop(echo);

    // B7 leaves the file: its route goes.
    legion.nodes[1].containers.pop();
    legion.write_members();
    let t = std::time::Instant::now();
    while routes(&legion).contains(&b7) {
        assert!(t.elapsed() < Duration::from_secs(10), "B7's route stayed: {}", legion.node("a").daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_change_that_fails_to_apply_is_retried_until_it_applies() {
    const A8: u32 = 31380;
    const B8: u32 = 31381;
    const B9: u32 = 31382;
    let mut legion = Legion::new([&[(A8, &[B8])], &[(B8, &[A8])]], &[]);
    let a_ns = legion.node("a").ns.0.clone();
    let routes = || ip(&a_ns, &format!("-4 route show dev {TUNNEL}"));
    let (b8, b9) = (legion.container(B8).ip(), container_spec::ip_of(B9));
    let routed = |r: &str, addr: Ipv4Addr| r.lines().any(|l| l.split_whitespace().next() == Some(&addr.to_string()));

    // The tunnel goes down on a: the kernel drops its routes and refuses new ones through it,
    // so the next change (b starts B9) cannot be applied.
    ip(&a_ns, &format!("link set {TUNNEL} down"));
    assert!(!routed(&routes(), b8), "routes through a down interface stayed: {}", routes());
    legion.nodes[1].containers.push(kit::Container { uid: B9, ns: kit::Ns::new("b9"), links: vec![] });
    legion.write_members();
    let t = std::time::Instant::now();
    while !legion.node("a").daemon_log().contains("cannot apply") {
        assert!(t.elapsed() < Duration::from_secs(10), "no failed apply: {}", legion.node("a").daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }

    // The cause goes away and the file does not change again: a retry routes B9, and B8 again
    // (the routes the kernel dropped, which the last applied file already had).
    ip(&a_ns, &format!("link set {TUNNEL} up"));
    let t = std::time::Instant::now();
    while !(routed(&routes(), b8) && routed(&routes(), b9)) {
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "never retried: {}\n{}",
            routes(),
            legion.node("a").daemon_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        legion.node("a").daemon_log().contains("the members file is applied (attempt"),
        "{}",
        legion.node("a").daemon_log()
    );
    let echo = Echo::start(&legion.container(B8).ns.0, sock(b8, 7000));
    exchange(&legion.container(A8).ns.0, sock(b8, 7000), b"after the retry", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("A8 -> B8 after the retry: {e}\n{}", legion.node("a").daemon_log()));
    drop(echo);

    // B9 leaves: the route the retry added goes, though the first try never recorded it.
    legion.nodes[1].containers.pop();
    legion.write_members();
    let t = std::time::Instant::now();
    while routed(&routes(), b9) {
        assert!(t.elapsed() < Duration::from_secs(10), "B9's route stayed: {}", legion.node("a").daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(routed(&routes(), b8), "B8's route went with B9's: {}", routes());
}
