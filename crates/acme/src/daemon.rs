//! The issuer's loop: read the wanted names, order what is missing or due, install it, write
//! the index, wait until the next thing is due (or the domains file changes, or the operator
//! asks for a renewal). One order at a time: a node adds names one by one, and a CA's rate
//! limits are per account.

use crate::cert::{self, CertInfo};
use crate::domains::{self, Wanted};
use crate::issuer::Issuer;
use crate::responder::{self, Challenges};
use crate::schedule;
use crate::settings::Settings;
use crate::store::{IndexEntry, NameState, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Config {
    pub settings: Settings,
    pub domains_file: PathBuf,
    pub store: PathBuf,
    pub socket: PathBuf,
    /// Group of the socket and its directory: the router's http processes' user.
    pub socket_gid: Option<u32>,
    /// Where container homes are, for failures told to the owner's `~/logs/emperor.log`.
    pub containers_dir: Option<PathBuf>,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub order_timeout: Duration,
    pub retire_grace: Duration,
    pub once: bool,
}

pub fn log(msg: &str) {
    eprintln!("[unbit-acme] {msg}");
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn date(t: i64) -> String {
    openssl::asn1::Asn1Time::from_unix(t).map(|a| a.to_string()).unwrap_or_else(|_| t.to_string())
}

/// Text that reaches a customer's log: one line, no control characters (the CA's detail may
/// quote what the customer's own server answered).
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The file's identity, to notice a rewrite (node-sync renames a new file into place).
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.ino(), m.len()))
}

/// The installed certificate of `name` when it is usable: parses, covers the name, matches
/// its key. Anything else is ordered again.
fn installed(store: &Store, name: &str) -> Option<CertInfo> {
    let pair = store.current(name)?;
    let info = cert::parse_chain(&pair.chain_pem).ok()?;
    (info.names.iter().any(|n| n == name) && cert::key_matches(&pair.chain_pem, &pair.key_pem)).then_some(info)
}

struct Daemon {
    cfg: Config,
    store: Store,
    challenges: Challenges,
    issuer: Option<Issuer>,
    wanted: Vec<Wanted>,
    domains_stamp: Option<Option<(SystemTime, u64, u64)>>,
    state: BTreeMap<String, NameState>,
    /// Parsed installed certificates (files are read again only when the issuer wrote them).
    infos: HashMap<String, Option<CertInfo>>,
    /// ARI per name: the window, and when to ask again.
    ari: HashMap<String, (Option<(i64, i64)>, i64)>,
    /// Failed connections to the CA in a row, and no new one before this time.
    connect_failures: u32,
    connect_after: i64,
    said_off: bool,
}

impl Daemon {
    fn tell_owner(&self, w: &Wanted, text: &str) {
        let Some(containers) = &self.cfg.containers_dir else { return };
        let paths = jail::NodePaths { containers: containers.clone(), ..Default::default() };
        for uid in &w.owner_uids {
            if let Err(e) = jail::append_to_customer_log(&paths, *uid, &format!("[unbit-acme] {}\n", one_line(text))) {
                log(&format!("{}: cannot tell container {uid}: {e}", w.name));
            }
        }
    }

    fn reload_domains(&mut self) {
        let now_stamp = stamp(&self.cfg.domains_file);
        if self.domains_stamp.as_ref() == Some(&now_stamp) {
            return;
        }
        self.domains_stamp = Some(now_stamp);
        match domains::read(&self.cfg.domains_file) {
            Ok(parsed) => {
                for why in &parsed.skipped {
                    log(&format!("{}: {why}", self.cfg.domains_file.display()));
                }
                if parsed.wanted != self.wanted {
                    log(&format!("{} names with automatic TLS", parsed.wanted.len()));
                }
                self.wanted = parsed.wanted;
            }
            Err(e) => log(&format!("{e}; keeping the last good list")),
        }
    }

