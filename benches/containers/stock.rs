//! The anchor: stock uWSGI (the same Debian 2.0.21 binary) as the original's containers
//! Emperor, `emperor-use-clone = fs,pid,ipc,uts,net` over a vassals directory, fed
//! `<uid>.ini` files that run the original hook chain ([`crate::original_vassal`]).
//!
//! The stock directory monitor only polls, every `emperor-freq` seconds (3 by default, which
//! the original kept). Two ways of feeding it are measured: as the original ran (the file
//! waits for the next scan) and woken at once with SIGWINCH, which makes the stock Emperor scan
//! immediately (`emperor_wakeup` in core/emperor.c): that isolates the hook chain's own cost.
//!
//! The Emperor runs in a private mount namespace (`unshare -m --propagation private`), so the
//! `/ns` binds of its containers could never propagate to the host whatever the host's
//! propagation defaults are.

use crate::cgroups::BenchCgroups;
use crate::footprint::{self, Footprint};
use crate::original_vassal::{self, Container, HostPaths, SuperblockRemounts};
use crate::ours::{tail, MEMORY_MB, SSH_KEY};
use crate::readiness::Readiness;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uwsgi_it::harness::{uwsgi_bin, Instance, InstanceBuilder};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wakeup {
    /// SIGWINCH right after the rename: the Emperor scans at once.
    Signal,
    /// Nothing: the file waits for the Emperor's next periodic scan.
    Poll,
}

pub struct StockNode {
    emperor: Instance,
    pub readiness: Readiness,
    paths: HostPaths,
    vassals: PathBuf,
    staging: PathBuf,
    keys: (String, String),
    // Dropped after the Emperor is stopped (see Drop), before the temp dir goes.
    cgroups: BenchCgroups,
    _root: tempfile::TempDir,
}

impl StockNode {
    /// `label` makes the cgroup subtree's name unique within this run.
    pub fn start(distro: &Path, keys: &(String, String), label: &str) -> Result<StockNode, String> {
        let root = tempfile::Builder::new().prefix("unbit-stock-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let dir = |d: &str| root.path().join(d);
        for d in ["vassals", "containers", "ns", "subscribe", "staging"] {
            std::fs::create_dir(dir(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let cgroups = BenchCgroups::new(label);
        cgroups.ensure("cpu")?;
        cgroups.ensure("memory")?;
        let paths = HostPaths {
            containers: dir("containers"),
            distro: distro.to_path_buf(),
            ns: dir("ns"),
            subscribe: dir("subscribe"),
            cgroup_parent: cgroups.name.clone(),
        };
        let readiness = Readiness::watch(&paths.containers)?;
        let vassals = dir("vassals").to_string_lossy().into_owned();
        let emperor = InstanceBuilder::new("stock-emperor")
            .binary("unshare")
            .args(["-m", "--propagation", "private", &uwsgi_bin()])
            .args(["--emperor", &vassals, "--emperor-use-clone", "fs,pid,ipc,uts,net"])
            .start();
        emperor.wait_for_log("*** starting uWSGI Emperor ***", Duration::from_secs(20))?;
        Ok(StockNode {
            emperor,
            readiness,
            paths,
            vassals: dir("vassals"),
            staging: dir("staging"),
            keys: keys.clone(),
            cgroups,
            _root: root,
        })
    }

    fn vassal_ini(&self, uid: u32, remounts: SuperblockRemounts) -> String {
        let container = Container {
            uid,
            hostname: "bench",
            memory_bytes: MEMORY_MB << 20,
            ssh_keys: &[SSH_KEY],
            rsa_private_pem: &self.keys.0,
            rsa_public_pem: &self.keys.1,
            etc_hosts: &["127.0.0.1 localhost"],
            etc_resolv_conf: &["nameserver 127.0.0.1"],
        };
        original_vassal::render(&container, &self.paths, remounts)
    }

    /// Drops `<uid>.ini` for each of `uids` into the vassals dir; returns the instant just
    /// before the first rename.
    pub fn launch(&mut self, uids: &[u32], remounts: SuperblockRemounts, wakeup: Wakeup) -> Result<Instant, String> {
        for &uid in uids {
            let path = self.staging.join(format!("{uid}.ini"));
            std::fs::write(&path, self.vassal_ini(uid, remounts))
                .map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        let t0 = Instant::now();
        for &uid in uids {
            let name = format!("{uid}.ini");
            std::fs::rename(self.staging.join(&name), self.vassals.join(&name))
                .map_err(|e| format!("rename {name}: {e}"))?;
        }
        if wakeup == Wakeup::Signal {
            let pid = nix::unistd::Pid::from_raw(self.emperor.pid() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGWINCH).map_err(|e| format!("SIGWINCH: {e}"))?;
        }
        Ok(t0)
    }

    pub fn footprint(&self, uid: u32) -> Footprint {
        footprint::of_cgroup(&self.cgroups.dir("memory", &uid.to_string()))
    }

    /// The last lines of the stock Emperor's log and of one container's log, for an error report.
    pub fn log_tail(&self, uid: u32) -> String {
        let container_log = self.paths.containers.join(format!("{uid}/logs/emperor.log"));
        let container = std::fs::read_to_string(container_log).unwrap_or_default();
        format!("{}\n--- {uid}/logs/emperor.log ---\n{}", tail(&self.emperor.log(), 10), tail(&container, 10))
    }
}

impl Drop for StockNode {
    fn drop(&mut self) {
        // SIGINT by PID: the stock Emperor stops its vassals before exiting. The cgroups then
        // go (killing, by PID, anything left in them), then the temp dir.
        self.emperor.stop();
    }
}
