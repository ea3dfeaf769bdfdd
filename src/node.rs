//! A throwaway node for container tests: a spec folder, a containers dir, a platform dir with
//! the built plugin, a uniquely named cgroup subtree, and the node Emperor running
//! `unbit_containers` over them. Dropping it stops the Emperor by PID, removes the cgroup
//! subtree it created and the directories.

use crate::harness::{plugin_path, plugins_dir, project_root, Instance, InstanceBuilder};
use crate::host::{cgroup_dirs, remove_cgroup_tree, unmount_below, wait_until};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Waits until `path` exists.
pub fn wait_for_path(path: &Path, timeout: Duration) {
    wait_until(&format!("{} appearing", path.display()), timeout, || path.exists());
}

fn start_emperor(args: &[String], env: &[(String, String)]) -> Instance {
    let emperor = env
        .iter()
        .fold(InstanceBuilder::new("node-emperor").project_plugin("unbit_containers").args(args), |b, (k, v)| {
            b.env(k, v)
        })
        .start();
    emperor.wait_for_log("managing containers from", Duration::from_secs(20)).unwrap();
    emperor
}

/// The Debian 12 distro with uWSGI and the python3/psgi/rack plugins, built (and cached) by
/// `scripts/build-distro.sh` on first use.
pub fn debian_distro() -> PathBuf {
    let dir = project_root().join("distros-cache/bookworm");
    let out = Command::new("bash").arg(project_root().join("scripts/build-distro.sh")).arg(&dir).output().unwrap();
    assert!(out.status.success(), "build-distro.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The containers' NSS module, in `make plugins`' output and in the platform dir's `lib/`.
pub const NSS_MODULE: &str = "libnss_unbit.so.2";

pub struct TestNode {
    pub root: tempfile::TempDir,
    pub cgroup_name: String,
    pub emperor: Option<Instance>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestNode {
    /// Starts the node Emperor. `extra` adds options (e.g. `--unbit-quota`).
    pub fn start(extra: &[&str]) -> TestNode {
        Self::start_with_platform_files(extra, &[])
    }

    /// Starts the node Emperor with the platform's `shortcuts/shortcuts.ini` and the plugin it
    /// loads into vassals (`unbit_vassal`) in the platform dir, so every customer vassal gets
    /// `domain = ...` and the other shortcuts.
    pub fn start_with_shortcuts(extra: &[&str]) -> TestNode {
        Self::start_with_platform_files(
            extra,
            &[
                ("shortcuts.ini", project_root().join("shortcuts/shortcuts.ini")),
                ("plugins/unbit_vassal_plugin.so", plugin_path("unbit_vassal")),
            ],
        )
    }

    /// Starts the node Emperor with these variables added to its environment (what an operator
    /// exported in the shell that started the node).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> TestNode {
        Self::launch(extra, &[], env)
    }

    /// Starts the node Emperor with `(name, source)` files copied into the platform dir
    /// (mounted at /opt/unbit in containers) before it starts.
    pub fn start_with_platform_files(extra: &[&str], files: &[(&str, PathBuf)]) -> TestNode {
        Self::launch(extra, files, &[])
    }

    fn launch(extra: &[&str], files: &[(&str, PathBuf)], env: &[(&str, &str)]) -> TestNode {
        let distro = debian_distro();
        let root = tempfile::Builder::new().prefix("unbit-node-").tempdir().unwrap();
        let r = root.path();
        for d in ["specs", "containers", "platform/plugins", "jail", "subscribe"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        // The jail refuses a distro reached through a symlink, so point at the real folder.
        let distros = distro.parent().unwrap().to_string_lossy().into_owned();
        std::fs::copy(plugin_path("unbit_containers"), r.join("platform/plugins/unbit_containers_plugin.so")).unwrap();
        // The containers' NSS module (`<uid>.local` names) where the distro's link points, as on
        // a node; a plugins dir built before the module existed has none.
        let nss = plugins_dir().join(NSS_MODULE);
        if nss.exists() {
            std::fs::create_dir_all(r.join("platform/lib")).unwrap();
            std::fs::copy(&nss, r.join("platform/lib").join(NSS_MODULE)).unwrap();
        }
        for (name, source) in files {
            std::fs::copy(source, r.join("platform").join(name)).unwrap();
        }
        let cgroup_name = format!("unbit-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let p = |d: &str| r.join(d).to_string_lossy().into_owned();
        let mut args = vec![
            "--emperor".to_string(),
            format!("unbit://{}", p("specs")),
            "--emperor-use-clone".into(),
            "fs,pid,ipc,uts,net".into(),
            "--emperor-freq".into(),
            "1".into(),
            "--unbit-containers-dir".into(),
            p("containers"),
            "--unbit-distros-dir".into(),
            distros,
            "--unbit-platform-dir".into(),
            p("platform"),
            "--unbit-subscribe-dir".into(),
            p("subscribe"),
            "--unbit-jail-root".into(),
            p("jail"),
            "--unbit-cgroup-name".into(),
            cgroup_name.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let emperor = start_emperor(&args, &env);
        TestNode { root, cgroup_name, emperor: Some(emperor), args, env }
    }

    /// Stops the node Emperor (its containers stop with it) and starts a new one over the same
    /// folders, as after a node reboot.
    pub fn restart(&mut self) {
        if let Some(mut e) = self.emperor.take() {
            e.stop();
        }
        self.emperor = Some(start_emperor(&self.args, &self.env));
    }

    pub fn emperor(&self) -> &Instance {
        self.emperor.as_ref().unwrap()
    }

    /// The host dir of the homes (`--unbit-containers-dir`).
    pub fn containers_dir(&self) -> PathBuf {
        self.root.path().join("containers")
    }

    /// The routers' subscription sockets (`--unbit-subscribe-dir`, `/run/subscribe` inside).
    pub fn subscribe_dir(&self) -> PathBuf {
        self.root.path().join("subscribe")
    }

    pub fn home(&self, uid: u32) -> PathBuf {
        self.root.path().join("containers").join(uid.to_string())
    }

    /// Deploys a customer's python WSGI app: `~/<name>.py` and `~/vassals/<name>.ini`, serving
    /// HTTP on `~/run/<name>.sock`, once the node has prepared the home. Returns the socket's
    /// host path.
    pub fn deploy_python(&self, uid: u32, name: &str, source: &str) -> PathBuf {
        let home = self.home(uid);
        wait_for_path(&home.join("vassals"), Duration::from_secs(60));
        std::fs::write(home.join(format!("{name}.py")), source).unwrap();
        let inside = format!("/containers/{uid}");
        let ini = format!(
            "[uwsgi]\nplugin = python3\nhttp-socket = {inside}/run/{name}.sock\nchmod-socket = 666\nwsgi-file = {inside}/{name}.py\n"
        );
        std::fs::write(home.join(format!("vassals/{name}.ini")), ini).unwrap();
        home.join(format!("run/{name}.sock"))
    }

    /// Writes `<uid>.json` atomically (temp file + rename), as the API fetcher does.
    pub fn put_spec(&self, uid: u32, json: &str) {
        let specs = self.root.path().join("specs");
        let tmp = specs.join(format!(".{uid}.json.tmp"));
        std::fs::write(&tmp, json).unwrap();
        std::fs::rename(&tmp, specs.join(format!("{uid}.json"))).unwrap();
    }

    pub fn remove_spec(&self, uid: u32) {
        std::fs::remove_file(self.root.path().join("specs").join(format!("{uid}.json"))).unwrap();
    }

    /// Prints the tail of every container's `~/logs/emperor.log` (what the customer would read).
    pub fn print_container_logs(&self) {
        crate::host::print_container_logs(&self.root.path().join("containers"), 40);
    }

    /// The cgroup directories this node created (v1 controllers and the v2 hierarchy).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_name)
    }

    /// The memory limit the kernel enforces on a container right now, in bytes (v1
    /// `memory.limit_in_bytes` or v2 `memory.max`), if its cgroup exists.
    pub fn memory_limit(&self, uid: u32) -> Option<u64> {
        self.cgroup_dirs().iter().find_map(|d| {
            ["memory.limit_in_bytes", "memory.max"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(uid.to_string()).join(f)).ok()?.trim().parse().ok())
        })
    }

    /// The container's `~/logs/emperor.log` (what the customer reads), read without following
    /// a symlink; empty if it cannot be read.
    pub fn customer_log(&self, uid: u32) -> String {
        crate::host::read_container_log(&self.containers_dir(), uid).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_container_logs();
        }
        if let Some(mut e) = self.emperor.take() {
            e.stop();
            drop(e);
        }
        unmount_below(self.root.path());
        for _ in 0..50 {
            for d in self.cgroup_dirs() {
                remove_cgroup_tree(&d);
            }
            if self.cgroup_dirs().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = self.cgroup_dirs();
        if !left.is_empty() {
            eprintln!("test node: cgroups left behind: {left:?}");
        }
    }
}

/// A subscription key pair (private PKCS#8 PEM, public SPKI PEM) made by openssl.
pub fn key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let public = Command::new("openssl").args(["pkey", "-pubout", "-in"]).arg(&key).output().unwrap();
    (std::fs::read_to_string(&key).unwrap(), String::from_utf8(public.stdout).unwrap())
}

/// A spec for a test container owned by the customer holding `keys`.
pub fn spec_json(
    uid: u32,
    name: &str,
    memory_mb: u64,
    pids_limit: u32,
    ssh_keys: &[&str],
    keys: &(String, String),
) -> String {
    serde_json::json!({
        "uid": uid,
        "name": name,
        "memory_mb": memory_mb,
        "storage_mb": 200,
        "pids_limit": pids_limit,
        "distro": {"kind": "platform", "path": "bookworm"},
        "ssh_keys": ssh_keys,
        "subscription_key": {"private_pem": keys.0, "public_pem": keys.1},
        "alarms": {"freq": 60, "quota_threshold": 90},
        "etc_hosts": ["127.0.0.1 localhost"],
        "etc_resolv_conf": ["nameserver 127.0.0.1"],
    })
    .to_string()
}
