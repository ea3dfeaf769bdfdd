//! The shipped `shortcuts/shortcuts.ini` with this plugin, in stock uWSGI as a container's
//! vassal reads them (the shortcuts file included before the vassal's own config, the plugin
//! in the platform dir next to it), stopped right after the configuration is applied
//! (`hook-pre-jail = exit`), so nothing is bound: what each shortcut turns into, as uWSGI's own
//! `show-config` prints it. Serving through the router with real containers is
//! `tests/domain_names.rs` at the root.

use std::path::{Path, PathBuf};
use std::process::Command;
use uwsgi_it::harness::{plugin_path, project_root, uwsgi_bin};

/// A platform dir (`shortcuts.ini`, `plugins/unbit_vassal_plugin.so`) and a home, as
/// `/opt/unbit` and `/containers/<uid>` are inside a container.
struct Vassal {
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    output: String,
    /// The vassal's %J, as uWSGI computed it.
    id: String,
    home: PathBuf,
}

impl Vassal {
    fn new() -> Vassal {
        let dir = tempfile::Builder::new().prefix("unbit-vassal-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("opt/plugins")).unwrap();
        std::fs::create_dir_all(dir.path().join("home/vassals")).unwrap();
        std::fs::copy(project_root().join("shortcuts/shortcuts.ini"), dir.path().join("opt/shortcuts.ini")).unwrap();
        std::fs::copy(plugin_path("unbit_vassal"), dir.path().join("opt/plugins/unbit_vassal_plugin.so")).unwrap();
        Vassal { dir }
    }

    fn run(&self, config: &str) -> Run {
        let home = self.dir.path().join("home");
        let ini = home.join("vassals/app.ini");
        std::fs::write(&ini, format!("[uwsgi]\n{config}\nshow-config = true\nhook-pre-jail = exit:0\n")).unwrap();
        let out = Command::new(uwsgi_bin())
            .arg("--include")
            .arg(self.dir.path().join("opt/shortcuts.ini"))
            .arg("--ini")
            .arg(&ini)
            .env("HOME", &home)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Run { code: out.status.code(), output, id: config_hash(&ini), home }
    }
}

/// uWSGI's `%J`: djb33x of the config path, as 8 hex digits of its in-memory (little-endian)
/// bytes (`core/uwsgi.c`, `config_magic_table_fill`).
fn config_hash(path: &Path) -> String {
    let mut h: u32 = 5381;
    for b in path.to_str().unwrap().bytes() {
        h = h.wrapping_mul(33) ^ u32::from(b);
    }
    h.to_le_bytes().iter().map(|b| format!("{b:02X}")).collect()
}

impl Run {
    /// The `key = value` lines of the configuration, as uWSGI holds it after applying it.
    fn lines(&self, key: &str) -> Vec<String> {
        let prefix = format!("{key} = ");
        self.output.lines().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_string).collect()
    }

    fn h(&self, text: &str) -> String {
        text.replace("HOME", &self.home.to_string_lossy()).replace("ID", &self.id)
    }
}

