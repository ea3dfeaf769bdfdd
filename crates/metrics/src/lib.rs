//! `unbit-metrics`: the node's metrics collector (docs/metrics.md).
//!
//! Every cycle (60 s by default) it reads, for every container with a cgroup in the
//! platform's subtree, CPU time, memory (usage, RSS, cache), block I/O, network bytes and disk
//! quota use ([`collect`]), and per domain the router's hits and bytes ([`router`]); it sends
//! the whole cycle to the control API in one request (`POST /api/node/v1/metrics`) with the
//! node's credentials (node-sync's settings file), and keeps the last cycle for Prometheus
//! ([`prometheus`]). The kernel's formats are parsed in [`parse`].

pub mod collect;
pub mod parse;
pub mod prometheus;
pub mod router;

use collect::ContainerSample;
use router::DomainSamples;
use serde_json::{json, Map, Value};

/// The API's batch for one cycle taken at `unix`.
pub fn batch(unix: i64, containers: &[ContainerSample], domains: &DomainSamples) -> Value {
    let mut by_uid = Map::new();
    for c in containers.iter().filter(|c| !c.values.is_empty()) {
        let metrics: Map<String, Value> = c.values.iter().map(|(m, v)| (m.api_name().to_string(), json!(v))).collect();
        by_uid.insert(c.uid.to_string(), Value::Object(metrics));
    }
    let domains: Vec<Value> = domains
        .iter()
        .map(|((uid, domain), c)| {
            json!({"uid": uid, "domain": domain,
                   "metrics": {"domain.hits": c.hits, "domain.net.rx": c.rx, "domain.net.tx": c.tx}})
        })
        .collect();
    json!({"unix": unix, "containers": by_uid, "domains": domains})
}
