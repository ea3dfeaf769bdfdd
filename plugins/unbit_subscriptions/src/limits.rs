//! Per-container budgets, so one container cannot starve the others or flood the operator's
//! log and its own `emperor.log`.
//!
//! * [`AnnounceBudget`]: a token bucket per sender uid, spent before any parsing or signature
//!   check. A flood costs the validator one `recvmsg` and one hash lookup per packet; only
//!   the allowed rate reaches the (expensive) RSA verification.
//! * [`LogBudget`]: at most a few rejection lines per container per period; the rest are
//!   counted and summed up in one line when the period ends.

use std::collections::HashMap;

/// A token bucket per uid: `rate` packets a second, bursts of `burst`.
pub struct AnnounceBudget {
    rate: f64,
    burst: f64,
    buckets: HashMap<u32, Bucket>,
}

struct Bucket {
    tokens: f64,
    /// Seconds (monotonic, as f64) of the last refill.
    at: f64,
}

impl AnnounceBudget {
    pub fn new(rate: u32, burst: u32) -> Self {
        AnnounceBudget { rate: f64::from(rate.max(1)), burst: f64::from(burst.max(1)), buckets: HashMap::new() }
    }

    /// Takes one token for `uid`; `false` when its bucket is empty.
    pub fn take(&mut self, uid: u32, now: f64) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(uid).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + (now - b.at).max(0.0) * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that are full again (idle senders), keeping the map small.
    pub fn expire(&mut self, now: f64) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| b.tokens + (now - b.at) * rate < burst);
    }
}

/// What to do with one rejection line for a container.
#[derive(Debug, PartialEq, Eq)]
pub enum LogDecision {
    Write,
    /// Counted, not written.
    Suppress,
}

/// A few lines per container per period; [`LogBudget::roll`] returns the summaries of what
/// was suppressed.
pub struct LogBudget {
    lines_per_period: u32,
    period: f64,
    started: f64,
    per_uid: HashMap<u32, Spent>,
}

#[derive(Default)]
struct Spent {
    written: u32,
    suppressed: u64,
    last_reason: String,
}

impl LogBudget {
    pub fn new(lines_per_period: u32, period_secs: f64) -> Self {
        LogBudget { lines_per_period, period: period_secs, started: 0.0, per_uid: HashMap::new() }
    }

    pub fn decide(&mut self, uid: u32, reason: &str) -> LogDecision {
        let s = self.per_uid.entry(uid).or_default();
        if s.written < self.lines_per_period {
            s.written += 1;
            LogDecision::Write
        } else {
            s.suppressed += 1;
            if s.last_reason != reason {
                s.last_reason = reason.to_string();
            }
            LogDecision::Suppress
        }
    }

    /// When a period is over: `(uid, suppressed count, last suppressed reason)` for every
    /// container that went over budget, and a fresh budget.
    pub fn roll(&mut self, now: f64) -> Vec<(u32, u64, String)> {
        if now - self.started < self.period {
            return Vec::new();
        }
        self.started = now;
        let mut out: Vec<_> = self
            .per_uid
            .drain()
            .filter(|(_, s)| s.suppressed > 0)
            .map(|(uid, s)| (uid, s.suppressed, s.last_reason))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_container_empties_only_its_own_bucket() {
        let mut b = AnnounceBudget::new(10, 20);
        let allowed = (0..1000).filter(|_| b.take(30001, 0.0)).count();
        assert_eq!(allowed, 20, "the burst");
        assert!(b.take(30002, 0.0), "another container is not affected");
        assert!(!b.take(30001, 0.05));
        assert!(b.take(30001, 0.1), "refilled at 10/s");
        assert!(b.take(30001, 10.0));
        b.expire(100.0);
        assert!(b.buckets.is_empty());
    }

    #[test]
    fn rejection_lines_are_capped_per_container_and_summed_up() {
        let mut l = LogBudget::new(3, 10.0);
        assert!(l.roll(0.0).is_empty());
        let decisions: Vec<_> = (0..5).map(|_| l.decide(30001, "bad signature")).collect();
        assert_eq!(decisions.iter().filter(|d| **d == LogDecision::Write).count(), 3);
        assert_eq!(l.decide(30002, "replay"), LogDecision::Write);
        assert!(l.roll(5.0).is_empty(), "the period is not over");
        assert_eq!(l.roll(10.0), vec![(30001, 2, "bad signature".to_string())]);
        assert_eq!(l.decide(30001, "x"), LogDecision::Write);
    }
}
