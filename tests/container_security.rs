//! The security suite, through the real path: a customer's app inside a container started by
//! `unbit_containers` tries every escape the original allowed or that a tenant would try.
//! Each attempt must fail; the suite counts them.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use uwsgi_it::host::{pids_of_uid, wait_until};
use uwsgi_it::http::{get_unix, identity, wait_unix_ok, wait_unix_restarted};
use uwsgi_it::node::{key_pair, spec_json, TestNode};

const T: Duration = Duration::from_secs(60);

/// Every probe returns "denied: <why>" or "ALLOWED: <what happened>".
const PROBE: &str = r#"
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def sys_denied(rc):
    return 'denied: errno %d' % ctypes.get_errno() if rc != 0 else 'ALLOWED'
def try_open(path, mode):
    try:
        with open(path, mode) as f:
            if mode == 'r':
                f.read(1)
        return 'ALLOWED: %s (%s)' % (path, mode)
    except OSError as e:
        return 'denied: %s' % e.strerror
def probes(other_uid, node_root):
    r = {}
    host = [p for p in os.listdir('/proc') if p.isdigit() and
            'cargo' in open('/proc/%s/cmdline' % p, 'rb').read().decode(errors='replace')]
    r['see host processes'] = 'ALLOWED: %s' % host if host else 'denied: not visible'
    procs = [p for p in os.listdir('/proc') if p.isdigit()]
    r['see other containers processes'] = 'denied: %d own processes' % len(procs) if len(procs) < 15 else 'ALLOWED: %d' % len(procs)
    r['list other homes'] = 'ALLOWED' if str(other_uid) in os.listdir('/containers') else 'denied: not there'
    r['read another home'] = try_open('/containers/%d/etc/uwsgi.key' % other_uid, 'r')
    r['read another home via host path'] = try_open('%s/containers/%d/etc/uwsgi.key' % (node_root, other_uid), 'r')
    # /etc/passwd and /etc/group: the jail's root-owned copies with the container's user
    for path in ['/etc/written', '/usr/bin/written', '/opt/unbit/written', '/run/subscribe/written', '/written',
                 '/etc/passwd', '/etc/group']:
        r['write ' + path] = try_open(path, 'w')
    r['mount'] = sys_denied(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
    r['remount root read-write'] = sys_denied(libc.mount(b'none', b'/', None, 32 | 4096, None))
    r['load a module'] = sys_denied(libc.syscall(313, -1, b'', 0))
    r['set the hostname'] = sys_denied(libc.sethostname(b'pwned', 5))
    r['read the host kernel log'] = try_open('/dev/kmsg', 'r')
    r['reach a host block device'] = 'ALLOWED' if any(d.startswith(('sd', 'vd', 'nvme', 'loop')) for d in os.listdir('/dev')) else 'denied: no disk nodes'
    leaked = []
    for pid in ['self', '1']:
        for fd in os.listdir('/proc/%s/fd' % pid):
            try:
                target = os.readlink('/proc/%s/fd/%s' % (pid, fd))
            except OSError:
                continue
            if node_root in target or 'instance.log' in target or target.startswith('/tmp/uwsgi-it'):
                leaked.append(target)
    r['use an inherited host descriptor'] = 'ALLOWED: %s' % leaked if leaked else 'denied: none inherited'
    return r
def plant():
    home = os.environ['HOME']
    made = []
    for link, target in [('etc/hostname', '/etc/passwd'), ('etc/uwsgi.pubkey', '/etc/shadow'),
                         ('.ssh/uwsgi_authorized_keys', '/root/.ssh/authorized_keys'), ('logs/emperor.log', '/etc/hosts')]:
        path = os.path.join(home, link)
        try:
            os.unlink(path)
        except OSError:
            pass
        os.symlink(target, path)
        made.append(link)
    return {'planted': made}
def application(env, start_response):
    q = dict(kv.split('=') for kv in env['QUERY_STRING'].split('&') if '=' in kv)
    body = plant() if env['PATH_INFO'] == '/plant' else probes(int(q['other']), q['root'])
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(body).encode()]
"#;

