//! `unbit_subscriptions`: the subscription validator of the node's HTTP router.
//!
//! Stock uWSGI's `subscriptions-sign-check` cannot be extended, leaves the command byte
//! unsigned, accepts replays, logs no rejection and breaks with `http-processes > 1`. So the
//! router's own subscription socket is private, and this plugin, loaded into the router
//! instance, runs a gateway process that owns the socket containers see
//! (`/run/subscribe/http`), verifies every announce and forwards the good ones:
//!
//! ```ini
//! plugins = corerouter,http,unbit_subscriptions
//! http-subscription-server = /run/unbit-http/subscriptions.sock
//! unbit-subscriptions-socket = /subscribe/http
//! unbit-subscriptions-router = /run/unbit-http/subscriptions.sock
//! ```
//!
//! * [`wire`]: the packet format, strict parsing, the re-emitted packet;
//! * [`domains`], [`watch`]: who owns which domain, reloaded while running;
//! * [`address`], [`homes`]: the addresses and files a container may name, checked and opened;
//! * [`pins`]: the names the router reaches pinned sockets by, never reused;
//! * [`holder`]: the unprivileged process holding pinned sockets when the router drops root;
//! * [`own_ip`]: when a container may announce an IP address;
//! * [`replay`]: freshness, replays and the command-byte flip;
//! * [`held`]: announces that arrived just before their domain did, checked again;
//! * [`sni`]: the router's certificate index, from the SNI files of accepted announces, and
//!   [`platform_certs`], the platform's own (automatic HTTPS);
//! * [`limits`]: per-container budgets against floods;
//! * [`validator`]: the policy; [`service`]: the sockets around it.

pub mod address;
pub mod domains;
pub mod held;
pub mod holder;
pub mod homes;
pub mod limits;
pub mod own_ip;
pub mod pins;
pub mod platform_certs;
pub mod replay;
pub mod service;
mod settings;
pub mod sni;
pub mod stock;
pub mod validator;
pub mod watch;
pub mod wire;

use uwsgi::Registry;

struct UnbitSubscriptions;

impl uwsgi::Plugin for UnbitSubscriptions {
    const NAME: &'static std::ffi::CStr = c"unbit_subscriptions";

    fn on_load(reg: &mut Registry) {
        settings::declare(reg);
    }

    fn init() {
        let config = match settings::config() {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                uwsgi::log!("{e}");
                std::process::exit(1);
            }
        };
        if !uwsgi::server::has_master() {
            uwsgi::log!("the subscription validator needs master = true (uWSGI supervises it as a gateway)");
            std::process::exit(1);
        }
        // Made here, in the master, so both gateways keep their end when either is respawned.
        let channel = match config.router_user.map(|_| holder::Channel::new()).transpose() {
            Ok(c) => c.map(std::sync::Arc::new),
            Err(e) => {
                uwsgi::log!("{e}");
                std::process::exit(1);
            }
        };
        if let (Some(channel), Some(user)) = (&channel, config.router_user) {
            let channel = std::sync::Arc::clone(channel);
            if let Err(e) =
                uwsgi::gateway::register("unbit-pin-holder", move || holder::run_holder(&channel.holder, user))
            {
                uwsgi::log!("{e}");
                std::process::exit(1);
            }
        }
        let validator = move || {
            let end = match &channel {
                Some(c) => Some(c.validator.try_clone().map_err(|e| format!("the pin holder's channel: {e}"))?),
                None => None,
            };
            service::run(&config, end)
        };
        if let Err(e) = uwsgi::gateway::register("unbit-subscriptions", validator) {
            uwsgi::log!("{e}");
            std::process::exit(1);
        }
    }
}

uwsgi::plugin!(unbit_subscriptions_plugin: UnbitSubscriptions);
