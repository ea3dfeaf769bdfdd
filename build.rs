//! Bakes into the test kit which uWSGI the tests target and where `make` puts the plugins, so
//! `cargo test` runs against the same build the plugins were generated for. Both can be
//! overridden at run time (`UWSGI_BIN`, `UWSGI_IT_PLUGINS`).

fn main() {
    println!("cargo:rerun-if-env-changed=UWSGI_BIN");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let uwsgi = std::env::var("UWSGI_BIN").unwrap_or_else(|_| "uwsgi".into());
    println!("cargo:rustc-env=UWSGI_IT_DEFAULT_UWSGI={uwsgi}");
    println!("cargo:rustc-env=UWSGI_IT_DEFAULT_PLUGINS={manifest}/target/plugins");
    println!("cargo:rustc-env=UWSGI_IT_ROOT={manifest}");
}