fn digest(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[test]
fn every_escape_attempt_from_inside_a_container_fails() {
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let (attacker, victim) = (30201, 30202);
    let keys = key_pair();
    let other_keys = key_pair();
    let attacker_spec = |generation: u64| {
        let mut v: serde_json::Value =
            serde_json::from_str(&spec_json(attacker, "attacker", 256, 256, &["ssh-ed25519 AAAA a"], &keys)).unwrap();
        v["reboot_generation"] = generation.into();
        v.to_string()
    };
    node.put_spec(attacker, &attacker_spec(0));
    node.put_spec(victim, &spec_json(victim, "victim", 256, 256, &["ssh-ed25519 AAAA v"], &other_keys));
    let socket = node.deploy_python(attacker, "probe", PROBE);
    let root = node.root.path().display().to_string();
    let path = format!("/?other={victim}&root={root}");
    let results: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&wait_unix_ok(&socket, &path, T).unwrap().body).unwrap();

    // Symlinks planted in the home, then a restart: the node's root-run setup must replace
    // them, never write or chown through them.
    let watched = ["/etc/passwd", "/etc/shadow", "/etc/hosts", "/root/.ssh/authorized_keys"];
    let before: Vec<Vec<u8>> = watched.iter().map(|p| digest(p)).collect();
    let planted = get_unix(&socket, "localhost", "/plant").unwrap();
    assert!(planted.body.contains("etc/hostname"), "{}", planted.body);
    let old_socket = identity(&socket);
    node.put_spec(attacker, &attacker_spec(1));
    node.emperor().wait_for_log(&format!("container {attacker}: its spec changed, restarting it"), T).unwrap();
    node.emperor().wait_for_log_count(&format!("vassal {attacker}.ini has been spawned"), 2, T).unwrap();
    wait_unix_restarted(&socket, old_socket, &path, T).unwrap();
    let after: Vec<Vec<u8>> = watched.iter().map(|p| digest(p)).collect();
    let home = node.home(attacker);
    let still_links: Vec<_> = ["etc/hostname", "etc/uwsgi.pubkey", ".ssh/uwsgi_authorized_keys", "logs/emperor.log"]
        .iter()
        .filter(|l| home.join(l).symlink_metadata().map(|m| m.file_type().is_symlink()).unwrap_or(false))
        .collect();

    let mut denied = 0;
    let mut allowed = Vec::new();
    for (attempt, outcome) in &results {
        let outcome = outcome.as_str().unwrap();
        if outcome.starts_with("denied") {
            denied += 1;
        } else {
            allowed.push(format!("{attempt}: {outcome}"));
        }
    }
    for (i, p) in watched.iter().enumerate() {
        if before[i] == after[i] {
            denied += 1;
        } else {
            allowed.push(format!("planted symlink -> {p}: the host file changed"));
        }
    }
    if still_links.is_empty() {
        denied += 1;
    } else {
        allowed.push(format!("planted symlinks survived the restart: {still_links:?}"));
    }
    assert!(!Path::new(&home.join("etc/hostname")).is_symlink());
    eprintln!("security suite: {denied} escape attempts, all denied");
    assert!(allowed.is_empty(), "escapes that worked:\n{}", allowed.join("\n"));
    assert!(denied >= 20, "only {denied} attempts ran: {results:?}");
}

/// A customer's app that reports its environment, or plants obstacles in its own home as the
/// container uid.
const CUSTOMER_APP: &str = r#"
import json, os, shutil
def application(env, start_response):
    home = os.environ.get('HOME', '')
    path = env['PATH_INFO']
    if path == '/plant-ssh':
        shutil.rmtree(os.path.join(home, '.ssh'))
        with open(os.path.join(home, '.ssh'), 'w') as f:
            f.write('the customer was here\n')
        body = {'planted': '~/.ssh as a regular file'}
    elif path == '/plant-keys-dir':
        keys = os.path.join(home, '.ssh', 'uwsgi_authorized_keys')
        os.unlink(keys)
        os.mkdir(keys)
        body = {'planted': '~/.ssh/uwsgi_authorized_keys as a directory'}
    else:
        body = dict(os.environ)
    start_response('200 OK', [('Content-Type', 'application/json')])
    return [json.dumps(body).encode()]
