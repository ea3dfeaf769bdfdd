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

/// The API's request bodies for one cycle taken at `unix`, each at most `max_bytes` of JSON
/// (the API reads at most 64 KiB of any request before authenticating it): 1 000 containers
/// are about 300 KB, so five or six requests. A single entry larger than the bound (never in
/// practice: a container is under 400 bytes) still goes, alone.
pub fn batches(unix: i64, containers: &[ContainerSample], domains: &DomainSamples, max_bytes: usize) -> Vec<Value> {
    // `{"unix":N,"containers":{},"domains":[]}` and a little slack
    let overhead = 64;
    let mut out = Vec::new();
    let (mut by_uid, mut listed, mut size) = (Map::new(), Vec::new(), overhead);
    let mut flush = |by_uid: &mut Map<String, Value>, listed: &mut Vec<Value>, size: &mut usize| {
        if !by_uid.is_empty() || !listed.is_empty() {
            out.push(json!({"unix": unix, "containers": std::mem::take(by_uid), "domains": std::mem::take(listed)}));
        }
        *size = overhead;
    };
    for c in containers.iter().filter(|c| !c.values.is_empty()) {
        let metrics: Map<String, Value> = c.values.iter().map(|(m, v)| (m.api_name().to_string(), json!(v))).collect();
        let metrics = Value::Object(metrics);
        let len = metrics.to_string().len() + c.uid.to_string().len() + 4;
        if size + len > max_bytes {
            flush(&mut by_uid, &mut listed, &mut size);
        }
        size += len;
        by_uid.insert(c.uid.to_string(), metrics);
    }
    for ((uid, domain), c) in domains {
        let entry = json!({"uid": uid, "domain": domain,
                           "metrics": {"domain.hits": c.hits, "domain.net.rx": c.rx, "domain.net.tx": c.tx}});
        let len = entry.to_string().len() + 1;
        if size + len > max_bytes {
            flush(&mut by_uid, &mut listed, &mut size);
        }
        size += len;
        listed.push(entry);
    }
    flush(&mut by_uid, &mut listed, &mut size);
    out
}

/// The largest request body `unbit-metrics` sends (the API's bound is 64 KiB).
pub const MAX_REQUEST: usize = 60 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use collect::Metric;
    use router::DomainCounters;

    #[test]
    fn a_large_cycle_is_cut_into_bounded_requests_holding_everything_once() {
        let containers: Vec<ContainerSample> = (0..1000u32)
            .map(|i| ContainerSample {
                uid: 30001 + i,
                values: Metric::ALL.iter().map(|m| (*m, 123_456_789_012 + u64::from(i))).collect(),
            })
            .collect();
        let domains: DomainSamples = (0..1000u32)
            .map(|i| ((30001 + i, format!("site{i}.example.com")), DomainCounters { hits: 1, rx: 2, tx: 3 }))
            .collect();
        let parts = batches(7, &containers, &domains, MAX_REQUEST);
        assert!(parts.len() > 5, "{}", parts.len());
        let (mut seen_c, mut seen_d) = (0, 0);
        for p in &parts {
            assert!(p.to_string().len() <= MAX_REQUEST, "{}", p.to_string().len());
            assert_eq!(p["unix"], 7);
            seen_c += p["containers"].as_object().unwrap().len();
            seen_d += p["domains"].as_array().unwrap().len();
        }
        assert_eq!((seen_c, seen_d), (1000, 1000));
        assert_eq!(parts[0]["containers"]["30001"]["container.cpu"], 123_456_789_012u64);
        assert_eq!(batches(7, &[], &DomainSamples::new(), MAX_REQUEST), Vec::<Value>::new());
    }
}
