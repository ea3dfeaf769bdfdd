//! Freshness and replay rules, per node (a domain served at one endpoint of one container).
//!
//! Stock uWSGI signs `unix = now + cmd` but not the header's command byte, and only compares a
//! refresh with the *first* packet of a node, so any captured packet replays forever and a
//! captured subscribe flipped to cmd=1 is a valid unsubscribe. Here:
//!
//! * `unix` must be within `window` seconds of the validator's clock, both ways;
//! * a subscribe must be strictly newer than the last subscribe accepted for its node;
//! * an unsubscribe must be newer than that subscribe too (a genuine one carries `now + 1`),
//!   and come from the container that owns the node;
//! * a signature is accepted once: the same signed bytes with the other command byte (the
//!   cmd flip) or again later (a replay) are refused. The one exception is stock uWSGI's own
//!   start-up: it sends the identical subscribe twice within the same second, and the second
//!   copy is dropped without noise.
//!
//! State lives for `window` seconds after a node's last packet, which is as long as any of its
//! packets could pass the freshness check.

use crate::address::Endpoint;
use crate::wire::Command;
use std::collections::HashMap;

/// A node as the router sees it: one pool (key) and one endpoint of one container.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId {
    pub key: String,
    pub uid: u32,
    pub endpoint: Endpoint,
}

/// What the replay guard knows about one node.
#[derive(Debug)]
struct NodeHistory {
    last_subscribe: Option<i64>,
    /// (signature digest, command, validator clock when accepted), newest last.
    accepted: Vec<([u8; 32], Command, i64)>,
    /// The validator's clock when the node last had an accepted packet.
    last_activity: i64,
}

/// Why a packet failed the freshness or replay rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayVerdict {
    Fresh,
    /// The harmless duplicate stock uWSGI sends at start-up: drop it quietly.
    Duplicate,
    Refused(String),
}

pub struct ReplayGuard {
    window: i64,
    nodes: HashMap<NodeId, NodeHistory>,
}

/// How long (seconds) an identical copy of an accepted subscribe counts as stock uWSGI's
/// start-up double send rather than a replay.
const DUPLICATE_GRACE: i64 = 1;
/// Accepted signatures remembered per node (a node announces every 10 s; the window is a
/// minute or two).
const MAX_REMEMBERED: usize = 64;

impl ReplayGuard {
    pub fn new(window_secs: i64) -> Self {
        ReplayGuard { window: window_secs, nodes: HashMap::new() }
    }

    /// Checks a packet that passed every other rule; nothing is recorded until
    /// [`ReplayGuard::accept`].
    pub fn check(&self, node: &NodeId, cmd: Command, unix: i64, digest: &[u8; 32], now: i64) -> ReplayVerdict {
        if unix < now - self.window {
            return ReplayVerdict::Refused(format!(
                "timestamp {unix} is {}s old (window {}s): a stale or replayed packet",
                now - unix,
                self.window
            ));
        }
        if unix > now + self.window {
            return ReplayVerdict::Refused(format!(
                "timestamp {unix} is {}s in the future (window {}s): check the container's clock",
                unix - now,
                self.window
            ));
        }
        let Some(history) = self.nodes.get(node) else {
            return ReplayVerdict::Fresh;
        };
        if let Some((_, seen_cmd, seen_at)) = history.accepted.iter().rev().find(|(d, _, _)| d == digest) {
            match (*seen_cmd, cmd) {
                (Command::Subscribe, Command::Unsubscribe) => {
                    return ReplayVerdict::Refused(format!(
                        "this signed subscribe (timestamp {unix}) was already accepted; resent as unsubscribe: the command byte was flipped"
                    ))
                }
                // Stock uWSGI's restart: `unsubscribe` at second T carries T + 1, and the new
                // process's `subscribe` at T + 1 carries the same bytes. Only the container
                // owning the node can send it (sender uid and pinned socket), so it is judged
                // like any subscribe, by its timestamp, below.
                (Command::Unsubscribe, Command::Subscribe) => {}
                _ if now - seen_at <= DUPLICATE_GRACE && unix >= now - DUPLICATE_GRACE => {
                    return ReplayVerdict::Duplicate
                }
                _ => {
                    return ReplayVerdict::Refused(format!(
                        "replay: this signed {cmd} (timestamp {unix}) was already accepted"
                    ))
                }
            }
        }
        if let Some(last) = history.last_subscribe {
            if unix <= last {
                return ReplayVerdict::Refused(match cmd {
                    Command::Subscribe => {
                        format!("replay: timestamp {unix} is not newer than the last accepted subscribe ({last})")
                    }
                    Command::Unsubscribe => format!(
                        "an unsubscribe must be newer than the subscribe it cancels ({unix} <= {last}): a flipped or replayed packet"
                    ),
                });
            }
        }
        ReplayVerdict::Fresh
    }

    /// Records an accepted packet.
    pub fn accept(&mut self, node: NodeId, cmd: Command, unix: i64, digest: [u8; 32], now: i64) {
        let h = self.nodes.entry(node).or_insert(NodeHistory {
            last_subscribe: None,
            accepted: Vec::new(),
            last_activity: now,
        });
        if cmd == Command::Subscribe {
            h.last_subscribe = Some(h.last_subscribe.map_or(unix, |l| l.max(unix)));
        }
        h.accepted.push((digest, cmd, now));
        if h.accepted.len() > MAX_REMEMBERED {
            h.accepted.remove(0);
        }
        h.last_activity = now;
    }

