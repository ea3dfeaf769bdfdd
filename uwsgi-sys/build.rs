//! Generates the uWSGI FFI from the *target* uWSGI build.
//!
//! uWSGI checks no ABI: `struct uwsgi_server` changes size with the build's `-D` flags and
//! between 2.0.x releases, and a plugin built for another layout loads silently and reads
//! garbage. So the layout is never written by hand. It comes from the header and flags of the
//! build the plugins will be loaded into:
//!
//! * `UWSGI_SRC=/path/to/uwsgi-source`: `uwsgi.h` of that tree and the flags printed by
//!   `python3 uwsgiconfig.py --cflags [$UWSGI_PROFILE]` (the same string the binary built from
//!   that tree embeds);
//! * otherwise the installed binary (`UWSGI_BIN`, default `uwsgi` on `PATH`): `--dot-h` and
//!   `--cflags`.
//!
//! The exact flags string is compiled into the crate, and the safe layer compares it with the
//! running server's at load time.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Target {
    header: PathBuf,
    cflags: String,
    description: String,
}

fn main() {
    for var in ["UWSGI_SRC", "UWSGI_BIN", "UWSGI_PROFILE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    // Empty counts as unset: `make` exports variables that were never given.
    let target = match env::var_os("UWSGI_SRC").filter(|s| !s.is_empty()) {
        Some(src) => from_source_tree(Path::new(&src)),
        None => from_binary(&out),
    };

    let clang_args = clang_args(&target.cflags);
    let bindings = bindgen::Builder::default()
        .header(target.header.to_string_lossy())
        .clang_args(&clang_args)
        .allowlist_type("uwsgi_(plugin|option|server|instance|emperor_scanner|alarm|alarm_instance|imperial_monitor|string_list|subscribe_req|gateway_socket|hook)")
        .allowlist_function("uwsgi_(log|register_hook|register_alarm|register_imperial_monitor|emperor_simple_do|get_cflags)")
        .allowlist_function("emperor_stop|event_queue_add_fd_read|register_gateway")
        .allowlist_var("ui")
        .allowlist_var("UWSGI_(PLUGIN_API|OPT_.*)")
        .derive_default(false)
        .derive_debug(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .unwrap_or_else(|e| fail(&format!("bindgen could not read {}: {e}", target.header.display())));
    bindings.write_to_file(out.join("bindings.rs")).expect("write bindings.rs");

    println!("cargo:rustc-env=UWSGI_SYS_CFLAGS={}", target.cflags);
    println!("cargo:rustc-env=UWSGI_SYS_TARGET={}", target.description);
    // Dependents (the plugins' build scripts, the Makefile) can read these as DEP_UWSGI_*.
    println!("cargo:cflags={}", target.cflags);
    println!("cargo:target={}", target.description);
}

fn from_binary(out: &Path) -> Target {
    let bin = env::var("UWSGI_BIN").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "uwsgi".into());
    let run = |arg: &str| -> Vec<u8> {
        match Command::new(&bin).arg(arg).output() {
            Ok(o) if o.status.success() => o.stdout,
            Ok(o) => fail(&format!("`{bin} {arg}` failed: {}", String::from_utf8_lossy(&o.stderr))),
            Err(e) => fail(&format!(
                "cannot run `{bin} {arg}` ({e}). Install Debian's uwsgi-core and uwsgi-dev \
                 (scripts/install-deps.sh), or point UWSGI_BIN at a uWSGI binary or UWSGI_SRC at a source tree"
            )),
        }
    };
    let header = out.join("uwsgi.h");
    std::fs::write(&header, run("--dot-h")).expect("write uwsgi.h");
    let cflags = String::from_utf8(run("--cflags")).expect("cflags are ASCII").trim().to_string();
    let version = String::from_utf8_lossy(&run("--version")).trim().to_string();
    Target { header, cflags, description: format!("uWSGI {version} ({bin})") }
}

fn from_source_tree(src: &Path) -> Target {
    let header = src.join("uwsgi.h");
    if !header.exists() || !src.join("uwsgiconfig.py").exists() {
        fail(&format!("UWSGI_SRC={} is not a uWSGI source tree (no uwsgi.h / uwsgiconfig.py)", src.display()));
    }
    let mut cmd = Command::new("python3");
    cmd.arg("uwsgiconfig.py").arg("--cflags").current_dir(src);
    if let Some(profile) = env::var("UWSGI_PROFILE").ok().filter(|p| !p.is_empty()) {
        cmd.arg(profile);
    }
    let out = cmd.output().unwrap_or_else(|e| fail(&format!("cannot run python3 uwsgiconfig.py: {e}")));
    if !out.status.success() {
        fail(&format!("uwsgiconfig.py --cflags failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    // uwsgiconfig.py may print progress lines before the flags; the flags are the last line.
    let stdout = String::from_utf8(out.stdout).expect("cflags are ASCII");
    let cflags = stdout.lines().last().unwrap_or_default().trim().to_string();
    println!("cargo:rerun-if-changed={}", header.display());
    Target { header, cflags, description: format!("uWSGI source tree {}", src.display()) }
}

/// The `-D`, `-I` and `-U` words of the build's flags, shell-unquoted, for clang.
fn clang_args(cflags: &str) -> Vec<String> {
    let words = shlex::split(cflags).unwrap_or_else(|| fail(&format!("unparsable cflags: {cflags}")));
    words.into_iter().filter(|w| w.starts_with("-D") || w.starts_with("-I") || w.starts_with("-U")).collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("uwsgi-sys: {msg}");
    std::process::exit(1);
}