"#;

fn body_json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Issue 10, finding 3: the node Emperor's environment (the operator's shell, build
/// variables, whatever credential was exported) must not reach customers. A customer vassal
/// sees exactly what the platform documents (`CONTAINER_ENV` in the container manager) plus
/// what uWSGI itself sets in each instance.
#[test]
fn a_customer_vassal_sees_exactly_the_documented_environment() {
    const CANARY: (&str, &str) = ("UNBIT_TEST_SECRET", "operator-credential-5d1e");
    let node = TestNode::start_with_env(&["--unbit-quota", "none"], &[CANARY]);
    let uid = 30211;
    node.put_spec(uid, &spec_json(uid, "env", 128, 128, &["ssh-ed25519 AAAA e"], &key_pair()));
    let socket = node.deploy_python(uid, "env", CUSTOMER_APP);
    let seen = body_json(&wait_unix_ok(&socket, "/", T).unwrap().body);
    let seen = seen.as_object().unwrap();

    let leaked: Vec<_> = seen.iter().filter(|(k, v)| *k == CANARY.0 || v.as_str() == Some(CANARY.1)).collect();
    assert!(leaked.is_empty(), "the operator's environment reached the customer: {leaked:?}");
    let mut names: Vec<&str> = seen.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            // The platform's, set for the container master.
            "HOME",
            "LANG",
            "LOGNAME",
            "PATH",
            "USER",
            // uWSGI's own: the sub-Emperor's pipe to this vassal, and two it sets at start.
            "UWSGI_EMPEROR_FD",
            "UWSGI_ORIGINAL_PROC_NAME",
            "UWSGI_RELOADS",
        ],
        "{seen:?}"
    );
    let home = format!("/containers/{uid}");
    let fixed = [
        ("HOME", home.as_str()),
        ("USER", &uid.to_string()),
        ("LOGNAME", &uid.to_string()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("LANG", "C.UTF-8"),
        ("UWSGI_RELOADS", "0"),
    ]
    .map(|(k, v)| (k, v.to_string()));
    for (k, v) in fixed {
        assert_eq!(seen[k], v, "{k}");
    }
    assert!(seen["UWSGI_EMPEROR_FD"].as_str().unwrap().parse::<u32>().is_ok(), "{seen:?}");
    assert!(seen["UWSGI_ORIGINAL_PROC_NAME"].as_str().unwrap().contains("uwsgi"), "{seen:?}");
}

/// The keys of the finding-4 tests: the owner keeps the first and removes the second.
const KEPT_KEY: &str = "ssh-ed25519 AAAAkept owner";
const REMOVED_KEY: &str = "ssh-ed25519 AAAAremoved former-admin";

/// A node running container `uid` with `memory_mb` and both keys, its customer's app up and
/// already told to plant `obstacle` (`/plant-...`) from inside. Returns the node, the spec
/// with only [`KEPT_KEY`] at `new_memory_mb` (the owner's change), and the app's socket.
fn container_with_obstacle(
    uid: u32,
    memory_mb: u64,
    new_memory_mb: u64,
    obstacle: &str,
) -> (TestNode, String, std::path::PathBuf) {
    let node = TestNode::start(&["--unbit-quota", "none"]);
    let keys = key_pair();
    node.put_spec(uid, &spec_json(uid, "obstacle", memory_mb, 128, &[KEPT_KEY, REMOVED_KEY], &keys));
    let socket = node.deploy_python(uid, "app", CUSTOMER_APP);
    wait_unix_ok(&socket, "/", T).unwrap();
    assert_eq!(node.memory_limit(uid), Some(memory_mb << 20));
    let planted = get_unix(&socket, "localhost", obstacle).unwrap();
    assert_eq!(planted.status, 200, "{}", planted.body);
    let changed = spec_json(uid, "obstacle", new_memory_mb, 128, &[KEPT_KEY], &keys);
    (node, changed, socket)
}

