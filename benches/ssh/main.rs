//! ssh login benchmark (issue 13): a customer's `ssh <uid>@node command` into a running
//! container (the customer sshd with the shipped config, the enter tool, the broker joining the
//! container) next to a plain login to a stock Debian sshd on the same machine, in one run.
//!
//! ```sh
//! make plugins && cargo build --release -p ssh-session -p node-sync
//! sudo cargo bench --bench ssh
//! ```
//!
//! * **ours**: the test kit's `SshNode` (a node Emperor, `vassals-examples/sshd_config`
//!   rendered, the broker, keys and users written by node-sync's functions), one container.
//! * **stock**: Debian's `/usr/sbin/sshd` started by the benchmark on another loopback port with
//!   Debian's default settings (`sshd_config` as the package ships it: keys from
//!   `~/.ssh/authorized_keys`, `AcceptEnv LANG LC_*`, `PrintMotd no`) but `UsePAM no` and keys
//!   only, for a host user the benchmark creates (`useradd`, shell `/bin/bash`) and removes.
//!
//! Both sshds have ed25519 and RSA host keys of their own; the client is the same `ssh` with
//! the same ed25519 key type and options. Each round runs `ssh ... true` and `ssh ... echo ok`
//! against both, alternating which goes first; `true` is timed to the client's exit, `echo ok`
//! to the first byte of output (and to exit). The cost per login is the CPU time (user+system)
//! the node spent: for ours the customer sshd's listener and every process it reaped (its
//! per-connection processes and the enter tool) plus the broker and every session it reaped
//! (the session process and the shell in the container); for stock the stock sshd's listener
//! and what it reaped (`/proc/<pid>/stat` utime+stime+cutime+cstime, before and after).
//!
//! Knobs: `BENCH_LOGINS` (30 per command and sshd), `BENCH_WARMUP` (3). Needs root. The sshd
//! is stopped by PID, the user removed (`userdel -r`) and the temp dirs removed, also on a panic.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uwsgi_it::node::{key_pair, spec_json};
use uwsgi_it::ports::free_port;
use uwsgi_it::ssh::SshNode;

const UID: u32 = 30491;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The stock sshd, its user and its files; all removed on drop.
struct Stock {
    dir: PathBuf,
    user: String,
    port: u16,
    sshd: Child,
}

