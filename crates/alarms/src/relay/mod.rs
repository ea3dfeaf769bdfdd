//! `unbit-alarmd`: the node's alarm relay (root, a daemon of the node Emperor).
//!
//! It listens on one unix socket (in the routers' subscription dir, so every container sees
//! it at `/run/subscribe/alarms`), knows each sender by `SO_PEERCRED` (a container uid
//! alarms for itself only, uid 0 is the node Emperor and names the container), reads the
//! container's channels from the node's spec folder at every alarm (so a change made through
//! the API applies to the next alarm, no restart), de-duplicates per (container, kind) within
//! `alarm_freq`, and fans out: the container's console listeners, `~/logs/emperor.log`
//! (symlink-safe), the API record (node credentials), Slack, Pushover, Pushbullet and XMPP,
//! each (container, channel) with its own bounded queue, timeout and retries, so a channel
//! that is slow or down delays nothing else. It also checks disk usage against each
//! container's `quota_threshold` and memory use against `--memory-threshold`.

mod channels;
mod config;
mod memory;
mod quota;
mod server;

pub use config::Config;

use crate::dedup::Dedup;
use crate::protocol::Delivered;
use crate::services;
use channels::{Channel, Job};
use container_spec::ContainerSpec;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Alarms a container may raise per minute, whatever their kinds (de-duplication is per
/// kind; this bounds a container inventing kinds).
pub const BURST_PER_MINUTE: usize = 20;

pub struct Relay {
    cfg: Config,
    dedup: Mutex<Dedup>,
    recent: Mutex<HashMap<u32, Vec<i64>>>,
    watchers: Mutex<HashMap<u32, Vec<mpsc::Sender<String>>>>,
    /// Open connections per peer uid (see `server::MAX_CONNECTIONS`).
    connections: Mutex<HashMap<u32, usize>>,
    queues: Mutex<HashMap<(u32, Channel), mpsc::Sender<Job>>>,
    third_party: reqwest::Client,
    api: reqwest::Client,
}

pub fn log(msg: &str) {
    eprintln!("unbit-alarmd: {msg}");
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl Relay {
    pub fn new(cfg: Config) -> Result<Arc<Relay>, String> {
        let third_party = reqwest::Client::builder()
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            // A webhook must not bounce the node's request elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let api = cfg.api_client()?;
        Ok(Arc::new(Relay {
            cfg,
            dedup: Mutex::default(),
            recent: Mutex::default(),
            watchers: Mutex::default(),
            connections: Mutex::default(),
            queues: Mutex::default(),
            third_party,
            api,
        }))
    }

    /// The container's validated spec from the node's folder, or why there is none.
    pub fn spec(&self, uid: u32) -> Result<ContainerSpec, String> {
        let path = self.cfg.specs.join(format!("{uid}.json"));
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        ContainerSpec::from_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn within_burst(&self, uid: u32, now: i64) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let times = recent.entry(uid).or_default();
        times.retain(|t| now - *t < 60 && *t <= now);
        if times.len() >= BURST_PER_MINUTE {
            return false;
        }
        times.push(now);
        true
    }

    /// One alarm for `uid`: de-duplicated, then sent everywhere the container's settings say.
    pub async fn raise(self: &Arc<Self>, uid: u32, kind: &str, msg: &str) {
        let spec = match self.spec(uid) {
            Ok(s) => s,
            Err(e) => return log(&format!("container {uid}: alarm {kind} dropped: no usable spec ({e})")),
        };
        let now = unix_now();
        let freq = u64::from(spec.alarms.freq);
        if !self.dedup.lock().unwrap_or_else(|e| e.into_inner()).allow(uid, kind, now, freq) {
            return log(&format!("container {uid}: alarm {kind} suppressed (one per {}s)", freq.max(60)));
        }
        if !self.within_burst(uid, now) {
            return log(&format!("container {uid}: alarm {kind} dropped (over {BURST_PER_MINUTE} alarms a minute)"));
        }
        log(&format!("container {uid}: alarm {kind}: {msg}"));
        self.to_watchers(uid, &Delivered { kind: kind.into(), msg: msg.into(), unix: now });
        self.to_customer_log(uid, format!("[unbit alarm {kind}] {} {msg}\n", ctime(now)));

        let a = &spec.alarms;
        let api = services::api_record(&self.cfg.api_base, self.cfg.node_token.as_deref(), uid, kind, msg, now);
        self.enqueue(uid, Channel::Api, Job::Http(api));
        let bases = &self.cfg.bases;
        if let Some(hook) = a.slack_webhook.as_deref().filter(|s| !s.is_empty()) {
            match services::slack(bases, hook, uid, &self.cfg.node_name, msg) {
                Ok(r) => {
                    self.enqueue(uid, Channel::Slack, Job::Http(r));
                }
                Err(e) => self.to_customer_log(uid, format!("[unbit alarm] not sent to Slack: {e}\n")),
            }
        }
        if let (Some(user), Some(token)) = (nonempty(&a.pushover_user), nonempty(&a.pushover_token)) {
            let r = services::pushover(bases, token, user, nonempty(&a.pushover_sound), uid, msg, now);
            self.enqueue(uid, Channel::Pushover, Job::Http(r));
        }
        if let Some(token) = nonempty(&a.pushbullet_token) {
            self.enqueue(uid, Channel::Pushbullet, Job::Http(services::pushbullet(bases, token, uid, msg)));
        }
        if let (Some(jid), Some(secret), Some(dest)) =
            (nonempty(&a.jid), nonempty(&a.jid_secret), nonempty(&a.jid_destinations))
        {
            let job = Job::Xmpp {
                jid: jid.to_string(),
                password: secret.to_string(),
                destinations: crate::xmpp::destinations(dest),
                body: format!("{}: {msg}", services::title(uid)),
            };
            self.enqueue(uid, Channel::Xmpp, job);
        }
    }

    fn to_watchers(&self, uid: u32, d: &Delivered) {
        let mut line = serde_json::to_string(d).expect("serializes");
        line.push('\n');
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = watchers.get_mut(&uid) {
            // A listener that cannot keep up loses the line; one that is gone is forgotten.
            list.retain(|w| !matches!(w.try_send(line.clone()), Err(mpsc::error::TrySendError::Closed(_))));
        }
    }

    /// Appends to `~/logs/emperor.log` as root through the jail's symlink-safe append, off the
    /// async threads (it is a few syscalls on a local disk).
    fn to_customer_log(&self, uid: u32, text: String) {
        let paths = self.cfg.node_paths();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = jail::append_to_customer_log(&paths, uid, &text) {
                log(&format!("container {uid}: cannot write its emperor.log: {e}"));
            }
        });
    }

    /// Queues `job` for the (container, channel) worker; `false` when it was dropped.
    fn enqueue(self: &Arc<Self>, uid: u32, channel: Channel, job: Job) -> bool {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let tx = queues
            .entry((uid, channel))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(channels::QUEUE);
                tokio::spawn(channels::worker(self.clone(), uid, channel, rx));
                tx
            })
            .clone();
        drop(queues);
        if let Err(e) = tx.try_send(job) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "its queue is full",
                mpsc::error::TrySendError::Closed(_) => "its sender stopped",
            };
            log(&format!("container {uid}: alarm not queued for {}: {why}", channel.name()));
            self.to_customer_log(uid, format!("[unbit alarm] an alarm was not sent to {}: {why}\n", channel.name()));
            return false;
        }
        true
    }
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// `2026-11-30 16:18:05 UTC`
pub fn ctime(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// Runs the relay until the process is stopped.
pub fn run(cfg: Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let relay = Relay::new(cfg)?;
        let listener = server::bind(&relay.cfg.socket)?;
        log(&format!("listening on {}", relay.cfg.socket.display()));
        tokio::spawn(quota::watch(relay.clone()));
        server::serve(relay, listener).await
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod time_tests {
    #[test]
    fn ctime_is_utc() {
        assert_eq!(super::ctime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::ctime(784_111_777), "1994-11-06 08:49:37 UTC");
        assert_eq!(super::ctime(1_709_210_096), "2024-02-29 12:34:56 UTC");
    }
}
