//! The validator's process (a uWSGI gateway of the HTTP router instance): owns the public
//! subscription socket, reads each datagram with the kernel's sender credentials, asks the
//! [`Validator`], forwards accepted announces to the router's private socket, and reports
//! every rejection to the operator's log and to the container.

use crate::domains::DomainTable;
use crate::holder::{HolderLink, RouterUser};
use crate::homes::NodeHomes;
use crate::limits::{AnnounceBudget, LogBudget, LogDecision};
use crate::own_ip::NodeNetwork;
use crate::pins::{LinkDir, Publish};
use crate::validator::{NodeFacts, NotifyTarget, Outcome, Rejection, Sender, Validator};
use crate::watch::DomainsWatcher;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything the operator configures (see `settings.rs` for the option names).
#[derive(Clone, Debug)]
pub struct Config {
    /// The socket containers send to (`<subscribe dir>/http`, `/run/subscribe/http` inside).
    pub socket: PathBuf,
    /// The router's own subscription socket (`http-subscription-server`), in a private dir.
    pub router: PathBuf,
    pub domains: PathBuf,
    /// The host's containers dir (homes at `<dir>/<uid>`).
    pub homes: PathBuf,
    pub window_secs: i64,
    pub node_ttl_secs: i64,
    pub rate: u32,
    pub burst: u32,
    /// Seconds between activity reports (announces checked, mean time per check).
    pub report_secs: u64,
    /// When the router's http processes drop root (`http-uid`): the user a holder process
    /// keeps the pinned sockets as ([`crate::holder`]). `None`: the validator holds them.
    pub router_user: Option<RouterUser>,
    /// The router's certificate index ([`crate::sni`]).
    pub sni_dir: PathBuf,
    /// The platform's certificates (`unbit-acme`'s `index.json`), if the node issues any.
    pub platform_certs: Option<PathBuf>,
}

/// How often housekeeping runs (and so how soon a domains change applies), at most.
const TICK: Duration = Duration::from_millis(250);
/// Rejection lines per container per period.
const LOG_LINES: u32 = 10;
const LOG_PERIOD_SECS: f64 = 10.0;
/// How long the validator waits for room in the router's socket before dropping an announce
/// (the container re-announces in 10 s).
const ROUTER_SEND_TIMEOUT: Duration = Duration::from_millis(200);
/// Room for any unix datagram: a larger one is reported with its real size.
const RECV_BUFFER: usize = 65536;

/// Runs the validator until the process is stopped. `holder` is the validator's end of the
/// channel to the pin holder, when the router runs without root.
pub fn run(config: &Config, holder: Option<UnixDatagram>) -> Result<(), String> {
    // A router running as root opens `/proc/<this pid>/fd/<n>` (the pinned sockets). After
    // uWSGI drops privileges the process is not dumpable, which would hide /proc/<pid>/fd
    // from same-uid processes; the router is the same trust domain as the validator.
    nix::sys::prctl::set_dumpable(true).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    let private = check_private_dir(&config.router, config.router_user)?;
    // Names the router reaches pinned sockets by, never reused (see `pins`); emptied at start,
    // so a node left in the router by a validator that died reaches nothing.
    let pins = private.join("pins");
    let publisher: Box<dyn Publish + Send> = match (holder, config.router_user) {
        (Some(end), Some(user)) => Box::new(HolderLink::create(end, &pins, user, |l| uwsgi::log!("{l}"))?),
        _ => Box::new(LinkDir::create(&pins)?),
    };
    let certs = sni_index::IndexDir::create(&config.sni_dir, config.router_user.map(|u| u.gid))?;
    let socket = bind_public(&config.socket)?;
    let router = RouterLink::new(&config.router);
    let notifier = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    notifier.set_nonblocking(true).map_err(|e| e.to_string())?;

    let node = NodeFacts {
        homes: Box::new(NodeHomes::new(&config.homes)),
        host_homes: config.homes.clone(),
        publisher,
        ips: Box::new(NodeNetwork::new()),
        certs: Box::new(certs),
    };
    let mut validator = Validator::new(node, config.window_secs, config.node_ttl_secs);
    let watcher = DomainsWatcher::start(config.domains.clone())?;
    let mut platform_certs = config.platform_certs.clone().map(crate::platform_certs::Watcher::new);
    if let Some(first) = watcher.initial() {
        validator.set_table(first, unix_now());
    }
    let mut service = Service {
        config: config.clone(),
        router,
        notifier,
        validator,
        budget: AnnounceBudget::new(config.rate, config.burst),
        log_budget: LogBudget::new(LOG_LINES, LOG_PERIOD_SECS),
        started: Instant::now(),
        forwarded: 0,
        rejected: 0,
        checked: 0,
        check_time: Duration::ZERO,
        last_report: Instant::now(),
    };
    uwsgi::log!(
        "validating announces on {} for the router at {} (domains {}, homes {}, certificates {}, window {}s, {}/s per container)",
        config.socket.display(),
        config.router.display(),
        config.domains.display(),
        config.homes.display(),
        config.sni_dir.display(),
        config.window_secs,
        config.rate
    );

    let mut buf = vec![0u8; RECV_BUFFER];
    let mut last_tick = Instant::now();
    loop {
        match receive(&socket, &mut buf) {
            Ok(Some((sender, len))) => service.handle(sender, &buf[..len.min(RECV_BUFFER)], len),
            Ok(None) => {}
            Err(e) => uwsgi::log!("receiving on {}: {e}", config.socket.display()),
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if let Some(table) = watcher.latest() {
                service.install(table);
            }
            if let Some(certs) = platform_certs.as_mut().and_then(|w| w.changed()) {
                for line in service.validator.set_platform_certs(certs) {
                    uwsgi::log!("{line}");
                }
            }
            service.housekeeping();
        }
    }
}