impl Stock {
    fn start(public_key: &str) -> Stock {
        let id = std::process::id();
        let user = format!("ubench{id}");
        let dir = PathBuf::from(format!("/run/unbit-ssh-bench-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let ok = Command::new("useradd").args(["-m", "-s", "/bin/bash", &user]).status().unwrap().success();
        assert!(ok, "useradd {user}");
        // From here on the user exists: a panic must still remove it.
        let port = free_port();
        // Without PAM, sshd refuses useradd's locked `!` password field even for keys.
        assert!(Command::new("usermod").args(["-p", "*", &user]).status().unwrap().success());
        let mut me = Stock { dir: dir.clone(), user: user.clone(), port, sshd: Command::new("true").spawn().unwrap() };
        let home = PathBuf::from(format!("/home/{user}"));
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::write(ssh.join("authorized_keys"), format!("{public_key}\n")).unwrap();
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(ssh.join("authorized_keys"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Command::new("chown").args(["-R", &format!("{user}:{user}")]).arg(&ssh).status().unwrap().success());
        uwsgi_it::ssh::make_host_keys(&dir);
        let d = dir.display();
        // Debian 12's shipped sshd_config (its non-comment lines), keys only, no PAM, its own
        // port, host keys and no pid file.
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {d}/ssh_host_ed25519_key\nHostKey {d}/ssh_host_rsa_key\n\
             PidFile none\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             X11Forwarding yes\nPrintMotd no\nAcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
        );
        std::fs::write(dir.join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        me.sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10), "stock sshd did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        me
    }
}

impl Drop for Stock {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        let _ = Command::new("userdel").args(["-r", &self.user]).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time (utime+stime+cutime+cstime) of `pid` in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<u64> =
        stat.rsplit_once(") ").unwrap().1.split_whitespace().skip(11).take(4).map(|f| f.parse().unwrap()).collect();
    fields.iter().sum()
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The pid of the process running `exe` whose command line contains `needle` (the node's
/// uWSGI has the broker's command line among its own arguments).
fn find_process(exe: &str, needle: &str) -> i32 {
    uwsgi_it::host::processes()
        .into_iter()
        .find(|p| {
            let running = std::fs::read_link(format!("/proc/{}/exe", p.pid)).unwrap_or_default();
            running.file_name().is_some_and(|n| n == exe) && p.cmdline.contains(needle)
        })
        .unwrap_or_else(|| panic!("no {exe} process with {needle}"))
        .pid
}

/// One `ssh` run: (time to the first byte of output, time to exit), in ms; checks the output.
fn login(key: &Path, port: u16, user: &str, command: &str, expect: &str) -> (f64, f64) {
    let t0 = Instant::now();
    let mut child = Command::new("ssh")
        .args(["-F", "/dev/null", "-i"])
        .arg(key)
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"])
        .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1"), command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    let mut got = Vec::new();
    let n = out.read(&mut first).unwrap();
    let first_output = t0.elapsed();
    got.extend_from_slice(&first[..n]);
    out.read_to_end(&mut got).unwrap();
    let status = child.wait().unwrap();
    let exit = t0.elapsed();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success() && got == expect.as_bytes(), "{user}@{port} {command}: {status} {got:?} {err}");
    (first_output.as_secs_f64() * 1000.0, exit.as_secs_f64() * 1000.0)
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}

#[derive(Default)]
struct Samples {
    true_exit: Vec<f64>,
    echo_output: Vec<f64>,
    echo_exit: Vec<f64>,
}

fn main() {
    let logins = knob("BENCH_LOGINS", 30);
    let warmup = knob("BENCH_WARMUP", 3);
    let mut node = SshNode::start();
    let (key, public) = node.client_key("bench");
    node.put_container(UID, &spec_json(UID, "bench", 256, 256, &[&public], &key_pair()));
    node.wait_running(UID);
    let stock = Stock::start(&public);
    let ours_user = UID.to_string();
    let targets = [("ours", node.port, ours_user.as_str()), ("stock", stock.port, stock.user.as_str())];
    for _ in 0..warmup {
        for (_, port, user) in targets {
            login(&key, port, user, "true", "");
            login(&key, port, user, "echo ok", "ok\n");
        }
    }
    let broker = find_process("unbit-ssh-broker", &node.dir.display().to_string());
    let ours_sshd = find_process("sshd", &format!("{}/sshd_config", node.dir.display()));
    let stock_sshd = stock.sshd.id() as i32;
    // Everything of the warm-up reaped (the broker reaps at least once a second).
    std::thread::sleep(Duration::from_millis(1500));
    let before = [cpu_ticks(ours_sshd), cpu_ticks(broker), cpu_ticks(stock_sshd)];
    let mut samples: [Samples; 2] = Default::default();
    for round in 0..logins {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (_, port, user) = targets[i];
            samples[i].true_exit.push(login(&key, port, user, "true", "").1);
        }
        for i in order {
            let (_, port, user) = targets[i];
            let (output, exit) = login(&key, port, user, "echo ok", "ok\n");
            samples[i].echo_output.push(output);
            samples[i].echo_exit.push(exit);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = [cpu_ticks(ours_sshd), cpu_ticks(broker), cpu_ticks(stock_sshd)];
    let per_login = |i: usize| (after[i] - before[i]) as f64 / ticks_per_second() * 1000.0 / (2 * logins) as f64;

    println!(
        "ssh login: {logins} logins per command and sshd (after {warmup} warm-up), interleaved, ms from the ssh \
         invocation; ours = customer sshd + enter tool + broker into container {UID}, stock = Debian sshd (UsePAM no)"
    );
    println!("| what | stock median | stock p90 | ours median | ours p90 | ours/stock (median) |");
    println!("|---|---|---|---|---|---|");
    type Pick = fn(&Samples) -> &Vec<f64>;
    let rows: [(&str, Pick); 3] = [
        ("`ssh ... true` to exit", |s| &s.true_exit),
        ("`ssh ... echo ok` to output", |s| &s.echo_output),
        ("`ssh ... echo ok` to exit", |s| &s.echo_exit),
    ];
    for (what, pick) in rows {
        let (o, s) = (pick(&samples[0]).clone(), pick(&samples[1]).clone());
        let (om, sm) = (quantile(o.clone(), 0.5), quantile(s.clone(), 0.5));
        println!(
            "| {what} | {sm:.1} | {:.1} | {om:.1} | {:.1} | {:.2}x |",
            quantile(s, 0.9),
            quantile(o, 0.9),
            om / sm
        );
    }
    // The part of ours that is not sshd: the enter tool as sshd would run it (as the uid, the
    // command in SSH_ORIGINAL_COMMAND, pipes), the broker, the session and the shell.
    let socket = node.dir.join("broker.sock");
    let uid_flags = [format!("--reuid={UID}"), format!("--regid={UID}"), "--clear-groups".to_string()];
    let mut direct = Vec::new();
    for _ in 0..logins {
        let t0 = Instant::now();
        let out = Command::new("setpriv")
            .args(&uid_flags)
            .args(["--", uwsgi_it::ssh::ENTER_TOOL, "-c", uwsgi_it::ssh::ENTER_TOOL])
            .env_clear()
            .env("UNBIT_SSH_BROKER", &socket)
            .env("SSH_ORIGINAL_COMMAND", "echo ok")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        direct.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert!(out.status.success() && out.stdout == b"ok\n", "the enter tool alone: {out:?}");
    }
    println!(
        "| the enter tool alone, no sshd (setpriv as the uid, `echo ok`) | | | {:.1} | {:.1} | |",
        quantile(direct.clone(), 0.5),
        quantile(direct, 0.9)
    );
    let (ours_sshd_ms, broker_ms, stock_ms) = (per_login(0), per_login(1), per_login(2));
    println!(
        "CPU per login on the node (user+system, with the processes each reaped): stock sshd {stock_ms:.1} ms; \
         ours {:.1} ms = customer sshd + enter tool {ours_sshd_ms:.1} ms + broker, session and shell {broker_ms:.1} ms \
         ({:.2}x)",
        ours_sshd_ms + broker_ms,
        (ours_sshd_ms + broker_ms) / stock_ms
    );
    drop(stock);
    drop(node);
}
