//! Finding a JID domain's XMPP server as RFC 6120 §3.2 says: the `_xmpp-client._tcp.<domain>`
//! SRV records, tried in priority order with a weighted random choice among equal priorities
//! (RFC 2782), each target's addresses in turn; a lone `.` target means the domain offers no
//! XMPP service; no SRV record (or no answer at all) falls back to the domain on port 5222.
//! Everything shares one deadline, so a domain with many dead targets cannot hold the relay's
//! XMPP worker longer than its timeout. The lookups go through [`Lookup`], so the ordering is
//! tested with a fake and the relay uses hickory's resolver (the system's or `--dns-server`).

use crate::xmpp::Failure;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::TokioAsyncResolver;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The port of the fallback (RFC 6120 §3.2.2).
pub const CLIENT_PORT: u16 = 5222;

/// One SRV record: its target as the DNS answer names it (`.` is "no service").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// The answers the connection needs; `srv` is `Ok(None)` when the name has no SRV record
/// (NXDOMAIN or no data), `Err` when no usable answer came (timeout, server failure).
pub trait Lookup {
    fn srv(&self, name: &str) -> Result<Option<Vec<Record>>, String>;
    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String>;
}

/// RFC 2782's order: ascending priority; within a priority, repeatedly pick a record with a
/// probability proportional to its weight. The draw is `0..sum` and the record picked is the
/// first whose running sum exceeds it (as Go's resolver does): RFC 2782's literal `0..=sum`
/// with `>=` gives the first record one extra share. Weight-0 records come after the weighted
/// ones of their priority, in the answer's order. `draw(n)` returns a uniform number in `0..n`
/// (`n` > 0).
pub fn order(mut records: Vec<Record>, draw: &mut dyn FnMut(u32) -> u32) -> Vec<Record> {
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    while !records.is_empty() {
        let priority = records[0].priority;
        let end = records.iter().position(|r| r.priority != priority).unwrap_or(records.len());
        let mut group: Vec<Record> = records.drain(..end).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let at = if total == 0 {
                0
            } else {
                let pick = draw(total).min(total - 1);
                let mut running = 0;
                group
                    .iter()
                    .position(|r| {
                        running += u32::from(r.weight);
                        running > pick
                    })
                    .unwrap_or(0)
            };
            ordered.push(group.remove(at));
        }
    }
    ordered
}

fn is_root(target: &str) -> bool {
    target.is_empty() || target == "."
}

/// `host:port` pairs to connect to, in order.
pub type Targets = Vec<(String, u16)>;

/// The `(host, port)` pairs to try for `domain`, in order, and what the SRV lookup said when it
/// gave no answer (kept for the error message if the fallback fails too). A single `.` target
/// is the domain saying it offers no XMPP client service: an error, no fallback.
pub fn plan(
    domain: &str,
    srv: Result<Option<Vec<Record>>, String>,
    draw: &mut dyn FnMut(u32) -> u32,
) -> Result<(Targets, Option<String>), String> {
    let name = srv_name(domain);
    match srv {
        Ok(Some(records)) if records.len() == 1 && is_root(&records[0].target) => {
            Err(format!("{domain} offers no XMPP client service (its SRV record {name} has the target \".\")"))
        }
        Ok(Some(records)) => {
            let usable: Vec<Record> = records.into_iter().filter(|r| !is_root(&r.target)).collect();
            if usable.is_empty() {
                return Err(format!("{domain}: the SRV records of {name} have no usable target"));
            }
            Ok((order(usable, draw).into_iter().map(|r| (r.target, r.port)).collect(), None))
        }
        Ok(None) => Ok((vec![(domain.to_string(), CLIENT_PORT)], None)),
        Err(e) => Ok((vec![(domain.to_string(), CLIENT_PORT)], Some(format!("SRV lookup of {name}: {e}")))),
    }
}

pub fn srv_name(domain: &str) -> String {
    format!("_xmpp-client._tcp.{}.", domain.trim_end_matches('.'))
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
}