    /// Forgets what can no longer matter: signatures older than the window (their packets
    /// fail the freshness check anyway) and nodes quiet for longer than the window.
    pub fn expire(&mut self, now: i64) {
        let horizon = now - self.window - DUPLICATE_GRACE;
        self.nodes.retain(|_, h| {
            h.accepted.retain(|(_, _, at)| *at >= horizon);
            h.last_activity >= horizon
        });
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId { key: "example.org".into(), uid: 30001, endpoint: Endpoint::RunSocket("a.socket".into()) }
    }

    const NOW: i64 = 1_800_000_000;

    fn refused(v: ReplayVerdict) -> String {
        match v {
            ReplayVerdict::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_outside_the_window_are_refused_both_ways() {
        let g = ReplayGuard::new(60);
        assert_eq!(g.check(&node(), Command::Subscribe, NOW - 60, &[1; 32], NOW), ReplayVerdict::Fresh);
        assert_eq!(g.check(&node(), Command::Subscribe, NOW + 60, &[1; 32], NOW), ReplayVerdict::Fresh);
        assert!(refused(g.check(&node(), Command::Subscribe, NOW - 61, &[1; 32], NOW)).contains("61s old"));
        // Stock uWSGI would take this one (it has no upper bound).
        assert!(refused(g.check(&node(), Command::Subscribe, NOW + 3600, &[1; 32], NOW)).contains("future"));
    }

    #[test]
    fn refreshes_must_move_forward_and_a_replay_is_refused() {
        let mut g = ReplayGuard::new(60);
        g.accept(node(), Command::Subscribe, NOW, [1; 32], NOW);
        // The same packet again, later: a replay.
        assert!(refused(g.check(&node(), Command::Subscribe, NOW, &[1; 32], NOW + 5)).starts_with("replay"));
        // Another packet with an old timestamp (stock uWSGI accepts anything newer than the
        // node's *first* packet).
        assert!(refused(g.check(&node(), Command::Subscribe, NOW - 3, &[2; 32], NOW + 5)).contains("not newer"));
        assert_eq!(g.check(&node(), Command::Subscribe, NOW + 10, &[3; 32], NOW + 10), ReplayVerdict::Fresh);
    }

    #[test]
    fn stock_uwsgis_double_send_at_start_up_is_a_quiet_duplicate() {
        let mut g = ReplayGuard::new(60);
        g.accept(node(), Command::Subscribe, NOW, [1; 32], NOW);
        assert_eq!(g.check(&node(), Command::Subscribe, NOW, &[1; 32], NOW), ReplayVerdict::Duplicate);
        assert_eq!(g.check(&node(), Command::Subscribe, NOW, &[1; 32], NOW + 1), ReplayVerdict::Duplicate);
        assert!(matches!(g.check(&node(), Command::Subscribe, NOW, &[1; 32], NOW + 2), ReplayVerdict::Refused(_)));
    }

    #[test]
    fn a_subscribe_flipped_into_an_unsubscribe_is_refused_and_a_genuine_one_passes() {
        let mut g = ReplayGuard::new(60);
        g.accept(node(), Command::Subscribe, NOW, [1; 32], NOW);
        // The very packet, command byte flipped: same signature.
        assert!(refused(g.check(&node(), Command::Unsubscribe, NOW, &[1; 32], NOW)).contains("flipped"));
        // A flipped subscribe the validator never saw (say, the previous one): not newer.
        assert!(refused(g.check(&node(), Command::Unsubscribe, NOW - 10, &[9; 32], NOW)).contains("must be newer"));
        // Stock uWSGI's real unsubscribe carries now + 1.
        assert_eq!(g.check(&node(), Command::Unsubscribe, NOW + 1, &[4; 32], NOW), ReplayVerdict::Fresh);
        g.accept(node(), Command::Unsubscribe, NOW + 1, [4; 32], NOW);
        // The unsubscribe replayed later.
        assert!(refused(g.check(&node(), Command::Unsubscribe, NOW + 1, &[4; 32], NOW + 3)).starts_with("replay"));
        // The vassal restarts in the next second and subscribes again: stock uWSGI signs the
        // very bytes of its unsubscribe (`now + cmd`), which must pass.
        assert_eq!(g.check(&node(), Command::Subscribe, NOW + 1, &[4; 32], NOW + 1), ReplayVerdict::Fresh);
        g.accept(node(), Command::Subscribe, NOW + 1, [4; 32], NOW + 1);
        assert!(refused(g.check(&node(), Command::Subscribe, NOW + 1, &[4; 32], NOW + 5)).starts_with("replay"));
    }

    #[test]
    fn history_expires_after_the_window() {
        let mut g = ReplayGuard::new(60);
        g.accept(node(), Command::Subscribe, NOW, [1; 32], NOW);
        g.expire(NOW + 30);
        assert_eq!(g.len(), 1);
        g.expire(NOW + 62);
        assert!(g.is_empty());
    }
}
