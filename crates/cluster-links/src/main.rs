//! `unbit-links`: the node's tunnel to the other members of its Legion, for links between
//! containers on different nodes (design: `docs/networking.md`, "Links across nodes").
//!
//! ```text
//! unbit-links genkey > /etc/unbit/links/node.key     (then chmod 600)
//! unbit-links pubkey < /etc/unbit/links/node.key     (for the members file)
//! unbit-links run --node NAME --key FILE --members FILE [--ifname unbit-wg]
//! unbit-links wg-conf --node NAME --key FILE --members FILE   (the kernel's WireGuard)
//! ```
//!
//! `run` creates the interface with boringtun's userspace WireGuard (a TUN device), configures
//! it through a private socket pair (no control socket in the file system), routes every
//! remote container into it, follows the members file (checked every second, refused whole
//! when broken: the previous configuration stays; a change that fails to apply is retried,
//! `cluster_links::follow`) and ends on SIGINT or SIGTERM. The TUN device lives as long as the
//! process: when it ends, however it ends, the kernel removes the interface and every route
//! through it.

use boringtun::device::{DeviceConfig, DeviceHandle};
use cluster_links::follow::{Follower, Outcome, Tunnel};
use cluster_links::{parse_members, read_private_key, Key, NodeConfig, TUNNEL_MTU};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("genkey") => Key::generate().map(|k| println!("{}", k.to_base64())),
        Some("pubkey") => pubkey(),
        Some("wg-conf") => Opts::parse(&args[1..]).and_then(|o| o.config()).map(|c| print!("{}", c.wg_conf())),
        Some("run") => Opts::parse(&args[1..]).and_then(run),
        _ => Err("usage: unbit-links genkey | pubkey | run|wg-conf --node NAME --key FILE --members FILE \
                  [--ifname unbit-wg]"
            .into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unbit-links: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pubkey() -> Result<(), String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("stdin: {e}"))?;
    println!("{}", Key::parse(&line)?.public().to_base64());
    Ok(())
}

struct Opts {
    node: String,
    key: PathBuf,
    members: PathBuf,
    ifname: String,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let (mut node, mut key, mut members, mut ifname) = (None, None, None, "unbit-wg".to_string());
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?.clone();
            match flag.as_str() {
                "--node" => node = Some(value),
                "--key" => key = Some(PathBuf::from(value)),
                "--members" => members = Some(PathBuf::from(value)),
                "--ifname" => ifname = value,
                other => return Err(format!("unknown option {other}")),
            }
        }
        // What the node's table and `ip` accept: at most 15 bytes, no '/', no spaces.
        let ifname_ok = !ifname.is_empty()
            && ifname.len() <= 15
            && ifname.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !ifname_ok {
            return Err(format!("--ifname {ifname:?} is not an interface name (1 to 15 of a-z 0-9 - _ .)"));
        }
        Ok(Opts {
            node: node.ok_or("--node is required")?,
            key: key.ok_or("--key is required")?,
            members: members.ok_or("--members is required")?,
            ifname,
        })
    }

    fn config(&self) -> Result<NodeConfig, String> {
        let key = read_private_key(&self.key)?;
        let text = std::fs::read_to_string(&self.members)
            .map_err(|e| format!("links members file {}: {e}", self.members.display()))?;
        let members = parse_members(&text).map_err(|e| format!("{}: {e}", self.members.display()))?;
        NodeConfig::new(&self.node, key, &members)
    }
}