/// A TCP connection to `domain`'s XMPP server, and the `host:port` it reached (for messages).
/// Every address of every target is tried in order before giving up (once SRV records are
/// found there is no fallback to the domain, RFC 6120 §3.2.1 step 7); the error lists each
/// target and address tried and why it failed. A domain without XMPP service is `Refused`.
pub fn connect(
    lookup: &dyn Lookup,
    domain: &str,
    timeout: Duration,
    draw: &mut dyn FnMut(u32) -> u32,
) -> Result<(TcpStream, String), Failure> {
    let deadline = Instant::now() + timeout;
    let (targets, srv_note) = if domain.parse::<IpAddr>().is_ok() {
        // An IP literal has no SRV records to ask for.
        (vec![(domain.to_string(), CLIENT_PORT)], None)
    } else {
        plan(domain, lookup.srv(&srv_name(domain)), draw).map_err(Failure::Refused)?
    };
    let mut tried = Vec::new();
    for (host, port) in &targets {
        let shown = format!("{}:{port}", host.trim_end_matches('.'));
        if remaining(deadline).is_none() {
            tried.push(format!("{shown}: not tried, the {}s timeout ran out", timeout.as_secs_f32()));
            continue;
        }
        let lookup_host =
            if host.parse::<IpAddr>().is_ok() || host.ends_with('.') { host.clone() } else { format!("{host}.") };
        let addresses = match lookup.addresses(&lookup_host) {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => {
                tried.push(format!("{shown}: no address"));
                continue;
            }
            Err(e) => {
                tried.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let addrs: Vec<SocketAddr> = addresses.into_iter().map(|ip| SocketAddr::new(ip, *port)).collect();
        match connect_any(&addrs, deadline, timeout) {
            Ok(tcp) => return Ok((tcp, shown)),
            Err(e) => tried.push(format!("{shown}: {e}")),
        }
    }
    let via = match (&srv_note, targets.len()) {
        (Some(note), _) => format!("{note}; fell back to {domain}:{CLIENT_PORT}"),
        (None, 1) if targets[0].0 == domain => format!("no SRV record {}, so {domain}:{CLIENT_PORT}", srv_name(domain)),
        (None, _) => format!("SRV records of {}", srv_name(domain)),
    };
    Err(Failure::Failed(format!("no XMPP server reachable for {domain} ({via}): {}", tried.join("; "))))
}

/// The operator's `--xmpp-server HOST:PORT`, resolved by the system (it may be in /etc/hosts),
/// each address in turn within the timeout.
pub fn connect_server(server: &str, timeout: Duration) -> Result<(TcpStream, String), String> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = server.to_socket_addrs().map_err(|e| format!("{server}: {e}"))?.collect();
    connect_any(&addrs, deadline, timeout).map(|tcp| (tcp, server.to_string())).map_err(|e| format!("{server}: {e}"))
}

fn connect_any(addrs: &[SocketAddr], deadline: Instant, timeout: Duration) -> Result<TcpStream, String> {
    let mut errors = Vec::new();
    for addr in addrs {
        let Some(left) = remaining(deadline) else {
            errors.push(format!("{addr}: not tried, the {}s timeout ran out", timeout.as_secs_f32()));
            continue;
        };
        match TcpStream::connect_timeout(addr, left) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => errors.push(format!("connect {addr}: {e}")),
        }
    }
    if errors.is_empty() {
        return Err("no address".into());
    }
    Err(errors.join(", "))
}

/// hickory's resolver: the system's configuration (`/etc/resolv.conf`), or one server. Its
/// queries are async; the XMPP client is blocking, so they are driven by the tokio runtime
/// the caller runs on (the relay's XMPP worker is one of its blocking threads), or by a
/// runtime of its own on a thread that has none (no second runtime inside the relay's).
pub struct Dns {
    resolver: TokioAsyncResolver,
    runtime: Driver,
}

enum Driver {
    Caller(tokio::runtime::Handle),
    Own(tokio::runtime::Runtime),
}

impl Dns {
    /// Each query may take half the send's `timeout` (the SRV query and a target's address
    /// query then fit in it); nothing is cached (a resolver lives for one send).
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<Dns, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = (timeout / 2).max(Duration::from_secs(1));
        opts.attempts = 1;
        opts.cache_size = 0;
        let config = match server {
            Some(addr) => ResolverConfig::from_parts(
                None,
                vec![],
                NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
            ),
            None => {
                hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
                    .0
            }
        };
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(handle) => Driver::Caller(handle),
            Err(_) => Driver::Own(
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("DNS resolver runtime: {e}"))?,
            ),
        };
        let _context = match &runtime {
            Driver::Caller(h) => h.enter(),
            Driver::Own(rt) => rt.enter(),
        };
        Ok(Dns { resolver: TokioAsyncResolver::tokio(config, opts), runtime })
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.runtime {
            Driver::Caller(h) => h.block_on(f),
            Driver::Own(rt) => rt.block_on(f),
        }
    }
}

impl Lookup for Dns {
    fn srv(&self, name: &str) -> Result<Option<Vec<Record>>, String> {
        match self.block_on(self.resolver.srv_lookup(name)) {
            Ok(answer) => Ok(Some(
                answer
                    .iter()
                    .map(|r| Record {
                        priority: r.priority(),
                        weight: r.weight(),
                        port: r.port(),
                        target: r.target().to_ascii(),
                    })
                    .collect(),
            )),
            Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        match self.block_on(self.resolver.lookup_ip(host)) {
            Ok(answer) => Ok(answer.iter().collect()),
            Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A uniform draw in `0..n` for [`order`].
pub fn random_draw(n: u32) -> u32 {
    fastrand::u32(0..n.max(1))
}

#[cfg(test)]
mod tests;
