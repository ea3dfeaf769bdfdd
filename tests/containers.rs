//! The container manager end to end, as root, on this machine's real kernel: a spec appears
//! in the node's spec folder, the node Emperor's `unbit_containers` builds the jail, the
//! container's own Emperor runs the customer's vassal, and the customer's app answers on its
//! socket from inside namespaces, cgroup and a read-only distro.

use std::time::Duration;
use uwsgi_it::http::{get_unix, identity, wait_unix_ok, wait_unix_restarted};
use uwsgi_it::node::{key_pair, spec_json, wait_for_path, TestNode};

const T: Duration = Duration::from_secs(60);

/// The customer's app: answers with what it sees from inside, or runs a limit probe.
const APP: &str = r#"
import json, os, socket, time
def probe_fork():
    pids, err = [], 0
    try:
        while len(pids) < 5000:
            pid = os.fork()
            if pid == 0:
                time.sleep(20)
                os._exit(0)
            pids.append(pid)
    except OSError as e:
        err = e.errno
    for p in pids:
        os.kill(p, 9)
        os.waitpid(p, 0)
    return {'forked': len(pids), 'errno': err}
def probe_view():
    try:
        open('/etc/written-by-customer', 'w')
        root_writable = True
    except OSError:
        root_writable = False
    return {'uid': os.getuid(), 'hostname': socket.gethostname(),
            'procs': len([p for p in os.listdir('/proc') if p.isdigit()]),
            'root_writable': root_writable, 'home': os.environ.get('HOME'),
            'home_writable': os.access(os.environ.get('HOME', '/'), os.W_OK)}