struct Service {
    config: Config,
    router: RouterLink,
    notifier: UnixDatagram,
    validator: Validator,
    budget: AnnounceBudget,
    log_budget: LogBudget,
    started: Instant,
    forwarded: u64,
    rejected: u64,
    /// Announces checked since the last report, and the time the checks took.
    checked: u64,
    check_time: Duration,
    last_report: Instant,
}

impl Service {
    fn handle(&mut self, sender: Option<Sender>, packet: &[u8], real_len: usize) {
        let Some(sender) = sender else {
            // SO_PASSCRED makes the kernel attach them to every datagram; never expected.
            uwsgi::log!("REJECTED a datagram without sender credentials");
            return;
        };
        let clock = self.started.elapsed().as_secs_f64();
        if !self.budget.take(sender.uid, clock) {
            let reason = format!(
                "rate limit: more than {} announces/s (bursts of {}) from this container",
                self.config.rate, self.config.burst
            );
            self.reject(Rejection { sender, domain: None, reason, notify: None });
            return;
        }
        if real_len > crate::wire::MAX_PACKET {
            let r = self.validator.oversized(sender, real_len);
            self.reject(r);
            return;
        }
        let began = Instant::now();
        let outcome = self.validator.check(sender, packet, unix_now());
        self.checked += 1;
        self.check_time += began.elapsed();
        self.apply(outcome);
    }

    fn apply(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Forward { packets, log, message } => {
                for p in &packets {
                    self.hand_to_router(p);
                }
                self.forwarded += 1;
                if let Some(line) = log {
                    uwsgi::log!("{line}");
                }
                if let Some((text, target)) = message {
                    self.notify(&text, &target);
                }
            }
            Outcome::Drop => {}
            Outcome::Reject(r) => self.reject(r),
        }
    }

    fn reject(&mut self, r: Rejection) {
        self.rejected += 1;
        if self.log_budget.decide(r.sender.uid, &r.reason) == LogDecision::Suppress {
            return;
        }
        uwsgi::log!("{}", r.log_line());
        if let Some(target) = &r.notify {
            self.notify(&r.message(), target);
        }
    }

    fn hand_to_router(&mut self, packet: &[u8]) {
        if let Err(e) = self.router.send(packet) {
            uwsgi::log!("could not hand an announce to the router at {}: {e}", self.config.router.display());
        }
    }

    /// Best effort and never blocking: a container that does not read its notify socket
    /// only loses its own messages.
    fn notify(&self, text: &str, target: &NotifyTarget) {
        let _ = self.notifier.send_to(text.as_bytes(), &target.path);
    }

    fn install(&mut self, table: Arc<DomainTable>) {
        for (packet, line) in self.validator.set_table(table, unix_now()) {
            self.hand_to_router(&packet);
            uwsgi::log!("{line}");
        }
        let rechecked = self.validator.recheck_held(unix_now());
        if !rechecked.is_empty() {
            uwsgi::log!("checked again {} announces that arrived before their domain did", rechecked.len());
        }
        for outcome in rechecked {
            self.apply(outcome);
        }
    }

    fn housekeeping(&mut self) {
        if self.last_report.elapsed() >= Duration::from_secs(self.config.report_secs) && self.checked > 0 {
            uwsgi::log!(
                "{} announces checked in the last {}s ({} forwarded, {} rejected in total), {:.1} us per check, {} nodes live, {} sockets pinned, {} certificates",
                self.checked,
                self.last_report.elapsed().as_secs(),
                self.forwarded,
                self.rejected,
                self.check_time.as_secs_f64() * 1e6 / self.checked as f64,
                self.validator.live_nodes(),
                self.validator.pinned_sockets(),
                self.validator.certificates()
            );
            self.checked = 0;
            self.check_time = Duration::ZERO;
            self.last_report = Instant::now();
        }
        let clock = self.started.elapsed().as_secs_f64();
        for packet in self.validator.expire(unix_now()) {
            self.hand_to_router(&packet);
        }
        for problem in self.validator.take_problems() {
            uwsgi::log!("{problem}");
        }
        self.budget.expire(clock);
        for (uid, count, last) in self.log_budget.roll(clock) {
            uwsgi::log!(
                "REJECTED {count} more announces from container {uid} in the last {LOG_PERIOD_SECS}s, not logged one by one (last reason: {last})"
            );
        }
    }
}

