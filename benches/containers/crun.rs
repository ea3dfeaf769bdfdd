//! The OCI anchor: `crun run` of `/bin/sh -c true` in the same distro (read-only root, the
//! same pid/net/ipc/uts/mount namespaces, the same memory and pids limits), timed around the
//! whole `crun run` process, like anchors.md §1.6 method A.
//!
//! crun 1.8 refuses hybrid cgroups (a non-empty `/sys/fs/cgroup/unified`), so, as anchors.md
//! does, it runs in a private mount namespace with the unified hierarchy unmounted. A
//! worker (this same program, started under `unshare -m --propagation private` with
//! [`WORKER_ENV`] set) does the unmount once and then runs crun on request, one line per run,
//! so the interleaved loop pays neither `unshare` nor `umount` inside the timing.

use crate::cgroups::BenchCgroups;
use crate::ours::{MEMORY_MB, PIDS_LIMIT};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to the bundle dir) in the worker's environment.
pub const WORKER_ENV: &str = "UNBIT_BENCH_CRUN_WORKER";

pub struct CrunRunner {
    worker: Child,
    to_worker: Option<ChildStdin>,
    from_worker: BufReader<ChildStdout>,
    runs: u32,
    _cgroups: BenchCgroups,
    _bundle: tempfile::TempDir,
}

impl CrunRunner {
    pub fn start(distro: &Path) -> Result<CrunRunner, String> {
        let bundle = tempfile::Builder::new().prefix("unbit-crun-").tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let cgroups = BenchCgroups::new("crun");
        write_config(bundle.path(), distro, &cgroups.name)?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut worker = Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(exe)
            .env(WORKER_ENV, bundle.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its own process group: a Ctrl-C meant for the benchmark must not hit a crun run.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the crun worker: {e}"))?;
        let to_worker = worker.stdin.take();
        let from_worker = BufReader::new(worker.stdout.take().ok_or("no worker stdout")?);
        let mut runner = CrunRunner { worker, to_worker, from_worker, runs: 0, _cgroups: cgroups, _bundle: bundle };
        match runner.read_reply()?.as_str() {
            "ready" => Ok(runner),
            other => Err(format!("crun worker: {other}")),
        }
    }

    fn read_reply(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.from_worker.read_line(&mut line).map_err(|e| format!("crun worker: {e}"))?;
        if line.is_empty() {
            return Err("the crun worker exited".into());
        }
        Ok(line.trim_end().to_string())
    }

    /// One `crun run`; its wall time.
    pub fn run_once(&mut self) -> Result<Duration, String> {
        self.runs += 1;
        let id = format!("unbit-bench-{}-{}", std::process::id(), self.runs);
        let to_worker = self.to_worker.as_mut().ok_or("worker closed")?;
        writeln!(to_worker, "{id}").and_then(|_| to_worker.flush()).map_err(|e| format!("crun worker: {e}"))?;
        let reply = self.read_reply()?;
        let mut parts = reply.splitn(3, ' ');
        let (status, nanos) = (parts.next(), parts.next().and_then(|n| n.parse::<u64>().ok()));
        match (status, nanos) {
            (Some("ok"), Some(n)) => Ok(Duration::from_nanos(n)),
            _ => Err(format!("crun run {id}: {reply}")),
        }
    }
}

impl Drop for CrunRunner {
    fn drop(&mut self) {
        // Closing its stdin ends the worker; kill it by PID if it does not go.
        self.to_worker.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.worker.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.worker.kill();
        let _ = self.worker.wait();
    }
}

/// `crun spec`'s default bundle, edited: the distro as a read-only root, a shell that exits,
/// the benchmark's limits, a cgroup under the benchmark's own subtree.
fn write_config(bundle: &Path, distro: &Path, cgroup_parent: &str) -> Result<(), String> {
    let out = Command::new("crun").arg("spec").current_dir(bundle).output().map_err(|e| format!("crun spec: {e}"))?;
    if !out.status.success() {
        return Err(format!("crun spec: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut config: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("crun spec output: {e}"))?;
    config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "true"]);
    config["process"]["terminal"] = false.into();
    config["root"] = serde_json::json!({"path": distro, "readonly": true});
    config["hostname"] = "bench".into();
    config["linux"]["resources"]["memory"] = serde_json::json!({"limit": MEMORY_MB << 20});
    config["linux"]["resources"]["pids"] = serde_json::json!({"limit": PIDS_LIMIT});
    config["linux"]["cgroupsPath"] = format!("/{cgroup_parent}/run").into();
    std::fs::write(&path, config.to_string()).map_err(|e| format!("write {}: {e}", path.display()))
}

/// The worker's whole life: unmount the unified hierarchy in this private mount namespace,
/// say `ready`, then for each container id read on stdin run crun and answer
/// `ok <nanoseconds>` or `err <nanoseconds> <first line of crun's stderr>`.
pub fn worker_main(bundle: &str) {
    use nix::mount::{umount2, MntFlags};
    match umount2("/sys/fs/cgroup/unified", MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => println!("ready"),
        Err(e) => println!("cannot unmount /sys/fs/cgroup/unified: {e}"),
    }
    for id in std::io::stdin().lock().lines().map_while(Result::ok) {
        let started = Instant::now();
        let out = Command::new("crun")
            .args(["run", "-b", bundle, &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let nanos = started.elapsed().as_nanos();
        match out {
            Ok(o) if o.status.success() => println!("ok {nanos}"),
            Ok(o) => {
                // A failed run may leave its container behind.
                let _ = Command::new("crun").args(["delete", "-f", &id]).output();
                let why = String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("").to_string();
                println!("err {nanos} {}: {why}", o.status);
            }
            Err(e) => println!("err {nanos} cannot run crun: {e}"),
        }
    }
}