def application(env, start_response):
    path = env['PATH_INFO']
    if path == '/hog':
        hog = bytearray(1024 * 1024 * 1024)
        body = {'hog': len(hog)}
    elif path == '/fill':
        written, err = 0, ''
        try:
            with open(os.path.join(os.environ['HOME'], 'big.bin'), 'wb') as f:
                while written < 400 * 1024 * 1024:
                    f.write(b'x' * 1024 * 1024)
                    f.flush()
                    written += 1024 * 1024
                os.fsync(f.fileno())
        except OSError as e:
            err = e.strerror
        body = {'written_mb': written // (1024 * 1024), 'error': err}
    elif path == '/fork':
        body = probe_fork()
    else:
        body = probe_view()
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(body).encode()]
"#;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn a_container_runs_its_customers_vassal_inside_its_jail_and_follows_its_spec() {
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    let uid = 30101;
    node.put_spec(uid, &spec_json(uid, "web shop", 256, 256, &["ssh-ed25519 AAAAfirst customer@laptop"], &keys));
    let socket = node.deploy_python(uid, "app", APP);

    let view = json(&wait_unix_ok(&socket, "/", T).unwrap().body);
    assert_eq!(view["uid"], uid, "{view}");
    assert_eq!(view["hostname"], "web-shop");
    assert_eq!(view["home"], format!("/containers/{uid}"));
    assert_eq!(view["root_writable"], false, "the distro must be read-only: {view}");
    assert_eq!(view["home_writable"], true);
    assert!(view["procs"].as_u64().unwrap() < 15, "the container sees foreign processes: {view}");
    let authorized = std::fs::read_to_string(node.home(uid).join(".ssh/uwsgi_authorized_keys")).unwrap();
    assert_eq!(authorized, "ssh-ed25519 AAAAfirst customer@laptop\n");
    assert!(!node.cgroup_dirs().is_empty(), "the container has no cgroup");

    // A broken spec for another container is reported with the container and the field; the
    // running container is untouched.
    node.put_spec(30102, &spec_json(30102, "bad\nhook-asap = exec:id", 128, 128, &["ssh-ed25519 AAAA x"], &keys));
    node.emperor()
        .wait_for_log("container 30102: invalid spec: name: contains the control character U+000A", T)
        .unwrap();
    assert_eq!(get_unix(&socket, "localhost", "/").unwrap().status, 200);

    let spawned = |node: &TestNode| node.emperor().log().matches(&format!("vassal {uid}.ini has been spawned")).count();
    assert_eq!(spawned(&node), 1);

    // New ssh keys: rewritten in place, no restart.
    node.put_spec(
        uid,
        &spec_json(
            uid,
            "web shop",
            256,
            256,
            &["ssh-ed25519 AAAAfirst customer@laptop", "ssh-rsa AAAAsecond ci"],
            &keys,
        ),
    );
    node.emperor().wait_for_log(&format!("container {uid}: ssh keys updated (2 keys), no restart"), T).unwrap();
    let authorized = std::fs::read_to_string(node.home(uid).join(".ssh/uwsgi_authorized_keys")).unwrap();
    assert!(authorized.contains("AAAAsecond"), "{authorized}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(spawned(&node), 1, "an ssh key change restarted the container");

    // More memory: a restart-relevant change.
    let old_socket = identity(&socket);
    node.put_spec(uid, &spec_json(uid, "web shop", 384, 256, &["ssh-ed25519 AAAAfirst customer@laptop"], &keys));
    node.emperor().wait_for_log(&format!("container {uid}: its spec changed, restarting it"), T).unwrap();
    node.emperor().wait_for_log_count(&format!("vassal {uid}.ini has been spawned"), 2, T).unwrap();
    assert_eq!(json(&wait_unix_restarted(&socket, old_socket, "/", T).unwrap().body)["uid"], uid);

    // Removed from the specs: stopped, cgroup released, home kept.
    node.remove_spec(uid);
    node.emperor().wait_for_log(&format!("container {uid}: removed from the node's specs"), T).unwrap();
    node.emperor().wait_for_log(&format!("removed uwsgi instance {uid}.ini"), T).unwrap();
    let deadline = std::time::Instant::now() + T;
    while node.cgroup_dirs().iter().any(|d| d.join(uid.to_string()).exists()) {
        assert!(std::time::Instant::now() < deadline, "the cgroup of {uid} was not released");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(node.home(uid).join("app.py").exists(), "the home must survive the container");
}

#[test]
fn memory_and_pids_limits_are_in_force() {
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    let uid = 30111;
    node.put_spec(uid, &spec_json(uid, "limited", 96, 64, &["ssh-ed25519 AAAA limits"], &keys));
    let socket = node.deploy_python(uid, "app", APP);
    wait_unix_ok(&socket, "/", T).unwrap();

    // A fork bomb stops at the pids limit (the container's own processes count too).
    let fork = json(&wait_unix_ok(&socket, "/fork", T).unwrap().body);
    assert!(fork["forked"].as_u64().unwrap() < 64, "{fork}");
    assert_eq!(fork["errno"], 11, "fork should fail with EAGAIN: {fork}");

    // A memory hog is killed by the OOM killer inside the container's cgroup, and the node
    // logs it for the operator.
    let hog = get_unix(&socket, "localhost", "/hog");
    assert!(!matches!(hog, Ok(ref r) if r.status == 200), "1 GiB was allocated under a 96 MB limit");
    node.emperor().wait_for_log(&format!("container {uid}: OUT OF MEMORY"), T).unwrap();
}

#[test]
fn writing_past_the_disk_quota_fails() {
    // `auto` picks what the host supports: on this kernel (no ext4/xfs quota, containers dir
    // not on btrfs) that is the per-home ext4 image sized to the quota.
    let node = TestNode::start(&["--unbit-quota", "auto"]);
    let keys = key_pair();
    let uid = 30121;
    let mut spec: serde_json::Value =
        serde_json::from_str(&spec_json(uid, "quota", 128, 128, &["ssh-ed25519 AAAA q"], &keys)).unwrap();
    spec["storage_mb"] = 64.into();
    node.put_spec(uid, &spec.to_string());
    let socket = node.deploy_python(uid, "app", APP);
    wait_unix_ok(&socket, "/", T).unwrap();
    let fill = json(&wait_unix_ok(&socket, "/fill", T).unwrap().body);
    assert!(fill["written_mb"].as_u64().unwrap() < 64, "{fill}");
    let err = fill["error"].as_str().unwrap();
    assert!(err == "No space left on device" || err == "Disk quota exceeded", "{fill}");
}

#[test]
fn a_restarted_node_brings_its_containers_back_and_rc_local_runs_as_the_container() {
    let mut node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    let uid = 30131;
    node.put_spec(uid, &spec_json(uid, "survivor", 128, 128, &["ssh-ed25519 AAAA s"], &keys));
    let socket = node.deploy_python(uid, "app", APP);
    wait_unix_ok(&socket, "/", T).unwrap();
    // The customer's boot script, run at the next start by the container master.
    let home = node.home(uid);
    std::fs::write(home.join("etc/rc.local"), "#!/bin/sh\nid -u > $HOME/rc-local-ran\n").unwrap();

    // The node reboots while the API is unreachable: the spec folder is all it has.
    let before = identity(&socket);
    node.restart();
    let view = json(&wait_unix_restarted(&socket, before, "/", T).unwrap().body);
    assert_eq!(view["uid"], uid);
    wait_for_path(&home.join("rc-local-ran"), T);
    let ran_as = std::fs::read_to_string(home.join("rc-local-ran")).unwrap();
    assert_eq!(ran_as.trim(), uid.to_string(), "rc.local must run as the container uid");
}

/// The customer's app for the shell test: runs each command as a login shell would (a shell's
/// PATH, no inherited uWSGI environment) and reports exit code and output.
const SHELL_APP: &str = r#"
import json, os, subprocess
HOME = os.environ['HOME']
ENV = {'PATH': '/usr/local/bin:/usr/bin:/bin', 'HOME': HOME, 'LANG': 'C.UTF-8'}
VENV = os.path.join(HOME, 'venv')
COMMANDS = {
    'id': 'id -u',
    'ps': 'ps -o uid=,comm= -p $$',
    'python3': 'python3 -c "import sys; print(sys.version)"',
    'venv': 'python3 -m venv ' + VENV + ' && ' + VENV + '/bin/pip --version',
    'perl': 'perl -v',
    'ruby': 'ruby -e "puts 6 * 7"',
    'gem': 'gem --version',
    'bundle': 'bundle --version',
    'git': 'git --version && git init -q ' + HOME + '/repo && git -C ' + HOME + '/repo status --short',
    'curl': 'curl --version',
    'less': 'less --version',
    'vi': 'test -x /usr/bin/vi && echo editor',
    # Present for sshd's SFTP subsystem; it runs only if the container's passwd has the uid
    # (it exits with "No user found for uid" otherwise).
    'sftp': 'test -x /usr/lib/openssh/sftp-server && echo sftp',
    'sftp-server': '/usr/lib/openssh/sftp-server < /dev/null && echo served',
    # The container's user, from the jail's own copies of the distro's passwd and group.
    'user': 'id -un; id -gn; whoami; ls -ld ' + HOME + " | awk '{print $3, $4}'",
    'user db': "awk '$5 == \"/etc/passwd\" || $5 == \"/etc/group\" {print $5, $6}' /proc/self/mountinfo;"
               " (echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd) 2>/dev/null || echo refused",
    'locale': 'LC_ALL=en_US.UTF-8 python3 -c "import locale; print(locale.setlocale(locale.LC_ALL, str()))"',
}
def application(env, start_response):
    results = {}
    for name, cmd in COMMANDS.items():
        p = subprocess.run(['/bin/sh', '-c', cmd], capture_output=True, env=ENV, cwd=HOME, timeout=25)
        results[name] = [p.returncode, (p.stdout + p.stderr).decode(errors='replace')]
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(results).encode()]
"#;