fn run(opts: Opts) -> Result<(), String> {
    // Before any thread: boringtun's and the watcher inherit the mask, so the signals wait
    // for this thread's sigwait and nothing else.
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        signals.add(s);
    }
    signals.thread_block().map_err(|e| format!("block signals: {e}"))?;

    let cfg = opts.config()?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let device_config = DeviceConfig {
        n_threads: 2,
        use_connected_socket: true,
        use_multi_queue: false,
        uapi_fd: theirs.into_raw_fd(),
    };
    let device = DeviceHandle::new(&opts.ifname, device_config)
        .map_err(|e| format!("create the tunnel interface {}: {e:?}", opts.ifname))?;
    let mut tunnel = Device { ifname: opts.ifname.clone(), uapi: ours };
    tunnel.set_peers(&cfg).map_err(|e| format!("{}: {e}", opts.ifname))?;
    ip(&[&format!("link set dev {} mtu {TUNNEL_MTU} up", opts.ifname)])?;
    tunnel.sync_routes(&cfg.remote_addresses())?;
    log_config(&opts, &cfg);

    let watched = opts.members.clone();
    let mut seen = stamp(&watched);
    let mut follower = Follower::new(cfg);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = stamp(&watched);
        if now != seen {
            seen = now;
            match opts.config() {
                Ok(cfg) => follower.want(cfg, Instant::now()),
                Err(e) => eprintln!("unbit-links: {e}; keeping the previous peers"),
            }
        }
        match follower.tick(Instant::now(), &mut tunnel) {
            None => {}
            Some(Outcome::Applied { after_failures: 0 }) => log_config(&opts, follower.applied()),
            Some(Outcome::Applied { after_failures }) => {
                eprintln!("unbit-links: {}: the members file is applied (attempt {})", opts.ifname, after_failures + 1);
                log_config(&opts, follower.applied());
            }
            Some(Outcome::Failed { error, failures, retry_in }) => eprintln!(
                "unbit-links: {}: cannot apply the members file (attempt {failures}): {error}; retrying in {} s",
                opts.ifname,
                retry_in.as_secs()
            ),
        }
    });

    let signal = signals.wait().map_err(|e| format!("sigwait: {e}"))?;
    eprintln!("unbit-links: {signal:?}: closing the tunnel (its interface and routes go with it)");
    drop(device);
    Ok(())
}

fn log_config(opts: &Opts, cfg: &NodeConfig) {
    let peers: Vec<String> =
        cfg.peers.iter().map(|p| format!("{} at {} ({} containers)", p.name, p.endpoint, p.containers.len())).collect();
    eprintln!(
        "unbit-links: node {}: {} listening on {}, public key {}, peers: {}",
        opts.node,
        opts.ifname,
        cfg.listen_port,
        cfg.private_key.public().to_base64(),
        if peers.is_empty() { "none".to_string() } else { peers.join(", ") }
    );
}

/// `(dev, ino, mtime ns, size)`; `None` while the file is missing.
fn stamp(path: &Path) -> Option<(u64, u64, i128, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()), m.size()))
}

/// The boringtun device: its UAPI socket, and its interface for `ip`.
struct Device {
    ifname: String,
    uapi: UnixStream,
}

impl Tunnel for Device {
    /// One UAPI `set` through the device's socket pair; the answer is `errno=0` on success.
    fn set_peers(&mut self, cfg: &NodeConfig) -> Result<(), String> {
        self.uapi.write_all(cfg.uapi_set().as_bytes()).map_err(|e| format!("configure the tunnel: {e}"))?;
        let mut reader = BufReader::new(&self.uapi);
        let mut answer = String::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).map_err(|e| format!("configure the tunnel: {e}"))?;
            if n == 0 || line == "\n" {
                break;
            }
            answer.push_str(&line);
        }
        if answer.trim() == "errno=0" {
            Ok(())
        } else {
            Err(format!("the tunnel refused its configuration: {:?}", answer.trim()))
        }
    }

    /// Reads the /32 routes the interface has now and runs one `ip -batch` for the difference:
    /// whatever a failed run left (or someone removed), the next one converges.
    fn sync_routes(&mut self, want: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
        let have = host_routes(&self.ifname)?;
        let ifname = &self.ifname;
        let mut lines: Vec<String> = have.difference(want).map(|a| format!("route del {a}/32 dev {ifname}")).collect();
        lines.extend(want.difference(&have).map(|a| format!("route replace {a}/32 dev {ifname}")));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        ip(&refs)
    }
}

/// The host routes (`a.b.c.d`, no prefix: /32) of the main table through `ifname`.
fn host_routes(ifname: &str) -> Result<BTreeSet<Ipv4Addr>, String> {
    let out = Command::new(ip_binary())
        .args(["-4", "route", "show", "dev", ifname])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", ip_binary()))?;
    if !out.status.success() {
        return Err(format!("ip route show dev {ifname}: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect())
}

fn ip_binary() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/bin/ip"].into_iter().find(|p| Path::new(p).exists()).unwrap_or("ip")
}

/// iproute2 (`ip -force -batch -`): every line is tried; a failure names its line.
fn ip(lines: &[&str]) -> Result<(), String> {
    if lines.is_empty() {
        return Ok(());
    }
    let binary = ip_binary();
    let mut child = Command::new(binary)
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run {binary}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all((lines.join("\n") + "\n").as_bytes()).map_err(|e| format!("write to ip: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("wait for ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip -batch refused: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}
