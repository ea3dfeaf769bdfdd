//! The retry policy of every outgoing channel: what an answer means and how long to wait.
//!
//! * 2xx: delivered.
//! * 429, or 503 with `Retry-After`: the service asks us to slow down: wait what it says
//!   (seconds or an HTTP date, at most [`Policy::max_retry_after`]), then try again.
//! * other 5xx, 408, timeouts, refused connections: try again after an exponential backoff
//!   (`base * 2^n`, at most `max_backoff`).
//! * other 4xx: the request itself is wrong (a revoked token, a deleted webhook): retrying
//!   cannot help; give up at once and say why.
//!
//! An alarm is given up after `max_attempts` attempts; the customer's log says so.

use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 6,
            base: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth another try; `retry_after` when the service said when.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Permanent(String),
}

/// The outcome of an HTTP answer: `status` and its `Retry-After` header, if any.
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Outcome {
    let after = retry_after.and_then(|v| parse_retry_after(v, now));
    match status {
        200..=299 => Outcome::Delivered,
        429 => Outcome::Retry { why: "429 Too Many Requests".into(), retry_after: after },
        408 | 500..=599 => Outcome::Retry { why: format!("HTTP {status}"), retry_after: after },
        _ => Outcome::Permanent(format!("HTTP {status}")),
    }
}

/// `Retry-After: <seconds>` or `Retry-After: <HTTP-date>` (RFC 9110 10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate only (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers must send.
fn parse_http_date(v: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

impl Policy {
    /// How long to wait after failed attempt number `attempt` (1-based), or `None` when the
    /// alarm is given up.
    pub fn wait_after(&self, attempt: u32, outcome: &Outcome) -> Option<Duration> {
        let Outcome::Retry { retry_after, .. } = outcome else { return None };
        if attempt >= self.max_attempts {
            return None;
        }
        Some(match retry_after {
            Some(d) => (*d).min(self.max_retry_after),
            None => self.backoff(attempt),
        })
    }

    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn answers_are_classified() {
        let now = at(0);
        assert_eq!(classify(200, None, now), Outcome::Delivered);
        assert_eq!(classify(204, None, now), Outcome::Delivered);
        assert_eq!(
            classify(429, Some("7"), now),
            Outcome::Retry { why: "429 Too Many Requests".into(), retry_after: Some(Duration::from_secs(7)) }
        );
        assert!(matches!(classify(503, None, now), Outcome::Retry { retry_after: None, .. }));
        assert!(matches!(classify(408, None, now), Outcome::Retry { .. }));
        assert_eq!(classify(403, Some("5"), now), Outcome::Permanent("HTTP 403".into()));
        assert_eq!(classify(404, None, now), Outcome::Permanent("HTTP 404".into()));
    }

    #[test]
    fn retry_after_as_seconds_or_date() {
        // 1994-11-06 08:49:37 UTC = 784111777
        let now = at(784_111_777 - 30);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_retry_after_wins() {
        let p = Policy::default();
        let retry = Outcome::Retry { why: "x".into(), retry_after: None };
        let waits: Vec<_> = (1..p.max_attempts).map(|a| p.wait_after(a, &retry).unwrap().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(p.wait_after(p.max_attempts, &retry), None, "given up after the last attempt");
        assert_eq!(p.backoff(40), p.max_backoff);
        let slow_down = Outcome::Retry { why: "429".into(), retry_after: Some(Duration::from_secs(3)) };
        assert_eq!(p.wait_after(1, &slow_down), Some(Duration::from_secs(3)));
        let greedy = Outcome::Retry { why: "429".into(), retry_after: Some(Duration::from_secs(86_400)) };
        assert_eq!(p.wait_after(1, &greedy), Some(p.max_retry_after));
        assert_eq!(p.wait_after(1, &Outcome::Permanent("HTTP 401".into())), None);
        assert_eq!(p.wait_after(1, &Outcome::Delivered), None);
    }
}
