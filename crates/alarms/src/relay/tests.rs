//! The relay's queues and workers against a scripted HTTP server on loopback: a full queue
//! drops (and says so) while other channels go on, a 429 is retried, a 4xx is given up at once;
//! and, as root, the quota alarm of a home on a real btrfs filesystem with qgroups.

use super::channels::{Channel, Job, QUEUE};
use super::quota::{self, HomeUsage};
use super::*;
use crate::retry::Policy;
use crate::services::{self, Bases};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does for a path: answer with a status (and `Retry-After`), or hold the
/// connection without answering.
#[derive(Clone, Copy)]
enum Reply {
    Status(u16, Option<u64>),
    Hold,
}

#[derive(Default)]
struct Script {
    seen: Vec<String>,
    replies: Vec<(&'static str, VecDeque<Reply>)>,
}

async fn server(replies: Vec<(&'static str, Vec<Reply>)>) -> (String, Arc<Mutex<Script>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let script = Arc::new(Mutex::new(Script {
        seen: Vec::new(),
        replies: replies.into_iter().map(|(p, r)| (p, r.into())).collect(),
    }));
    let shared = script.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                let reply = {
                    let mut s = shared.lock().unwrap();
                    s.seen.push(path.clone());
                    let found = s.replies.iter_mut().find(|(p, _)| path.starts_with(*p));
                    found.and_then(|(_, q)| q.pop_front()).unwrap_or(Reply::Status(200, None))
                };
                match reply {
                    Reply::Hold => tokio::time::sleep(Duration::from_secs(3600)).await,
                    Reply::Status(code, after) => {
                        let extra = after.map(|a| format!("Retry-After: {a}\r\n")).unwrap_or_default();
                        let answer =
                            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n");
                        let _ = conn.write_all(answer.as_bytes()).await;
                    }
                }
            });
        }
    });
    (base, script)
}

fn relay(base: &str, timeout: Duration) -> (Arc<Relay>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        specs: dir.path().join("specs"),
        containers: dir.path().join("containers"),
        socket: dir.path().join("alarms"),
        node_name: "n".into(),
        bases: Bases { slack: base.into(), pushover: base.into(), pushbullet: base.into() },
        xmpp: crate::xmpp::Connect::default(),
        timeout,
        quota_interval: Duration::from_secs(60),
        cgroup_name: "unbit".into(),
        memory_threshold: 0,
        policy: Policy { base: Duration::from_millis(10), ..Policy::default() },
        api_base: base.into(),
        node_token: Some("t".into()),
        node_tls: None,
    };
    (Relay::new(cfg).unwrap(), dir)
}

async fn wait_seen(script: &Mutex<Script>, prefix: &str, count: usize) -> Vec<String> {
    for _ in 0..1000 {
        let seen: Vec<String> = script.lock().unwrap().seen.iter().filter(|p| p.starts_with(prefix)).cloned().collect();
        if seen.len() >= count {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{prefix}: fewer than {count} requests: {:?}", script.lock().unwrap().seen);
}

fn pushbullet(base: &str) -> Job {
    let bases = Bases { slack: base.into(), pushover: base.into(), pushbullet: base.into() };
    Job::Http(services::pushbullet(&bases, "tok", 30601, "m"))
}

#[tokio::test]
async fn a_full_queue_drops_while_other_channels_go_on() {
    let (base, script) = server(vec![("/v2/pushes", vec![Reply::Hold])]).await;
    let (relay, _dir) = relay(&base, Duration::from_secs(3600));
    // The worker has not run yet (single-threaded runtime): exactly QUEUE fit.
    let queued: Vec<bool> =
        (0..QUEUE + 8).map(|_| relay.enqueue(30601, Channel::Pushbullet, pushbullet(&base))).collect();
    assert_eq!(queued.iter().filter(|q| **q).count(), QUEUE);
    assert!(queued[QUEUE..].iter().all(|q| !q));
    wait_seen(&script, "/v2/pushes", 1).await;
    // Pushbullet hangs on its first alarm; Pushover and another container's Pushbullet go on.
    let bases = Bases { slack: base.clone(), pushover: base.clone(), pushbullet: base.clone() };
    assert!(relay.enqueue(
        30601,
        Channel::Pushover,
        Job::Http(services::pushover(&bases, "t", "u", None, 30601, "m", 1))
    ));
    assert!(relay.enqueue(30602, Channel::Pushbullet, pushbullet(&base)));
    wait_seen(&script, "/1/messages.json", 1).await;
    wait_seen(&script, "/v2/pushes", 2).await;
}

#[tokio::test]
async fn a_429_is_retried_and_a_4xx_is_given_up_at_once() {
    let (base, script) = server(vec![
        ("/services/T/B/limited", vec![Reply::Status(429, Some(0)), Reply::Status(503, None)]),
        ("/services/T/B/gone", vec![Reply::Status(404, None)]),
    ])
    .await;
    let (relay, _dir) = relay(&base, Duration::from_secs(5));
    let slack = |path: &str| {
        let bases = Bases { slack: base.clone(), pushover: base.clone(), pushbullet: base.clone() };
        Job::Http(services::slack(&bases, &format!("https://hooks.slack.com{path}"), 30601, "n", "m").unwrap())
    };
    assert!(relay.enqueue(30601, Channel::Slack, slack("/services/T/B/limited")));
    // 429, then 503 with backoff, then delivered.
    assert_eq!(wait_seen(&script, "/services/T/B/limited", 3).await.len(), 3);
    // 404: one attempt. The next alarm in the same queue is served after it, so once it is
    // seen the first has been given up with no retry.
    assert!(relay.enqueue(30603, Channel::Slack, slack("/services/T/B/gone")));
    assert!(relay.enqueue(30603, Channel::Slack, slack("/services/T/B/after")));
    wait_seen(&script, "/services/T/B/after", 1).await;
    assert_eq!(wait_seen(&script, "/services/T/B/gone", 1).await.len(), 1);
    assert_eq!(wait_seen(&script, "/services/T/B/limited", 3).await.len(), 3, "no retry after delivery");
}

#[tokio::test]
async fn a_container_holds_a_bounded_number_of_connections() {
    use super::server::{Open, MAX_CONNECTIONS};
    let (relay, _dir) = relay("http://127.0.0.1:9", Duration::from_secs(1));
    let mut held: Vec<Open> = (0..MAX_CONNECTIONS).map(|_| Open::new(&relay, 30601).unwrap()).collect();
    assert!(Open::new(&relay, 30601).is_none());
    assert!(Open::new(&relay, 30602).is_some(), "another container is not affected");
    held.pop();
    assert!(Open::new(&relay, 30601).is_some(), "a closed connection frees its place");
}

/// A btrfs filesystem with qgroups enabled, on a loop device (`mount -o loop`, which frees the
/// device at umount) in a temp dir of its own; unmounted and its device freed on drop, also
/// when an assertion fails.
struct Btrfs {
    tmp: tempfile::TempDir,
    image: std::path::PathBuf,
    mnt: std::path::PathBuf,
}

impl Btrfs {
    fn new(size_mb: u64) -> Btrfs {
        assert!(nix::unistd::geteuid().is_root(), "this test mounts a btrfs filesystem: run it as root");
        let tmp = tempfile::Builder::new().prefix("unbit-alarms-btrfs-").tempdir().unwrap();
        let image = tmp.path().join("fs.img");
        std::fs::File::create(&image).unwrap().set_len(size_mb << 20).unwrap();
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let fs = Btrfs { tmp, image, mnt };
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (btrfs-progs installed?)"));
            assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(std::process::Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&fs.image));
        run(std::process::Command::new("mount").args(["-o", "loop,nosuid,nodev"]).arg(&fs.image).arg(&fs.mnt));
        run(std::process::Command::new("btrfs").args(["quota", "enable"]).arg(&fs.mnt));
        fs
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let umount = std::process::Command::new("umount").arg(&self.mnt).status();
        if !umount.is_ok_and(|s| s.success()) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        // a device still bound to the image (a lazy umount pending): freed explicitly
        if let Ok(out) = std::process::Command::new("losetup").arg("-j").arg(&self.image).output() {
            for dev in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(':').next()) {
                let _ = std::process::Command::new("losetup").arg("-d").arg(dev).status();
            }
        }
        let _ = &self.tmp;
    }
}

