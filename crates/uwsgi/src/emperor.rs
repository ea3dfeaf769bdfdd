//! The Emperor side: imperial monitors (`emperor = scheme://...`) that feed vassals, and the
//! per-vassal callbacks that run in the Emperor's child before `exec`.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::{Mutex, OnceLock};

/// A source of vassals. uWSGI calls [`scan`](ImperialMonitor::scan) on every Emperor loop
/// iteration (after any event, and at least every `emperor-freq` seconds), so it must be cheap
/// and idempotent: feed what should run, stop what should not. A monitor lives in the
/// (single-threaded) Emperor and never crosses threads, so it need not be `Send`.
pub trait ImperialMonitor {
    fn scan(&mut self, emperor: &mut Emperor<'_>);

    /// Called when a descriptor registered with [`Emperor::watch_fd`] is readable. The monitor
    /// must drain it, or the Emperor spins. Defaults to a scan.
    fn on_event(&mut self, emperor: &mut Emperor<'_>) {
        self.scan(emperor)
    }
}

type Factory = Box<dyn Fn(&str) -> Result<Box<dyn ImperialMonitor>, String> + Send + Sync>;

fn factories() -> &'static Mutex<HashMap<String, Factory>> {
    static F: OnceLock<Mutex<HashMap<String, Factory>>> = OnceLock::new();
    F.get_or_init(Default::default)
}

pub(crate) fn register(scheme: &str, factory: Factory) {
    factories().lock().unwrap_or_else(|e| e.into_inner()).insert(scheme.to_string(), factory);
    let c_scheme: &'static CStr = Box::leak(CString::new(scheme).expect("schemes have no NUL").into_boxed_c_str());
    // SAFETY: the scheme is leaked; the callbacks match `void (*)(struct uwsgi_emperor_scanner *)`.
    unsafe {
        uwsgi_sys::uwsgi_register_imperial_monitor(
            c_scheme.as_ptr() as *mut c_char,
            Some(monitor_init),
            Some(monitor_scan),
        )
    };
}

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: every string we read from uWSGI structures is NUL-terminated and outlives us.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

unsafe extern "C" fn monitor_init(ues: *mut uwsgi_sys::uwsgi_emperor_scanner) {
    // SAFETY: uWSGI hands us a live scanner whose `monitor` is the one we registered.
    let (arg, scheme) = unsafe { (c_text((*ues).arg), c_text((*(*ues).monitor).scheme)) };
    let built = crate::guard(&format!("imperial monitor {arg} init"), Err("the monitor panicked".into()), || {
        let table = factories().lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&scheme) {
            Some(factory) => factory(&arg),
            None => Err(format!("no imperial monitor for scheme {scheme}")),
        }
    });
    match built {
        Ok(monitor) => {
            let boxed: Box<Box<dyn ImperialMonitor>> = Box::new(monitor);
            // SAFETY: `data` is free for the monitor's use; the box lives as long as the Emperor.
            unsafe { (*ues).data = Box::into_raw(boxed).cast() };
        }
        Err(e) => {
            crate::log::line(&format!("emperor = {arg}: {e}"));
            // SAFETY: an Emperor without its vassal source must not run half-configured.
            unsafe { libc::exit(1) };
        }
    }
}

/// # Safety
/// `ues` must be a scanner initialised by `monitor_init`.
unsafe fn with_monitor(
    ues: *mut uwsgi_sys::uwsgi_emperor_scanner,
    what: &str,
    f: impl FnOnce(&mut dyn ImperialMonitor, &mut Emperor<'_>),
) {
    // SAFETY: guaranteed by the caller; `data` holds our boxed monitor (or NULL if init failed).
    let data = unsafe { (*ues).data } as *mut Box<dyn ImperialMonitor>;
    if data.is_null() {
        return;
    }
    // SAFETY: the Emperor is single-threaded; nobody else holds this monitor now.
    let monitor = unsafe { &mut **data };
    let mut emperor = Emperor { ues, _scanner: PhantomData };
    crate::guard(what, (), || f(monitor, &mut emperor));
}

unsafe extern "C" fn monitor_scan(ues: *mut uwsgi_sys::uwsgi_emperor_scanner) {
    // SAFETY: called by uWSGI with a scanner it initialised through `monitor_init`.
    unsafe { with_monitor(ues, "imperial monitor scan", |m, e| m.scan(e)) }
}

unsafe extern "C" fn monitor_event(ues: *mut uwsgi_sys::uwsgi_emperor_scanner) {
    // SAFETY: as for `monitor_scan`; uWSGI calls this when `ues->fd` is readable.
    unsafe { with_monitor(ues, "imperial monitor event", |m, e| m.on_event(e)) }
}

/// The Emperor as an imperial monitor sees it during a scan.
pub struct Emperor<'a> {
    ues: *mut uwsgi_sys::uwsgi_emperor_scanner,
    _scanner: PhantomData<&'a mut ()>,
}

