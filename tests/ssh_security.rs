//! The customer sshd's security suite (issue 13): every way in that must stay shut, tried with
//! the real `ssh` client (and, for the broker's socket, a hostile client of our own) against a
//! test node running the shipped sshd config, the broker and real containers. Each attempt is
//! counted; the test prints `ssh security: N attempts, M denied` and fails unless M == N.
//!
//! Containers: A (30411) and B (30412) run throughout; C (30413) is restarted with a terminal
//! session open (the restart notice), its pid 1 made to unshare a user namespace (gdb), then
//! given a distro that does not exist (not running).
//! Every client call is bounded (ConnectTimeout plus a wall-clock guard that kills it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uwsgi_it::node::{key_pair, spec_json};
use uwsgi_it::ssh::SshNode;

const A: u32 = 30411;
const B: u32 = 30412;
const C: u32 = 30413;
/// No client call may take longer (a hang is a failure, not a stuck test).
const LIMIT: Duration = Duration::from_secs(25);
const T: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with `input` on stdin, killed after `limit`.
fn bounded(mut cmd: Command, input: &[u8], limit: Duration) -> Result<Output, String> {
    let shown = format!("{cmd:?}");
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("hung: {shown} still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output { status, stdout: o.join().unwrap(), stderr: e.join().unwrap() })
}

/// Counts the attempts; an attempt's closure returns Ok when it was denied (a panic inside is
/// a failure too, with its message).
#[derive(Default)]
struct Tally {
    results: Vec<(String, Result<(), String>)>,
}

impl Tally {
    fn attempt(&mut self, name: &str, f: impl FnOnce() -> Result<(), String>) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
            Err(p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()))
        });
        match &r {
            Ok(()) => eprintln!("denied: {name}"),
            Err(why) => eprintln!("NOT DENIED: {name}: {why}"),
        }
        self.results.push((name.to_string(), r));
    }
}

struct Suite {
    ssh: SshNode,
    keys: (String, String),
    a_key: PathBuf,
    a_pub: String,
    b_key: PathBuf,
    c_key: PathBuf,
    c_pub: String,
}

impl Suite {
    fn ssh_cmd(&self, key: &Path, user: &str, extra: &[&str], command: Option<&str>) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-i"])
            .arg(key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "ServerAliveInterval=5"])
            .args(["-p", &self.ssh.port.to_string()])
            .args(extra)
            .arg(format!("{user}@127.0.0.1"));
        if let Some(c) = command {
            cmd.arg(c);
        }
        cmd
    }

    fn run(&self, key: &Path, user: &str, extra: &[&str], command: Option<&str>) -> Result<Output, String> {
        bounded(self.ssh_cmd(key, user, extra, command), b"", LIMIT)
    }

    /// `command` in container `uid` with its own key; its stdout, or why it did not run.
    fn inside(&self, uid: u32, command: &str) -> Result<String, String> {
        let key = if uid == A { &self.a_key } else { &self.b_key };
        let out = self.run(key, &uid.to_string(), &[], Some(command))?;
        if !out.status.success() {
            return Err(format!("{command:?} in {uid}: {} {} {}", out.status, text(&out.stdout), text(&out.stderr)));
        }
        Ok(text(&out.stdout))
    }

    /// The login with `key` as `user` works (the control of every probe that leaves it open).
    fn works(&self, key: &Path, user: &str) -> Result<(), String> {
        let out = self.run(key, user, &[], Some("echo ok"))?;
        if out.status.success() && text(&out.stdout) == "ok\n" {
            Ok(())
        } else {
            Err(format!("{user} with {}: {} {} {}", key.display(), out.status, text(&out.stdout), text(&out.stderr)))
        }
    }

    /// The login is refused before any session: ssh's 255, nothing on stdout.
    fn refused(&self, key: &Path, user: &str) -> Result<(), String> {
        let out = self.run(key, user, &[], Some("echo ok"))?;
        if out.status.code() == Some(255) && out.stdout.is_empty() {
            Ok(())
        } else {
            Err(format!("{user:?} got in: {} {} {}", out.status, text(&out.stdout), text(&out.stderr)))
        }
    }

    fn set_keys(&self, uid: u32, name: &str, keys: &[&str]) {
        self.ssh.node.put_spec(uid, &spec_json(uid, name, 256, 256, keys, &self.keys));
        self.ssh.sync_access();
    }

    fn log_count(&self, needle: &str) -> usize {
        self.ssh.node.emperor().log().matches(needle).count()
    }
}

/// Runs a command as a container uid (or any uid) on the host, as the customer could.
fn as_uid(uid: u32, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"]).args(args);
    cmd
}

