//! `make UWSGI_SRC=...`: the plugins built against a uWSGI source tree load into the binary
//! built from that same tree, and refuse to run in a binary of another profile (Debian's).

use std::process::Command;
use std::time::Duration;
use uwsgi_it::harness::{plugin_path, project_root, uwsgi_bin};
use uwsgi_it::InstanceBuilder;

const T: Duration = Duration::from_secs(30);

#[test]
fn plugins_built_from_a_source_tree_run_in_its_binary_and_nowhere_else() {
    let root = project_root();
    let cache = root.join("target/uwsgi-src-cache");
    let out = Command::new("bash")
        .arg(root.join("tests/scripts/uwsgi-source-tree.sh"))
        .arg(&cache)
        .args(["2.0.21", "core"])
        .output()
        .unwrap();
    assert!(out.status.success(), "source tree: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let source_binary = format!("{tree}/uwsgi");

    let make = Command::new("make")
        .args(["plugins", &format!("UWSGI_SRC={tree}"), "UWSGI_PROFILE=core"])
        .current_dir(&root)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(make.status.success(), "make UWSGI_SRC: {}", String::from_utf8_lossy(&make.stderr));
    let plugin = root.join("target/uwsgi-src/plugins/uwsgi_selftest_plugin.so");
    assert!(plugin.exists(), "{} was not built", plugin.display());
    let plugin = plugin.to_string_lossy().into_owned();

    // Same tree: it loads, and reads the right struct layout.
    let inst = InstanceBuilder::new("src-ok")
        .binary(&source_binary)
        .args(["--plugin", &plugin, "--selftest-report", "--master", "--http-socket", "127.0.0.1:0"])
        .start();
    let log = inst.wait_for_log("report:", T).unwrap();
    let canonical = std::fs::canonicalize(&source_binary).unwrap();
    assert!(log.contains(&format!("report: binary_path={} master=true", canonical.display())), "{log}");

    // Debian's binary (another profile): refused, naming both builds.
    let mut refused = InstanceBuilder::new("src-refused")
        .binary(&uwsgi_bin())
        .args(["--plugin", &plugin, "--selftest-report", "--http-socket", "127.0.0.1:0"])
        .start();
    assert_eq!(refused.wait_exit(T).and_then(|s| s.code()), Some(78), "{}", refused.log());
    let log = refused.log();
    assert!(log.contains("refusing to run: built for uWSGI 2.0.21 ("), "{log}");
    assert!(log.contains("loaded into uWSGI 2.0.21-debian ("), "{log}");
    assert!(!log.contains("report:"));

    // And the other way round: the Debian-built plugin in the source-built binary.
    let mut reverse = InstanceBuilder::new("src-reverse")
        .binary(&source_binary)
        .args(["--plugin", &plugin_path("uwsgi_selftest").to_string_lossy(), "--http-socket", "127.0.0.1:0"])
        .start();
    assert_eq!(reverse.wait_exit(T).and_then(|s| s.code()), Some(78), "{}", reverse.log());
    assert!(reverse.log().contains("built for uWSGI 2.0.21-debian"), "{}", reverse.log());
}
