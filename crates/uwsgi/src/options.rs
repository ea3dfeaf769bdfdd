//! Typed options: a plugin declares a `static` [`Setting`] and registers it under an option
//! name; uWSGI's parser fills it, and a value that does not parse stops the instance with a
//! message naming the option.

use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt::Display;
use std::str::FromStr;
use std::sync::RwLock;

/// A value set from the configuration (`name = value`); the last occurrence wins.
pub struct Setting<T> {
    value: RwLock<Option<T>>,
}

impl<T: Clone> Setting<T> {
    pub const fn new() -> Self {
        Setting { value: RwLock::new(None) }
    }

    /// The configured value, if the option was given.
    pub fn get(&self) -> Option<T> {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get_or(&self, default: T) -> T {
        self.get().unwrap_or(default)
    }

    pub fn set(&self, v: T) {
        *self.value.write().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
}

impl<T: Clone> Default for Setting<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A repeatable option: every occurrence adds a value.
pub struct ListSetting<T> {
    values: RwLock<Vec<T>>,
}

impl<T: Clone> ListSetting<T> {
    pub const fn new() -> Self {
        ListSetting { values: RwLock::new(Vec::new()) }
    }

    pub fn get(&self) -> Vec<T> {
        self.values.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn push(&self, v: T) {
        self.values.write().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

impl<T: Clone> Default for ListSetting<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// How an option takes its value (getopt's `has_arg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arity {
    Flag = 0,
    Required = 1,
}

type Apply = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// One declared option; leaked on registration because uWSGI keeps pointers to it.
pub(crate) struct OptionDef {
    pub(crate) name: CString,
    pub(crate) help: CString,
    pub(crate) arity: Arity,
    pub(crate) flags: u64,
    pub(crate) apply: Apply,
}

impl OptionDef {
    pub(crate) fn new(name: &str, help: &str, arity: Arity, apply: Apply) -> Self {
        OptionDef {
            name: CString::new(name).expect("option names have no NUL"),
            help: CString::new(help).expect("option help has no NUL"),
            arity,
            flags: 0,
            apply,
        }
    }

    pub(crate) fn typed<T>(name: &str, help: &str, setting: &'static Setting<T>) -> Self
    where
        T: FromStr + Clone + Send + Sync + 'static,
        T::Err: Display,
    {
        Self::new(name, help, Arity::Required, parse_into(move |t| setting.set(t)))
    }

    pub(crate) fn list<T>(name: &str, help: &str, setting: &'static ListSetting<T>) -> Self
    where
        T: FromStr + Clone + Send + Sync + 'static,
        T::Err: Display,
    {
        Self::new(name, help, Arity::Required, parse_into(move |t| setting.push(t)))
    }

    pub(crate) fn action(name: &str, help: &str, apply: Apply) -> Self {
        Self::new(name, help, Arity::Required, apply)
    }

    pub(crate) fn flag(name: &str, help: &str, setting: &'static Setting<bool>) -> Self {
        Self::new(
            name,
            help,
            Arity::Flag,
            Box::new(move |_| {
                setting.set(true);
                Ok(())
            }),
        )
    }
}

/// Parses the value as `T` and hands it to `store`; the error names the value and the reason.
fn parse_into<T>(store: impl Fn(T) + Send + Sync + 'static) -> Apply
where
    T: FromStr,
    T::Err: Display,
{
    Box::new(move |v| v.parse::<T>().map(&store).map_err(|e| format!("invalid value {v:?}: {e}")))
}

/// Builds the NULL-terminated `struct uwsgi_option` array uWSGI merges into its parser.
pub(crate) fn into_c_array(defs: Vec<OptionDef>) -> *mut uwsgi_sys::uwsgi_option {
    let mut array: Vec<uwsgi_sys::uwsgi_option> = Vec::with_capacity(defs.len() + 1);
    for def in defs {
        let def: &'static OptionDef = Box::leak(Box::new(def));
        array.push(uwsgi_sys::uwsgi_option {
            name: def.name.as_ptr() as *mut c_char,
            type_: def.arity as i32,
            shortcut: 0,
            help: def.help.as_ptr() as *mut c_char,
            func: Some(apply_option),
            data: def as *const OptionDef as *mut c_void,
            flags: def.flags,
        });
    }
    // SAFETY: an all-zero uwsgi_option (NULL name) is the array terminator uWSGI expects.
    array.push(unsafe { std::mem::zeroed() });
    Box::leak(array.into_boxed_slice()).as_mut_ptr()
}

/// The single parser callback for every option: `data` is the option's leaked [`OptionDef`].
unsafe extern "C" fn apply_option(_opt: *mut c_char, value: *mut c_char, data: *mut c_void) {
    // SAFETY: `data` was set by `into_c_array` to a leaked, never-freed OptionDef.
    let def = unsafe { &*(data as *const OptionDef) };
    let value = if value.is_null() {
        String::new()
    } else {
        // SAFETY: uWSGI passes a NUL-terminated value that lives as long as the config.
        unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned()
    };
    let name = def.name.to_string_lossy();
    let result = crate::guard(&format!("option --{name}"), Err("the parser panicked".into()), || (def.apply)(&value));
    if let Err(reason) = result {
        crate::log::line(&format!("option --{name}: {reason}"));
        // SAFETY: a configuration error ends the instance, as uWSGI does for its own options.
        unsafe { libc::exit(1) };
    }
}
