//! Per-domain hits and bytes: the table every HTTP router process writes (the front door's
//! `unbit-router-domain-counters`, `crates/domain-counters`), read once a cycle and kept to the
//! containers of this node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Counters of one domain served by one container: requests, bytes written to it, bytes read
/// from it.
pub type DomainCounters = domain_counters::Counts;

/// `(uid, domain)` -> counters.
pub type DomainSamples = BTreeMap<(u32, String), DomainCounters>;

/// One reading of the router's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouterReading {
    pub domains: DomainSamples,
    /// Pairs of no container of this node (a node the router could not attribute, uid 0, or a
    /// container removed since): left out.
    pub unknown: usize,
    /// What the router counted while its table was full.
    pub overflow: DomainCounters,
    pub slots_used: usize,
    pub slots: usize,
    /// Entries whose name is not a domain (a router process writing garbage): left out.
    pub malformed: usize,
}

/// Keeps the pairs of `uids` (the containers with a cgroup on this node).
pub fn per_container(snapshot: domain_counters::Snapshot, uids: &BTreeSet<u32>) -> RouterReading {
    let total = snapshot.pairs.len();
    let domains: DomainSamples = snapshot.pairs.into_iter().filter(|((uid, _), _)| uids.contains(uid)).collect();
    RouterReading {
        unknown: total - domains.len(),
        domains,
        overflow: snapshot.overflow,
        slots_used: snapshot.used,
        slots: snapshot.capacity,
        malformed: snapshot.malformed,
    }
}

/// Reads the table at `path` and attributes its pairs.
pub fn collect(path: &Path, uids: &BTreeSet<u32>) -> Result<RouterReading, String> {
    Ok(per_container(domain_counters::read(path)?, uids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_containers_are_kept() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("counters");
        let table = domain_counters::Table::create(&path, 8).unwrap();
        let c = |hits| DomainCounters { hits, rx: hits * 10, tx: hits * 100 };
        table.add(table.slot(30701, b"a.example.com").unwrap(), c(3));
        table.add(table.slot(30702, b"a.example.com").unwrap(), c(4));
        table.add(table.slot(0, b"b.example.com").unwrap(), c(5));
        table.add(table.slot(40000, b"c.example.com").unwrap(), c(6));
        table.add_overflow(c(1));
        let r = collect(&path, &[30701, 30702, 30703].into()).unwrap();
        assert_eq!(r.domains.len(), 2);
        assert_eq!(r.domains[&(30701, "a.example.com".to_string())], c(3));
        assert_eq!(r.domains[&(30702, "a.example.com".to_string())], c(4));
        assert_eq!((r.unknown, r.overflow, r.slots_used, r.slots), (2, c(1), 4, 8));
        assert!(collect(&t.path().join("absent"), &BTreeSet::new()).is_err());
    }
}
