//! One collection cycle over every container of the node: the platform's cgroup subtree
//! (`<hierarchy>/<cgroup-name>/<uid>`, as `jail::cgroup` makes it) gives the containers and
//! their CPU, memory and I/O; the container's host-side interface (or its namespace's
//! `/proc/<pid>/net/dev`) its traffic; the quota backend its disk use. Each file is read once
//! per container and cycle into a reused buffer; nothing is spawned.

use crate::parse;
use jail::cgroup::CgroupSetup;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The container's end of its veth (`container_net::CONTAINER_IF`; that crate's netlink stack
/// is not needed here for one name).
const CONTAINER_END: &str = "uwsgi0";

/// Where a container's counters live, after the same rule the containers plugin follows
/// (`jail::cgroup::manager_for`): v1 when the memory controller is mounted as v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `<controller mount>/<cgroup name>` for each hierarchy read; cpuacct and blkio are
    /// absent on hosts that do not mount them (then CPU or I/O is not collected).
    V1 { memory: PathBuf, cpuacct: Option<PathBuf>, blkio: Option<PathBuf> },
    /// `<cgroup2 mount>/<cgroup name>`.
    V2 { root: PathBuf },
}

impl Layout {
    pub fn from_setup(setup: &CgroupSetup, name: &str) -> Result<Layout, String> {
        if !container_spec::is_path_component(name) {
            return Err(format!("--cgroup-name {name:?} is not a single path component"));
        }
        Ok(match setup {
            CgroupSetup::Legacy { v1 } | CgroupSetup::Hybrid { v1, .. } if v1.contains_key("memory") => Layout::V1 {
                memory: v1["memory"].join(name),
                cpuacct: v1.get("cpuacct").map(|m| m.join(name)),
                blkio: v1.get("blkio").map(|m| m.join(name)),
            },
            CgroupSetup::Hybrid { unified, .. } | CgroupSetup::Unified { root: unified } => {
                Layout::V2 { root: unified.join(name) }
            }
            CgroupSetup::Legacy { .. } => return Err("cgroup v1 without the memory controller".into()),
        })
    }

    /// The layout of this host (`/proc/self/mountinfo`).
    pub fn detect(name: &str) -> Result<Layout, String> {
        let setup = jail::cgroup::detect_setup(&jail::linux::Linux).map_err(|e| format!("cgroup layout: {e}"))?;
        Layout::from_setup(&setup, name)
    }

    pub fn version(&self) -> &'static str {
        match self {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
        }
    }

    /// The directory listing the containers (one child cgroup per uid).
    fn base(&self) -> &Path {
        match self {
            Layout::V1 { memory, .. } => memory,
            Layout::V2 { root } => root,
        }
    }

    /// The uids with a cgroup in the platform's subtree: the containers this node runs (or is
    /// starting or stopping).
    pub fn uids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.base()) else { return Vec::new() };
        let mut uids: Vec<u32> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        uids.sort_unstable();
        uids
    }
}

/// The container metrics, in the API's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    Cpu,
    IoRead,
    IoWrite,
    NetRx,
    NetTx,
    Mem,
    MemRss,
    MemCache,
    Quota,
}

impl Metric {
    pub const ALL: [Metric; 9] = [
        Metric::Cpu,
        Metric::IoRead,
        Metric::IoWrite,
        Metric::NetRx,
        Metric::NetTx,
        Metric::Mem,
        Metric::MemRss,
        Metric::MemCache,
        Metric::Quota,
    ];

    pub fn api_name(self) -> &'static str {
        match self {
            Metric::Cpu => "container.cpu",
            Metric::IoRead => "container.io.read",
            Metric::IoWrite => "container.io.write",
            Metric::NetRx => "container.net.rx",
            Metric::NetTx => "container.net.tx",
            Metric::Mem => "container.mem",
            Metric::MemRss => "container.mem.rss",
            Metric::MemCache => "container.mem.cache",
            Metric::Quota => "container.quota",
        }
    }
}

/// What one cycle read of one container; a metric that could not be read is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSample {
    pub uid: u32,
    pub values: BTreeMap<Metric, u64>,
}

