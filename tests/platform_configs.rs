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
    let cases: [(&str, Tamper, &str); 6] = [
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
