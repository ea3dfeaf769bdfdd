//! The build-profile check uWSGI itself does not do.
//!
//! uWSGI loads any `*_plugin.so` without checking its ABI. A plugin generated from another
//! build's header (other `-D` flags, another 2.0.x release) reads `struct uwsgi_server` at the
//! wrong offsets. Before a plugin does anything, it compares the running server's build flags
//! (`uwsgi_get_cflags()`) with those it was built against, and refuses to run on a mismatch.
//!
//! The flags carry every define that changes the layout and the exact version string,
//! vendor suffix included (`-DUWSGI_VERSION="\"2.0.21-debian\""`). The header itself
//! (`uwsgi_get_dot_h()`) is not compared at run time: uWSGI decodes its 57 KB hex copy with one
//! `sscanf` per byte, which costs about 20 ms, and every container master loads the plugin.

use std::collections::BTreeSet;
use std::ffi::CStr;

/// A uWSGI build as seen through its `--cflags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildProfile {
    pub cflags: String,
}

impl BuildProfile {
    /// The build the plugin was compiled against.
    pub fn compiled() -> Self {
        BuildProfile { cflags: uwsgi_sys::BUILD_CFLAGS.trim().to_string() }
    }

    /// The build of the server this plugin is loaded in.
    pub fn running() -> Self {
        // SAFETY: exported by every uWSGI 2.x core; it returns a string allocated with malloc
        // (or NULL), which we copy and free.
        let cflags = unsafe { take_c_string(uwsgi_sys::uwsgi_get_cflags()) };
        BuildProfile { cflags: cflags.trim().to_string() }
    }

    /// `uWSGI 2.0.21-debian` from `-DUWSGI_VERSION="\"2.0.21-debian\""`.
    pub fn version(&self) -> String {
        self.cflags
            .split_whitespace()
            .find_map(|w| w.strip_prefix("-DUWSGI_VERSION="))
            .map(|v| v.trim_matches(|c| c == '"' || c == '\\').to_string())
            .unwrap_or_else(|| "unknown version".into())
    }

    fn defines(&self) -> BTreeSet<&str> {
        self.cflags.split_whitespace().filter(|w| w.starts_with("-D")).collect()
    }

    /// Short description: version and how many defines.
    pub fn describe(&self) -> String {
        format!("uWSGI {} ({} defines)", self.version(), self.defines().len())
    }

    /// `None` when `running` can host a plugin compiled for `self`; otherwise the one-line
    /// reason, naming both builds and what differs.
    pub fn mismatch(&self, running: &BuildProfile) -> Option<String> {
        if self == running {
            return None;
        }
        let mine = self.defines();
        let theirs = running.defines();
        let missing: Vec<_> = mine.difference(&theirs).copied().collect();
        let extra: Vec<_> = theirs.difference(&mine).copied().collect();
        let mut diff = Vec::new();
        if !missing.is_empty() {
            diff.push(format!("server lacks {}", missing.join(" ")));
        }
        if !extra.is_empty() {
            diff.push(format!("server adds {}", extra.join(" ")));
        }
        if diff.is_empty() {
            diff.push("other compiler flags".into());
        }
        Some(format!(
            "refusing to run: built for {} but loaded into {}; {}. Rebuild the plugin against this server (make UWSGI_BIN=... or UWSGI_SRC=...)",
            self.describe(),
            running.describe(),
            diff.join("; ")
        ))
    }
}

/// Copies and frees a malloc'd C string returned by uWSGI.
///
/// # Safety
/// `ptr` must be NULL or a NUL-terminated string allocated with `malloc`.
unsafe fn take_c_string(ptr: *mut std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    let s = unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned();
    // SAFETY: the caller guarantees malloc ownership; nobody else frees it.
    unsafe { libc::free(ptr.cast()) };
    s
}

/// Called first thing in `on_load`: on a mismatch, logs one line and ends the process before
/// any mis-laid-out structure is touched.
pub(crate) fn enforce() {
    if let Some(reason) = BuildProfile::compiled().mismatch(&BuildProfile::running()) {
        crate::log::line(&reason);
        // SAFETY: exiting is the only safe reaction; nothing of the plugin ran yet.
        unsafe { libc::_exit(78) } // EX_CONFIG
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(cflags: &str) -> BuildProfile {
        BuildProfile { cflags: cflags.into() }
    }

    #[test]
    fn identical_builds_match() {
        let p = profile("-O2 -DUWSGI_SSL -DUWSGI_VERSION=\"\\\"2.0.21-debian\\\"\"");
        assert_eq!(p.mismatch(&p.clone()), None);
    }

    #[test]
    fn a_missing_define_is_named_with_both_versions() {
        let built = profile("-DUWSGI_SSL -DUWSGI_PCRE -DUWSGI_VERSION=\"\\\"2.0.21-debian\\\"\"");
        let server = profile("-DUWSGI_PCRE -DUWSGI_VERSION=\"\\\"2.0.21\\\"\"");
        let why = built.mismatch(&server).unwrap();
        assert!(why.contains("built for uWSGI 2.0.21-debian"), "{why}");
        assert!(why.contains("loaded into uWSGI 2.0.21 "), "{why}");
        assert!(why.contains("server lacks -DUWSGI_SSL"), "{why}");
        assert!(!why.contains('\n'));
    }

    #[test]
    fn same_defines_with_another_version_string_are_refused() {
        let built = profile("-DUWSGI_SSL -DUWSGI_VERSION=\"\\\"2.0.21-debian\\\"\"");
        let server = profile("-DUWSGI_SSL -DUWSGI_VERSION=\"\\\"2.0.22-debian\\\"\"");
        let why = built.mismatch(&server).unwrap();
        assert!(
            why.contains("built for uWSGI 2.0.21-debian") && why.contains("loaded into uWSGI 2.0.22-debian"),
            "{why}"
        );
    }
}
