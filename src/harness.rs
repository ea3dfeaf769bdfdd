//! Real uWSGI instances for tests.
//!
//! An [`Instance`] runs in its own temporary directory and process group, logs to a file the
//! test can read, and is stopped by PID with SIGINT (uWSGI 2.0 treats SIGTERM as a reload)
//! when dropped, so a failing test leaves nothing running. A test that panics gets the tail of
//! the instance's log printed, which is usually the explanation.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The uWSGI binary the tests target (`UWSGI_BIN`, default: the one the plugins were built for).
pub fn uwsgi_bin() -> String {
    std::env::var("UWSGI_BIN").unwrap_or_else(|_| env!("UWSGI_IT_DEFAULT_UWSGI").to_string())
}

/// Where `make` put the plugins (`UWSGI_IT_PLUGINS` overrides).
pub fn plugins_dir() -> PathBuf {
    std::env::var_os("UWSGI_IT_PLUGINS").map_or_else(|| PathBuf::from(env!("UWSGI_IT_DEFAULT_PLUGINS")), PathBuf::from)
}

/// The project's root folder.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("UWSGI_IT_ROOT"))
}

/// The path of a built plugin, e.g. `plugin_path("unbit_containers")`.
pub fn plugin_path(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{name}_plugin.so"));
    assert!(path.exists(), "{} is missing: run `make` (or `make test`) first", path.display());
    path
}

/// `vassals-examples/<file>` as a test runs it: each `(production, local)` value replaced
/// wherever it stands (every one must occur, so a test notices when the shipped file changes
/// under it), and the lines of the `host_only` options (a node's log file) left out. Every
/// other line is as shipped.
pub fn shipped_config(file: &str, replace: &[(&str, String)], host_only: &[&str]) -> String {
    let path = project_root().join("vassals-examples").join(file);
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    for line in shipped.lines() {
        let option = line.split('=').next().unwrap_or("").trim();
        if !line.trim_start().starts_with([';', '#']) && host_only.contains(&option) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for (production, local) in replace {
        assert!(out.contains(production), "{} no longer has {production}", path.display());
        out = out.replace(production, local);
    }
    out
}

/// A fixture shared by the tests of a file that run at the same time: the first starts it, the
/// last one to drop its `Arc` stops it (a later test starts a new one).
pub fn shared<T>(slot: &std::sync::Mutex<std::sync::Weak<T>>, start: impl FnOnce() -> T) -> std::sync::Arc<T> {
    let mut held = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = held.upgrade() {
        return f;
    }
    let f = std::sync::Arc::new(start());
    *held = std::sync::Arc::downgrade(&f);
    f
}

pub struct InstanceBuilder {
    name: String,
    args: Vec<String>,
    ini: Option<String>,
    env: Vec<(String, String)>,
    binary: String,
}

impl InstanceBuilder {
    pub fn new(name: &str) -> Self {
        InstanceBuilder { name: name.to_string(), args: Vec::new(), ini: None, env: Vec::new(), binary: uwsgi_bin() }
    }

    /// Loads one of the project's plugins by path (`--plugin .../NAME_plugin.so`).
    pub fn project_plugin(self, name: &str) -> Self {
        let path = plugin_path(name).to_string_lossy().into_owned();
        self.arg("--plugin").arg(&path)
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// Runs the instance from this ini text (written to `<dir>/<name>.ini`).
    pub fn ini(mut self, text: &str) -> Self {
        self.ini = Some(text.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Another uWSGI binary (e.g. one built from a source tree).
    pub fn binary(mut self, path: &str) -> Self {
        self.binary = path.to_string();
        self
    }

    pub fn start(self) -> Instance {
        let dir = tempfile::Builder::new()
            .prefix(&format!("uwsgi-it-{}-", self.name))
            .tempdir()
            .expect("create the instance's temp dir");
        let log_path = dir.path().join("instance.log");
        let log = File::create(&log_path).expect("create the instance log");
        let mut cmd = Command::new(&self.binary);
        if let Some(ini) = &self.ini {
            let ini_path = dir.path().join(format!("{}.ini", self.name));
            std::fs::write(&ini_path, ini).expect("write the instance ini");
            cmd.arg("--ini").arg(ini_path);
        }
        cmd.args(&self.args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log fd"))
            .stderr(log)
            .process_group(0);
        // The tests' own uWSGI environment must not leak into the instance's configuration.
        for (k, _) in std::env::vars() {
            if k.starts_with("UWSGI_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary));
        Instance { name: self.name, child, dir, log_path, stopped: None }
    }
}

pub struct Instance {
    name: String,
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    stopped: Option<ExitStatus>,
}

impl Instance {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The instance's private directory (its working directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the instance logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; the error carries the whole log.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until `needle` appears at least `count` times in the log.
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                return Err(format!("{}: {needle:?} x{count} not logged within {timeout:?}; log:\n{log}", self.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the instance has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.stopped.is_none() {
            self.stopped = self.child.try_wait().ok().flatten();
        }
        self.stopped
    }

    /// Waits up to `timeout` for the instance to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGINT by PID, then up to 15 s for a clean shutdown, then SIGKILL to the instance's own
    /// process group (which only holds what this instance started).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.try_exit() {
            return Some(s);
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        if let Some(s) = self.wait_exit(Duration::from_secs(15)) {
            return Some(s);
        }
        eprintln!("{}: still running 15 s after SIGINT; killing its process group", self.name);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        self.stopped = self.child.wait().ok();
        self.stopped
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("---- last lines of {} ({}) ----", self.name, self.log_path.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
