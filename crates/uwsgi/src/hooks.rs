//! Hooks (`hook-<phase> = name:arg`). uWSGI calls a hook with its argument only, no user data,
//! so each registered hook gets its own C entry point: one of a fixed set of slots, each a
//! monomorphised trampoline that finds its closure by index.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

type HookFn = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How many hooks one plugin may register.
pub(crate) const SLOTS: usize = 16;

struct Hook {
    name: String,
    run: HookFn,
}

static HOOKS: [OnceLock<Hook>; SLOTS] = [const { OnceLock::new() }; SLOTS];

unsafe extern "C" fn slot<const I: usize>(arg: *mut c_char) -> c_int {
    let Some(hook) = HOOKS[I].get() else {
        return -1;
    };
    let arg = if arg.is_null() {
        String::new()
    } else {
        // SAFETY: uWSGI passes the NUL-terminated text after `name:`.
        unsafe { CStr::from_ptr(arg) }.to_string_lossy().into_owned()
    };
    crate::guard(&format!("hook {}", hook.name), -1, || match (hook.run)(&arg) {
        Ok(()) => 0,
        Err(e) => {
            crate::log::line(&format!("hook {} failed: {e}", hook.name));
            -1
        }
    })
}

type Trampoline = unsafe extern "C" fn(*mut c_char) -> c_int;

const TRAMPOLINES: [Trampoline; SLOTS] = [
    slot::<0>, slot::<1>, slot::<2>, slot::<3>, slot::<4>, slot::<5>, slot::<6>, slot::<7>, slot::<8>, slot::<9>,
    slot::<10>, slot::<11>, slot::<12>, slot::<13>, slot::<14>, slot::<15>,
];

pub(crate) fn register(name: &str, run: HookFn) {
    let index = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
    assert!(index < SLOTS, "more than {SLOTS} hooks registered; raise hooks::SLOTS");
    let _ = HOOKS[index].set(Hook { name: name.to_string(), run });
    let c_name: &'static CStr = Box::leak(CString::new(name).expect("hook names have no NUL").into_boxed_c_str());
    // SAFETY: the name is leaked (uWSGI keeps the pointer) and the trampoline is a valid
    // `int (*)(char *)` for the whole life of the process.
    unsafe { uwsgi_sys::uwsgi_register_hook(c_name.as_ptr() as *mut c_char, Some(TRAMPOLINES[index])) };
}

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
