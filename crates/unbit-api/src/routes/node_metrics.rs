//! `POST /api/node/v1/metrics`: many samples of one collection cycle of a node (containers'
//! and served domains') in one request and one transaction, instead of the original's one POST
//! per sample (9 000 requests a cycle for 1 000 containers). Bodies are bounded like every
//! request's (64 KiB, about 200 containers): the collector cuts a large cycle into parts.
//!
//! ```json
//! {"unix": 1764518400,
//!  "containers": {"30701": {"container.cpu": 81234567, "container.mem": 40960000}},
//!  "domains": [{"uid": 30701, "domain": "example.com",
//!               "metrics": {"domain.hits": 12, "domain.net.rx": 3400, "domain.net.tx": 98000}}]}
//! ```
//!
//! A container not on this node, or a domain its owner does not have (deleted while the router
//! still had it), is skipped and named in the answer's `skipped`: the rest of the cycle is kept.

use super::common::created;
use super::metrics::{CONTAINER_METRICS, DOMAIN_METRICS};
use crate::body::RawBody;
use crate::error::{ApiError, ApiResult};
use crate::node_auth::Node;
use crate::routes::alarms::MAX_UNIX;
use crate::specs::container_id_of;
use crate::state::AppState;
use crate::store::RowExt;
use crate::validate;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sqlx::AnyConnection;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    unix: i64,
    #[serde(default)]
    containers: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    domains: Vec<DomainSamples>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSamples {
    uid: i64,
    domain: String,
    metrics: BTreeMap<String, u64>,
}

fn known(metric: &str, list: &[&str]) -> ApiResult<()> {
    if list.contains(&metric) {
        Ok(())
    } else {
        Err(ApiError::invalid("metric", format!("unknown metric {metric:?} (known: {})", list.join(", "))))
    }
}

/// A counter past i64::MAX (never in practice) is stored as the largest value, not wrapped.
fn stored(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Appends one sample to a container's series.
pub(super) async fn insert_container_sample(
    conn: &mut AnyConnection,
    container_id: i64,
    metric: &str,
    unix: i64,
    value: i64,
) -> ApiResult<()> {
    sqlx::query("INSERT INTO container_metrics (container_id, metric, unix, value) VALUES ($1, $2, $3, $4)")
        .bind(container_id)
        .bind(metric)
        .bind(unix)
        .bind(value)
        .execute(conn)
        .await?;
    Ok(())
}

/// Appends one sample to the series of a domain served by a container.
pub(super) async fn insert_domain_sample(
    conn: &mut AnyConnection,
    (domain_id, container_id): (i64, i64),
    metric: &str,
    unix: i64,
    value: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO domain_metrics (domain_id, container_id, metric, unix, value) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(domain_id)
    .bind(container_id)
    .bind(metric)
    .bind(unix)
    .bind(value)
    .execute(conn)
    .await?;
    Ok(())
}

/// The id of the domain `name` if the container's owner has it.
pub(super) async fn owners_domain(conn: &mut AnyConnection, name: &str, container_id: i64) -> ApiResult<Option<i64>> {
    Ok(sqlx::query(
        "SELECT d.id FROM domains d JOIN containers c ON c.customer_id = d.customer_id WHERE d.name = $1 AND c.id = $2",
    )
    .bind(name)
    .bind(container_id)
    .fetch_optional(conn)
    .await?
    .map(|r| r.i64("id")))
}

pub async fn batch(State(state): State<AppState>, node: Node, RawBody(bytes): RawBody) -> ApiResult<Response> {
    let batch: Batch =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("metrics batch: {e}")))?;
    if !(0..=MAX_UNIX).contains(&batch.unix) {
        return Err(ApiError::invalid("unix", "out of range"));
    }
    for metrics in batch.containers.values() {
        metrics.keys().try_for_each(|m| known(m, CONTAINER_METRICS))?;
    }
    for d in &batch.domains {
        d.metrics.keys().try_for_each(|m| known(m, DOMAIN_METRICS))?;
    }
    let mut tx = state.db.write().await?;
    let on_node: HashSet<i64> = sqlx::query("SELECT id FROM containers WHERE server_id = $1")
        .bind(node.server_id)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.i64("id"))
        .collect();
    let id_of = |uid: i64| container_id_of(uid).filter(|id| on_node.contains(id));
    let mut skipped = Vec::new();
    let mut stored_count = 0usize;
    for (uid, metrics) in &batch.containers {
        let Some(id) = uid.parse::<i64>().ok().and_then(id_of) else {
            skipped.push(format!("container {uid}: not on this node"));
            continue;
        };
        for (metric, value) in metrics {
            insert_container_sample(&mut tx, id, metric, batch.unix, stored(*value)).await?;
            stored_count += 1;
        }
    }
    let mut domain_ids: HashMap<(i64, String), Option<i64>> = HashMap::new();
    for d in &batch.domains {
        let Some(id) = id_of(d.uid) else {
            skipped.push(format!("domain {} of container {}: the container is not on this node", d.domain, d.uid));
            continue;
        };
        let Ok(name) = validate::domain("domain", &d.domain) else {
            skipped.push(format!("domain {:?} of container {}: not a domain name", d.domain, d.uid));
            continue;
        };
        let key = (id, name.clone());
        let domain_id = match domain_ids.get(&key) {
            Some(found) => *found,
            None => {
                let found = owners_domain(&mut tx, &name, id).await?;
                domain_ids.insert(key, found);
                found
            }
        };
        let Some(domain_id) = domain_id else {
            skipped.push(format!("domain {name} of container {}: not a domain of the container's owner", d.uid));
            continue;
        };
        for (metric, value) in &d.metrics {
            insert_domain_sample(&mut tx, (domain_id, id), metric, batch.unix, stored(*value)).await?;
            stored_count += 1;
        }
    }
    tx.commit().await?;
    Ok(created(json!({"message": "Created", "stored": stored_count, "skipped": skipped})))
}
