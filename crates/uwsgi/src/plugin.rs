//! The plugin descriptor uWSGI loads, and the guarded entry points behind each callback.

use crate::emperor::Vassal;
use crate::registry::Registry;
use crate::{abi, guard, log, options};
use std::ffi::CStr;

/// A uWSGI generic plugin. Every method has a do-nothing default; implement what you need.
/// All of them run behind the panic guard.
pub trait Plugin: 'static {
    /// The plugin's name, as in `plugins = NAME`; the file is `NAME_plugin.so`.
    const NAME: &'static CStr;

    /// Right after `dlopen`, while uWSGI still parses its options: declare everything here.
    fn on_load(_reg: &mut Registry) {}

    /// After the config is parsed and the Emperor (if any) forked, before sockets are bound.
    fn init() {}

    /// In the master after every plugin's `init`, before workers fork.
    fn post_init() {}

    /// In every worker after fork.
    fn post_fork() {}

    /// At the top of every master loop iteration (about once a second).
    fn master_cycle() {}

    /// In the Emperor's child right after fork/clone, before anything else. An `Err` ends the
    /// child (it is logged; the Emperor respawns it later), so no vassal runs half set up.
    fn vassal(_vassal: &Vassal) -> Result<(), String> {
        Ok(())
    }

    /// In the Emperor's child just before `exec`, after uWSGI closed the other descriptors.
    /// An `Err` ends the child, like [`Plugin::vassal`].
    fn vassal_before_exec(_vassal: &Vassal) -> Result<(), String> {
        Ok(())
    }

    /// At master shutdown.
    fn master_cleanup() {}

    /// At process exit.
    fn atexit() {}
}

/// Implemented by [`plugin!`](crate::plugin): where the exported descriptor lives.
pub trait Exported {
    fn descriptor() -> *mut uwsgi_sys::uwsgi_plugin;
}

/// The descriptor exported as `NAME_plugin`. Every callback we set is a guarded trampoline;
/// `vassal` and `vassal_before_exec` are always set together (uWSGI 2.0.x calls the second
/// whenever the first is set, and crashes on NULL).
pub const fn descriptor<P: Plugin + Exported>() -> uwsgi_sys::uwsgi_plugin {
    uwsgi_sys::uwsgi_plugin {
        name: P::NAME.as_ptr(),
        on_load: Some(on_load::<P>),
        init: Some(init::<P>),
        post_init: Some(post_init::<P>),
        post_fork: Some(post_fork::<P>),
        master_cycle: Some(master_cycle::<P>),
        vassal: Some(vassal::<P>),
        vassal_before_exec: Some(vassal_before_exec::<P>),
        master_cleanup: Some(master_cleanup::<P>),
        atexit: Some(atexit::<P>),
        // SAFETY: every other field of `struct uwsgi_plugin` is a pointer, a callback or a
        // number for which zero means "not provided"; `request` stays NULL, which is what
        // makes this a generic plugin.
        ..unsafe { core::mem::zeroed() }
    }
}

unsafe extern "C" fn on_load<P: Plugin + Exported>() {
    log::set_plugin_name(&P::NAME.to_string_lossy());
    guard::install_panic_hook();
    abi::enforce();
    let mut registry = Registry::new();
    guard("on_load", (), || P::on_load(&mut registry));
    if !registry.options.is_empty() {
        let array = options::into_c_array(std::mem::take(&mut registry.options));
        // SAFETY: uWSGI reads `options` right after `on_load` returns (build_options); we write
        // it once, from uWSGI's single thread, before anyone reads it.
        unsafe { (*P::descriptor()).options = array };
    }
}

unsafe extern "C" fn init<P: Plugin>() -> std::os::raw::c_int {
    guard("init", (), P::init);
    0
}

unsafe extern "C" fn post_init<P: Plugin>() {
    guard("post_init", (), P::post_init)
}

unsafe extern "C" fn post_fork<P: Plugin>() {
    guard("post_fork", (), P::post_fork)
}

unsafe extern "C" fn master_cycle<P: Plugin>() {
    guard("master_cycle", (), P::master_cycle)
}

unsafe extern "C" fn master_cleanup<P: Plugin>() {
    guard("master_cleanup", (), P::master_cleanup)
}

unsafe extern "C" fn atexit<P: Plugin>() {
    guard("atexit", (), P::atexit)
}

fn vassal_step(what: &str, raw: *mut uwsgi_sys::uwsgi_instance, step: fn(&Vassal) -> Result<(), String>) {
    let vassal = Vassal { raw };
    let name = vassal.name();
    let outcome = guard(&format!("{what} for {name}"), Err("panicked".to_string()), || step(&vassal));
    if let Err(e) = outcome {
        log::line(&format!("vassal {name}: {what} failed: {e}; not starting it"));
        // SAFETY: we are in the Emperor's freshly forked child; ending it without running
        // atexit handlers or flushing the parent's stdio buffers is exactly what is wanted.
        unsafe { libc::_exit(1) };
    }
}

unsafe extern "C" fn vassal<P: Plugin>(raw: *mut uwsgi_sys::uwsgi_instance) {
    vassal_step("vassal setup", raw, P::vassal)
}

unsafe extern "C" fn vassal_before_exec<P: Plugin>(raw: *mut uwsgi_sys::uwsgi_instance) {
    vassal_step("vassal pre-exec", raw, P::vassal_before_exec)
}