/// Issue 10, finding 4: a customer replaces `~/.ssh` with a regular file, then the owner lowers
/// the memory limit and removes a key. The obstacle is moved aside (kept, not followed) in the
/// very pass that sees the change, the container restarts with the new limit and keys, and
/// the customer's log says what happened.
#[test]
fn an_obstacle_planted_in_the_home_cannot_keep_an_old_spec_in_force() {
    let uid = 30221;
    let (node, changed, socket) = container_with_obstacle(uid, 256, 128, "/plant-ssh");
    assert!(node.home(uid).join(".ssh").is_file());
    let before = identity(&socket);
    node.put_spec(uid, &changed);

    let restarted = format!("container {uid}: its spec changed, restarting it");
    let log = node.emperor().wait_for_log(&restarted, T).unwrap();
    assert!(!log.contains(&format!("container {uid}: cannot")), "not applied in the first pass:\n{log}");
    wait_unix_restarted(&socket, before, "/", T).unwrap();
    assert_eq!(node.memory_limit(uid), Some(128 << 20), "the lowered memory limit is not in force");
    let home = node.home(uid);
    assert_eq!(std::fs::read_to_string(home.join(".ssh/uwsgi_authorized_keys")).unwrap(), format!("{KEPT_KEY}\n"));
    assert_eq!(std::fs::read_to_string(home.join("ssh.displaced")).unwrap(), "the customer was here\n");
    let told = node.customer_log(uid);
    assert!(
        told.contains(&format!(
            "container {uid}: ~/.ssh was a regular file, where the platform keeps its own directory; moved it aside to ~/ssh.displaced"
        )),
        "the customer's log does not say why:\n{told}"
    );
}

/// Issue 10, finding 4, when the home cannot be repaired: the customer puts a directory where
/// the node writes the keys file, then the owner removes a key. The container must not keep
/// running (the removed key would keep working): it is stopped, the customer's log says why,
/// and the change is retried at every pass, so it starts again with the new keys as soon as
/// the obstacle is gone.
#[test]
fn a_spec_change_that_cannot_be_applied_stops_the_container_until_it_can() {
    let uid = 30231;
    // A key-only change: the node rewrites the keys file in place, restarting nothing.
    let (node, changed, socket) = container_with_obstacle(uid, 128, 128, "/plant-keys-dir");
    node.put_spec(uid, &changed);
    let log = node.emperor().wait_for_log(&format!("removed uwsgi instance {uid}.ini"), T).unwrap();
    assert!(log.contains(&format!("container {uid}: cannot write its new ssh keys")), "{log}");
    wait_until("the container's processes ending", T, || pids_of_uid(uid).is_empty());
    let told = node.customer_log(uid);
    assert!(
        told.contains(&format!("container {uid}: cannot write its new ssh keys"))
            && told.contains("it stays stopped until its spec can be applied"),
        "the customer's log does not say why:\n{told}"
    );

    // The customer removes the obstacle (as the container uid): the next pass applies the spec.
    let home = node.home(uid);
    let fixed = Command::new("rmdir").arg(home.join(".ssh/uwsgi_authorized_keys")).uid(uid).gid(uid).status().unwrap();
    assert!(fixed.success());
    node.emperor().wait_for_log(&format!("container {uid}: its spec can be applied again, starting it"), T).unwrap();
    node.emperor().wait_for_log_count(&format!("vassal {uid}.ini has been spawned"), 2, T).unwrap();
    wait_unix_ok(&socket, "/", T).unwrap();
    assert_eq!(std::fs::read_to_string(home.join(".ssh/uwsgi_authorized_keys")).unwrap(), format!("{KEPT_KEY}\n"));
}
