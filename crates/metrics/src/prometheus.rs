//! The operators' view: the last cycle in Prometheus' text exposition format (version 0.0.4),
//! served on a loopback port (`--prometheus 127.0.0.1:9101`, `GET /metrics`).

use crate::collect::{ContainerSample, Metric};
use crate::router::DomainSamples;
use std::fmt::Write;
use std::io::{Read, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the collector knows about itself and the node at the end of a cycle.
#[derive(Debug, Clone, Default)]
pub struct NodeFigures {
    /// CPU time (user + system) the last cycle cost this process, seconds.
    pub cycle_cpu_seconds: f64,
    pub cycle_wall_seconds: f64,
    pub push_failures: u64,
    pub router_failures: u64,
    /// Requests the router counted while its domain table was full (in no domain's series).
    pub router_overflow_requests: u64,
    /// The router's domain table: entries in use, entries.
    pub router_slots: Option<(usize, usize)>,
    /// Unix time of the last batch the API accepted (0: none yet).
    pub last_push: i64,
    /// `/proc/loadavg`'s first field.
    pub load1: Option<f64>,
    /// `/proc/meminfo` `MemAvailable`, bytes.
    pub memory_available: Option<u64>,
}

/// Name, type, help, and how a stored value becomes the exposed one.
fn family(m: Metric) -> (&'static str, &'static str, &'static str, f64) {
    match m {
        Metric::Cpu => ("unbit_container_cpu_seconds_total", "counter", "CPU time used by the container", 1e-9),
        Metric::IoRead => {
            ("unbit_container_io_read_bytes_total", "counter", "Bytes the container read from block devices", 1.0)
        }
        Metric::IoWrite => {
            ("unbit_container_io_write_bytes_total", "counter", "Bytes the container wrote to block devices", 1.0)
        }
        Metric::NetRx => {
            ("unbit_container_network_receive_bytes_total", "counter", "Bytes the container received", 1.0)
        }
        Metric::NetTx => ("unbit_container_network_transmit_bytes_total", "counter", "Bytes the container sent", 1.0),
        Metric::Mem => ("unbit_container_memory_bytes", "gauge", "Memory charged to the container's cgroup", 1.0),
        Metric::MemRss => {
            ("unbit_container_memory_rss_bytes", "gauge", "Anonymous (resident) memory of the container", 1.0)
        }
        Metric::MemCache => ("unbit_container_memory_cache_bytes", "gauge", "Page cache charged to the container", 1.0),
        Metric::Quota => {
            ("unbit_container_disk_used_bytes", "gauge", "Disk space the container's home uses against its quota", 1.0)
        }
    }
}

/// Label values may hold anything; the format escapes backslash, quote and newline.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Which counter of a domain a family shows.
type Pick = fn(&crate::router::DomainCounters) -> u64;

pub fn render(containers: &[ContainerSample], domains: &DomainSamples, node: &NodeFigures) -> String {
    let mut out = String::new();
    header(&mut out, "unbit_node_containers", "gauge", "Containers with a cgroup on this node");
    let _ = writeln!(out, "unbit_node_containers {}", containers.len());
    if let Some(load) = node.load1 {
        header(&mut out, "unbit_node_load1", "gauge", "One-minute load average of the node");
        let _ = writeln!(out, "unbit_node_load1 {load}");
    }
    if let Some(avail) = node.memory_available {
        header(&mut out, "unbit_node_memory_available_bytes", "gauge", "Memory available for new allocations");
        let _ = writeln!(out, "unbit_node_memory_available_bytes {avail}");
    }
    header(&mut out, "unbit_metrics_cycle_cpu_seconds", "gauge", "CPU time the last collection cycle cost");
    let _ = writeln!(out, "unbit_metrics_cycle_cpu_seconds {}", node.cycle_cpu_seconds);
    header(&mut out, "unbit_metrics_cycle_duration_seconds", "gauge", "Wall time of the last collection cycle");
    let _ = writeln!(out, "unbit_metrics_cycle_duration_seconds {}", node.cycle_wall_seconds);
    header(&mut out, "unbit_metrics_push_failures_total", "counter", "Batches the control API did not accept");
    let _ = writeln!(out, "unbit_metrics_push_failures_total {}", node.push_failures);
    header(
        &mut out,
        "unbit_metrics_router_failures_total",
        "counter",
        "Cycles the router's counters could not be read",
    );
    let _ = writeln!(out, "unbit_metrics_router_failures_total {}", node.router_failures);
    if let Some((used, slots)) = node.router_slots {
        header(&mut out, "unbit_router_domain_slots_used", "gauge", "Entries of the router's domain table in use");
        let _ = writeln!(out, "unbit_router_domain_slots_used {used}");
        header(&mut out, "unbit_router_domain_slots", "gauge", "Entries the router's domain table holds");
        let _ = writeln!(out, "unbit_router_domain_slots {slots}");
        header(
            &mut out,
            "unbit_router_overflow_requests_total",
            "counter",
            "Requests the router counted while its domain table was full",
        );
        let _ = writeln!(out, "unbit_router_overflow_requests_total {}", node.router_overflow_requests);
    }
    header(&mut out, "unbit_metrics_last_push_timestamp_seconds", "gauge", "When the API last accepted a batch");
    let _ = writeln!(out, "unbit_metrics_last_push_timestamp_seconds {}", node.last_push);
    for m in Metric::ALL {
        let (name, kind, help, scale) = family(m);
        let mut lines = containers.iter().filter_map(|c| c.values.get(&m).map(|v| (c.uid, v))).peekable();
        if lines.peek().is_none() {
            continue;
        }
        header(&mut out, name, kind, help);
        for (uid, v) in lines {
            if scale == 1.0 {
                let _ = writeln!(out, "{name}{{uid=\"{uid}\"}} {v}");
            } else {
                let _ = writeln!(out, "{name}{{uid=\"{uid}\"}} {}", *v as f64 * scale);
            }
        }
    }
    let domain_families: [(&str, &str, Pick); 3] = [
        ("unbit_domain_requests_total", "Requests the router passed to the container for the domain", |c| c.hits),
        ("unbit_domain_receive_bytes_total", "Request bytes the router passed to the container", |c| c.rx),
        ("unbit_domain_transmit_bytes_total", "Response bytes the container sent through the router", |c| c.tx),
    ];
    if !domains.is_empty() {
        for (name, help, value) in domain_families {
            header(&mut out, name, "counter", help);
            for ((uid, domain), c) in domains {
                let _ = writeln!(out, "{name}{{uid=\"{uid}\",domain=\"{}\"}} {}", label(domain), value(c));
            }
        }
    }
    out
}

/// Serves `GET /metrics` (anything else: 404) with the latest text, one short-lived connection
/// at a time: Prometheus scrapes every few seconds at most.
pub fn serve(listener: TcpListener, latest: Arc<Mutex<String>>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
        let mut req = [0u8; 2048];
        let mut len = 0;
        while len < req.len() {
            match conn.read(&mut req[len..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
            if req[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&req[..len]);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let response = if head.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
            let body = latest.lock().map(|t| t.clone()).unwrap_or_default();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 25\r\nConnection: close\r\n\r\nonly /metrics is served\r\n".to_string()
        };
        let _ = conn.write_all(response.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::DomainCounters;

    #[test]
    fn families_have_help_type_and_labelled_samples() {
        let mut c = ContainerSample { uid: 30701, values: Default::default() };
        c.values.insert(Metric::Cpu, 1_500_000_000);
        c.values.insert(Metric::Mem, 4096);
        let mut d = DomainSamples::new();
        d.insert((30701, "a\"b.example.com".into()), DomainCounters { hits: 3, rx: 30, tx: 300 });
        let text = render(&[c], &d, &NodeFigures { load1: Some(0.5), ..Default::default() });
        assert!(text.contains("# TYPE unbit_container_cpu_seconds_total counter\nunbit_container_cpu_seconds_total{uid=\"30701\"} 1.5\n"), "{text}");
        assert!(text.contains("unbit_container_memory_bytes{uid=\"30701\"} 4096\n"), "{text}");
        assert!(
            text.contains("unbit_domain_requests_total{uid=\"30701\",domain=\"a\\\"b.example.com\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("unbit_container_io_read_bytes_total"), "families without samples are left out");
        assert!(text.contains("unbit_node_load1 0.5\n"));
    }
}
