//! Compiles the parts of the safe layer that need a uWSGI built with SSL (the http router's
//! https contexts, `tls.rs`) only for such a build: their fields and constants exist in the
//! target's structures only under `-DUWSGI_SSL`. The target's flags come from `uwsgi-sys`
//! (`DEP_UWSGI_CFLAGS`, the build it generated its bindings for).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(uwsgi_ssl)");
    println!("cargo:rerun-if-env-changed=DEP_UWSGI_CFLAGS");
    let cflags = std::env::var("DEP_UWSGI_CFLAGS").unwrap_or_default();
    if cflags.split_whitespace().any(|f| f == "-DUWSGI_SSL") {
        println!("cargo:rustc-cfg=uwsgi_ssl");
    }
}