    /// Files of names that left the list are kept for the grace period, then removed.
    fn retire_and_purge(&mut self, now: i64) {
        let wanted: std::collections::BTreeSet<&str> = self.wanted.iter().map(|w| w.name.as_str()).collect();
        for name in self.store.names() {
            if wanted.contains(name.as_str()) {
                if self.store.unretire(&name) {
                    log(&format!("{name}: wanted again, its certificate is back in the index"));
                }
            } else if let Ok(true) = self.store.retire(&name, now) {
                log(&format!(
                    "{name}: no longer has automatic TLS here; out of the index, files kept {} days",
                    self.cfg.retire_grace.as_secs() / 86_400
                ));
                self.state.remove(&name);
                self.infos.remove(&name);
            }
        }
        for name in self.store.purge_retired(now, self.cfg.retire_grace.as_secs() as i64) {
            log(&format!("{name}: files removed (retired over {} days ago)", self.cfg.retire_grace.as_secs() / 86_400));
        }
    }

    fn info(&mut self, name: &str) -> Option<CertInfo> {
        if !self.infos.contains_key(name) {
            let info = installed(&self.store, name);
            self.infos.insert(name.to_string(), info);
        }
        self.infos.get(name).cloned().flatten()
    }

    fn write_index(&mut self) {
        let mut entries = Vec::new();
        for w in self.wanted.clone() {
            if let Some(info) = self.info(&w.name) {
                let (fullchain, key) = self.store.live_paths(&w.name);
                let owner_uids = w.owner_uids.iter().copied().collect();
                entries.push(IndexEntry {
                    name: w.name.clone(),
                    fullchain,
                    key,
                    not_after: info.not_after,
                    owner_uids,
                });
            }
        }
        match self.store.write_index(&entries) {
            Ok(true) => log(&format!("index: {} certificates in {}", entries.len(), self.store.index_path().display())),
            Ok(false) => {}
            Err(e) => log(&format!("index: {e}")),
        }
    }

    /// When `name` is due (unix time), ARI consulted when the CA has it.
    async fn due(&mut self, name: &str, now: i64) -> i64 {
        if self.store.renewal_requested(name) {
            return now;
        }
        let Some(info) = self.info(name) else { return now };
        if let Some(issuer) = &self.issuer {
            let ask = self.ari.get(name).is_none_or(|(_, again)| *again <= now);
            if ask {
                let answer = issuer.renewal_window(&info, &log).await;
                let (window, again) = match answer {
                    Some((w, again)) => (Some(w), now + again.as_secs().clamp(3600, 86_400) as i64),
                    None => (None, now + 86_400),
                };
                self.ari.insert(name.to_string(), (window, again));
            }
        }
        let window = self.ari.get(name).and_then(|(w, _)| *w);
        let seed = u64::from_str_radix(&info.serial_hex.chars().rev().take(16).collect::<String>(), 16).unwrap_or(0);
        schedule::due_at(info.not_before, info.not_after, window, seed)
    }

    async fn connect(&mut self, directory: &str, now: i64) -> bool {
        if self.issuer.is_some() {
            return true;
        }
        if now < self.connect_after {
            return false;
        }
        match Issuer::connect(
            &self.cfg.settings,
            directory,
            &self.store,
            self.challenges.clone(),
            self.cfg.order_timeout,
            &log,
        )
        .await
        {
            Ok(issuer) => {
                self.issuer = Some(issuer);
                self.connect_failures = 0;
                true
            }
            Err(e) => {
                self.connect_failures += 1;
                let wait = schedule::backoff(self.connect_failures, self.cfg.retry_base, self.cfg.retry_max);
                self.connect_after = now + wait.as_secs() as i64;
                log(&format!("{e}; next try in {}s", wait.as_secs()));
                false
            }
        }
    }

    async fn attempt(&mut self, w: &Wanted, directory: &str) {
        let name = &w.name;
        let old = self.info(name);
        let started = Instant::now();
        let issuer = self.issuer.as_ref().expect("connected before an attempt");
        let result = issuer.issue(name, old.as_ref()).await;
        let now = unix_now();
        match result {
            Ok(issued) => {
                let version = issued.info.serial_hex.clone();
                if let Err(e) = self.store.install(name, &version, &issued.chain_pem, &issued.key_pem) {
                    log(&format!("{name}: certificate issued but not installed: {e}"));
                    self.failed(w, now, format!("installing the certificate: {e}"));
                    return;
                }
                self.store.clear_renewal_request(name);
                self.state.remove(name);
                self.ari.remove(name);
                let what = if old.is_some() { "renewed" } else { "issued" };
                log(&format!(
                    "{name}: certificate {what} in {:.1} s (serial {version}, valid until {})",
                    started.elapsed().as_secs_f64(),
                    date(issued.info.not_after)
                ));
                self.tell_owner(
                    w,
                    &format!("{name}: HTTPS certificate {what}, valid until {}", date(issued.info.not_after)),
                );
                self.infos.insert(name.clone(), Some(issued.info));
                self.write_index();
            }
            Err(f) => {
                if f.account_gone {
                    log(&format!("the CA no longer knows this node's account; registering a new one ({})", f.message));
                    Issuer::forget_account(&self.store, directory);
                    self.issuer = None;
                }
                self.failed(w, now, f.message);
            }
        }
    }

