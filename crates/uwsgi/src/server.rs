//! Read-only views of the running server's state (`struct uwsgi_server`). These go through
//! the generated layout, which the build-profile check has proven to be the server's.

use std::ffi::CStr;

/// The path of the running uWSGI binary (`uwsgi.binary_path`).
pub fn binary_path() -> Option<String> {
    // SAFETY: read-only access to a field set at startup; the layout is the target build's
    // (enforced at load), and the string is NUL-terminated.
    unsafe {
        let p = uwsgi_sys::uwsgi.binary_path;
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

/// Whether this instance runs a master process.
pub fn has_master() -> bool {
    // SAFETY: as for `binary_path`.
    unsafe { uwsgi_sys::uwsgi.master_process != 0 }
}

/// How many generic plugins are loaded.
pub fn generic_plugins() -> usize {
    // SAFETY: as for `binary_path`.
    unsafe { uwsgi_sys::uwsgi.gp_cnt as usize }
}