/// Where a container's network counters came from (docs/metrics.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetSource {
    /// `/sys/class/net/uw<uid>/statistics`, host side of the container's veth (swapped).
    HostInterface,
    /// `/proc/<init pid>/net/dev`: the container's namespace, every interface but `lo`.
    Namespace,
}

pub struct Collector {
    pub layout: Layout,
    /// The homes (for the quota backend); `None`: quota is not collected.
    containers: Option<(jail::safefs::Dir, Box<dyn jail::QuotaBackend>)>,
    /// `/sys/class/net` and `/proc`, parameters so tests can point elsewhere.
    sys_net: PathBuf,
    proc: PathBuf,
    buf: String,
}

impl Collector {
    /// `containers_dir`: the homes, whose quota backend is detected once here.
    pub fn new(layout: Layout, containers_dir: Option<&Path>) -> Result<Collector, String> {
        let containers = match containers_dir {
            None => None,
            Some(dir) => {
                let backend = jail::detect_quota_backend(dir).map_err(|e| format!("--containers-dir: {e}"))?;
                let opened = jail::safefs::open_trusted_dir(&jail::linux::Linux, dir)
                    .map_err(|e| format!("--containers-dir {}: {e}", dir.display()))?;
                Some((opened, backend))
            }
        };
        Ok(Collector {
            layout,
            containers,
            sys_net: PathBuf::from("/sys/class/net"),
            proc: PathBuf::from("/proc"),
            buf: String::new(),
        })
    }