fn as_uid_ok(uid: u32, args: &[&str]) {
    let out = bounded(as_uid(uid, args), b"", LIMIT).unwrap();
    assert!(out.status.success(), "{args:?} as {uid}: {}", text(&out.stderr));
}

/// What a host file is (kind, size, mtime, content hash), to tell it was not touched.
fn fingerprint(path: &Path) -> String {
    match std::fs::symlink_metadata(path) {
        Err(_) => "absent".into(),
        Ok(m) if m.file_type().is_file() => {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(path).unwrap_or_default().hash(&mut h);
            format!("file {} {} {} {:o} {}:{}", m.len(), m.mtime_nsec(), h.finish(), m.mode(), m.uid(), m.gid())
        }
        Ok(m) => format!("{:?} {} {:o} {}:{}", m.file_type(), m.mtime_nsec(), m.mode(), m.uid(), m.gid()),
    }
}

/// The hostile enter-tool client: connects to the broker's socket, sends what `mode` says, and
/// prints the first reply (`closed` when the broker hung up, `timeout` when it said nothing).
const CLIENT: &str = r#"
import array, json, os, socket, sys
path, mode = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(15)
s.connect(path)
null = os.open("/dev/null", os.O_RDWR)
def send(data, nfds):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [null] * nfds))] if nfds else []
    try:
        s.sendmsg([data], anc)
    except BrokenPipeError:
        pass  # refused before it read the request: the reason is queued for us
cmd = json.dumps({"command": "id -u", "terminal": None, "connection": None}).encode()
term = json.dumps({"command": None, "terminal": {"term": "xterm", "rows": 24, "cols": 80, "modes": None},
                   "connection": None}).encode()
if mode == "garbage":
    send(b"\xff\x00 not json {{{", 0)
elif mode.startswith("fds-"):
    send(cmd, int(mode[4:]))
elif mode == "terminal-with-fds":
    send(term, 3)
elif mode == "huge":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    try:
        send(b'{"command": "' + b"x" * 400000 + b'"}', 3)
    except OSError:
        send(b'{"command": "' + b"x" * 310000 + b'"}', 3)
elif mode == "valid":
    send(cmd, 3)
elif mode == "hangup":
    s.close()
    print("hung up")
    sys.exit(0)
try:
    data = s.recv(1 << 20)
except socket.timeout:
    print("timeout")
    sys.exit(0)
print("closed" if not data else data.decode(errors="replace"))
"#;

/// The broker: the process running the broker's binary with this node's socket (the node's
/// uWSGI has the same words among its own arguments).
fn broker_pid(ssh: &SshNode) -> Option<i32> {
    let socket = ssh.dir.join("broker.sock").display().to_string();
    uwsgi_it::host::processes().into_iter().find_map(|p| {
        let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).ok()?;
        (exe.file_name()? == "unbit-ssh-broker" && p.cmdline.contains(&socket)).then_some(p.pid)
    })
}

fn start() -> Suite {
    let mut ssh = SshNode::start();
    let (a_key, a_pub) = ssh.client_key("sec-a");
    let (b_key, b_pub) = ssh.client_key("sec-b");
    let (c_key, c_pub) = ssh.client_key("sec-c");
    let keys = key_pair();
    ssh.put_container(A, &spec_json(A, "sec-a", 256, 256, &[&a_pub], &keys));
    ssh.put_container(B, &spec_json(B, "sec-b", 256, 256, &[&b_pub], &keys));
    ssh.put_container(C, &spec_json(C, "sec-c", 256, 256, &[&c_pub], &keys));
    for uid in [A, B, C] {
        ssh.wait_running(uid);
    }
    Suite { ssh, keys, a_key, a_pub, b_key, c_key, c_pub }
}

#[test]
fn every_attempt_to_get_in_or_out_is_denied() {
    let s = start();
    let mut t = Tally::default();
    let (a, b) = (A.to_string(), B.to_string());
    s.works(&s.a_key, &a).unwrap();
    s.works(&s.b_key, &b).unwrap();

    authentication(&s, &mut t);
    user_names(&s, &mut t);
    planted_files(&s, &mut t);
    keys_through_the_api(&s, &mut t);
    inside_a_session(&s, &mut t);
    forwarding_and_environment(&s, &mut t);
    a_reaching_b(&s, &mut t);
    hostile_broker_clients(&s, &mut t);
    planted_device(&s, &mut t);
    let notice = restart_notice(&s);
    own_user_namespace(&s, &mut t);
    not_running(&s, &mut t);

    let denied = t.results.iter().filter(|(_, r)| r.is_ok()).count();
    println!("ssh security: {} attempts, {denied} denied", t.results.len());
    let failed: Vec<String> =
        t.results.iter().filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}"))).collect();
    assert!(failed.is_empty(), "not denied:\n{}", failed.join("\n"));
    notice.unwrap();
}

