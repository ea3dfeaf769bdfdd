//! Domains end to end, as root, with real containers: the customer quickstart's three apps
//! (`myapp.py`, `myapp.pl`, `myapp.ru`), each a vassal with `domain = mynewdomain.org`,
//! answer through stock uWSGI's HTTP router (two router processes) behind the platform's
//! subscription validator, balanced across all three; a wildcard; a removed vassal leaves the
//! pool; another customer's container cannot take the domain.

// The router kit lives with the validator (its attack suite and benchmark use it too).
#[path = "../plugins/unbit_subscriptions/tests/kit/mod.rs"]
mod domains_kit;

use domains_kit::{domain_entry, eventually, start_router, write_domains, RouterSetup};
use std::path::Path;
use std::time::Duration;
use uwsgi_it::node::{key_pair, spec_json, TestNode};

const T: Duration = Duration::from_secs(90);
const DOMAIN: &str = "mynewdomain.org";

// The quickstart's apps. Python 3 wants bytes; the distro's Python plugin is `python3`.
const MYAPP_PY: &str = "def application(environ, start_response):\n    start_response('200 OK', [('Content-Type','text/plain')])\n    return [b\"Hello i am python\"]\n";
const MYAPP_PL: &str = "my $app = sub {\n    my ($env) = @_;\n    return [200, ['Content-Type' => 'text/plain'], [\"Hello i am perl\"]];\n};\n";
const MYAPP_RU: &str = "class MyApp\n  def call(env)\n    [200, {'Content-Type' => 'text/plain'}, [\"Hello i am ruby\"]]\n  end\nend\n\nrun MyApp.new\n";
/// The platform distro has uWSGI's rack plugin but not the rack gem it loads a config.ru
/// with; this stand-in (on the vassal's `rb-lib` path) is all the plugin needs.
const RACK_SHIM: &str = "module Rack\n  class Builder\n    def self.parse_file(path)\n      b = new\n      b.instance_eval(File.read(path), path)\n      [b.app, {}]\n    end\n    def run(app)\n      @app = app\n    end\n    attr_reader :app\n  end\nend\n";

fn python_app(text: &str) -> String {
    MYAPP_PY.replace("Hello i am python", text)
}

fn wait_for(path: &Path) {
    eventually(T, || if path.exists() { Ok(()) } else { Err(format!("{} did not appear", path.display())) }).unwrap();
}

