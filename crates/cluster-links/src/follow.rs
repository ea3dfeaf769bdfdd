//! Following the members file: what the tunnel should hold (the newest good file) against what
//! it holds, and when to try again after a failed apply.
//!
//! A failed apply (boringtun refusing the UAPI request, `ip` failing) is not the end of that
//! file: the change stays pending and is retried after 1 s, 2 s, 4 s ... at most 30 s apart,
//! until it applies or a newer file replaces it. A newer file is tried at once (it may be the
//! operator's fix); the same file again (touched, or rewritten unchanged) does not cut the
//! wait short, so nothing retries faster than the backoff. The side effects are behind
//! [`Tunnel`], so the decisions are tested without a kernel.

use crate::NodeConfig;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The wait after the first failed attempt; it doubles after each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// What applying a configuration does to the node.
pub trait Tunnel {
    /// Replaces the tunnel's key, port and peers with `cfg`'s.
    fn set_peers(&mut self, cfg: &NodeConfig) -> Result<(), String>;
    /// Makes the routes into the tunnel exactly `want`, whatever routes it has now (a retry
    /// after a partial failure must converge, not trip over what the last try already did).
    fn sync_routes(&mut self, want: &BTreeSet<Ipv4Addr>) -> Result<(), String>;
}

/// What one attempt did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pending configuration is in place; `after_failures` attempts failed before.
    Applied { after_failures: u32 },
    /// This attempt failed (`failures` so far for this configuration); the next is in `retry_in`.
    Failed { error: String, failures: u32, retry_in: Duration },
}

struct Pending {
    cfg: NodeConfig,
    /// The peers of `cfg` are set: a retry only syncs the routes, and does not reset the
    /// tunnel's sessions again (a UAPI set replaces every peer).
    peers_set: bool,
    failures: u32,
    next_try: Instant,
    backoff: Duration,
}

/// The applied configuration, and the one the file asks for while it is not applied yet.
pub struct Follower {
    applied: NodeConfig,
    pending: Option<Pending>,
}

impl Follower {
    /// `applied`: what the tunnel holds (applied at start).
    pub fn new(applied: NodeConfig) -> Follower {
        Follower { applied, pending: None }
    }

    /// The configuration last applied whole.
    pub fn applied(&self) -> &NodeConfig {
        &self.applied
    }

    /// The configuration waiting for a retry, if any.
    pub fn pending(&self) -> Option<&NodeConfig> {
        self.pending.as_ref().map(|p| &p.cfg)
    }

    /// The members file now says `cfg`: a new configuration is tried at the next
    /// [`Follower::tick`], replacing any pending one.
    pub fn want(&mut self, cfg: NodeConfig, now: Instant) {
        let same = match &self.pending {
            Some(p) => p.cfg == cfg,
            None => self.applied == cfg,
        };
        if !same {
            // Even when `cfg` is the applied one: a failed attempt may have changed peers or
            // routes since, so it is applied again.
            self.pending = Some(Pending { cfg, peers_set: false, failures: 0, next_try: now, backoff: FIRST_RETRY });
        }
    }

