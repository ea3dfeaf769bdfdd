//! The instance's configuration as uWSGI keeps it: the `key = value` pairs read from config
//! files and the command line (`uwsgi.exported_opts`), in order. A plugin option can add
//! pairs, which uWSGI then applies like any it read (the way `ini = file` adds a file's).

use std::ffi::{c_char, CStr, CString};

/// Adds `key = value` after everything read so far, as if written at the end of the config.
/// uWSGI applies it right after the option being applied now, with the option's own
/// side effects (`subscribe2` turns the master on, as in a config file), so call this from a
/// plugin option while uWSGI reads its configuration. Refuses an option uWSGI does not know
/// (uWSGI itself would skip it silently).
pub fn add(key: &str, value: &str) -> Result<(), String> {
    let c_key = CString::new(key).map_err(|_| format!("option {key:?} has a NUL byte"))?;
    let c_value = CString::new(value).map_err(|_| format!("value of {key} has a NUL byte"))?;
    // SAFETY: `uwsgi_opt_exists` only reads the NUL-terminated name and the option table.
    if unsafe { uwsgi_sys::uwsgi_opt_exists(c_key.as_ptr() as *mut c_char) } == 0 {
        return Err(format!("uWSGI has no option {key}"));
    }
    // SAFETY: uWSGI keeps both pointers for the life of the process (the configuration is
    // never freed), so the strings are leaked to it. It does not write through them.
    unsafe { uwsgi_sys::add_exported_option(c_key.into_raw(), c_value.into_raw(), 0) };
    Ok(())
}

/// The value of the first `key = value` in the configuration; `None` when the key is absent
/// (or was given with no value at all, which uWSGI stores the same way).
pub fn value(key: &str) -> Option<String> {
    let c_key = CString::new(key).ok()?;
    // SAFETY: `uwsgi_get_exported_opt` only reads the NUL-terminated key and the options
    // array; it returns a pointer into that array (never freed) or NULL.
    let v = unsafe { uwsgi_sys::uwsgi_get_exported_opt(c_key.as_ptr() as *mut c_char) };
    if v.is_null() {
        return None;
    }
    // SAFETY: non-NULL values are NUL-terminated strings owned by the configuration.
    Some(unsafe { CStr::from_ptr(v) }.to_string_lossy().into_owned())
}
