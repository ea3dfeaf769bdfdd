//! `make run` runs the node's services from the files an operator installs: the configs
//! `scripts/run-platform.sh` renders into `<run>/etc` are the shipped ones (`vassals-examples/`)
//! with only the paths, ports and names of `scripts/local-overrides` changed, every shipped
//! config is there, and nothing is added but the declared local-only files. Only the script's
//! rendering step runs (no build, no root, well under a second); the quickstart test checks that
//! the running platform starts uWSGI from these files alone.

use std::path::Path;
use uwsgi_it::platform::LocalPlatform;

fn rendered() -> LocalPlatform {
    let platform = LocalPlatform::new();
    platform.render_configs();
    platform
}

#[test]
fn make_run_renders_exactly_the_shipped_configs() {
    let platform = rendered();
    let found = platform.config_divergence();
    assert!(found.is_empty(), "make run diverges from vassals-examples/:\n{}", found.join("\n"));
    // What the issue found missing under make run is there, as shipped.
    let http = std::fs::read_to_string(platform.etc().join("uwsgi/services/http.ini")).unwrap();
    for line in ["http-websockets = true", "http-chunked-input = true"] {
        assert!(http.lines().any(|l| l == line), "rendered http.ini lacks {line}:\n{http}");
    }
    let run = platform.run_dir.to_string_lossy();
    assert!(http.lines().any(|l| l.starts_with("http = 127.0.0.1:")), "{http}");
    assert!(http.contains(&format!("unbit-subscriptions-socket = {run}/subscribe/http")), "{http}");
    // The Legion's tunnel (not started by make run): the build's unbit-links, the run dir's keys.
    let links = std::fs::read_to_string(platform.etc().join("uwsgi/legion/links.ini")).unwrap();
    let root = uwsgi_it::harness::project_root();
    let daemon = format!(
        "attach-daemon2 = cmd=exec {}/target/release/unbit-links run --node node1 --key {run}/etc/unbit/links/node.key \
         --members {run}/etc/unbit/links/members.json --ifname unbit-wg,stopsignal=2",
        root.display()
    );
    assert!(links.lines().any(|l| l == daemon), "rendered links.ini lacks {daemon}:\n{links}");
}