/// The router's private socket, connected once (no path lookup per announce) and again when
/// the router re-created it.
struct RouterLink {
    path: PathBuf,
    socket: Option<UnixDatagram>,
}

impl RouterLink {
    fn new(path: &Path) -> RouterLink {
        RouterLink { path: path.to_path_buf(), socket: None }
    }

    fn send(&mut self, packet: &[u8]) -> std::io::Result<()> {
        match self.connected()?.send(packet) {
            Ok(_) => Ok(()),
            // The router is busy for longer than the timeout: drop, the vassal re-announces.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(e),
            // The router restarted (a new socket at the same path): connect again once.
            Err(_) => {
                self.socket = None;
                self.connected()?.send(packet).map(drop)
            }
        }
    }

    fn connected(&mut self) -> std::io::Result<&UnixDatagram> {
        let socket = match self.socket.take() {
            Some(s) => s,
            None => {
                let s = UnixDatagram::unbound()?;
                s.set_write_timeout(Some(ROUTER_SEND_TIMEOUT))?;
                s.connect(&self.path)?;
                s
            }
        };
        Ok(self.socket.insert(socket))
    }
}

/// One datagram and its sender; `None` when the read timed out (housekeeping time).
fn receive(socket: &UnixDatagram, buf: &mut [u8]) -> Result<Option<(Option<Sender>, usize)>, String> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    // MSG_TRUNC: the return value is the datagram's real length even when it did not fit.
    let msg = match recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::MSG_TRUNC) {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut sender = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmCredentials(cred) = c {
                sender = Some(Sender { uid: cred.uid(), pid: cred.pid() });
            }
        }
    }
    Ok(Some((sender, msg.bytes)))
}

/// Binds the socket containers see, world-writable (every container uid sends to it) and
/// with `SO_PASSCRED`, so the kernel reports each sender's uid and pid.
fn bind_public(path: &Path) -> Result<UnixDatagram, String> {
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| format!("removing the stale {}: {e}", path.display()))?
        }
        Ok(_) => return Err(format!("{} exists and is not a socket; refusing to replace it", path.display())),
        Err(_) => {}
    }
    let socket = UnixDatagram::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    setsockopt(&socket, sockopt::PassCred, &true).map_err(|e| format!("SO_PASSCRED on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    socket.set_read_timeout(Some(TICK)).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// The router accepts unsigned announces on its private socket: only the validator may reach
/// it, so its directory must be closed to everyone but the router's own user. When the
/// router's http processes run as another user, its group may enter (not write): they follow
/// the pins' names in it. Returns it.
fn check_private_dir(router: &Path, router_user: Option<RouterUser>) -> Result<PathBuf, String> {
    let dir = router
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("{}: the router's socket must be a path in a private directory", router.display()))?;
    let md = std::fs::metadata(dir).map_err(|e| format!("the router's private dir {}: {e}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    let group_may_enter = router_user.is_some_and(|u| u.gid == md.gid()) && md.mode() & 0o027 == 0;
    if !md.is_dir() || (md.mode() & 0o077 != 0 && !group_may_enter) || md.uid() != me {
        return Err(format!(
            "{} must be a directory owned by uid {me} with mode 0700, or 0710/0750 with the router user's group \
             (it is uid {}, mode {:o}): anyone who can write to the router's private socket {} bypasses the validator",
            dir.display(),
            md.uid(),
            md.mode() & 0o7777,
            router.display()
        ));
    }
    Ok(dir.to_path_buf())
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
