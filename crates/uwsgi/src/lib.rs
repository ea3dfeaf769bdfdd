//! A safe layer over `uwsgi-sys` for writing uWSGI plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`plugin!`]:
//!
//! ```ignore
//! struct Hello;
//! impl uwsgi::Plugin for Hello {
//!     const NAME: &'static std::ffi::CStr = c"hello";
//!     fn on_load(reg: &mut uwsgi::Registry) {
//!         reg.hook("hello", |arg| { uwsgi::log!("hello {arg}"); Ok(()) });
//!     }
//! }
//! uwsgi::plugin!(hello_plugin: Hello);
//! ```
//!
//! What the layer guarantees, so plugins don't have to:
//! * the plugin refuses to run inside a uWSGI build other than the one it was compiled for
//!   ([`abi`]);
//! * no panic crosses into C: every callback is guarded, the panic is logged with the callback
//!   it happened in ([`guard`]);
//! * `vassal` and `vassal_before_exec` are always set together (uWSGI 2.0 crashes every vassal
//!   of a generic plugin that sets only the first);
//! * strings handed to uWSGI live forever, as uWSGI keeps the pointers.

pub mod abi;
mod alarms;
pub mod config;
pub mod corerouter;
pub mod emperor;
pub mod gateway;
mod guard;
mod hooks;
pub mod log;
mod options;
pub mod plugin;
pub mod process;
mod registry;
pub mod server;
/// Only for a uWSGI built with SSL (`-DUWSGI_SSL`; see `build.rs`).
#[cfg(uwsgi_ssl)]
pub mod tls;

pub use alarms::Alarm;
pub use emperor::{Emperor, ImperialMonitor, Vassal};
pub use guard::guard;
pub use options::{ListSetting, Setting};
pub use plugin::Plugin;
pub use registry::Registry;

/// Re-exported for the [`plugin!`] macro; plugins never need it directly.
#[doc(hidden)]
pub use uwsgi_sys as sys;

/// Exports a [`Plugin`] under the symbol uWSGI looks up: `NAME_plugin` for `NAME_plugin.so`.
///
/// `plugin!(unbit_containers_plugin: UnbitContainers)`; add `requires = "corerouter"` to make
/// uWSGI load another plugin first (an ELF `uwsgi` section, as uWSGI's own plugins carry).
#[macro_export]
macro_rules! plugin {
    ($symbol:ident : $ty:ty) => {
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static mut $symbol: $crate::sys::uwsgi_plugin = $crate::plugin::descriptor::<$ty>();

        impl $crate::plugin::Exported for $ty {
            fn descriptor() -> *mut $crate::sys::uwsgi_plugin {
                ::core::ptr::addr_of_mut!($symbol)
            }
        }
    };
    ($symbol:ident : $ty:ty, requires = $req:literal) => {
        $crate::plugin!($symbol: $ty);

        #[used]
        #[link_section = "uwsgi"]
        static __UWSGI_SECTION: [u8; concat!("requires=", $req, "\n\0").len()] = {
            let src = concat!("requires=", $req, "\n\0").as_bytes();
            let mut out = [0u8; concat!("requires=", $req, "\n\0").len()];
            let mut i = 0;
            while i < src.len() {
                out[i] = src[i];
                i += 1;
            }
            out
        };
    };
}
