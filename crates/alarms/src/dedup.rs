//! At most one alarm per (container, kind) per period: the original's `alarm-freq`, but per
//! kind, so an OOM storm does not swallow the quota alarm that comes after it.

use std::collections::HashMap;

/// The shortest period the platform allows (the original's API forced `alarm_freq >= 60`).
pub const MIN_FREQ: u64 = 60;

/// The last time each (container, kind) was let through.
#[derive(Debug, Default)]
pub struct Dedup {
    last: HashMap<(u32, String), i64>,
}

impl Dedup {
    /// Whether an alarm of `kind` for `uid` at `now` goes out, given the container's
    /// `alarm_freq` (raised to [`MIN_FREQ`]). Records it when it does.
    pub fn allow(&mut self, uid: u32, kind: &str, now: i64, freq: u64) -> bool {
        let freq = freq.max(MIN_FREQ) as i64;
        let key = (uid, kind.to_string());
        match self.last.get(&key) {
            // A clock stepped back counts as "long ago": an alarm must not be muted for hours.
            Some(&at) if now >= at && now - at < freq => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }

    /// Forgets what is older than any period could be (`max_freq`), so the table stays as
    /// small as the set of recently alarmed containers.
    pub fn prune(&mut self, now: i64, max_freq: u64) {
        self.last.retain(|_, at| now - *at < max_freq.max(MIN_FREQ) as i64);
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_container_and_kind_per_period() {
        let mut d = Dedup::default();
        assert!(d.allow(30601, "oom", 1000, 120));
        assert!(!d.allow(30601, "oom", 1119, 120));
        assert!(d.allow(30601, "quota", 1001, 120), "another kind is not muted");
        assert!(d.allow(30602, "oom", 1001, 120), "another container is not muted");
        assert!(d.allow(30601, "oom", 1120, 120));
    }

    #[test]
    fn the_period_is_at_least_a_minute() {
        let mut d = Dedup::default();
        assert!(d.allow(1, "oom", 0, 0));
        assert!(!d.allow(1, "oom", 59, 5));
        assert!(d.allow(1, "oom", 60, 5));
    }

    #[test]
    fn a_clock_stepping_back_does_not_mute() {
        let mut d = Dedup::default();
        assert!(d.allow(1, "oom", 10_000, 60));
        assert!(d.allow(1, "oom", 100, 60));
    }

    #[test]
    fn pruning_keeps_only_recent_entries() {
        let mut d = Dedup::default();
        d.allow(1, "a", 0, 60);
        d.allow(2, "a", 500, 60);
        d.prune(600, 300);
        assert_eq!(d.len(), 1);
        assert!(!d.allow(2, "a", 520, 60));
    }
}
