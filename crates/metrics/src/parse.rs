//! The kernel's text formats the collector reads, one pure function each (tested on v1 and v2
//! samples below). A value that is missing or not a number is `None`: the metric is left out
//! of the cycle rather than reported as 0.

/// A file holding one number (`cpuacct.usage`, `memory.usage_in_bytes`, `memory.current`,
/// `/sys/class/net/*/statistics/*`).
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, v2 `cpu.stat`).
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Resident and page-cache bytes from `memory.stat`: v1 `total_rss`/`total_cache` (the
/// hierarchy's totals; `rss`/`cache` when the kernel has no totals), v2 `anon`/`file`.
pub fn memory_stat(text: &str, v2: bool) -> (Option<u64>, Option<u64>) {
    if v2 {
        (flat_key(text, "anon"), flat_key(text, "file"))
    } else {
        (
            flat_key(text, "total_rss").or_else(|| flat_key(text, "rss")),
            flat_key(text, "total_cache").or_else(|| flat_key(text, "cache")),
        )
    }
}

/// CPU time in nanoseconds from v2 `cpu.stat` (`usage_usec`).
pub fn v2_cpu_ns(text: &str) -> Option<u64> {
    flat_key(text, "usage_usec").map(|us| us.saturating_mul(1000))
}

/// Bytes read and written from v1 `blkio.throttle.io_service_bytes[_recursive]`: lines
/// `MAJ:MIN Read N` / `MAJ:MIN Write N` summed over devices (the `Total` lines are not
/// device lines and are skipped).
pub fn v1_blkio(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(op), Some(n)) = (f.next(), f.next(), f.next()) else { continue };
        if !dev.contains(':') {
            continue;
        }
        let Ok(n) = n.parse::<u64>() else { continue };
        match op {
            "Read" => read = read.saturating_add(n),
            "Write" => write = write.saturating_add(n),
            _ => {}
        }
    }
    (read, write)
}

/// Bytes read and written from v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N ...` per device.
pub fn v2_io(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        for field in line.split_whitespace().skip(1) {
            let Some((k, v)) = field.split_once('=') else { continue };
            let Ok(n) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => read = read.saturating_add(n),
                "wbytes" => write = write.saturating_add(n),
                _ => {}
            }
        }
    }
    (read, write)
}

/// Received and transmitted bytes of every interface but `lo` in `/proc/<pid>/net/dev` (the
/// namespace's own view: rx is what the container received).
pub fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let c: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if c.len() >= 16 {
            rx = rx.saturating_add(c[0]);
            tx = tx.saturating_add(c[8]);
        }
    }
    (rx, tx)
}

/// Whether `/proc/<pid>/net/dev` lists the interface `name`.
pub fn has_interface(text: &str, name: &str) -> bool {
    text.lines().skip(2).any(|l| l.split_once(':').is_some_and(|(n, _)| n.trim() == name))
}

/// The lowest pid in a `cgroup.procs` listing: the container's init, forked first (the
/// namespaces it made are the container's).
pub fn lowest_pid(text: &str) -> Option<u32> {
    text.lines().filter_map(|l| l.trim().parse::<u32>().ok()).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MEMORY_STAT: &str = "cache 9809920\nrss 8503296\nrss_huge 0\nshmem 9068544\n\
        hierarchical_memory_limit 536870912\ntotal_cache 4780011520\ntotal_rss 64761856\ntotal_rss_huge 0\n";
    const V2_MEMORY_STAT: &str = "anon 12582912\nfile 3207168\nkernel 1007616\nkernel_stack 98304\n\
        pagetables 225280\nsock 0\nshmem 0\nfile_mapped 1982464\n";

    #[test]
    fn memory_stat_v1_prefers_the_hierarchy_totals() {
        assert_eq!(memory_stat(V1_MEMORY_STAT, false), (Some(64761856), Some(4780011520)));
        assert_eq!(memory_stat("cache 10\nrss 20\n", false), (Some(20), Some(10)));
        assert_eq!(memory_stat("", false), (None, None));
    }

    #[test]
    fn memory_stat_v2_anon_and_file() {
        assert_eq!(memory_stat(V2_MEMORY_STAT, true), (Some(12582912), Some(3207168)));
        // `file_mapped` must not be taken for `file`
        assert_eq!(memory_stat("file_mapped 5\nanon 1\n", true), (Some(1), None));
    }

    #[test]
    fn single_values_and_v2_cpu() {
        assert_eq!(single("81234567890\n"), Some(81234567890));
        assert_eq!(single("max\n"), None);
        let cpu = "usage_usec 2045123\nuser_usec 1500000\nsystem_usec 545123\nnr_periods 0\n";
        assert_eq!(v2_cpu_ns(cpu), Some(2_045_123_000));
        assert_eq!(v2_cpu_ns("nr_periods 0\n"), None);
    }

    #[test]
    fn v1_blkio_sums_devices_and_skips_totals() {
        let text = "8:16 Read 4096\n8:16 Write 8192\n8:16 Sync 12288\n8:16 Async 0\n8:16 Discard 0\n8:16 Total 12288\n\
                    254:0 Read 100\n254:0 Write 1\n254:0 Total 101\nTotal 12389\n";
        assert_eq!(v1_blkio(text), (4196, 8193));
        assert_eq!(v1_blkio("Total 0\n"), (0, 0));
    }

    #[test]
    fn v2_io_stat_sums_devices() {
        let text = "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n\
                    254:0 rbytes=100 wbytes=10 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(v2_io(text), (1459300, 314773514));
        assert_eq!(v2_io(""), (0, 0));
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0\n\
uwsgi0: 5000 40 0 0 0 0 0 0 7000 50 0 0 0 0 0 0\n\
  eth1: 1 1 0 0 0 0 0 0 2 1 0 0 0 0 0 0\n";
        assert_eq!(net_dev(text), (5001, 7002));
        assert!(has_interface(text, "uwsgi0") && has_interface(text, "eth1") && !has_interface(text, "uwsgi"));
    }

    #[test]
    fn lowest_pid_of_a_listing() {
        assert_eq!(lowest_pid("4242\n17\n99\n"), Some(17));
        assert_eq!(lowest_pid(""), None);
    }
}
