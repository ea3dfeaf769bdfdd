//! A cgroup subtree owned by the benchmark, `<hierarchy>/<name>` with a name unique to this
//! run, for the anchors (the stock chain's `cgroup =` dirs, crun's `cgroupsPath`). Dropping
//! it kills, by PID, whatever is still inside (only processes the benchmark started can be
//! there) and removes the subtree bottom-up in every hierarchy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub struct BenchCgroups {
    pub name: String,
}

impl BenchCgroups {
    pub fn new(label: &str) -> BenchCgroups {
        BenchCgroups { name: format!("unbit-bench-{}-{label}", std::process::id()) }
    }

    /// `<root>/<controller>/<name>`, created if missing.
    pub fn ensure(&self, controller: &str) -> Result<PathBuf, String> {
        let dir = Path::new(CGROUP_ROOT).join(controller).join(&self.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// `<root>/<controller>/<name>/<child>`.
    pub fn dir(&self, controller: &str, child: &str) -> PathBuf {
        Path::new(CGROUP_ROOT).join(controller).join(&self.name).join(child)
    }

    /// Every hierarchy's copy of the subtree that exists.
    fn subtrees(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(CGROUP_ROOT) else { return vec![] };
        entries.flatten().map(|e| e.path().join(&self.name)).filter(|d| d.is_dir()).collect()
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.subtrees();
            if left.is_empty() {
                return;
            }
            for dir in &left {
                remove_tree(dir);
            }
            if Instant::now() >= deadline {
                eprintln!("bench: cgroups left behind: {:?}", self.subtrees());
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The PIDs in a cgroup (`cgroup.procs`), empty if it is gone.
pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Kills what is left in a subtree and removes it, children first (only empty cgroups go).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    for pid in procs(dir) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = std::fs::remove_dir(dir);
}
