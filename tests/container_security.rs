//! The security suite, through the real path: a customer's app inside a container started by
//! `unbit_containers` tries every escape the original allowed or that a tenant would try.
//! Each attempt must fail; the suite counts them.

use std::path::Path;
use std::time::Duration;
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
    for path in ['/etc/written', '/usr/bin/written', '/opt/unbit/written', '/run/subscribe/written', '/written']:
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
