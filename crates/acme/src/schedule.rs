//! When to renew and when to try again: pure functions of times (unix seconds), so the rules
//! are tested without a CA or a clock.

use std::time::Duration;

/// When a certificate valid from `not_before` to `not_after` is renewed without ARI: with a
/// third of its lifetime left (day 60 of Let's Encrypt's 90, day 30 of the coming 45), so a
/// failing CA or challenge leaves weeks of retries before anyone sees an expired certificate.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_after - (not_after - not_before).max(0) / 3
}

/// A point inside the CA's ARI window (RFC 9773 §4.2: pick uniformly at random, so a CA's
/// certificates are not all renewed in the same second). `seed` makes the pick stable for one
/// certificate across restarts of the issuer (its serial, say), instead of drawing again at
/// every start.
pub fn ari_pick(start: i64, end: i64, seed: u64) -> i64 {
    if end <= start {
        return start;
    }
    let span = (end - start) as u64;
    // SplitMix64's finaliser: spreads consecutive serials over the whole window.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    start + (z % span) as i64
}

/// When to renew a certificate: inside the CA's ARI window when it gave one (the CA knows of
/// revocations and incidents), else with a third of its lifetime left.
pub fn due_at(not_before: i64, not_after: i64, ari_window: Option<(i64, i64)>, seed: u64) -> i64 {
    match ari_window {
        Some((start, end)) => ari_pick(start, end, seed),
        None => renew_at(not_before, not_after),
    }
}

/// The wait after the `failures`-th failure in a row (1 for the first): `base`, doubled at each
/// further failure, at most `max`. The default base of five minutes keeps a name that keeps
/// failing under Let's Encrypt's five failed validations per host per hour.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    base.saturating_mul(1u32 << doublings.min(31)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn renewal_starts_with_a_third_of_the_lifetime_left() {
        // Let's Encrypt's 90 days: day 60. The coming 45 days: day 30. Pebble's 5 years: 3 y 4 m.
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
        assert_eq!(renew_at(1000, 1000 + 45 * DAY), 1000 + 30 * DAY);
        assert_eq!(renew_at(0, 1826 * DAY), 1826 * DAY - 1826 * DAY / 3);
        // A certificate whose dates are upside down is renewed at its end, not before its start.
        assert_eq!(renew_at(10 * DAY, 5 * DAY), 5 * DAY);
    }

    #[test]
    fn ari_windows_are_followed_and_the_pick_stays_inside() {
        let (start, end) = (50 * DAY, 52 * DAY);
        for seed in 0..10_000u64 {
            let t = due_at(0, 90 * DAY, Some((start, end)), seed);
            assert!((start..end).contains(&t), "seed {seed}: {t}");
        }
        // Stable for one certificate, spread over the window across certificates.
        assert_eq!(ari_pick(start, end, 7), ari_pick(start, end, 7));
        let picks: std::collections::BTreeSet<i64> = (0..100).map(|s| ari_pick(start, end, s) / 3600).collect();
        assert!(picks.len() > 20, "{picks:?}");
        // A window in the past (the CA wants it renewed now) gives a time in the past.
        assert!(due_at(0, 90 * DAY, Some((DAY, DAY + 60)), 3) < 2 * DAY);
        // An empty or inverted window is its start.
        assert_eq!(ari_pick(5, 5, 1), 5);
        assert_eq!(ari_pick(9, 5, 1), 9);
        // Without ARI, the third-of-lifetime rule.
        assert_eq!(due_at(0, 90 * DAY, None, 3), 60 * DAY);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let (base, max) = (Duration::from_secs(300), Duration::from_secs(6 * 3600));
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n, base, max).as_secs()).collect();
        assert_eq!(waits, [300, 600, 1200, 2400, 4800, 9600, 19200, 21600, 21600]);
        assert_eq!(backoff(0, base, max), base);
        assert_eq!(backoff(u32::MAX, base, max), max);
        assert_eq!(backoff(3, Duration::from_secs(1), Duration::from_secs(60)).as_secs(), 4);
    }
}