fn authentication(s: &Suite, t: &mut Tally) {
    for (user, methods) in [
        (A.to_string(), "password"),
        (A.to_string(), "keyboard-interactive"),
        ("root".to_string(), "password,keyboard-interactive"),
    ] {
        t.attempt(&format!("{methods} auth as {user}"), || {
            let prefer = format!("PreferredAuthentications={methods}");
            let out = s.run(&s.a_key, &user, &["-v", "-o", &prefer, "-o", "NumberOfPasswordPrompts=1"], Some("id"))?;
            let err = text(&out.stderr);
            let offered: Vec<&str> =
                err.lines().filter_map(|l| l.split_once("Authentications that can continue: ").map(|x| x.1)).collect();
            if out.status.code() != Some(255) || !out.stdout.is_empty() {
                return Err(format!("got in: {}", out.status));
            }
            if offered.is_empty() || offered.iter().any(|m| m.trim() != "publickey") {
                return Err(format!("the server offered {offered:?}:\n{err}"));
            }
            Ok(())
        });
    }
    t.attempt("B's key into A", || s.refused(&s.b_key, &A.to_string()));
    t.attempt("A's key into B", || s.refused(&s.a_key, &B.to_string()));
}

fn user_names(s: &Suite, t: &mut Tally) {
    for name in
        ["030411", "30411abc", "29999", "30411/.ssh", "root", "99999999999", "4294967296", "nobody", "daemon", "+30411"]
    {
        t.attempt(&format!("user name {name:?} with A's key"), || s.refused(&s.a_key, name));
    }
}

