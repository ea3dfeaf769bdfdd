//! Logging through uWSGI's logger, so lines land wherever the instance logs (`logto`,
//! `~/logs/emperor.log` in a container, the operator's log on the node).

use std::ffi::CString;
use std::sync::OnceLock;

static PREFIX: OnceLock<String> = OnceLock::new();

pub(crate) fn set_plugin_name(name: &str) {
    let _ = PREFIX.set(format!("[{name}] "));
}

/// Writes one line to the uWSGI log, prefixed with the plugin's name.
pub fn line(msg: &str) {
    let prefix = PREFIX.get().map(String::as_str).unwrap_or("[rust plugin] ");
    // A NUL inside a message would cut it short in C; show it instead.
    let text = format!("{prefix}{}\n", msg.replace('\0', "\\0"));
    let c = CString::new(text).expect("NULs were replaced");
    // SAFETY: uwsgi_log is a printf-style function exported by the running server; "%s" with a
    // valid NUL-terminated string is the only format we pass, so no argument is misread.
    unsafe { uwsgi_sys::uwsgi_log(c"%s".as_ptr(), c.as_ptr()) };
}

/// `format!`-style logging through uWSGI: `uwsgi::log!("container {uid}: {err}")`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(&format!($($arg)*)) };
}
