//! The customer sshd of a test node, as an operator runs it: Debian's sshd with
//! `vassals-examples/sshd_config` (only paths and the port differ), the broker started by the
//! node Emperor, the enter tool at its fixed path, keys and users written by unbit-node-sync's
//! own functions. Everything lives in a root-owned directory under /run (sshd's StrictModes
//! refuses keys below a world-writable directory such as /tmp) and is removed on drop.

use crate::harness::project_root;
use crate::node::TestNode;
use crate::ports::free_port;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where the node's sshd finds the enter tool (the container users' login shell).
pub const ENTER_TOOL: &str = "/usr/local/lib/unbit/unbit-ssh-enter";
const USERS_DIR: &str = "/var/lib/extrausers";

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn release_binary(name: &str) -> PathBuf {
    let p = project_root().join("target/release").join(name);
    assert!(p.exists(), "{} missing: run `make binaries` first", p.display());
    p
}

/// Installs the enter tool at [`ENTER_TOOL`] (atomically: other suites may be logging in).
pub fn install_enter_tool() {
    let dir = Path::new(ENTER_TOOL).parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".unbit-ssh-enter.{}", std::process::id()));
    std::fs::copy(release_binary("unbit-ssh-enter"), &tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, ENTER_TOOL).unwrap();
}

/// An sshd's own host keys in `dir` (`ssh_host_ed25519_key`, `ssh_host_rsa_key`), as the
/// shipped config names them.
pub fn make_host_keys(dir: &Path) {
    for (kind, bits) in [("ed25519", None), ("rsa", Some("3072"))] {
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-N", "", "-t", kind, "-f"]).arg(dir.join(format!("ssh_host_{kind}_key")));
        if let Some(b) = bits {
            cmd.args(["-b", b]);
        }
        assert!(cmd.status().unwrap().success());
    }
}

/// A node Emperor with its customer sshd and ssh broker.
pub struct SshNode {
    pub node: TestNode,
    /// `/run/unbit-ssh-test-*`: sshd config, host keys, keys dir, broker socket, client keys.
    pub dir: PathBuf,
    pub port: u16,
    sshd: Option<Child>,
    sshd_log: PathBuf,
    users: BTreeSet<u32>,
}

impl SshNode {
    pub fn start() -> SshNode {
        install_enter_tool();
        let dir =
            PathBuf::from(format!("/run/unbit-ssh-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        for d in [&dir, &dir.join("keys")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let socket = dir.join("broker.sock");
        let broker = format!("cmd=exec {} --socket {}", release_binary("unbit-ssh-broker").display(), socket.display());
        let node = TestNode::start(&["--attach-daemon2", &broker]);
        let port = free_port();
        make_host_keys(&dir);
        let config = render_config(&dir, port);
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        // sshd's privilege separation directory (Debian's init script makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let sshd_log = dir.join("sshd.log");
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&sshd_log).unwrap())
            .spawn()
            .unwrap();
        let mut me = SshNode { node, dir, port, sshd: Some(sshd), sshd_log, users: BTreeSet::new() };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "sshd did not listen:\n{}", me.sshd_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        while !socket.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "no broker socket:\n{}", me.node.emperor().log());
            std::thread::sleep(Duration::from_millis(50));
        }
        me.users.clear();
        me
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(&self.sshd_log).unwrap_or_default()
    }

    /// A new client key pair in the test dir: (private key path, public key line).
    pub fn client_key(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.join(format!("client-{name}"));
        let ok =
            Command::new("ssh-keygen").args(["-q", "-N", "", "-t", "ed25519", "-C", name, "-f"]).arg(&path).status();
        assert!(ok.unwrap().success());
        let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        (path, public.trim().to_string())
    }

    /// Writes the container's spec (as node-sync does) and, from the spec folder, its keys file
    /// and its user line, with node-sync's own functions.
    pub fn put_container(&mut self, uid: u32, spec_json: &str) {
        self.node.put_spec(uid, spec_json);
        self.sync_access();
        self.users.insert(uid);
        node_sync::access::write_users(Path::new(USERS_DIR), &[uid].into(), &[]).unwrap();
    }

    /// Re-derives every keys file from the spec folder (a key changed or removed via the API).
    pub fn sync_access(&self) {
        let logins = node_sync::access::logins(&self.node.root.path().join("specs")).unwrap();
        node_sync::access::write_keys(&self.dir.join("keys"), &logins).unwrap();
    }

    /// Waits until the container's pid 1 runs as its uid (what the broker looks for).
    pub fn wait_running(&self, uid: u32) {
        let t0 = Instant::now();
        while self.init_pid(uid).is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "container {uid} did not start:\n{}",
                self.node.emperor().log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Host pid of the container's pid 1.
    pub fn init_pid(&self, uid: u32) -> Option<i32> {
        jail::enter::find(self.node.emperor().pid() as i32, uid).ok().flatten().map(|c| c.pid)
    }

    /// `ssh` with the given key to `user`, running `command` (None: no command argument),
    /// with extra client options; stdin from `input`.
    pub fn ssh(&self, key: &Path, user: &str, extra: &[&str], command: Option<&str>, input: &[u8]) -> Output {
        let mut cmd = Command::new("ssh");
        cmd.args(self.client_options(key))
            .args(["-p", &self.port.to_string()])
            .args(extra)
            .arg(format!("{user}@127.0.0.1"));
        if let Some(c) = command {
            cmd.arg(c);
        }
        run_with_input(cmd, input)
    }

    /// `sftp -b -` with the batch `commands`.
    pub fn sftp(&self, key: &Path, user: &str, commands: &str) -> Output {
        let mut cmd = Command::new("sftp");
        cmd.args(self.client_options(key))
            .args(["-P", &self.port.to_string(), "-b", "-"])
            .arg(format!("{user}@127.0.0.1"));
        run_with_input(cmd, commands.as_bytes())
    }

    pub fn client_options(&self, key: &Path) -> Vec<String> {
        [
            "-i",
            &key.to_string_lossy(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-F",
            "/dev/null",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

/// `vassals-examples/sshd_config` with the production paths and address replaced.
fn render_config(dir: &Path, port: u16) -> String {
    let shipped = std::fs::read_to_string(project_root().join("vassals-examples/sshd_config")).unwrap();
    let d = dir.to_string_lossy();
    shipped
        .replace("0.0.0.0:22", &format!("127.0.0.1:{port}"))
        .replace("/etc/unbit/ssh/", &format!("{d}/"))
        .replace("/var/lib/unbit/ssh-keys", &format!("{d}/keys"))
        .replace("/run/unbit-ssh/broker.sock", &format!("{d}/broker.sock"))
}

impl Drop for SshNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}", self.sshd_log());
            eprintln!("--- emperor log ---\n{}", self.node.emperor.as_ref().map(|e| e.log()).unwrap_or_default());
        }
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        let users: Vec<u32> = self.users.iter().copied().collect();
        let _ = node_sync::access::write_users(Path::new(USERS_DIR), &BTreeSet::new(), &users);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
