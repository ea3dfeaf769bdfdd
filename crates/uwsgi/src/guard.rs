//! The FFI boundary: a panic must never unwind into uWSGI's C frames (that is undefined
//! behaviour and, in practice, a dead server). Every callback runs inside [`guard`].

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Replaces the default panic message (raw stderr) with one kept for [`guard`] to log, so the
/// operator sees a single line naming the callback, the message and the source location.
pub(crate) fn install_panic_hook() {
    HOOK.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let msg = match info.payload().downcast_ref::<&str>() {
                Some(s) => (*s).to_string(),
                None => match info.payload().downcast_ref::<String>() {
                    Some(s) => s.clone(),
                    None => "non-string panic payload".to_string(),
                },
            };
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
        }));
    });
}

/// Runs `f`; if it panics, logs `panic in <what>: <message> at <file:line>` and returns
/// `fallback` instead.
pub fn guard<R>(what: &str, fallback: R, f: impl FnOnce() -> R) -> R {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let detail = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "unknown panic".into());
            crate::log::line(&format!("panic in {what}: {detail} (callback abandoned, the server goes on)"));
            fallback
        }
    }
}
