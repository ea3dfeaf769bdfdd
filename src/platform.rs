//! The local platform exactly as `sudo make run` brings it up (`scripts/run-platform.sh`),
//! driven the way a person at a terminal drives it: started as a foreground job in its own
//! process group, stopped with Ctrl-C (SIGINT to that group), and then checked for anything it
//! must not leave behind. Its own run dir, ports and cgroup name keep it apart from a
//! developer's `./run` and from other tests.
//!
//! The script runs the node's services from the shipped configs (`vassals-examples/`) rendered
//! into `<run>/etc`; [`LocalPlatform::config_divergence`] and
//! [`LocalPlatform::launch_divergence`] check that this stays so.

use crate::harness::{project_root, InstanceBuilder};
use crate::host::{
    cgroup_dirs, mounts_below, print_container_logs, processes, remove_cgroup_tree, unmount_below, Process,
};
use crate::ports::free_port;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod configs;

/// What the run script prints once everything answers.
const READY: &str = "uwsgi.it platform running";

pub struct LocalPlatform {
    /// Holds the run dir and the script's output; removed last, after the platform stopped.
    scratch: tempfile::TempDir,
    pub run_dir: PathBuf,
    pub cgroup_name: String,
    /// RUNTIME_DIR: the sshd's keys dir and the broker's socket dir, outside the run dir.
    pub runtime_dir: PathBuf,
    settings: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

impl LocalPlatform {
    /// A platform that has not started yet, with its own run dir, free ports and cgroup name.
    pub fn new() -> LocalPlatform {
        let scratch = tempfile::Builder::new().prefix("unbit-platform-").tempdir().unwrap();
        // As the script resolves it (`realpath`): the rendered configs name it so.
        let run_dir = scratch.path().canonicalize().unwrap().join("run");
        let cgroup_name = format!("unbit-e2e-{}", std::process::id());
        // The customer sshd's keys dir and the ssh broker's socket live outside the run dir
        // (under /tmp, which sshd's StrictModes refuses): named after the scratch dir, unique.
        let runtime_dir = Path::new("/run").join(scratch.path().file_name().unwrap());
        let settings = vec![
            ("RUN_DIR".to_string(), run_dir.to_string_lossy().into_owned()),
            ("API_PORT".to_string(), free_port().to_string()),
            ("ROUTER_PORT".to_string(), free_port().to_string()),
            ("ROUTER_HTTPS_PORT".to_string(), free_port().to_string()),
            ("DNS_PORT".to_string(), free_port().to_string()),
            ("SSH_PORT".to_string(), free_port().to_string()),
            ("RECEIVERS_PORT".to_string(), free_port().to_string()),
            ("CGROUP_NAME".to_string(), cgroup_name.clone()),
            ("RUNTIME_DIR".to_string(), runtime_dir.to_string_lossy().into_owned()),
        ];
        LocalPlatform { scratch, run_dir, cgroup_name, runtime_dir, settings, child: None, starts: 0 }
    }

    fn output_path(&self) -> PathBuf {
        self.scratch.path().join(format!("run-platform-{}.out", self.starts))
    }

    /// What the script printed in its latest start.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.output_path()).unwrap_or_default()
    }