/// Root, btrfs-progs: on a node whose homes are btrfs subvolumes limited by qgroups, a home
/// over `quota_threshold` % of its quota raises `quota` (to the API and the customer's log),
/// with the qgroup's referenced bytes; a home under it has its usage read too.
#[tokio::test]
async fn a_btrfs_home_over_its_threshold_raises_the_quota_alarm() {
    let fs = Btrfs::new(256);
    let containers = fs.mnt.join("containers");
    std::fs::create_dir(&containers).unwrap();
    let (base, script) = server(vec![]).await;
    let (relay, dir) = relay(&base, Duration::from_secs(5));
    let cfg = Config { containers: containers.clone(), quota_interval: Duration::from_secs(1), ..relay.cfg.clone() };
    let relay = Relay::new(cfg).unwrap();
    std::fs::create_dir(dir.path().join("specs")).unwrap();
    let backend = jail::detect_quota_backend(&containers).unwrap();
    assert_eq!(backend.name(), "btrfs");
    for (uid, fill_mb) in [(30751, 12), (30752, 2)] {
        let mut spec = container_spec::fixtures::spec(uid);
        spec.storage_mb = 20;
        spec.alarms.quota_threshold = 50;
        std::fs::write(dir.path().join(format!("specs/{uid}.json")), serde_json::to_vec(&spec).unwrap()).unwrap();
        jail::prepare_home(&relay.cfg.node_paths(), &spec, backend.as_ref()).unwrap();
        std::fs::write(containers.join(format!("{uid}/tmp/fill")), vec![0x5au8; fill_mb << 20]).unwrap();
    }
    // btrfs accounts qgroups when it commits a transaction: a sync instead of waiting for one
    let out = std::process::Command::new("sync").arg("-f").arg(&containers).output().unwrap();
    assert!(out.status.success(), "sync -f: {}", String::from_utf8_lossy(&out.stderr));
    let usage = quota::disk_usage(&containers, &[30751, 30752, 30753]).unwrap();
    let mb = |u: &HomeUsage| u.clone().unwrap().map(|b| b >> 20);
    assert_eq!(
        usage.iter().map(|(uid, u)| (*uid, mb(u))).collect::<Vec<_>>(),
        vec![(30751, Some(12)), (30752, Some(2)), (30753, None)],
        "{usage:?}"
    );

    let watcher = tokio::spawn(quota::watch(relay.clone()));
    wait_seen(&script, "/api/node/v1/alarms/30751?", 1).await;
    let log = containers.join("30751/logs/emperor.log");
    let mut text = String::new();
    for _ in 0..500 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("[unbit alarm quota]") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watcher.abort();
    assert!(text.contains("container 30751: disk usage 12 MB of 20 MB (60%), over the 50% alarm threshold"), "{text}");
}
