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
//!
//! The HTTP router's structures (`plugins/corerouter/cr.h`, `plugins/http/common.h`) are read
//! the same way: from the source tree for `UWSGI_SRC`, and for the installed binary from the
//! plugin sources Debian ships for it (`uwsgi-src`, in `/usr/src/uwsgi`), which must be of the
//! binary's version. They are parsed together with the build's `uwsgi.h` and flags, so a
//! field compiled in or out by a define (`UWSGI_SSL`, `UWSGI_ZLIB`) is where the router has it.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Target {
    header: PathBuf,
    cflags: String,
    description: String,
    /// A directory laid out as a uWSGI source tree: `uwsgi.h` and `plugins/{corerouter,http}/`.
    tree: PathBuf,
}

/// Where Debian's `uwsgi-src` package puts the plugin sources of the installed uWSGI.
const DEBIAN_PLUGIN_SOURCES: &str = "/usr/src/uwsgi";

/// The router headers, relative to a source tree. `common.h` includes `../../uwsgi.h` and
/// `../corerouter/cr.h`, so they must keep their places.
const ROUTER_HEADERS: [&str; 2] = ["plugins/corerouter/cr.h", "plugins/http/common.h"];

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

    // One translation unit: uwsgi.h (through common.h) and the router's structures.
    let wrapper = out.join("uwsgi-sys.h");
    let common = target.tree.join("plugins/http/common.h");
    std::fs::write(&wrapper, format!("#include \"{}\"\n", common.display())).expect("write uwsgi-sys.h");

    let clang_args = clang_args(&target.cflags);
    let bindings = bindgen::Builder::default()
        .header(wrapper.to_string_lossy())
        .clang_args(&clang_args)
        .allowlist_type("uwsgi_(plugin|option|server|instance|emperor_scanner|alarm|alarm_instance|imperial_monitor|string_list|subscribe_req|gateway_socket|hook)")
        .allowlist_function("uwsgi_(log|register_hook|register_alarm|register_imperial_monitor|emperor_simple_do|get_cflags|opt_exists|get_exported_opt)")
        .allowlist_function("emperor_stop|event_queue_add_fd_read|register_gateway|add_exported_option")
        // The HTTP router (crates/uwsgi/src/corerouter.rs). Its own functions live in
        // http_plugin.so and corerouter_plugin.so and are looked up at run time, so only their
        // prototypes are used; the buffer and subscription functions are the core's.
        .allowlist_type("uwsgi_http|http_session|corerouter_(peer|session)|uwsgi_corerouter|uwsgi_buffer|uwsgi_subscribe_(node|slot)")
        .allowlist_function("uwsgi_cr_set_hooks|uwsgi_buffer_(new|destroy|append|append_keyval|insert)|uwsgi_remove_subscribe_node")
        .allowlist_var("ui")
        // `ugs->mode` of the http router's sockets (crates/uwsgi/src/tls.rs).
        .allowlist_var("UWSGI_HTTP_(NOSSL|SSL|FORCE_SSL)")
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
    // A tree of the binary's own uwsgi.h and the router headers of its version.
    let tree = out.join("tree");
    let header = tree.join("uwsgi.h");
    std::fs::create_dir_all(&tree).expect("create the header tree");
    std::fs::write(&header, run("--dot-h")).expect("write uwsgi.h");
    let cflags = String::from_utf8(run("--cflags")).expect("cflags are ASCII").trim().to_string();
    let version = String::from_utf8_lossy(&run("--version")).trim().to_string();
    copy_router_headers(Path::new(DEBIAN_PLUGIN_SOURCES), &tree, &version, &bin);
    Target { header, cflags, description: format!("uWSGI {version} ({bin})"), tree }
}

/// Copies the router headers of `sources` (Debian's `uwsgi-src`) into `tree`, after checking
/// they are of the binary's version: a header of another release would give another layout.
fn copy_router_headers(sources: &Path, tree: &Path, binary_version: &str, bin: &str) {
    let config = sources.join("uwsgiconfig.py");
    println!("cargo:rerun-if-changed={}", config.display());
    let missing = || -> ! {
        fail(&format!(
            "{} has no uWSGI plugin sources: install Debian's uwsgi-src (scripts/install-deps.sh), \
             the router headers of the installed uWSGI, or point UWSGI_SRC at a source tree",
            sources.display()
        ))
    };
    let text = std::fs::read_to_string(&config).unwrap_or_else(|_| missing());
    let tree_version = text
        .lines()
        .find_map(|l| l.strip_prefix("uwsgi_version = "))
        .map(|v| v.trim().trim_matches('\'').to_string())
        .unwrap_or_else(|| fail(&format!("{}: no uwsgi_version line", config.display())));
    // `2.0.21-debian` is built from a `2.0.21` tree.
    let base = binary_version.split('-').next().unwrap_or(binary_version);
    if base != tree_version {
        fail(&format!(
            "{} holds the sources of uWSGI {tree_version} but {bin} is {binary_version}: \
             install the uwsgi-src of the same version as uwsgi-core",
            sources.display()
        ));
    }
    for rel in ROUTER_HEADERS {
        let from = sources.join(rel);
        println!("cargo:rerun-if-changed={}", from.display());
        let to = tree.join(rel);
        std::fs::create_dir_all(to.parent().expect("a header has a directory")).expect("create the header tree");
        std::fs::copy(&from, &to).unwrap_or_else(|e| fail(&format!("cannot copy {}: {e}", from.display())));
    }
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
    for rel in ROUTER_HEADERS {
        let path = src.join(rel);
        if !path.exists() {
            fail(&format!("UWSGI_SRC={} has no {rel}", src.display()));
        }
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Target { header, cflags, description: format!("uWSGI source tree {}", src.display()), tree: src.to_path_buf() }
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
