//! Metrics retention: once a day the API deletes the metric samples of UTC days older than
//! `--metrics-retention-days` (docs/metrics.md). A node pushes about 9 samples a container a
//! minute, 13 million rows a day for 1 000 containers, which the original kept forever.
//!
//! Whole UTC days are kept, as the API serves them (`/metrics/<metric>/<id>?year=&month=&day=`):
//! with 90 days, today and the 90 days before it. Each series (a container's or a domain's
//! metric) is pruned in a transaction of its own through the series' index
//! (`container_metrics_lookup`, `domain_metrics_lookup`), so no scan of the whole table is needed
//! and SQLite's one writer is never held for long: pushes from the nodes go on between them.

use crate::routes::metrics::{CONTAINER_METRICS, DOMAIN_METRICS};
use crate::store::{now, Db, RowExt};
use std::sync::Arc;
use std::time::Duration;

/// Days kept unless `--metrics-retention-days` says otherwise.
pub const DEFAULT_DAYS: u32 = 90;
const DAY: i64 = 86_400;

/// The first unix second kept: the start of the UTC day `days` days before the day of `now`.
pub fn cutoff(now: i64, days: u32) -> i64 {
    now.div_euclid(DAY) * DAY - i64::from(days) * DAY
}

/// Rows deleted by one [`prune`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub container_rows: u64,
    pub domain_rows: u64,
}

/// Deletes every sample taken before `cutoff` (unix seconds).
pub async fn prune(db: &Db, cutoff: i64) -> Result<Pruned, sqlx::Error> {
    let mut pruned = Pruned::default();
    let series = [
        ("containers", "container_metrics", "container_id", CONTAINER_METRICS),
        ("domains", "domain_metrics", "domain_id", DOMAIN_METRICS),
    ];
    for (owners, table, column, metrics) in series {
        let ids: Vec<i64> = sqlx::query(&format!("SELECT id FROM {owners}"))
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|r| r.i64("id"))
            .collect();
        let delete = format!("DELETE FROM {table} WHERE {column} = $1 AND metric = $2 AND unix < $3");
        for id in ids {
            for metric in metrics {
                let mut tx = db.write().await?;
                let done = sqlx::query(&delete).bind(id).bind(*metric).bind(cutoff).execute(&mut **tx).await?;
                tx.commit().await?;
                match table {
                    "container_metrics" => pruned.container_rows += done.rows_affected(),
                    _ => pruned.domain_rows += done.rows_affected(),
                }
            }
        }
    }
    Ok(pruned)
}

/// The first retry after a failed prune; each further failure doubles the wait, up to a day.
const FIRST_RETRY: Duration = Duration::from_secs(5 * 60);
const EVERY: Duration = Duration::from_secs(DAY as u64);

/// How long to wait before the next prune, `failures` being how many prunes have failed in a
/// row since the last success (0: the last one succeeded). A failure (a database that was
/// briefly unreachable, a lock timeout) must not leave a day of samples more on the disk, so it
/// is retried within minutes; a persistent one backs off to the daily pace.
pub fn next_delay(failures: u32) -> Duration {
    match failures {
        0 => EVERY,
        n => FIRST_RETRY.saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX)).min(EVERY),
    }
}

/// The daily job of `unbit-api serve`: a prune at start, then every 24 hours ([`next_delay`]:
/// sooner after a failure). `days == 0` keeps everything (the job does not run). Several API
/// hosts on one PostgreSQL database may each run it: deleting what another already deleted
/// costs an index lookup.
pub async fn daily(db: Arc<Db>, days: u32) {
    if days == 0 {
        tracing::info!("metrics retention off: samples are kept forever");
        return;
    }
    let mut failures = 0u32;
    loop {
        let cut = cutoff(now(), days);
        match prune(&db, cut).await {
            Ok(p) => {
                failures = 0;
                tracing::info!(
                    before = cut,
                    container_rows = p.container_rows,
                    domain_rows = p.domain_rows,
                    "metrics older than {days} days deleted"
                )
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    error = %e,
                    failures,
                    "metrics retention: the prune failed; next try in {} minutes",
                    next_delay(failures).as_secs() / 60
                )
            }
        }
        tokio::time::sleep(next_delay(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_utc_days_are_kept() {
        // 2025-11-30 13:45:00 UTC
        let now = 1_764_510_300;
        let today = 1_764_460_800;
        assert_eq!(cutoff(now, 0), today);
        assert_eq!(cutoff(now, 1), today - DAY);
        assert_eq!(cutoff(now, 90), today - 90 * DAY);
        assert_eq!(cutoff(today, 1), today - DAY, "midnight belongs to the new day");
    }

    #[test]
    fn a_failed_prune_is_retried_within_minutes_and_a_success_goes_back_to_daily() {
        let minutes = |failures| next_delay(failures).as_secs() / 60;
        assert_eq!(minutes(0), 24 * 60, "after a success: the next day");
        assert_eq!(minutes(1), 5, "after a failure: soon");
        assert_eq!(minutes(2), 10);
        assert_eq!(minutes(3), 20);
        assert_eq!(minutes(9), 1280);
        assert_eq!(minutes(10), 24 * 60, "a persistent failure backs off to daily");
        assert!((1..100).all(|n| minutes(n) <= 24 * 60), "never less often than daily");
        assert_eq!(minutes(u32::MAX), 24 * 60);
    }
}