/// The customer sshd's config is rendered like the ini files, and Debian's sshd accepts it as
/// make run starts it: on loopback, with the run dir's host keys, keys from a dir outside the
/// run dir (sshd's StrictModes refuses /tmp), the enter tool and sftp-server at their fixed paths.
#[test]
fn make_run_renders_the_customer_sshd_config_and_sshd_accepts_it() {
    let platform = rendered();
    let config = platform.etc().join("unbit/sshd_config");
    let text = std::fs::read_to_string(&config).unwrap();
    let value = |keyword: &str| -> Vec<&str> {
        text.lines().filter_map(|l| l.strip_prefix(keyword)?.strip_prefix(' ')).map(str::trim).collect()
    };
    let run = platform.run_dir.to_string_lossy();
    let listen = value("ListenAddress");
    assert!(listen.len() == 1 && listen[0].starts_with("127.0.0.1:"), "{listen:?}");
    assert_eq!(value("HostKey"), [format!("{run}/ssh/ssh_host_ed25519_key"), format!("{run}/ssh/ssh_host_rsa_key")]);
    let keys = value("AuthorizedKeysFile");
    assert!(keys.len() == 1 && keys[0].starts_with("/run/") && keys[0].ends_with("/ssh-keys/%U"), "{keys:?}");
    assert!(!keys[0].starts_with(&*run), "{keys:?}");
    assert_eq!(value("ForceCommand"), ["/usr/local/lib/unbit/unbit-ssh-enter"]);
    assert_eq!(value("Subsystem"), ["sftp /usr/lib/openssh/sftp-server"]);
    assert_eq!(value("PasswordAuthentication"), ["no"]);

    // sshd -t reads every line as the daemon would (and needs the host keys to exist).
    let ssh = platform.run_dir.join("ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    for kind in ["ed25519", "rsa"] {
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-t", kind, "-f"])
            .arg(ssh.join(format!("ssh_host_{kind}_key")))
            .status()
            .unwrap();
        assert!(made.success());
    }
    let out = std::process::Command::new("/usr/sbin/sshd").arg("-t").arg("-f").arg(&config).output().unwrap();
    assert!(out.status.success(), "sshd -t refused {}: {}", config.display(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn rendering_again_gives_the_same_files_and_drops_stale_ones() {
    let platform = rendered();
    let http = platform.etc().join("uwsgi/services/http.ini");
    let first = std::fs::read_to_string(&http).unwrap();
    std::fs::write(platform.etc().join("uwsgi/services/gone.ini"), "[uwsgi]\n").unwrap();
    platform.render_configs();
    assert_eq!(std::fs::read_to_string(&http).unwrap(), first);
    assert!(!platform.etc().join("uwsgi/services/gone.ini").exists());
    assert!(!platform.run_dir.join("etc.new").exists() && !platform.run_dir.join("etc.old").exists());
}

/// Changes a rendered tree: `(etc dir, run dir)`.
type Tamper = fn(&Path, &str);

/// Each way a local config could drift from the shipped one is reported, naming the file.
#[test]
fn the_check_reports_every_kind_of_divergence() {
    let cases: [(&str, Tamper, &str); 8] = [
        (
            "an option added",
            |etc, _| append(&etc.join("uwsgi/services/http.ini"), "http-websockets = false\n"),
            "uwsgi/services/http.ini has",
        ),
        (
            "a value changed",
            |etc, _| edit(&etc.join("uwsgi/emperor.ini"), "master = true", "master = false"),
            "maps back to",
        ),
        (
            "a production path left in place",
            |etc, run| edit(&etc.join("uwsgi/emperor.ini"), &format!("{run}/specs"), "/var/lib/unbit/specs"),
            "/var/lib/unbit/specs is outside the run dir",
        ),
        (
            "an sshd_config value changed",
            |etc, _| edit(&etc.join("unbit/sshd_config"), "PasswordAuthentication no", "PasswordAuthentication yes"),
            "etc/unbit/sshd_config line",
        ),
        (
            "an sshd_config production path left in place",
            |etc, run| edit(&etc.join("unbit/sshd_config"), &format!("HostKey {run}/ssh/"), "HostKey /etc/unbit/ssh/"),
            "/etc/unbit/ssh/ssh_host_ed25519_key is outside the run dir",
        ),
        (
            "a shipped service missing",
            |etc, _| std::fs::remove_file(etc.join("uwsgi/services/http.ini")).unwrap(),
            "vassals-examples/services/http.ini has no rendered copy",
        ),
        (
            "an undeclared file added",
            |etc, _| std::fs::write(etc.join("uwsgi/services/extra.ini"), "[uwsgi]\n").unwrap(),
            "etc/uwsgi/services/extra.ini is neither a shipped config nor a local file",
        ),
        (
            "a declared local file missing",
            |etc, _| std::fs::remove_file(etc.join("local/dns.ini")).unwrap(),
            "etc/local/dns.ini was not written",
        ),
    ];
    for (what, tamper, expected) in cases {
        let platform = rendered();
        tamper(&platform.etc(), &platform.run_dir.to_string_lossy());
        let found = platform.config_divergence();
        assert!(found.iter().any(|f| f.contains(expected)), "{what}: expected {expected:?} among {found:#?}");
    }
}

fn append(path: &Path, text: &str) {
    let mut content = std::fs::read_to_string(path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

fn edit(path: &Path, from: &str, to: &str) {
    let content = std::fs::read_to_string(path).unwrap();
    assert!(content.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, content.replacen(from, to, 1)).unwrap();
}