    /// Runs the script and waits until it says the platform is up. The first start may build
    /// the plugins, the binaries and the distro.
    pub fn start(&mut self, timeout: Duration) {
        assert!(self.child.is_none(), "the platform is already running");
        self.starts += 1;
        let out = std::fs::File::create(self.output_path()).unwrap();
        let child = Command::new("bash")
            .arg(project_root().join("scripts/run-platform.sh"))
            .envs(self.settings.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("bash runs scripts/run-platform.sh");
        self.child = Some(child);
        let deadline = Instant::now() + timeout;
        while !self.output().contains(READY) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("run-platform.sh ended ({status}) before the platform was up:\n{}", self.output());
            }
            assert!(Instant::now() < deadline, "the platform was not up within {timeout:?}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Only the script's first step: the shipped configs rendered into `<run>/etc`
    /// (`run-platform.sh --render-only`; needs no build and no root).
    pub fn render_configs(&self) {
        let out = Command::new("bash")
            .arg(project_root().join("scripts/run-platform.sh"))
            .arg("--render-only")
            .envs(self.settings.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("bash runs scripts/run-platform.sh");
        assert!(
            out.status.success(),
            "run-platform.sh --render-only failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the script prepares before it starts the services, for a test that runs the
    /// rendered router config itself: the log dir, the default certificate (returned), and the
    /// stats socket's dir, which the router's user binds in.
    pub fn prepare_router(&self) -> PathBuf {
        std::fs::create_dir_all(self.run_dir.join("log")).unwrap();
        let user = nix::unistd::User::from_name("unbit-router").unwrap().expect("install-deps made unbit-router");
        let stats = self.run_dir.join("stats");
        std::fs::create_dir_all(&stats).unwrap();
        std::os::unix::fs::chown(&stats, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();
        self.default_certificate()
    }

    /// The rendered router config (`services/http.ini`, what `make run` runs): its path and text.
    pub fn router_config(&self) -> (PathBuf, String) {
        let ini = self.etc().join("uwsgi/services/http.ini");
        let text = std::fs::read_to_string(&ini).unwrap_or_else(|e| panic!("{}: {e}", ini.display()));
        (ini, text)
    }

    /// The rendered router config (`services/http.ini`) as a test instance: `uwsgi --ini` with
    /// it, and on top (later options win) only the folders of the test's node, which the
    /// rendered config names under `<run>` instead: the validator's socket (`<subscribe
    /// dir>/http`) and the containers' homes. A test adds its own options, then starts it.
    pub fn router_instance(&self, name: &str, subscribe_socket: &Path, containers_dir: &Path) -> InstanceBuilder {
        let (ini, _) = self.router_config();
        InstanceBuilder::new(name)
            .args(["--ini", &ini.to_string_lossy()])
            .args(["--unbit-subscriptions-socket", &subscribe_socket.to_string_lossy()])
            .args(["--unbit-subscriptions-containers-dir", &containers_dir.to_string_lossy()])
    }

    /// The node's default certificate as the script makes it at the first run
    /// (`scripts/default-certificate.sh`): `<run>/ssl/node.crt` (returned) and `node.key`, which
    /// the rendered router config serves on its https socket.
    pub fn default_certificate(&self) -> PathBuf {
        let dir = self.run_dir.join("ssl");
        let out = Command::new("bash")
            .arg(project_root().join("scripts/default-certificate.sh"))
            .arg(&dir)
            .output()
            .expect("bash runs scripts/default-certificate.sh");
        assert!(out.status.success(), "default-certificate.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        dir.join("node.crt")
    }

    /// The router's log (the shipped config logs to a file, `logto`: `<run>/log/router.log`).
    pub fn router_log(&self) -> String {
        std::fs::read_to_string(self.run_dir.join("log/router.log")).unwrap_or_default()
    }

    /// Waits until the router's log holds `needle`; the error ends with the log.
    pub fn wait_router_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while !self.router_log().contains(needle) {
            if Instant::now() > deadline {
                return Err(format!("no {needle:?} in the router's log after {timeout:?}:\n{}", self.router_log()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The rendered configs' dir, a node's `/etc` (`uwsgi/`, `unbit/`) plus `local/`.
    pub fn etc(&self) -> PathBuf {
        self.run_dir.join("etc")
    }

    /// How `<run>/etc` differs from the shipped configs beyond the paths, ports and names
    /// `scripts/local-overrides` declares (see [`configs::divergence`]); empty when none.
    pub fn config_divergence(&self) -> Vec<String> {
        let mut vars: Vec<(&str, String)> = vec![("ROOT", project_root().to_string_lossy().into_owned())];
        for (name, value) in &self.settings {
            let var = match name.as_str() {
                "RUN_DIR" => "RUN",
                "RUNTIME_DIR" => "RUNTIME",
                other => other,
            };
            vars.push((var, value.clone()));
        }
        configs::divergence(&project_root(), &self.run_dir, &vars)
    }

    /// How the running platform's uWSGI instances were started, if not from the rendered
    /// configs alone: the script must start each top-level instance (`etc/uwsgi/*.ini`,
    /// `etc/local/*.ini`) as `uwsgi --ini <file>` and nothing else, and every service
    /// (`etc/uwsgi/services/*.ini`) must be a vassal of the services Emperor, which starts it
    /// as `uwsgi --ini <name>` in that dir (its title is then renamed, so its cwd tells).
    pub fn launch_divergence(&self) -> Vec<String> {
        let Some(child) = &self.child else { return vec!["the platform is not running".into()] };
        let etc = self.etc();
        let ini_in = |dir: PathBuf| -> Vec<PathBuf> {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "ini"))
                .collect();
            found.sort();
            found
        };
        let mut wanted = ini_in(etc.join("uwsgi"));
        wanted.extend(ini_in(etc.join("local")));
        wanted.sort();
        let services_dir = etc.join("uwsgi/services");
        let services = ini_in(services_dir.clone());
        let table = proc_table();
        let is_uwsgi = |p: &ProcInfo| p.exe.file_name().is_some_and(|n| n.to_string_lossy().starts_with("uwsgi"));
        let mut found = Vec::new();
        let mut started = Vec::new();
        for p in table.iter().filter(|p| p.ppid == child.id() as i32 && is_uwsgi(p)) {
            match p.argv.as_slice() {
                [uwsgi, flag, file] if uwsgi == "uwsgi" && flag == "--ini" => started.push(PathBuf::from(file)),
                argv => found.push(format!("uWSGI {} started as {argv:?}, not `uwsgi --ini <rendered file>`", p.pid)),
            }
        }
        started.sort();
        if started != wanted {
            found.push(format!("the script started uWSGI with {started:?}; the rendered instances are {wanted:?}"));
        }
        let emperor_argv =
            ["uwsgi".to_string(), "--ini".into(), etc.join("uwsgi/services-emperor.ini").to_string_lossy().into()];
        let emperor: Vec<i32> = table.iter().filter(|p| p.argv == emperor_argv).map(|p| p.pid).collect();
        let vassals: Vec<&ProcInfo> =
            table.iter().filter(|p| emperor.contains(&p.ppid) && p.argv != emperor_argv).collect();
        for v in &vassals {
            if !is_uwsgi(v) || v.cwd != services_dir {
                found.push(format!(
                    "the services Emperor's child {} ({:?}, cwd {}) is not a uWSGI vassal started in {}",
                    v.pid,
                    v.argv,
                    v.cwd.display(),
                    services_dir.display()
                ));
            }
        }
        if vassals.len() != services.len() {
            found.push(format!(
                "{} services rendered ({services:?}), {} vassals running",
                services.len(),
                vassals.len()
            ));
        }
        found
    }

    /// `run/platform.env`, as a shell reads it.
    pub fn env_file(&self) -> PathBuf {
        self.run_dir.join("platform.env")
    }

    /// The variables of `run/platform.env`, read by bash itself (values may be quoted).
    pub fn env(&self) -> BTreeMap<String, String> {
        let script = "set -a; source \"$1\"; set +a; env -0";
        let out = Command::new("bash").args(["-c", script, "env"]).arg(self.env_file()).env_clear().output().unwrap();
        assert!(out.status.success(), "cannot source {}", self.env_file().display());
        out.stdout
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Ctrl-C: SIGINT to the script's whole process group, as a terminal sends it, then up to
    /// two minutes for the script's own cleanup.
    pub fn ctrl_c(&mut self) -> ExitStatus {
        self.interrupt().unwrap_or_else(|e| panic!("{e}"))
    }

    fn interrupt(&mut self) -> Result<ExitStatus, String> {
        let mut child = self.child.take().ok_or("the platform is not running")?;
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = killpg(group, Signal::SIGKILL);
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!(
                    "run-platform.sh did not stop within 2 minutes of Ctrl-C ({status}):\n{}",
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pids in container `uid`'s cgroups of this platform (not another platform's container
    /// with the same uid, nor an ssh session's processes on the host).
    pub fn container_pids(&self, uid: u32) -> Vec<i32> {
        let mut pids: Vec<i32> = cgroup_dirs(&self.cgroup_name)
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join(uid.to_string()).join("cgroup.procs")).ok())
            .flat_map(|t| t.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Everything of this platform still present: processes (its paths on their command line,
    /// or running as one of `uids`), mounts under the run dir, loop devices backed by files in
    /// it, cgroups of its subtree, and its runtime dir (the containers' ssh keys).
    pub fn leftovers(&self, uids: &[u32]) -> Vec<String> {
        let mut found: Vec<String> = self
            .processes(uids)
            .iter()
            .map(|p| format!("process {} (uid {:?}): {}", p.pid, p.uid, p.cmdline))
            .collect();
        found.extend(mounts_below(&self.run_dir).into_iter().map(|m| format!("mount {m}")));
        found.extend(self.loop_devices().into_iter().map(|(dev, file)| format!("loop device {dev} on {file}")));
        found.extend(cgroup_dirs(&self.cgroup_name).into_iter().map(|c| format!("cgroup {}", c.display())));
        if self.runtime_dir.exists() {
            found.push(format!("runtime dir {}", self.runtime_dir.display()));
        }
        found
    }

    /// The platform's processes: its paths on their command line, running as one of `uids`,
    /// or working in its run dir (the services' vassals, renamed by `procname-prefix`, run in
    /// `<run>/etc/uwsgi/services`).
    fn processes(&self, uids: &[u32]) -> Vec<Process> {
        let run = self.run_dir.to_string_lossy().into_owned();
        let works_in_run =
            |pid: i32| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&self.run_dir));
        processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(&run) || p.uid.is_some_and(|u| uids.contains(&u)) || works_in_run(p.pid))
            .collect()
    }

    fn loop_devices(&self) -> Vec<(String, String)> {
        let run = self.run_dir.to_string_lossy().into_owned();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).unwrap_or_default();
            if backing.starts_with(&run) {
                found.push((entry.file_name().to_string_lossy().into_owned(), backing.trim().to_string()));
            }
        }
        found
    }

    /// Last resort after a failed test: whatever the script's own cleanup did not remove, by
    /// PID, mount point, device and directory, never by name pattern.
    fn force_clean(&self, uids: &[u32]) {
        for p in self.processes(uids) {
            let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(500));
        unmount_below(&self.run_dir);
        for (dev, _) in self.loop_devices() {
            let _ = Command::new("losetup").arg("-d").arg(format!("/dev/{dev}")).status();
        }
        for cgroup in cgroup_dirs(&self.cgroup_name) {
            remove_cgroup_tree(&cgroup);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }

    /// Prints the script's output and the platform's logs (for a failing test).
    pub fn print_logs(&self) {
        eprintln!("---- run-platform.sh output (start {}) ----\n{}", self.starts, self.output());
        for log in ["api", "services", "router", "node", "dns"] {
            let text = std::fs::read_to_string(self.run_dir.join(format!("log/{log}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!("---- run/log/{log}.log (last 60 lines) ----");
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
        print_container_logs(&self.run_dir.join("containers"), 40);
    }
}

impl Default for LocalPlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for LocalPlatform {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if self.child.is_some() {
            if let Err(e) = self.interrupt() {
                eprintln!("{e}");
            }
        }
        // Container uids are the API's: 30001 upwards, one per container this platform made.
        let uids: Vec<u32> = std::fs::read_dir(self.run_dir.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
            .collect();
        let left = self.leftovers(&uids);
        if !left.is_empty() {
            eprintln!("platform leftovers after stop, removing: {left:#?}");
            self.force_clean(&uids);
        }
    }
}

/// What [`LocalPlatform::launch_divergence`] reads of a process.
struct ProcInfo {
    pid: i32,
    ppid: i32,
    argv: Vec<String>,
    exe: PathBuf,
    cwd: PathBuf,
}

fn proc_table() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let dir = entry.path();
            // `pid (comm) state ppid ...`: comm may hold blanks and parentheses.
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let argv = std::fs::read(dir.join("cmdline")).ok()?;
            let argv =
                argv.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned());
            Some(ProcInfo {
                pid,
                ppid,
                argv: argv.collect(),
                exe: std::fs::read_link(dir.join("exe")).unwrap_or_default(),
                cwd: std::fs::read_link(dir.join("cwd")).unwrap_or_default(),
            })
        })
        .collect()
}
