//! `/api/metrics/<metric>/<id>`: one UTC day of samples of a container or domain metric.

use super::common::{owned_container, path_id, path_uid, QueryMap};
use crate::auth::Customer;
use crate::body::parse_int;
use crate::error::{ApiError, ApiResult};
use crate::graph::{self, Series};
use crate::specs::uid_of;
use crate::state::AppState;
use crate::store::{now, RowExt};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub const CONTAINER_METRICS: &[&str] = &[
    "container.cpu",
    "container.io.read",
    "container.io.write",
    "container.net.rx",
    "container.net.tx",
    "container.mem",
    "container.mem.rss",
    "container.mem.cache",
    "container.quota",
];
pub const DOMAIN_METRICS: &[&str] = &["domain.net.rx", "domain.net.tx", "domain.hits"];

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm), or `None` if the date
/// does not exist.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// (start, end) unix seconds of the day the query names (`year`, `month`, `day`, default today
/// in UTC), and whether it is today.
fn day_window(query: &QueryMap) -> ApiResult<(i64, i64, bool)> {
    let today = now().div_euclid(86_400);
    let (ty, tm, td) = civil_from_days(today);
    let year = query.get("year").map(|v| parse_int("year", v, 1970, 9999)).transpose()?.unwrap_or(ty);
    let month = query.get("month").map(|v| parse_int("month", v, 1, 12)).transpose()?.unwrap_or(tm);
    let day = query.get("day").map(|v| parse_int("day", v, 1, 31)).transpose()?.unwrap_or(td);
    let days =
        days_from_civil(year, month, day).ok_or_else(|| ApiError::invalid("day", "no such day in that month"))?;
    Ok((days * 86_400, (days + 1) * 86_400, days == today))
}

pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `GET /api/metrics/<metric>/<id>`: the day's samples as JSON; `<id>.svg`: the same day as a
/// chart (see [`crate::graph`]).
pub async fn get_metric(
    State(state): State<AppState>,
    customer: Customer,
    Path((metric, id)): Path<(String, String)>,
    query: QueryMap,
) -> ApiResult<Response> {
    let (id, svg) = match id.strip_suffix(".svg") {
        Some(id) => (id.to_string(), true),
        None => (id, false),
    };
    let (start, end, today) = day_window(&query)?;
    let mut conn = state.db.pool.acquire().await?;
    let (body, series) = if CONTAINER_METRICS.contains(&metric.as_str()) {
        let id = path_uid(&id)?;
        owned_container(&mut conn, customer.id, id).await?;
        let rows = sqlx::query(
            "SELECT unix, value FROM container_metrics WHERE container_id = $1 AND metric = $2 \
             AND unix >= $3 AND unix < $4 ORDER BY unix",
        )
        .bind(id)
        .bind(&metric)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *conn)
        .await?;
        let samples: Vec<(i64, i64)> = rows.iter().map(|r| (r.i64("unix"), r.i64("value"))).collect();
        let body = Value::Array(samples.iter().map(|(t, v)| json!([t, v])).collect());
        (body, vec![Series { name: uid_of(id).to_string(), samples }])
    } else if DOMAIN_METRICS.contains(&metric.as_str()) {
        let id = path_id(&id)?;
        sqlx::query("SELECT id FROM domains WHERE id = $1 AND customer_id = $2")
            .bind(id)
            .bind(customer.id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(ApiError::not_found)?;
        let rows = sqlx::query(
            "SELECT container_id, unix, value FROM domain_metrics WHERE domain_id = $1 AND metric = $2 \
             AND unix >= $3 AND unix < $4 ORDER BY container_id, unix",
        )
        .bind(id)
        .bind(&metric)
        .bind(start)
        .bind(end)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_container: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        for r in &rows {
            by_container.entry(r.i64("container_id")).or_default().push((r.i64("unix"), r.i64("value")));
        }
        let body = Value::Array(
            by_container
                .iter()
                .map(|(c, samples)| {
                    let metrics: Vec<Value> = samples.iter().map(|(t, v)| json!([t, v])).collect();
                    json!({"container": uid_of(*c), "metrics": metrics})
                })
                .collect(),
        );
        let series = by_container
            .into_iter()
            .map(|(c, samples)| Series { name: format!("container {}", uid_of(c)), samples })
            .collect();
        (body, series)
    } else {
        return Err(ApiError::not_found());
    };
    let mut response = if svg {
        let (y, m, d) = civil_from_days(start.div_euclid(86_400));
        let title = format!("{metric} of {id}, {y:04}-{m:02}-{d:02}");
        let chart = graph::render_svg(&title, &metric, start, &series).map_err(|e| {
            tracing::error!("{title}: {e}");
            ApiError::internal()
        })?;
        let mut r = Response::new(axum::body::Body::from(chart));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/svg+xml"));
        r
    } else {
        super::common::ok(body)
    };
    // A past day no longer changes; today's samples arrive every few minutes.
    let max_age = if today { "max-age=300" } else { "max-age=86400" };
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(max_age));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip_and_reject_impossible_days() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2024, 2, 29).map(civil_from_days), Some((2024, 2, 29)));
        assert_eq!(days_from_civil(2023, 2, 29), None);
        assert_eq!(days_from_civil(2023, 13, 1), None);
    }
}
