//! `unbit_router`: the node's front door, loaded into the HTTP router instance after `http`
//! (`plugins = http,unbit_subscriptions,unbit_router`).
//!
//! Stock uWSGI's http router matches the Host header byte for byte and answers every failure
//! by closing the connection. This plugin makes it behave like a production edge; the parts
//! live in their own modules, listed here.

pub mod dechunk;

struct UnbitRouter;

impl uwsgi::Plugin for UnbitRouter {
    const NAME: &'static std::ffi::CStr = c"unbit_router";
}

uwsgi::plugin!(unbit_router_plugin: UnbitRouter);