    /// Tries the pending configuration when it is due; `None` when nothing was tried.
    pub fn tick(&mut self, now: Instant, tunnel: &mut impl Tunnel) -> Option<Outcome> {
        let p = self.pending.as_mut()?;
        if now < p.next_try {
            return None;
        }
        let mut result = Ok(());
        if !p.peers_set {
            result = tunnel.set_peers(&p.cfg);
            p.peers_set = result.is_ok();
        }
        if result.is_ok() {
            result = tunnel.sync_routes(&p.cfg.remote_addresses());
        }
        match result {
            Ok(()) => {
                let done = self.pending.take()?;
                self.applied = done.cfg;
                Some(Outcome::Applied { after_failures: done.failures })
            }
            Err(error) => {
                p.failures += 1;
                let retry_in = p.backoff;
                p.next_try = now + retry_in;
                p.backoff = (p.backoff * 2).min(MAX_RETRY);
                Some(Outcome::Failed { error, failures: p.failures, retry_in })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Key, Member};

    /// Records every call; the first `fail` calls of each kind fail.
    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        fail_peers: u32,
        fail_routes: u32,
    }

    impl Tunnel for Fake {
        fn set_peers(&mut self, cfg: &NodeConfig) -> Result<(), String> {
            self.calls.push(format!("peers {}", cfg.peers.len()));
            if self.fail_peers > 0 {
                self.fail_peers -= 1;
                return Err("the tunnel refused".into());
            }
            Ok(())
        }

        fn sync_routes(&mut self, want: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
            self.calls.push(format!("routes {}", want.len()));
            if self.fail_routes > 0 {
                self.fail_routes -= 1;
                return Err("ip -batch refused".into());
            }
            Ok(())
        }
    }

    /// A node with `n` peers, each running one container.
    fn cfg(n: u8) -> NodeConfig {
        let peers = (0..n)
            .map(|i| Member {
                name: format!("n{i}"),
                endpoint: format!("192.168.77.{}:51820", i + 2).parse().unwrap(),
                public_key: Key([i + 2; 32]).public(),
                containers: BTreeSet::from([31380 + u32::from(i)]),
            })
            .collect();
        NodeConfig { private_key: Key([1; 32]), listen_port: 51820, peers }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A follower that applied `cfg(1)` and was just asked for `cfg(2)`, at the time returned.
    fn asked_for_2() -> (Follower, Instant) {
        let t0 = Instant::now();
        let mut f = Follower::new(cfg(1));
        f.want(cfg(2), t0);
        (f, t0)
    }

    #[test]
    fn a_change_that_fails_twice_is_retried_with_backoff_until_it_applies() {
        let (mut f, t0) = asked_for_2();
        let mut fake = Fake { fail_routes: 2, ..Fake::default() };
        let failed = |failures, retry_in| Outcome::Failed { error: "ip -batch refused".into(), failures, retry_in };
        assert_eq!(f.tick(t0, &mut fake), Some(failed(1, secs(1))));
        assert_eq!(f.tick(t0 + Duration::from_millis(999), &mut fake), None, "retried before its time");
        assert_eq!(f.tick(t0 + secs(1), &mut fake), Some(failed(2, secs(2))));
        assert_eq!(f.tick(t0 + secs(2), &mut fake), None, "retried before its time");
        assert_eq!(f.pending(), Some(&cfg(2)));
        assert_eq!(f.applied(), &cfg(1), "a failed apply counted as applied");
        assert_eq!(f.tick(t0 + secs(3), &mut fake), Some(Outcome::Applied { after_failures: 2 }));
        assert_eq!(f.applied(), &cfg(2));
        assert_eq!(f.pending(), None);
        // The peers were set by the first attempt: the retries only converge the routes.
        assert_eq!(fake.calls, ["peers 2", "routes 2", "routes 2", "routes 2"]);
        // Applied: nothing more to do, whenever asked.
        assert_eq!(f.tick(t0 + secs(100), &mut fake), None);
        assert_eq!(fake.calls.len(), 4);
    }

    #[test]
    fn a_newer_file_while_a_retry_is_pending_is_tried_at_once_and_applied() {
        let (mut f, t0) = asked_for_2();
        let mut fake = Fake { fail_peers: 1, fail_routes: 1, ..Fake::default() };
        assert!(matches!(f.tick(t0, &mut fake), Some(Outcome::Failed { failures: 1, .. })));
        // The operator fixes the file a moment later: no waiting out the backoff.
        f.want(cfg(3), t0 + Duration::from_millis(300));
        assert!(matches!(f.tick(t0 + Duration::from_millis(300), &mut fake), Some(Outcome::Failed { .. })));
        f.want(cfg(4), t0 + Duration::from_millis(600));
        assert_eq!(f.tick(t0 + Duration::from_millis(600), &mut fake), Some(Outcome::Applied { after_failures: 0 }));
        assert_eq!(f.applied(), &cfg(4), "the newest file is the one applied");
        assert_eq!(fake.calls, ["peers 2", "peers 3", "routes 3", "peers 4", "routes 4"]);
    }

    #[test]
    fn going_back_to_the_applied_file_while_a_retry_is_pending_applies_it_again() {
        let (mut f, t0) = asked_for_2();
        let mut fake = Fake { fail_routes: 1, ..Fake::default() };
        assert!(matches!(f.tick(t0, &mut fake), Some(Outcome::Failed { .. })));
        // The failed attempt set cfg(2)'s peers: cfg(1) must be set again, not skipped.
        f.want(cfg(1), t0);
        assert_eq!(f.tick(t0, &mut fake), Some(Outcome::Applied { after_failures: 0 }));
        assert_eq!(fake.calls, ["peers 2", "routes 2", "peers 1", "routes 1"]);
        // Once applied, the same file again is nothing to do.
        f.want(cfg(1), t0);
        assert_eq!(f.tick(t0, &mut fake), None);
    }

    #[test]
    fn a_failing_apply_backs_off_to_one_attempt_every_30_s_and_the_same_file_does_not_hurry_it() {
        let (mut f, t0) = asked_for_2();
        let mut fake = Fake { fail_routes: u32::MAX, ..Fake::default() };
        let mut attempts = Vec::new();
        // Ten minutes of ticks, the file rewritten unchanged every second (node-sync, a touch).
        for s in 0..600 {
            let now = t0 + secs(s);
            f.want(cfg(2), now);
            if let Some(outcome) = f.tick(now, &mut fake) {
                let Outcome::Failed { failures, retry_in, .. } = outcome else { panic!("applied: {outcome:?}") };
                assert_eq!(failures as usize, attempts.len() + 1);
                assert!(retry_in <= MAX_RETRY);
                attempts.push(s);
            }
        }
        let gaps: Vec<u64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..6], [1, 2, 4, 8, 16, 30], "attempts at {attempts:?}");
        assert!(gaps[6..].iter().all(|&g| g == 30), "attempts at {attempts:?}");
        assert_eq!(attempts.len(), 24, "attempts at {attempts:?}");
        assert_eq!(fake.calls.len(), 1 + attempts.len(), "one set of peers, one route sync per attempt");
    }
}
