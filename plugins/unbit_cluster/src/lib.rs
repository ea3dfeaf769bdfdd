//! `unbit_cluster`: the nodes of a Legion serve each other's `cluster-domain`s.
//!
//! Loaded into the node's fastrouter instance (`vassals-examples/legion/fastrouter.ini`),
//! next to stock uWSGI's Legion (which elects the Lord holding the floating address) and the
//! platform's subscription validator on `/subscribe/fastrouter`:
//!
//! * the **relay** ([`service::run_relay`]) sits between that validator and the fastrouter:
//!   it passes every accepted announce on unchanged and tells every other member, in an
//!   Ed25519-signed datagram ([`message`]), that this node now serves (or no longer serves)
//!   the domain;
//! * the **receiver** ([`service::run_receiver`]) accepts those datagrams only from the members
//!   listed in the members file ([`members`]), from their own address, with a valid signature,
//!   fresh and never twice; it adds the sender's fastrouter to the domain's pool in this node's
//!   HTTP router (its private subscription socket), so the Lord balances across nodes;
//! * certificates of `ssl-cluster-domain`s ([`sealed`]): the relay gives each member the index
//!   entry the fastrouter validator wrote (chain and key), sealed to the member's X25519 key
//!   and signed; the receiver opens it and writes it into the router's cluster index, so the
//!   Lord terminates TLS with the customer's certificate for domains it runs no container of.
//!
//! See docs/clustering.md.

pub mod members;
pub mod message;
pub mod sealed;
pub mod service;

use std::path::PathBuf;
use uwsgi::{Registry, Setting};

static NODE: Setting<String> = Setting::new();
static MEMBERS: Setting<PathBuf> = Setting::new();
static KEY: Setting<PathBuf> = Setting::new();
static RELAY: Setting<PathBuf> = Setting::new();
static RELAY_TO: Setting<PathBuf> = Setting::new();
static ROUTER: Setting<PathBuf> = Setting::new();
static WINDOW: Setting<u32> = Setting::new();
static X25519_KEY: Setting<PathBuf> = Setting::new();
static SNI_DIR: Setting<PathBuf> = Setting::new();

struct UnbitCluster;

fn config() -> Result<service::Config, String> {
    Ok(service::Config {
        node: NODE.get().ok_or("unbit-cluster needs unbit-cluster-node (this node's name in the members file)")?,
        members: MEMBERS.get_or("/etc/unbit/legion/members.json".into()),
        key: KEY.get_or("/etc/unbit/legion/node.key".into()),
        window_secs: i64::from(WINDOW.get_or(60).max(2)),
        x25519_key: X25519_KEY.get_or("/etc/unbit/legion/x25519.key".into()),
        // The fastrouter validator's index: the same default as the validator's own.
        sni_from: uwsgi::config::value("unbit-subscriptions-sni-dir").map(PathBuf::from),
        sni_dir: SNI_DIR.get(),
    })
}

fn start() -> Result<(), String> {
    let relay = RELAY.get();
    let router = ROUTER.get();
    if relay.is_none() && router.is_none() {
        return Ok(());
    }
    if !uwsgi::server::has_master() {
        return Err("the cluster's relay and receiver need master = true (uWSGI supervises them as gateways)".into());
    }
    let config = config()?;
    if let Some(relay) = relay {
        let to = RELAY_TO
            .get()
            .ok_or("unbit-cluster-relay needs unbit-cluster-relay-to (the fastrouter's subscription server)")?;
        let c = config.clone();
        uwsgi::gateway::register("unbit-cluster-relay", move || service::run_relay(&c, &relay, &to))?;
    }
    if let Some(router) = router {
        uwsgi::gateway::register("unbit-cluster-receiver", move || service::run_receiver(&config, &router))?;
    }
    Ok(())
}

impl uwsgi::Plugin for UnbitCluster {
    const NAME: &'static std::ffi::CStr = c"unbit_cluster";

    fn on_load(reg: &mut Registry) {
        reg.option("unbit-cluster-node", "this node's name in the Legion's members file", &NODE)
            .option(
                "unbit-cluster-members",
                "the Legion's members file (default /etc/unbit/legion/members.json)",
                &MEMBERS,
            )
            .option(
                "unbit-cluster-key",
                "this node's Ed25519 private key, PEM, 0600 (default /etc/unbit/legion/node.key)",
                &KEY,
            )
            .option(
                "unbit-cluster-relay",
                "the socket the fastrouter's validator sends to (its unbit-subscriptions-router); enables the relay",
                &RELAY,
            )
            .option(
                "unbit-cluster-relay-to",
                "the fastrouter's own subscription socket (fastrouter-subscription-server)",
                &RELAY_TO,
            )
            .option(
                "unbit-cluster-router",
                "the HTTP router's private subscription socket; enables the receiver of the members' announces",
                &ROUTER,
            )
            .option(
                "unbit-cluster-x25519-key",
                "this node's X25519 private key, PEM, 0600: members seal certificates to it \
                 (default /etc/unbit/legion/x25519.key)",
                &X25519_KEY,
            )
            .option(
                "unbit-cluster-sni-dir",
                "where the receiver writes the members' certificates for the router \
                 (default cluster-sni/ beside the router's index: /run/unbit-http/cluster-sni)",
                &SNI_DIR,
            )
            .option(
                "unbit-cluster-window",
                "seconds a member's announce may be off this node's clock (default 60)",
                &WINDOW,
            );
    }

    fn init() {
        if let Err(e) = start() {
            uwsgi::log!("{e}");
            std::process::exit(1);
        }
    }
}

uwsgi::plugin!(unbit_cluster_plugin: UnbitCluster);