    /// The quota backend's name, for the start-up line ("none" when quota is not collected).
    pub fn quota_backend(&self) -> &'static str {
        self.containers.as_ref().map_or("none", |(_, b)| b.name())
    }

    /// Reads `path` into the reused buffer; `false` if it cannot be read (the container went
    /// away between the listing and the read, or the controller is not there).
    fn read(&mut self, path: &Path) -> bool {
        self.buf.clear();
        match std::fs::File::open(path) {
            Ok(mut f) => f.read_to_string(&mut self.buf).is_ok(),
            Err(_) => false,
        }
    }

    fn read_single(&mut self, path: &Path) -> Option<u64> {
        if self.read(path) {
            parse::single(&self.buf)
        } else {
            None
        }
    }

    /// Every container of the node.
    pub fn cycle(&mut self) -> (Vec<ContainerSample>, Option<NetSource>) {
        let mut source = None;
        let samples = self
            .layout
            .uids()
            .into_iter()
            .map(|uid| {
                let (sample, s) = self.container(uid);
                source = source.or(s);
                sample
            })
            .collect();
        (samples, source)
    }

    pub fn container(&mut self, uid: u32) -> (ContainerSample, Option<NetSource>) {
        let mut s = ContainerSample { uid, values: BTreeMap::new() };
        let mut put = |m: Metric, v: Option<u64>| {
            if let Some(v) = v {
                s.values.insert(m, v);
            }
        };
        let u = uid.to_string();
        let procs = match self.layout.clone() {
            Layout::V1 { memory, cpuacct, blkio } => {
                let mem = memory.join(&u);
                if let Some(cpuacct) = cpuacct {
                    put(Metric::Cpu, self.read_single(&cpuacct.join(&u).join("cpuacct.usage")));
                }
                put(Metric::Mem, self.read_single(&mem.join("memory.usage_in_bytes")));
                if self.read(&mem.join("memory.stat")) {
                    let (rss, cache) = parse::memory_stat(&self.buf, false);
                    put(Metric::MemRss, rss);
                    put(Metric::MemCache, cache);
                }
                if let Some(blkio) = blkio {
                    let dir = blkio.join(&u);
                    if self.read(&dir.join("blkio.throttle.io_service_bytes_recursive"))
                        || self.read(&dir.join("blkio.throttle.io_service_bytes"))
                    {
                        let (r, w) = parse::v1_blkio(&self.buf);
                        put(Metric::IoRead, Some(r));
                        put(Metric::IoWrite, Some(w));
                    }
                }
                mem.join("cgroup.procs")
            }
            Layout::V2 { root } => {
                let dir = root.join(&u);
                if self.read(&dir.join("cpu.stat")) {
                    put(Metric::Cpu, parse::v2_cpu_ns(&self.buf));
                }
                put(Metric::Mem, self.read_single(&dir.join("memory.current")));
                if self.read(&dir.join("memory.stat")) {
                    let (rss, cache) = parse::memory_stat(&self.buf, true);
                    put(Metric::MemRss, rss);
                    put(Metric::MemCache, cache);
                }
                // Absent when the io controller is not enabled for the subtree.
                if self.read(&dir.join("io.stat")) {
                    let (r, w) = parse::v2_io(&self.buf);
                    put(Metric::IoRead, Some(r));
                    put(Metric::IoWrite, Some(w));
                }
                dir.join("cgroup.procs")
            }
        };
        let source = self.network(uid, &procs, &mut put);
        if let Some((dir, backend)) = &self.containers {
            put(Metric::Quota, backend.usage(&jail::linux::Linux, dir, uid).ok().flatten());
        }
        (s, source)
    }

    /// The container's network bytes. The host end of its veth is authoritative (nothing in
    /// the container can change which interface that is), but only when the container's own
    /// namespace has the container end (`uwsgi0`): on a machine running two platforms, both
    /// numbering containers from the same uid, `uw<uid>` can be the other platform's (whose
    /// container then runs without one). Otherwise the namespace's own counters.
    fn network(&mut self, uid: u32, procs: &Path, put: &mut impl FnMut(Metric, Option<u64>)) -> Option<NetSource> {
        if !self.read(procs) {
            return None;
        }
        let pid = parse::lowest_pid(&self.buf)?;
        if !self.read(&self.proc.join(pid.to_string()).join("net/dev")) {
            return None;
        }
        let (rx, tx) = parse::net_dev(&self.buf);
        if parse::has_interface(&self.buf, CONTAINER_END) {
            let stats = self.sys_net.join(container_spec::host_interface(uid)).join("statistics");
            // The host end receives what the container sends, and the reverse.
            if let (Some(host_rx), Some(host_tx)) =
                (self.read_single(&stats.join("rx_bytes")), self.read_single(&stats.join("tx_bytes")))
            {
                put(Metric::NetTx, Some(host_rx));
                put(Metric::NetRx, Some(host_tx));
                return Some(NetSource::HostInterface);
            }
        }
        put(Metric::NetRx, Some(rx));
        put(Metric::NetTx, Some(tx));
        Some(NetSource::Namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_mounts() -> BTreeMap<String, PathBuf> {
        ["memory", "cpu", "cpuacct", "blkio", "pids"]
            .iter()
            .map(|c| (c.to_string(), PathBuf::from(format!("/sys/fs/cgroup/{c}"))))
            .collect()
    }

    #[test]
    fn layout_follows_the_containers_plugin_rule() {
        let hybrid = CgroupSetup::Hybrid { v1: v1_mounts(), unified: "/sys/fs/cgroup/unified".into() };
        assert_eq!(
            Layout::from_setup(&hybrid, "unbit").unwrap(),
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory/unbit".into(),
                cpuacct: Some("/sys/fs/cgroup/cpuacct/unbit".into()),
                blkio: Some("/sys/fs/cgroup/blkio/unbit".into()),
            }
        );
        let v2 = CgroupSetup::Unified { root: "/sys/fs/cgroup".into() };
        assert_eq!(Layout::from_setup(&v2, "unbit").unwrap(), Layout::V2 { root: "/sys/fs/cgroup/unbit".into() });
        assert!(Layout::from_setup(&v2, "../x").is_err());
    }

    /// A fake v2 tree: files laid out as the kernel does, read by the real collector.
    #[test]
    fn a_v2_container_read_from_files() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("unbit/30701");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(t.path().join("unbit/not-a-uid")).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
        std::fs::write(dir.join("memory.current"), "4096\n").unwrap();
        std::fs::write(dir.join("memory.stat"), "anon 1024\nfile 2048\n").unwrap();
        std::fs::write(dir.join("io.stat"), "8:0 rbytes=10 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n").unwrap();
        std::fs::write(dir.join("cgroup.procs"), "4242\n77\n").unwrap();
        let netdev = "Inter-|   Receive  |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed\n";
        std::fs::create_dir_all(t.path().join("proc/77/net")).unwrap();
        std::fs::write(
            t.path().join("proc/77/net/dev"),
            format!("{netdev}    lo: 9 1 0 0 0 0 0 0 9 1 0 0 0 0 0 0\nuwsgi0: 222 2 0 0 0 0 0 0 111 1 0 0 0 0 0 0\n"),
        )
        .unwrap();
        let net = t.path().join("net/uw30701/statistics");
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(net.join("rx_bytes"), "111\n").unwrap();
        std::fs::write(net.join("tx_bytes"), "222\n").unwrap();
        let mut c = Collector::new(Layout::V2 { root: t.path().join("unbit") }, None).unwrap();
        c.sys_net = t.path().join("net");
        c.proc = t.path().join("proc");
        let (samples, source) = c.cycle();
        assert_eq!(samples.len(), 1, "only numeric cgroups are containers");
        let v = &samples[0].values;
        assert_eq!(v[&Metric::Cpu], 1_500_000);
        assert_eq!((v[&Metric::Mem], v[&Metric::MemRss], v[&Metric::MemCache]), (4096, 1024, 2048));
        assert_eq!((v[&Metric::IoRead], v[&Metric::IoWrite]), (10, 20));
        // host side rx (111) is what the container sent
        assert_eq!((v[&Metric::NetRx], v[&Metric::NetTx]), (222, 111));
        assert_eq!(source, Some(NetSource::HostInterface));
        // Without uwsgi0 in the container's namespace, uw30701 is not its interface (another
        // platform's): the namespace's own counters count.
        std::fs::write(t.path().join("proc/77/net/dev"), format!("{netdev}  eth0: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n"))
            .unwrap();
        let (samples, source) = c.cycle();
        assert_eq!((samples[0].values[&Metric::NetRx], samples[0].values[&Metric::NetTx]), (5, 6));
        assert_eq!(source, Some(NetSource::Namespace));
        assert!(!v.contains_key(&Metric::Quota));
    }

    #[test]
    fn a_v1_container_read_from_files() {
        let t = tempfile::tempdir().unwrap();
        let p = |c: &str| t.path().join(c).join("unbit");
        for c in ["memory", "cpuacct", "blkio"] {
            std::fs::create_dir_all(p(c).join("30702")).unwrap();
        }
        std::fs::write(p("cpuacct").join("30702/cpuacct.usage"), "987654321\n").unwrap();
        std::fs::write(p("memory").join("30702/memory.usage_in_bytes"), "8192\n").unwrap();
        std::fs::write(p("memory").join("30702/memory.stat"), "cache 1\nrss 2\ntotal_cache 300\ntotal_rss 400\n")
            .unwrap();
        std::fs::write(p("blkio").join("30702/blkio.throttle.io_service_bytes"), "8:0 Read 5\n8:0 Write 6\nTotal 11\n")
            .unwrap();
        let layout = Layout::V1 { memory: p("memory"), cpuacct: Some(p("cpuacct")), blkio: Some(p("blkio")) };
        let mut c = Collector::new(layout, None).unwrap();
        c.sys_net = t.path().join("no-net");
        let (samples, source) = c.cycle();
        let v = &samples[0].values;
        assert_eq!(samples[0].uid, 30702);
        assert_eq!(v[&Metric::Cpu], 987654321);
        assert_eq!((v[&Metric::Mem], v[&Metric::MemRss], v[&Metric::MemCache]), (8192, 400, 300));
        assert_eq!((v[&Metric::IoRead], v[&Metric::IoWrite]), (5, 6));
        // no interface and no cgroup.procs: no network numbers rather than zeros
        assert_eq!(source, None);
        assert!(!v.contains_key(&Metric::NetRx));
    }
}