    fn failed(&mut self, w: &Wanted, now: i64, message: String) {
        let st = self.state.entry(w.name.clone()).or_default();
        st.failures += 1;
        let wait = schedule::backoff(st.failures, self.cfg.retry_base, self.cfg.retry_max);
        st.next_attempt = now + wait.as_secs() as i64;
        st.last_error = message.clone();
        let failures = st.failures;
        let serving = self.infos.get(&w.name).is_some_and(Option::is_some);
        let what = if serving { "renewal" } else { "certificate" };
        log(&format!("{}: {what} attempt {failures} failed: {message}; next try in {}s", w.name, wait.as_secs()));
        let mut told = format!("{}: HTTPS {what} failed: {message}; next try in {}s", w.name, wait.as_secs());
        if serving {
            told.push_str(" (the current certificate is still served)");
        } else {
            told.push_str(&format!(
                " (check that {} points to this server and that {} reaches it on port 80)",
                w.name,
                responder::CHALLENGE_PREFIX
            ));
        }
        self.tell_owner(w, &told);
        if let Err(e) = self.store.save_state(&self.state) {
            log(&format!("state: {e}"));
        }
    }

    /// One pass; returns the unix time something is next due.
    async fn pass(&mut self) -> i64 {
        let now = unix_now();
        self.reload_domains();
        self.retire_and_purge(now);
        let mut next = now + 3600;
        let directory = self.cfg.settings.directory.clone();
        for w in self.wanted.clone() {
            let due = self.due(&w.name, now).await;
            let at = due.max(self.state.get(&w.name).map_or(0, |s| s.next_attempt));
            if at > unix_now() {
                next = next.min(at);
                continue;
            }
            let Some(directory) = directory.as_deref() else {
                if !self.said_off {
                    log("directory = off: no certificates are ordered on this node");
                    self.said_off = true;
                }
                break;
            };
            if !self.connect(directory, unix_now()).await {
                next = next.min(self.connect_after);
                break;
            }
            self.attempt(&w, directory).await;
            if let Some(s) = self.state.get(&w.name) {
                next = next.min(s.next_attempt);
            }
        }
        self.write_index();
        if let Err(e) = self.store.save_state(&self.state) {
            log(&format!("state: {e}"));
        }
        next
    }
}

/// Runs until killed (or one pass with `once`).
pub async fn run(cfg: Config) -> Result<(), String> {
    let store = Store::open(&cfg.store)?;
    let challenges = Challenges::default();
    let listener = responder::bind(&cfg.socket, cfg.socket_gid)?;
    log(&format!(
        "answering HTTP-01 challenges on {}; store {}; CA {}",
        cfg.socket.display(),
        store.root().display(),
        cfg.settings.directory.as_deref().unwrap_or("off")
    ));
    tokio::spawn(responder::serve(listener, challenges.clone(), cfg.socket.clone(), log));
    let state = store.load_state();
    let mut d = Daemon {
        cfg,
        store,
        challenges,
        issuer: None,
        wanted: Vec::new(),
        domains_stamp: None,
        state,
        infos: HashMap::new(),
        ari: HashMap::new(),
        connect_failures: 0,
        connect_after: 0,
        said_off: false,
    };
    loop {
        let next = d.pass().await;
        if d.cfg.once {
            return Ok(());
        }
        // Wake for the next due time, a new domains file, or an operator's `renew`.
        let wake = d.store.root().join(crate::store::WAKE_MARKER);
        while unix_now() < next {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if std::fs::remove_file(&wake).is_ok() {
                d.infos.clear();
                break;
            }
            if d.domains_stamp.as_ref() != Some(&stamp(&d.cfg.domains_file)) {
                break;
            }
        }
    }
}