#[test]
fn the_distro_gives_the_customer_a_shell_worth_having() {
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    let uid = 30141;
    node.put_spec(uid, &spec_json(uid, "shell", 384, 256, &["ssh-ed25519 AAAA shell"], &keys));
    let socket = node.deploy_python(uid, "shell", SHELL_APP);
    let results = json(&wait_unix_ok(&socket, "/", Duration::from_secs(120)).unwrap().body);
    let ran = |name: &str| -> String {
        let r = &results[name];
        assert_eq!(r[0], 0, "{name} failed in the container: {}", r[1]);
        r[1].as_str().unwrap().to_string()
    };
    assert_eq!(ran("id").trim(), uid.to_string(), "the tools must run as the container uid");
    assert_eq!(ran("ps").split_whitespace().collect::<Vec<_>>(), [uid.to_string().as_str(), "sh"]);
    assert!(ran("python3").starts_with("3."));
    assert!(ran("venv").contains(&format!("/containers/{uid}/venv/lib/python3")), "the venv has its own pip");
    assert!(ran("perl").contains("This is perl 5"));
    assert_eq!(ran("ruby").trim(), "42");
    assert!(ran("gem").trim().starts_with('3'));
    assert!(ran("bundle").contains("Bundler version"));
    assert!(ran("git").contains("git version"));
    assert!(node.home(uid).join("repo/.git/HEAD").exists(), "git init wrote the customer's repository");
    assert!(ran("curl").starts_with("curl "));
    assert!(ran("less").starts_with("less "));
    assert_eq!(ran("vi").trim(), "editor");
    assert_eq!(ran("locale").trim(), "en_US.UTF-8");
    assert_eq!(ran("sftp").trim(), "sftp");
    assert_eq!(ran("sftp-server").trim(), "served");
    let name = uid.to_string();
    assert_eq!(ran("user").lines().collect::<Vec<_>>(), [&*name, &*name, &*name, &format!("{uid} {uid}")]);
    let db = ran("user db");
    let lines: Vec<&str> = db.lines().collect();
    assert_eq!(lines.len(), 3, "{db}");
    for (line, file) in lines.iter().zip(["/etc/passwd", "/etc/group"]) {
        assert!(line.starts_with(&format!("{file} ro,")), "{file} must be a read-only mount: {db}");
    }
    assert_eq!(lines[2], "refused", "{db}");
}