fn put(home: &Path, rel: &str, text: &str) {
    let path = home.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn distinct(bodies: &[String]) -> Vec<String> {
    let mut d: Vec<String> = bodies.to_vec();
    d.sort();
    d.dedup();
    d
}

#[test]
fn the_quickstart_apps_share_a_domain_through_the_router_and_nobody_else_can_take_it() {
    let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
    let (alice_keys, bob_keys) = (key_pair(), key_pair());
    let (alice, bob) = (30301, 30302);
    let domains = node.root.path().join("domains.json");
    write_domains(
        &domains,
        &[
            domain_entry(DOMAIN, &[alice], &alice_keys.1),
            domain_entry(&format!(".{DOMAIN}"), &[alice], &alice_keys.1),
            domain_entry("bob.example", &[bob], &bob_keys.1),
        ],
    );
    let socket = node.subscribe_dir().join("http");
    let homes = node.containers_dir();
    let router = start_router(RouterSetup::new(&socket, &homes, &domains, 2));

    node.put_spec(alice, &spec_json(alice, "kratos", 384, 256, &["ssh-ed25519 AAAA kratos"], &alice_keys));
    node.put_spec(bob, &spec_json(bob, "intruder", 256, 256, &["ssh-ed25519 AAAA bob"], &bob_keys));
    let (ahome, bhome) = (node.home(alice), node.home(bob));
    wait_for(&ahome.join("vassals"));
    wait_for(&bhome.join("vassals"));

    // The quickstart, step by step: the files in the home, then one vassal per language.
    put(&ahome, "myapp.py", MYAPP_PY);
    put(&ahome, "myapp.pl", MYAPP_PL);
    put(&ahome, "myapp.ru", MYAPP_RU);
    put(&ahome, "rubylib/rack.rb", RACK_SHIM);
    put(
        &ahome,
        "vassals/perlapp.ini",
        &format!("[uwsgi]\nplugin = 0:psgi\npsgi = $(HOME)/myapp.pl\ndomain = {DOMAIN}\n"),
    );
    put(
        &ahome,
        "vassals/pythonapp.ini",
        &format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/myapp.py\ndomain = {DOMAIN}\n"),
    );
    put(
        &ahome,
        "vassals/rubyapp.ini",
        &format!("[uwsgi]\nplugin = 0:rack\nrb-lib = $(HOME)/rubylib\nrack = $(HOME)/myapp.ru\ndomain = {DOMAIN}\n"),
    );

    let nodes = router.wait_for_nodes(DOMAIN, 3, T).unwrap();
    let pinned = |n: &String| std::fs::read_link(n).is_ok_and(|t| t.starts_with("/proc/"));
    assert!(nodes.iter().all(pinned), "the router gets names of pinned sockets: {nodes:?}");
    let all = ["Hello i am perl", "Hello i am python", "Hello i am ruby"];
    let bodies = eventually(T, || {
        let b = router.bodies(DOMAIN, 30);
        if distinct(&b) == all {
            Ok(b)
        } else {
            Err(format!("{:?}", distinct(&b)))
        }
    })
    .unwrap();
    // Balanced: each of the three answers a fair share of 30 requests.
    for app in all {
        let n = bodies.iter().filter(|b| *b == app).count();
        assert!(n >= 5, "{app} answered {n} of 30: {bodies:?}");
    }
    let log = router.instance.log();
    assert!(log.contains(&format!("accepted {DOMAIN} => /containers/{alice}/run/{DOMAIN}_")), "{log}");

    // Another customer's container announces the same domain, signed with its own key: the
    // validator refuses it, tells the operator and the container, and the pool is unchanged.
    put(&bhome, "myapp.py", &python_app("Hello i am the intruder"));
    put(
        &bhome,
        "vassals/steal.ini",
        &format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/myapp.py\ndomain = {DOMAIN}\n"),
    );
    router
        .instance
        .wait_for_log(&format!("for {DOMAIN}: container {bob} does not belong to the owner of {DOMAIN}"), T)
        .unwrap();
    let emperor_log = bhome.join("logs/emperor.log");
    eventually(T, || {
        let text = std::fs::read_to_string(&emperor_log).unwrap_or_default();
        if text.contains(&format!(
            "[subscription validator] announce for {DOMAIN} rejected: container {bob} does not belong"
        )) {
            Ok(())
        } else {
            Err(format!("no rejection in {}:\n{text}", emperor_log.display()))
        }
    })
    .unwrap();
    assert_eq!(router.nodes_of(DOMAIN).len(), 3);
    assert!(!router.bodies(DOMAIN, 12).iter().any(|b| b.contains("intruder")));

    // A wildcard serves every name below the domain...
    put(&ahome, "wild.py", &python_app("Hello i am the wildcard"));
    put(
        &ahome,
        "vassals/wild.ini",
        &format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/wild.py\ndomain = .{DOMAIN}\n"),
    );
    router.wait_for_nodes(&format!(".{DOMAIN}"), 1, T).unwrap();
    assert_eq!(distinct(&router.bodies(&format!("a.{DOMAIN}"), 6)), ["Hello i am the wildcard"]);
    assert_eq!(distinct(&router.bodies(&format!("deep.b.{DOMAIN}"), 3)), ["Hello i am the wildcard"]);
    // ...and a vassal announcing a specific name below it (covered by the wildcard the
    // customer owns) wins over it for that name only.
    put(&ahome, "a.py", &python_app("Hello i am a"));
    put(
        &ahome,
        "vassals/a.ini",
        &format!("[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/a.py\ndomain = a.{DOMAIN}\n"),
    );
    router.wait_for_nodes(&format!("a.{DOMAIN}"), 1, T).unwrap();
    assert_eq!(distinct(&router.bodies(&format!("a.{DOMAIN}"), 6)), ["Hello i am a"]);
    assert_eq!(distinct(&router.bodies(&format!("b.{DOMAIN}"), 3)), ["Hello i am the wildcard"]);
    assert_eq!(distinct(&router.bodies(DOMAIN, 12)), all, "the bare domain keeps its own pool");

    // Removing a vassal: its unsubscribe passes the validator and the router drops it.
    std::fs::remove_file(ahome.join("vassals/pythonapp.ini")).unwrap();
    router.instance.wait_for_log(&format!("unsubscribed {DOMAIN} => /containers/{alice}/run/"), T).unwrap();
    router.wait_for_nodes(DOMAIN, 2, Duration::from_secs(35)).unwrap();
    let after = router.bodies(DOMAIN, 20);
    assert_eq!(distinct(&after), ["Hello i am perl", "Hello i am ruby"], "{after:?}");
}

#[test]
fn a_deleted_domain_leaves_the_router_within_seconds_without_a_restart() {
    let node = TestNode::start_with_shortcuts(&["--unbit-quota", "none"]);
    let keys = key_pair();
    let uid = 30311;
    let domains = node.root.path().join("domains.json");
    write_domains(
        &domains,
        &[domain_entry("shop.example", &[uid], &keys.1), domain_entry("blog.example", &[uid], &keys.1)],
    );
    let socket = node.subscribe_dir().join("http");
    let homes = node.containers_dir();
    let router = start_router(RouterSetup::new(&socket, &homes, &domains, 1));
    node.put_spec(uid, &spec_json(uid, "shop", 256, 256, &["ssh-ed25519 AAAA shop"], &keys));
    let home = node.home(uid);
    wait_for(&home.join("vassals"));
    put(&home, "myapp.py", &python_app("Hello from the shop"));
    put(
        &home,
        "vassals/app.ini",
        "[uwsgi]\nplugin = 0:python3\nwsgi-file = $(HOME)/myapp.py\ndomain = shop.example\ndomain = blog.example\n",
    );
    router.wait_for_nodes("shop.example", 1, T).unwrap();
    router.wait_for_nodes("blog.example", 1, T).unwrap();
    let pid = router.instance.pid();

    // The customer deletes blog.example in the API; the node sync rewrites the file.
    write_domains(&domains, &[domain_entry("shop.example", &[uid], &keys.1)]);
    router
        .instance
        .wait_for_log("REVOKED blog.example => /containers/30311/run/blog.example_", Duration::from_secs(10))
        .unwrap();
    router.wait_for_nodes("blog.example", 0, Duration::from_secs(10)).unwrap();
    assert_eq!(router.bodies("shop.example", 3), vec!["Hello from the shop"; 3]);
    // The vassal keeps announcing it: refused, and the router stays as it is.
    router
        .instance
        .wait_for_log("for blog.example: blog.example is not a domain of any customer with containers on this node", T)
        .unwrap();
    assert!(router.nodes_of("blog.example").is_empty());
    assert_eq!(router.instance.pid(), pid);
}
