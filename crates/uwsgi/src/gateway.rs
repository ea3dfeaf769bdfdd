//! Gateways: long-running service processes the master forks, supervises and respawns, like
//! uWSGI's own routers (`register_gateway`, `core/gateway.c`).
//!
//! A gateway is the right home for a plugin's own server loop (the subscription validator,
//! for one): it runs in its own process, so it can block, use threads and crash without ever
//! touching the master loop, and uWSGI restarts it when it dies.
//!
//! ```ignore
//! fn init() {
//!     uwsgi::gateway::register("my-service", || {
//!         loop { /* serve */ }
//!     });
//! }
//! ```
//!
//! Register from [`Plugin::init`](crate::Plugin::init) or
//! [`Plugin::post_init`](crate::Plugin::post_init): the master forks every registered gateway
//! when it enters its loop. An instance without a master forks it at once.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

/// What a gateway runs. It should not return; when it does (or panics), the process exits and
/// the master starts a new one.
pub type GatewayMain = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

struct Gateway {
    name: String,
    main: GatewayMain,
}

/// Pause before a failed gateway exits, so a gateway that cannot start (a bad path, a socket
/// in use) is not respawned in a tight loop by the master.
const RESPAWN_PAUSE: Duration = Duration::from_secs(1);

/// Registers a gateway process named `name` (`ps` shows `uWSGI <name> 1`). `main` runs in the
/// forked process, after the `as-gateway` hooks, with the instance's privileges; it is
/// guarded: a panic or an `Err` is logged with the gateway's name and ends the process, which
/// the master then respawns. Returns an error when uWSGI refuses (too many gateways).
pub fn register(name: &str, main: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Result<(), String> {
    let c_name = CString::new(name).map_err(|_| format!("gateway name {name:?} contains a NUL"))?;
    // uWSGI keeps both pointers for the life of the process (and of every forked gateway).
    let c_name: &'static mut std::ffi::CStr = Box::leak(c_name.into_boxed_c_str());
    let gateway: &'static Gateway = Box::leak(Box::new(Gateway { name: name.to_string(), main: Box::new(main) }));
    // SAFETY: the name is a leaked NUL-terminated string, `data` a leaked `Gateway` that is
    // never freed or mutated, and `gateway_main` matches `void (*)(int, void *)`. uWSGI calls
    // this from its single configuration thread.
    let registered = unsafe {
        uwsgi_sys::register_gateway(
            c_name.as_ptr() as *mut c_char,
            Some(gateway_main),
            gateway as *const Gateway as *mut c_void,
        )
    };
    // Only NULL-ness is looked at: `struct uwsgi_gateway` is never read here.
    if registered.is_null() {
        return Err(format!("uWSGI refused to register gateway {name} (too many gateways?)"));
    }
    Ok(())
}

unsafe extern "C" fn gateway_main(_id: c_int, data: *mut c_void) {
    // SAFETY: `data` is the leaked `Gateway` handed to `register_gateway` above, valid and
    // immutable for the life of the process.
    let gateway = unsafe { &*(data as *const Gateway) };
    let outcome = crate::guard(&format!("gateway {}", gateway.name), Err("panicked".to_string()), || (gateway.main)());
    match outcome {
        Ok(()) => crate::log::line(&format!("gateway {} returned; the master will start a new one", gateway.name)),
        Err(e) => crate::log::line(&format!("gateway {} failed: {e}; the master will start a new one", gateway.name)),
    }
    std::thread::sleep(RESPAWN_PAUSE);
    // SAFETY: ending the gateway process without unwinding into uWSGI's C frame; the master
    // reaps it and respawns the gateway.
    unsafe { libc::_exit(1) };
}