#[test]
fn every_shortcut_binds_its_socket_and_subscribes_it() {
    let v = Vassal::new();
    let r = v.run(
        "domain = Example.ORG\n\
         ssl-domain = ssl.example.org HOME/k.pem HOME/c.pem\n\
         ssl-ca-domain = ca.example.org HOME/k.pem HOME/c.pem !HOME/ca.pem\n\
         cluster-domain = .cluster.example.org\n\
         ssl-cluster-domain = sc.example.org HOME/k.pem HOME/c.pem\n\
         ssl-ca-cluster-domain = scc.example.org HOME/k.pem HOME/c.pem HOME/ca.pem\n"
            .replace("HOME", "$(HOME)")
            .as_str(),
    );
    assert_eq!(r.code, Some(0), "{}", r.output);
    let sockets = [
        "example.org",
        "ssl.example.org",
        "ca.example.org",
        ".cluster.example.org",
        "sc.example.org",
        "scc.example.org",
    ]
    .map(|n| r.h(&format!("/run/{n}_ID.socket")));
    assert_eq!(r.lines("socket"), sockets, "{}", r.output);
    assert_eq!(r.lines("notify-socket").first(), Some(&r.h("HOME/run/notify_ID.socket")));
    assert_eq!(r.lines("buffer-size"), ["65535"], "added once, for the first shortcut");
    let sub = |server: &str, key: &str, file: &str, sni: &str| {
        r.h(&format!(
            "server=/run/subscribe/{server},key={key},addr=HOME/run/{file}_ID.socket,sign=SHA256:HOME/etc/uwsgi.key{sni}"
        ))
    };
    let (ssl, ca, ca2) = (
        ",sni_key=HOME/k.pem,sni_crt=HOME/c.pem",
        ",sni_key=HOME/k.pem,sni_crt=HOME/c.pem,sni_ca=!HOME/ca.pem",
        ",sni_key=HOME/k.pem,sni_crt=HOME/c.pem,sni_ca=HOME/ca.pem",
    );
    assert_eq!(
        r.lines("subscribe2"),
        [
            sub("http", "Example.ORG", "example.org", ""),
            sub("http", "ssl.example.org", "ssl.example.org", ssl),
            sub("http", "ca.example.org", "ca.example.org", ca),
            sub("fastrouter", ".cluster.example.org", ".cluster.example.org", ""),
            sub("http", ".cluster.example.org", ".cluster.example.org", ""),
            sub("fastrouter", "sc.example.org", "sc.example.org", ssl),
            sub("http", "sc.example.org", "sc.example.org", ssl),
            sub("fastrouter", "scc.example.org", "scc.example.org", ca2),
            sub("http", "scc.example.org", "scc.example.org", ca2),
        ],
        "{}",
        r.output
    );
}

#[test]
fn a_long_domain_gets_a_bounded_socket_named_after_it() {
    let v = Vassal::new();
    let name = format!("{}.{}.example.org", "a".repeat(60), "b".repeat(27));
    assert_eq!(name.len(), 100);
    let r = v.run(&format!("domain = {name}"));
    assert_eq!(r.code, Some(0), "{}", r.output);
    let socket = &r.lines("socket")[0];
    let file = socket.strip_prefix("/run/").unwrap();
    assert!(file.starts_with(&format!("{}-", "a".repeat(32))) && file.ends_with(&r.h("_ID.socket")), "{socket}");
    assert!(socket.len() <= 102, "{socket}");
    assert!(r.lines("subscribe2")[0].contains(&format!("key={name},addr={}/run/{file},", r.home.display())));
}

#[test]
fn the_vassals_own_buffer_size_is_kept() {
    let v = Vassal::new();
    let r = v.run("buffer-size = 8192\ndomain = example.org");
    assert_eq!(r.code, Some(0), "{}", r.output);
    assert_eq!(r.lines("buffer-size"), ["8192"]);
}

#[test]
fn a_shortcut_missing_a_value_stops_the_vassal_with_the_reason() {
    let v = Vassal::new();
    let r = v.run("ssl-domain = example.org $(HOME)/k.pem");
    assert_eq!(r.code, Some(1), "{}", r.output);
    assert!(r.output.contains("option --unbit-vassal-domain: the shortcut is missing a value"), "{}", r.output);
}

#[test]
fn a_node_without_the_plugin_stops_the_vassal_with_the_reason() {
    let v = Vassal::new();
    std::fs::remove_file(v.dir.path().join("opt/plugins/unbit_vassal_plugin.so")).unwrap();
    let r = v.run("domain = example.org");
    assert_eq!(r.code, Some(1), "{}", r.output);
    assert!(r.output.contains("the domain shortcuts need "), "{}", r.output);
    assert!(r.output.contains("plugins/unbit_vassal_plugin.so, which this node lacks"), "{}", r.output);
    assert!(r.lines("socket").is_empty());
}
