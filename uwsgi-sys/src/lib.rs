//! Raw bindings to the uWSGI plugin API of the target build (see `build.rs`).
//!
//! Everything here is `unsafe` to use; plugins go through the `uwsgi` crate instead.

#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

extern "C" {
    /// The server's global state. `uwsgi.h` does not declare it; its type is the generated one,
    /// so its layout is the target build's.
    pub static mut uwsgi: uwsgi_server;

    /// Head of the Emperor's vassal list (`core/emperor.c`); `ui_next` walks the vassals.
    pub static mut ui: *mut uwsgi_instance;
}

/// The flags of the build these bindings were generated from, as `uwsgi --cflags` prints them.
pub const BUILD_CFLAGS: &str = env!("UWSGI_SYS_CFLAGS");
pub const BUILD_TARGET: &str = env!("UWSGI_SYS_TARGET");
