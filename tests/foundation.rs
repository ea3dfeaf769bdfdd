//! The foundation, against the stock uWSGI the plugins were built for: each plugin loads and
//! registers what it declares, the safe layer's guarantees hold in a real server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use uwsgi_it::harness::{plugin_path, project_root, uwsgi_bin};
use uwsgi_it::ports::free_port;
use uwsgi_it::{http, InstanceBuilder};

const T: Duration = Duration::from_secs(20);

fn help_of(plugin: &str) -> String {
    let out = Command::new(uwsgi_bin()).arg("--plugin").arg(plugin_path(plugin)).arg("--help").output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn write_app(dir: &Path, text: &str) -> String {
    let app = dir.join("app.py");
    std::fs::write(
        &app,
        format!("def application(env, start_response):\n    start_response('200 OK', [('Content-Type', 'text/plain')])\n    return [b'{text}']\n"),
    )
    .unwrap();
    app.to_string_lossy().into_owned()
}

#[test]
fn every_plugin_declares_its_options_in_help() {
    let help = help_of("unbit_containers");
    for opt in [
        "--unbit-containers-dir",
        "--unbit-distros-dir",
        "--unbit-platform-dir",
        "--unbit-cgroup-name",
        "--unbit-quota",
    ] {
        assert!(help.contains(opt), "{opt} missing from unbit_containers --help:\n{help}");
    }
    let help = help_of("uwsgi_selftest");
    for opt in ["--selftest-greeting", "--selftest-port", "--selftest-report"] {
        assert!(help.contains(opt), "{opt} missing from uwsgi_selftest --help");
    }
}

#[test]
fn typed_options_parse_and_the_plugin_reads_the_servers_own_struct() {
    let inst = InstanceBuilder::new("options")
        .project_plugin("uwsgi_selftest")
        .args(["--master", "--selftest-report", "--selftest-greeting", "hi there", "--selftest-port", "80"])
        .args(["--selftest-port", "8080", "--http-socket", &format!("127.0.0.1:{}", free_port())])
        .start();
    let log = inst.wait_for_log("report:", T).unwrap();
    let real_binary = std::fs::canonicalize(which(&uwsgi_bin())).unwrap();
    let expected = format!(
        "report: binary_path={} master=true generic_plugins=1 greeting=hi there ports=[80, 8080]",
        real_binary.display()
    );
    assert!(log.contains(&expected), "expected {expected:?} in:\n{log}");
}

#[test]
fn unbit_containers_options_parse_in_an_ini() {
    let inst = InstanceBuilder::new("unbit-ini")
        .project_plugin("unbit_containers")
        .ini("[uwsgi]\nunbit-containers-dir = /tmp/c\nunbit-cgroup-name = unbit-test\nhttp-socket = 127.0.0.1:0\n")
        .start();
    inst.wait_for_log("spawned uWSGI worker 1", T).unwrap();
}

#[test]
fn a_bad_option_value_stops_the_instance_naming_the_option() {
    let mut inst = InstanceBuilder::new("bad-option")
        .project_plugin("uwsgi_selftest")
        .args(["--selftest-port", "eighty", "--http-socket", "127.0.0.1:0"])
        .start();
    let status = inst.wait_exit(T).expect("the instance must refuse to start");
    assert_eq!(status.code(), Some(1));
    let log = inst.log();
    assert!(log.contains(r#"option --selftest-port: invalid value "eighty": invalid digit"#), "{log}");
}

#[test]
fn a_hook_runs_from_hook_asap_and_a_failing_one_is_reported() {
    let inst = InstanceBuilder::new("hook")
        .project_plugin("uwsgi_selftest")
        .args(["--hook-asap", "selftest-hook:early", "--http-socket", "127.0.0.1:0"])
        .start();
    inst.wait_for_log("hook ran with arg=early", T).unwrap();

    let mut failing = InstanceBuilder::new("hook-fail")
        .project_plugin("uwsgi_selftest")
        .args(["--hook-asap", "selftest-fail:on purpose", "--http-socket", "127.0.0.1:0"])
        .start();
    let status = failing.wait_exit(T).expect("a failing asap hook is fatal");
    assert!(!status.success());
    assert!(failing.log().contains("hook selftest-fail failed: asked to fail (on purpose)"), "{}", failing.log());
}

#[test]
fn an_alarm_fires_from_hook_master_start() {
    let inst = InstanceBuilder::new("alarm")
        .project_plugin("uwsgi_selftest")
        .args(["--master", "--alarm", "pager selftest:team-a", "--hook-master-start", "alarm:pager the master is up"])
        .args(["--http-socket", "127.0.0.1:0"])
        .start();
    inst.wait_for_log("alarm pager (arg=team-a) raised: the master is up", T).unwrap();
}

#[test]
fn an_imperial_monitor_feeds_a_vassal_that_answers_on_loopback() {
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let app = write_app(work.path(), "hello from the fed vassal");
    let vassal = work.path().join("vassal.ini");
    std::fs::write(&vassal, format!("[uwsgi]\nplugin = python3\nhttp-socket = 127.0.0.1:{port}\nwsgi-file = {app}\n"))
        .unwrap();

    let inst = InstanceBuilder::new("monitor")
        .project_plugin("uwsgi_selftest")
        .args(["--emperor", &format!("selftest://{}", vassal.display()), "--emperor-freq", "1"])
        .start();
    let addr = format!("127.0.0.1:{port}");
    let resp = http::wait_for_status(&addr, "localhost", "/", 200, T).unwrap();
    assert_eq!(resp.body, "hello from the fed vassal");
    // Both vassal callbacks ran in the child and the vassal did not crash (uWSGI 2.0 segfaults
    // vassals of a generic plugin that sets only `vassal`).
    let log = inst.log();
    assert!(log.contains("vassal callback for selftest.ini"), "{log}");
    assert!(log.contains("vassal_before_exec callback for selftest.ini"), "{log}");

    std::fs::remove_file(&vassal).unwrap();
    inst.wait_for_log("is gone: stopped selftest.ini", T).unwrap();
    inst.wait_for_log("removed uwsgi instance selftest.ini", T).unwrap();
    assert!(http::get(&addr, "localhost", "/").is_err(), "the stopped vassal still answers");
}

#[test]
fn panics_in_callbacks_are_logged_and_the_server_keeps_serving() {
    let port = free_port();
    let work = tempfile::tempdir().unwrap();
    let app = write_app(work.path(), "still here");
    let inst = InstanceBuilder::new("panics")
        .project_plugin("uwsgi_selftest")
        .args(["--plugin", "python3", "--master", "--selftest-panic-in-cycle"])
        .args(["--alarm", "boom selftest:x", "--hook-master-start", "alarm:boom please panic now"])
        .args(["--http-socket", &format!("127.0.0.1:{port}"), "--wsgi-file", &app])
        .start();
    inst.wait_for_log("panic in master_cycle: master cycle asked to panic at plugins/uwsgi_selftest/src/lib.rs", T)
        .unwrap();
    inst.wait_for_log("panic in alarm raise: alarm asked to panic", T).unwrap();
    for _ in 0..5 {
        let resp = http::wait_for_status(&format!("127.0.0.1:{port}"), "localhost", "/", 200, T).unwrap();
        assert_eq!(resp.body, "still here");
    }
}

#[test]
fn a_panicking_hook_fails_cleanly_instead_of_aborting() {
    let mut inst = InstanceBuilder::new("hook-panic")
        .project_plugin("uwsgi_selftest")
        .args(["--hook-asap", "selftest-panic:now", "--http-socket", "127.0.0.1:0"])
        .start();
    let status = inst.wait_exit(T).expect("a failed asap hook ends the instance");
    // An unwinding panic into C would abort (SIGABRT); a guarded one is an ordinary failure.
    assert_eq!(status.code(), Some(1), "{}", inst.log());
    assert!(inst.log().contains("panic in hook selftest-panic: hook asked to panic (now)"), "{}", inst.log());
}

#[test]
fn a_plugin_built_for_another_build_profile_refuses_to_run() {
    // A uWSGI "binary" whose flags lack -DUWSGI_SSL: the layout of struct uwsgi_server it
    // implies is 184 bytes shorter than the real server's.
    let work = tempfile::tempdir().unwrap();
    let fake = work.path().join("uwsgi-without-ssl");
    let real = uwsgi_bin();
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nif [ \"$1\" = --cflags ]; then {real} --cflags | sed 's/ -DUWSGI_SSL//'; else exec {real} \"$@\"; fi\n"),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let target = project_root().join("target/other-profile");
    let build = Command::new(env!("CARGO"))
        .args(["build", "-p", "uwsgi_selftest"])
        .env("UWSGI_BIN", &fake)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(project_root())
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let plugin = work.path().join("uwsgi_selftest_plugin.so");
    std::fs::copy(target.join("debug/libuwsgi_selftest.so"), &plugin).unwrap();

    let mut inst = InstanceBuilder::new("wrong-profile")
        .args(["--plugin", &plugin.to_string_lossy(), "--selftest-report", "--master"])
        .args(["--http-socket", "127.0.0.1:0"])
        .start();
    let status = inst.wait_exit(T).expect("the plugin must stop the server");
    assert_eq!(status.code(), Some(78));
    let log = inst.log();
    let line = log.lines().find(|l| l.contains("refusing to run")).unwrap_or_else(|| panic!("no refusal in:\n{log}"));
    assert!(line.contains("built for uWSGI 2.0.21"), "{line}");
    assert!(line.contains("server adds -DUWSGI_SSL"), "{line}");
    assert!(!log.contains("report:"), "the plugin ran on a foreign layout:\n{log}");
}

fn which(bin: &str) -> std::path::PathBuf {
    if bin.contains('/') {
        return bin.into();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(bin))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{bin} not on PATH"))
}
