//! Alarm backends (`alarm = INSTANCE backend:arg`). Each configured instance gets its own
//! [`Alarm`] object, built once from its argument in the master and kept in the instance's
//! `data_ptr`.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Mutex, OnceLock};

/// One configured alarm instance. `raise` runs in uWSGI's alarm thread (or the log thread):
/// it must not block for long, so network backends hand the message to a worker.
pub trait Alarm: Send + Sync {
    fn raise(&self, msg: &[u8]);
}

type Factory = Box<dyn Fn(&str, &str) -> Result<Box<dyn Alarm>, String> + Send + Sync>;

fn factories() -> &'static Mutex<HashMap<String, Factory>> {
    static F: OnceLock<Mutex<HashMap<String, Factory>>> = OnceLock::new();
    F.get_or_init(Default::default)
}

pub(crate) fn register(name: &str, factory: Factory) {
    factories().lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), factory);
    let c_name: &'static CStr = Box::leak(CString::new(name).expect("alarm names have no NUL").into_boxed_c_str());
    // SAFETY: the name is leaked; both callbacks match uWSGI's prototypes.
    unsafe { uwsgi_sys::uwsgi_register_alarm(c_name.as_ptr() as *mut c_char, Some(init_instance), Some(raise)) };
}

/// `(backend name, instance name, arg)` of an instance, read from uWSGI's structures.
///
/// # Safety
/// `uai` must be a live alarm instance handed to us by uWSGI.
unsafe fn describe(uai: *mut uwsgi_sys::uwsgi_alarm_instance) -> (String, String, String) {
    let text = |p: *mut c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: uWSGI's alarm strings are NUL-terminated and live for the process.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: guaranteed by the caller; `alarm` points at the registered backend.
    unsafe { (text((*(*uai).alarm).name), text((*uai).name), text((*uai).arg)) }
}

unsafe extern "C" fn init_instance(uai: *mut uwsgi_sys::uwsgi_alarm_instance) {
    // SAFETY: called by uWSGI with a live instance.
    let (backend, instance, arg) = unsafe { describe(uai) };
    let what = format!("alarm {instance} ({backend}) init");
    let built = crate::guard(&what, Err("the backend panicked".to_string()), || {
        let table = factories().lock().unwrap_or_else(|e| e.into_inner());
        match table.get(&backend) {
            Some(factory) => factory(&instance, &arg),
            None => Err(format!("no backend named {backend}")),
        }
    });
    match built {
        Ok(alarm) => {
            let boxed: Box<Box<dyn Alarm>> = Box::new(alarm);
            // SAFETY: data_ptr is ours for this instance; the box lives until the process ends.
            unsafe { (*uai).data_ptr = Box::into_raw(boxed).cast() };
        }
        Err(e) => {
            crate::log::line(&format!("alarm {instance} ({backend}:{arg}): {e}"));
            // SAFETY: a broken alarm configuration ends the instance, as uWSGI's own do.
            unsafe { libc::exit(1) };
        }
    }
}

unsafe extern "C" fn raise(uai: *mut uwsgi_sys::uwsgi_alarm_instance, msg: *mut c_char, len: usize) {
    // SAFETY: called by uWSGI with a live instance whose data_ptr we set in init_instance.
    let data = unsafe { (*uai).data_ptr } as *const Box<dyn Alarm>;
    if data.is_null() {
        return;
    }
    // SAFETY: `msg` points at `len` readable bytes for the duration of the call.
    let bytes = unsafe { std::slice::from_raw_parts(msg as *const u8, len) };
    // SAFETY: see above; the Alarm is never freed.
    let alarm = unsafe { &*data };
    crate::guard("alarm raise", (), || alarm.raise(bytes));
}