/// A customer's planted link, FIFO or device where the node writes their keys: logins still
/// depend on the API's keys only, nothing hangs, and the node's key update (which runs as
/// root) leaves every host file as it was.
fn planted_files(s: &Suite, t: &mut Tally) {
    let home = s.ssh.node.home(A);
    let b_keys = s.ssh.node.home(B).join(".ssh/uwsgi_authorized_keys");
    let watched: Vec<PathBuf> = [
        "/etc/shadow",
        "/etc/passwd",
        "/root/.ssh",
        "/root/.ssh/authorized_keys",
        "/etc/uwsgi_authorized_keys",
        "/dev/zero",
        "/dev/null",
    ]
    .iter()
    .map(PathBuf::from)
    .chain([b_keys.clone()])
    .collect();
    let before: BTreeMap<PathBuf, String> = watched.iter().map(|p| (p.clone(), fingerprint(p))).collect();
    let b_keys_s = b_keys.to_string_lossy().into_owned();
    let b_ssh_s = s.ssh.node.home(B).join(".ssh").to_string_lossy().into_owned();
    let plants: Vec<(String, Vec<Vec<String>>)> = vec![
        ("keys file -> /root/.ssh/authorized_keys".into(), vec![ln("/root/.ssh/authorized_keys", ".ssh/K")]),
        ("keys file -> /etc/shadow".into(), vec![ln("/etc/shadow", ".ssh/K")]),
        ("keys file -> B's keys file".into(), vec![ln(&b_keys_s, ".ssh/K")]),
        ("keys file -> /dev/zero".into(), vec![ln("/dev/zero", ".ssh/K")]),
        ("keys file is a FIFO".into(), vec![vec!["mkfifo".into(), ".ssh/K".into()]]),
        (".ssh -> /root/.ssh".into(), vec![ln("/root/.ssh", ".ssh")]),
        (".ssh -> /etc".into(), vec![ln("/etc", ".ssh")]),
        (".ssh -> B's .ssh".into(), vec![ln(&b_ssh_s, ".ssh")]),
        (".ssh is a FIFO".into(), vec![vec!["mkfifo".into(), ".ssh".into()]]),
    ];
    let mut extra = 0;
    for (what, steps) in plants {
        // A fresh `.ssh` of the customer's, then the plant, made as the uid in the host home.
        let ssh_dir = home.join(".ssh");
        let _ = std::fs::remove_dir_all(&ssh_dir).or_else(|_| std::fs::remove_file(&ssh_dir));
        let mut planted_as_uid = true;
        if steps.iter().all(|st| st.last().is_some_and(|p| p.starts_with(".ssh/"))) {
            as_uid_ok(A, &["mkdir", "-m", "700", &ssh_dir.to_string_lossy()]);
        }
        for st in &steps {
            let mut args: Vec<String> = st.clone();
            let last = args.pop().unwrap();
            let target = home.join(last.replace('K', "uwsgi_authorized_keys"));
            args.push(target.to_string_lossy().into_owned());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = bounded(as_uid(A, &refs), b"", LIMIT).unwrap();
            planted_as_uid &= out.status.success();
        }
        t.attempt(&format!("planted {what}"), || {
            if !planted_as_uid {
                return Err("could not plant it as the uid".into());
            }
            s.works(&s.a_key, &A.to_string())?;
            s.refused(&s.b_key, &A.to_string())?;
            // A key change makes the node rewrite the keys file (as root) over the plant.
            extra += 1;
            let n = s.log_count(&format!("container {A}: ssh keys updated"));
            let (_, extra_key) = s.ssh.client_key(&format!("planted-{extra}"));
            s.set_keys(A, "sec-a", &[&s.a_pub, &extra_key]);
            let wanted = format!("container {A}: ssh keys updated");
            let t0 = Instant::now();
            while s.log_count(&wanted) <= n && s.log_count(&format!("container {A}: cannot")) == 0 {
                if t0.elapsed() > T {
                    return Err("the node did not update the keys".into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            only_the_api_key_opens_a(s, &before)
        });
    }
    let _ = std::fs::remove_dir_all(home.join(".ssh")).or_else(|_| std::fs::remove_file(home.join(".ssh")));
    s.set_keys(A, "sec-a", &[&s.a_pub]);
    s.set_keys(A, "sec-a", &[&s.a_pub]);
}

/// A device node the customer could not make (mknod needs a capability), placed by root as
/// the worst case. Last of A's probes: the node holds A back and restarts it.
fn planted_device(s: &Suite, t: &mut Tally) {
    let home = s.ssh.node.home(A);
    let watched: Vec<PathBuf> =
        ["/etc/shadow", "/etc/passwd", "/dev/zero", "/dev/null"].iter().map(PathBuf::from).collect();
    let before: BTreeMap<PathBuf, String> = watched.iter().map(|p| (p.clone(), fingerprint(p))).collect();
    t.attempt("keys file is a character device (1:5)", || {
        let ssh_dir = home.join(".ssh");
        let _ = std::fs::remove_dir_all(&ssh_dir).or_else(|_| std::fs::remove_file(&ssh_dir));
        as_uid_ok(A, &["mkdir", "-m", "700", &ssh_dir.to_string_lossy()]);
        let dev = ssh_dir.join("uwsgi_authorized_keys");
        let ok = Command::new("mknod").arg(&dev).args(["c", "1", "5"]).status().unwrap().success();
        std::os::unix::fs::lchown(&dev, Some(A), Some(A)).unwrap();
        if !ok {
            return Err("mknod failed".into());
        }
        // The node refuses to open it (the home is nodev) and holds the container back until
        // its keys can be written; either way it must not read it, hang or touch a host file.
        let (updated, held) =
            (format!("container {A}: ssh keys updated"), format!("container {A}: cannot write its new ssh keys"));
        let n = (s.log_count(&updated), s.log_count(&held));
        s.set_keys(A, "sec-a", &[&s.a_pub, &s.c_pub]);
        let t0 = Instant::now();
        while (s.log_count(&updated), s.log_count(&held)) == n {
            if t0.elapsed() > T {
                return Err("the node neither updated the keys nor said why".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&dev);
        s.set_keys(A, "sec-a", &[&s.a_pub]);
        s.ssh.wait_running(A);
        let t0 = Instant::now();
        while s.works(&s.a_key, &A.to_string()).is_err() && t0.elapsed() < T {
            std::thread::sleep(Duration::from_millis(200));
        }
        only_the_api_key_opens_a(s, &before)
    });
}

/// A's key opens A, B's does not, and every watched host file is as `before` found it.
fn only_the_api_key_opens_a(s: &Suite, before: &BTreeMap<PathBuf, String>) -> Result<(), String> {
    s.works(&s.a_key, &A.to_string())?;
    s.refused(&s.b_key, &A.to_string())?;
    for (p, was) in before {
        let now = fingerprint(p);
        if &now != was {
            return Err(format!("{} changed: {was} -> {now}", p.display()));
        }
    }
    Ok(())
}

fn ln(target: &str, at: &str) -> Vec<String> {
    vec!["ln".into(), "-s".into(), target.into(), at.into()]
}

fn keys_through_the_api(s: &Suite, t: &mut Tally) {
    let (a2_key, a2_pub) = s.ssh.client_key("sec-a2");
    let a = A.to_string();
    s.set_keys(A, "sec-a", &[&a2_pub]);
    t.attempt("a key removed through the API", || s.refused(&s.a_key, &a));
    t.attempt("a key added through the API works (control)", || s.works(&a2_key, &a));
    s.set_keys(A, "sec-a", &[&s.a_pub]);
    t.attempt("the replaced key after it was swapped back", || s.refused(&a2_key, &a));
    s.works(&s.a_key, &a).unwrap();
}

fn inside_a_session(s: &Suite, t: &mut Tally) {
    let init = s.ssh.init_pid(A).unwrap();
    t.attempt("host processes seen from a session", || {
        let ps = s.inside(A, "ps -eo pid=,args=")?;
        let first = ps.lines().next().unwrap_or_default().trim().to_string();
        if !first.starts_with("1 ") {
            return Err(format!("pid 1 is not the container's: {ps}"));
        }
        let host_cmdline = std::fs::read(format!("/proc/{init}/cmdline")).unwrap();
        let host_cmdline = text(&host_cmdline).replace('\0', " ").trim().to_string();
        if first.trim_start_matches("1 ").trim() != host_cmdline {
            return Err(format!("pid 1 is {first}, the container's is {host_cmdline}"));
        }
        let me = std::env::current_exe().unwrap();
        let me = me.file_name().unwrap().to_string_lossy();
        for banned in ["sshd", "unbit-ssh-broker", "unbit-ssh-enter", "cargo", &me, "emperor.ini", "setpriv"] {
            if ps.contains(banned) {
                return Err(format!("{banned} visible: {ps}"));
            }
        }
        Ok(())
    });
    t.attempt("host mounts seen from a session", || {
        let root = s.ssh.node.root.path().to_string_lossy().into_owned();
        let dir = s.ssh.dir.to_string_lossy().into_owned();
        let host_paths = [root.as_str(), "/work", dir.as_str(), "/root/.pyenv", "/var/lib/extrausers", "/etc/unbit"];
        let probe: String = host_paths.iter().map(|p| format!("test -e {p} && echo PRESENT {p}; ")).collect();
        let out = s.inside(A, &format!("cat /proc/self/mountinfo; {probe}true"))?;
        // Field 5 is where a mount is seen (field 4, the bind source's path inside its
        // filesystem, names host directories by design and gives no access).
        let points: Vec<&str> = out.lines().filter_map(|l| l.split(' ').nth(4)).collect();
        for host in host_paths {
            if points.iter().any(|p| p.starts_with(host)) || out.contains(&format!("PRESENT {host}")) {
                return Err(format!("{host} visible: {out}"));
            }
        }
        let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().count();
        if points.len() >= host_mounts {
            return Err(format!("{} mounts inside, {host_mounts} on the host: {out}", points.len()));
        }
        Ok(())
    });
    t.attempt("capabilities and privileges in a session", || {
        let status = s.inside(A, "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; id")?;
        for want in ["CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000"] {
            if !status.contains(want) {
                return Err(format!("{want} missing: {status}"));
            }
        }
        for want in ["CapBnd:\t0000000000000000", "CapAmb:\t0000000000000000", "NoNewPrivs:\t1"] {
            if !status.contains(want) {
                return Err(format!("{want} missing: {status}"));
            }
        }
        let id = format!("uid={A}({A}) gid={A}({A}) groups={A}({A})");
        if !status.contains(&id) {
            return Err(format!("id is not {id}: {status}"));
        }
        Ok(())
    });
    t.attempt("the host's filesystem through /proc/<pid>/root", || {
        let out = s.inside(A, "ls -d /proc/*/root/work /proc/*/cwd/work 2>/dev/null | wc -l")?;
        if out.trim() != "0" {
            return Err(format!("host entries seen: {out}"));
        }
        Ok(())
    });
}

fn forwarding_and_environment(s: &Suite, t: &mut Tally) {
    let a = A.to_string();
    // -L: a test server listens on the host's loopback; the forward must never reach it.
    t.attempt("-L to a host listener", || {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let target = server.local_addr().unwrap().port();
        let local = uwsgi_it::ports::free_port();
        let spec = format!("127.0.0.1:{local}:127.0.0.1:{target}");
        let mut child = KillOnDrop(
            s.ssh_cmd(&s.a_key, &a, &["-N", "-L", &spec], None)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let t0 = Instant::now();
        let mut conn = loop {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", local)) {
                break c;
            }
            if t0.elapsed() > Duration::from_secs(10) || child.0.try_wait().unwrap().is_some() {
                return Err("the client never listened locally".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = conn.write_all(b"hello\n");
        let mut buf = [0u8; 16];
        let closed = matches!(conn.read(&mut buf), Ok(0) | Err(_));
        std::thread::sleep(Duration::from_millis(500));
        match server.accept() {
            Ok((_, from)) => Err(format!("the forward connected to the host listener from {from}")),
            Err(_) if closed => Ok(()),
            Err(_) => Err("the forwarded connection stayed open".into()),
        }
    });
    t.attempt("-R binding on the host", || {
        let remote = uwsgi_it::ports::free_port();
        let spec = format!("127.0.0.1:{remote}:127.0.0.1:9");
        let out = s.run(&s.a_key, &a, &["-o", "ExitOnForwardFailure=yes", "-R", &spec], Some("sleep 2; echo done"))?;
        if TcpStream::connect(("127.0.0.1", remote)).is_ok() {
            return Err(format!("port {remote} listens on the host"));
        }
        if out.status.success() || !text(&out.stderr).contains("forwarding failed") {
            return Err(format!("the server accepted -R: {} {}", out.status, text(&out.stderr)));
        }
        Ok(())
    });
    t.attempt("-A agent forwarding", || {
        let agent_sock = s.ssh.dir.join("agent.sock");
        let agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&agent_sock).stdout(Stdio::null()).spawn();
        let _agent = KillOnDrop(agent.unwrap());
        uwsgi_it::host::wait_until("ssh-agent", Duration::from_secs(10), || agent_sock.exists());
        let before = agent_dirs();
        let mut cmd = s.ssh_cmd(&s.a_key, &a, &["-A"], Some("echo \"sock=${SSH_AUTH_SOCK:-none}\"; sleep 1"));
        cmd.env("SSH_AUTH_SOCK", &agent_sock);
        let out = bounded(cmd, b"", LIMIT)?;
        let stdout = text(&out.stdout);
        if !out.status.success() || stdout.trim() != "sock=none" {
            return Err(format!("{} {stdout} {}", out.status, text(&out.stderr)));
        }
        let after = agent_dirs();
        if after.iter().any(|d| !before.contains(d)) {
            return Err(format!("sshd made an agent socket dir on the host: {after:?}"));
        }
        Ok(())
    });
    t.attempt("SetEnv LD_PRELOAD and friends", || {
        let out = s.run(
            &s.a_key,
            &a,
            &["-o", "SetEnv=LD_PRELOAD=/tmp/x.so INJECTED=1 BASH_ENV=/tmp/x PATH=/tmp"],
            Some("env"),
        )?;
        let (env, err) = (text(&out.stdout), text(&out.stderr));
        if !out.status.success() || env.contains("LD_PRELOAD") || env.contains("INJECTED") || env.contains("BASH_ENV") {
            return Err(format!("{} env {env} stderr {err}", out.status));
        }
        if err.contains("LD_PRELOAD") || !env.lines().any(|l| l == "PATH=/usr/local/bin:/usr/bin:/bin") {
            return Err(format!("the host side saw it: {err} {env}"));
        }
        Ok(())
    });
    t.attempt("SendEnv", || {
        let mut cmd = s.ssh_cmd(&s.a_key, &a, &["-o", "SendEnv=LANG LC_* SENT_VAR"], Some("env"));
        cmd.env("SENT_VAR", "1").env("LC_EVIL", "1").env("LANG", "xx_XX.EVIL");
        let out = bounded(cmd, b"", LIMIT)?;
        let env = text(&out.stdout);
        if !out.status.success() || env.contains("SENT_VAR") || env.contains("LC_EVIL") || env.contains("EVIL") {
            return Err(format!("{} {env}", out.status));
        }
        Ok(())
    });
    t.attempt("a client-chosen broker socket (SetEnv UNBIT_SSH_BROKER)", || {
        let out = s.run(&s.a_key, &a, &["-o", "SetEnv=UNBIT_SSH_BROKER=/nonexistent"], Some("echo ok"))?;
        if out.status.success() && text(&out.stdout) == "ok\n" {
            Ok(())
        } else {
            Err(format!("the client's value reached the enter tool: {} {}", out.status, text(&out.stderr)))
        }
    });
}

fn agent_dirs() -> Vec<String> {
    std::fs::read_dir("/tmp")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name().to_string_lossy().starts_with("ssh-")
                        && e.metadata().is_ok_and(|m| (A..=C).contains(&m.uid()))
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn a_reaching_b(s: &Suite, t: &mut Tally) {
    let b_init = s.ssh.init_pid(B).unwrap();
    t.attempt("A sees B's processes", || {
        let ps = s.inside(A, "ps -eo args=")?;
        if ps.contains(&format!("[{B}]")) || !ps.contains(&format!("[{A}]")) {
            return Err(ps);
        }
        Ok(())
    });
    t.attempt("A signals B's pid 1 (host pid)", || {
        let out = s.inside(A, &format!("kill -0 {b_init} 2>&1 && echo SIGNALLED; kill -STOP {b_init} 2>&1; true"))?;
        let stat = std::fs::read_to_string(format!("/proc/{b_init}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|x| x.1.chars().next()).unwrap_or_default();
        if out.contains("SIGNALLED") || state == Some('T') {
            return Err(format!("{out} state {state:?}"));
        }
        Ok(())
    });
    t.attempt("A reads B's home", || {
        let b_home = s.ssh.node.home(B);
        let out = s.inside(
            A,
            &format!(
                "cat /containers/{B}/.ssh/uwsgi_authorized_keys {}/.ssh/uwsgi_authorized_keys 2>&1; ls /containers 2>&1; true",
                b_home.display()
            ),
        )?;
        if out.contains("ssh-ed25519") || out.lines().any(|l| l.trim() == B.to_string()) {
            return Err(out);
        }
        Ok(())
    });
}

fn hostile_broker_clients(s: &Suite, t: &mut Tally) {
    let script = s.ssh.dir.join("hostile-client.py");
    std::fs::write(&script, CLIENT).unwrap();
    let socket = s.ssh.dir.join("broker.sock");
    let broker = broker_pid(&s.ssh).expect("the broker runs");
    let ask = |uid: u32, mode: &str| -> Result<String, String> {
        let out = bounded(
            as_uid(uid, &["/usr/bin/python3", &script.to_string_lossy(), &socket.to_string_lossy(), mode]),
            b"",
            LIMIT,
        )?;
        if !out.status.success() {
            return Err(format!("client {mode}: {}", text(&out.stderr)));
        }
        Ok(text(&out.stdout).trim().to_string())
    };
    // Said nothing: the broker must give up on it (in the background meanwhile).
    let silent = {
        let (ask_script, sock) = (script.clone(), socket.clone());
        std::thread::spawn(move || {
            bounded(
                as_uid(A, &["/usr/bin/python3", &ask_script.to_string_lossy(), &sock.to_string_lossy(), "silent"]),
                b"",
                LIMIT,
            )
        })
    };
    let refused = |reply: &str| reply.starts_with("{\"refused\"") || reply == "closed";
    for (uid, mode) in [
        (A, "garbage"),
        (A, "fds-0"),
        (A, "fds-1"),
        (A, "fds-2"),
        (A, "fds-4"),
        (A, "fds-9"),
        (A, "terminal-with-fds"),
        (A, "huge"),
        (A, "hangup"),
        (65534, "valid"),
        (1, "valid"),
        (30499, "valid"),
    ] {
        t.attempt(&format!("broker socket: {mode} as uid {uid}"), || {
            let reply = ask(uid, mode)?;
            if mode == "hangup" && reply == "hung up" {
                return Ok(());
            }
            if !refused(&reply) {
                return Err(format!("the broker answered {reply:?}"));
            }
            // 65534 (nobody) is inside the numeric range but reserved for the host, and uid 1 is
            // a host account: neither is ever taken for a container.
            if (uid == 1 || uid == 65534) && !reply.contains("only serves container users") {
                return Err(reply);
            }
            if uid == 30499 && !reply.contains("not running") {
                return Err(reply);
            }
            Ok(())
        });
    }
    t.attempt("broker socket: a connection that says nothing", || {
        let out = silent.join().unwrap()?;
        let reply = text(&out.stdout).trim().to_string();
        if reply == "closed" {
            Ok(())
        } else {
            Err(format!("{reply:?} {}", text(&out.stderr)))
        }
    });
    t.attempt("the broker survived them all", || {
        if broker_pid(&s.ssh) != Some(broker) {
            return Err(format!("the broker {broker} is gone: {:?}", broker_pid(&s.ssh)));
        }
        s.works(&s.a_key, &A.to_string())
    });
    // The control: the same client with a valid request as the container gets its session.
    let reply = ask(A, "valid").unwrap();
    assert_eq!(reply, r#"{"exited":{"code":0}}"#, "the hostile client's control request");
}

/// C's terminal session receives the restart notice when the node restarts C. Not an attempt:
/// returned, asserted after the tally.
fn restart_notice(s: &Suite) -> Result<(), String> {
    let before = s.ssh.init_pid(C);
    let result = restart_with_a_session_open(s);
    // The attempts that follow need the new pid 1, not the old one on its way out.
    let t0 = Instant::now();
    while (s.ssh.init_pid(C).is_none() || s.ssh.init_pid(C) == before) && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(100));
    }
    result
}

fn restart_with_a_session_open(s: &Suite) -> Result<(), String> {
    let mut cmd = s.ssh_cmd(&s.c_key, &C.to_string(), &["-tt"], None);
    let mut child =
        KillOnDrop(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let mut stdin = child.0.stdin.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.0.stdout.take().unwrap();
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let wait_for = |needle: &str, limit: Duration| -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if text(&seen.lock().unwrap()).contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    stdin.write_all(b"echo READY-$((40+2))\n").unwrap();
    if !wait_for("READY-42", Duration::from_secs(15)) {
        return Err(format!("the terminal session did not start: {}", text(&seen.lock().unwrap())));
    }
    let n = s.log_count(&format!("container {C}: its spec changed, restarting it"));
    s.ssh.node.put_spec(C, &spec_json(C, "sec-c", 320, 256, &[&s.c_pub], &s.keys));
    s.ssh.node.emperor().wait_for_log_count(&format!("container {C}: its spec changed, restarting it"), n + 1, T)?;
    let notice = format!("*** container {C} is restarting ***");
    let arrived = wait_for(&notice, Duration::from_secs(20));
    drop(stdin);
    let all = text(&seen.lock().unwrap());
    eprintln!("restart notice {}: terminal showed {all:?}", if arrived { "arrived" } else { "MISSING" });
    if arrived {
        Ok(())
    } else {
        Err(format!("the terminal session of {C} never showed {notice:?}; it showed {all:?}"))
    }
}

/// C's pid 1 made (through ptrace, which the customer could do as the same uid) to unshare a
/// user namespace and a mount namespace of its own: the broker must not join that mount table.
fn own_user_namespace(s: &Suite, t: &mut Tally) {
    s.ssh.wait_running(C);
    let init = s.ssh.init_pid(C).unwrap();
    // CLONE_NEWUSER | CLONE_NEWNS; gdb calls it inside the process (it must be single-threaded).
    let gdb = Command::new("gdb")
        .args(["-p", &init.to_string(), "-batch", "-nx", "-ex", "call (int)unshare(0x10020000)", "-ex", "detach"])
        .output()
        .unwrap();
    let said = text(&gdb.stdout);
    t.attempt("joining a pid 1 that moved into a user namespace of its own", || {
        if !said.lines().any(|l| l.trim() == "$1 = 0") {
            return Err(format!("could not build the scenario: {said} {}", text(&gdb.stderr)));
        }
        let out = s.run(&s.c_key, &C.to_string(), &[], Some("cat /proc/self/uid_map; echo ok"))?;
        let err = text(&out.stderr);
        if out.status.success() || !out.stdout.is_empty() || !err.contains("cannot be entered now") {
            return Err(format!("{} {} {err}", out.status, text(&out.stdout)));
        }
        s.ssh.node.emperor().wait_for_log("belongs to a user namespace the node did not create", T)?;
        Ok(())
    });
}

/// C given a distro that does not exist: it stops, its key is still valid, and the login is
/// refused by the broker with its reason.
fn not_running(s: &Suite, t: &mut Tally) {
    // (C's pid 1 may be the one moved into a user namespace of its own just before: the broker
    // no longer takes it for C, so its processes are what tells C still runs)
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(C, "sec-c", 320, 256, &[&s.c_pub], &s.keys)).unwrap();
    spec["distro"]["path"] = "no-such-distro".into();
    s.ssh.node.put_spec(C, &spec.to_string());
    s.ssh.sync_access();
    let t0 = Instant::now();
    while !uwsgi_it::host::pids_of_uid(C).is_empty() && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(100));
    }
    t.attempt("login into a container that is not running", || {
        if !uwsgi_it::host::pids_of_uid(C).is_empty() {
            return Err("C still runs".into());
        }
        let out = s.run(&s.c_key, &C.to_string(), &[], Some("echo ok"))?;
        let err = text(&out.stderr);
        if out.status.success() || !out.stdout.is_empty() {
            return Err(format!("{} {}", out.status, text(&out.stdout)));
        }
        if !err.contains(&format!("container {C} is not running on this node")) {
            return Err(format!("no clear reason on stderr: {err}"));
        }
        Ok(())
    });
}