/// Config file extensions uWSGI accepts for vassal names.
const EXTENSIONS: &[&str] = &[".ini", ".xml", ".yml", ".yaml", ".js", ".json"];

impl Emperor<'_> {
    /// Starts the vassal `name` with `config`, or reloads it when `mtime` is newer than the
    /// one it runs with. uWSGI silently ignores names without a config extension or longer
    /// than 254 bytes; here they are an error.
    pub fn feed(&mut self, name: &str, config: &str, mtime: i64, uid: u32, gid: u32) -> Result<(), String> {
        if name.len() >= 255 || !EXTENSIONS.iter().any(|e| name.ends_with(e)) || name.contains('/') {
            return Err(format!(
                "vassal name {name:?} must be a file name ending in .ini/.xml/.yml/.json, under 255 bytes"
            ));
        }
        let c_name = CString::new(name).map_err(|_| "NUL in vassal name".to_string())?;
        let c_config = CString::new(config).map_err(|_| format!("NUL in the config of {name}"))?;
        // SAFETY: uWSGI copies both strings (emperor_add / uwsgi_str) before returning.
        unsafe {
            uwsgi_sys::uwsgi_emperor_simple_do(
                self.ues,
                c_name.as_ptr() as *mut c_char,
                c_config.as_ptr() as *mut c_char,
                mtime as libc::time_t,
                uid,
                gid,
                std::ptr::null_mut(),
            )
        };
        Ok(())
    }

    /// The names of the vassals this monitor fed that the Emperor still knows.
    pub fn vassal_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_own(|vi| out.push(name_of(vi)));
        out
    }

    /// Asks the Emperor to stop vassal `name`; returns whether it was running.
    pub fn stop(&mut self, name: &str) -> bool {
        let mut target = std::ptr::null_mut();
        self.for_each_own(|vi| {
            if name_of(vi) == name {
                target = vi;
            }
        });
        if target.is_null() {
            return false;
        }
        // SAFETY: `target` is a live instance of the Emperor's list, and we are in the Emperor.
        unsafe { uwsgi_sys::emperor_stop(target) };
        true
    }

    /// Push mode: wake this monitor (`on_event`) as soon as `fd` is readable instead of waiting
    /// for the next `emperor-freq` tick.
    pub fn watch_fd(&mut self, fd: RawFd) {
        // SAFETY: we run inside the Emperor after its event queue exists; `fd` is owned by the
        // monitor and stays open as long as the monitor lives.
        unsafe {
            (*self.ues).fd = fd;
            (*self.ues).event_func = Some(monitor_event);
            uwsgi_sys::event_queue_add_fd_read(uwsgi_sys::uwsgi.emperor_queue, fd);
        }
    }

    fn for_each_own(&self, mut f: impl FnMut(*mut uwsgi_sys::uwsgi_instance)) {
        // SAFETY: `ui` is the Emperor's list head (a sentinel); we only walk it from the
        // Emperor's single thread, during a callback, without keeping pointers.
        unsafe {
            let head = uwsgi_sys::ui;
            if head.is_null() {
                return;
            }
            let mut c = (*head).ui_next;
            while !c.is_null() {
                if (*c).scanner == self.ues {
                    f(c);
                }
                c = (*c).ui_next;
            }
        }
    }
}

fn name_of(vi: *mut uwsgi_sys::uwsgi_instance) -> String {
    // SAFETY: callers pass a live instance of the Emperor's list; `name` is NUL-terminated.
    c_text(unsafe { (*vi).name.as_ptr() })
}

/// The vassal being spawned, as seen from the Emperor's child in the `vassal` and
/// `vassal_before_exec` callbacks.
pub struct Vassal {
    pub(crate) raw: *mut uwsgi_sys::uwsgi_instance,
}

impl Vassal {
    pub fn name(&self) -> String {
        name_of(self.raw)
    }

    /// The scheme of the imperial monitor that fed this vassal (`unbit` for `unbit://...`),
    /// so a plugin acts only on its own vassals.
    pub fn monitor_scheme(&self) -> Option<String> {
        // SAFETY: `scanner` is NULL or the live scanner that fed the instance; its `monitor`
        // is the registered monitor whose scheme is a static string.
        unsafe {
            let ues = (*self.raw).scanner;
            if ues.is_null() || (*ues).monitor.is_null() {
                return None;
            }
            Some(c_text((*(*ues).monitor).scheme))
        }
    }
}
