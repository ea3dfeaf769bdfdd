//! The operator's options, in the HTTP router instance's config (see
//! `vassals-examples/services/http.ini`).

use crate::holder::RouterUser;
use crate::service::Config;
use std::path::PathBuf;
use uwsgi::{Registry, Setting};

static SOCKET: Setting<PathBuf> = Setting::new();
static ROUTER: Setting<PathBuf> = Setting::new();
static DOMAINS: Setting<PathBuf> = Setting::new();
static HOMES: Setting<PathBuf> = Setting::new();
static WINDOW: Setting<u32> = Setting::new();
static NODE_TTL: Setting<u32> = Setting::new();
static RATE: Setting<u32> = Setting::new();
static BURST: Setting<u32> = Setting::new();
static REPORT: Setting<u32> = Setting::new();
static ROUTER_USER: Setting<String> = Setting::new();
static SNI_DIR: Setting<PathBuf> = Setting::new();
static PLATFORM_CERTS: Setting<PathBuf> = Setting::new();

pub fn declare(reg: &mut Registry) {
    reg.option(
        "unbit-subscriptions-socket",
        "the subscription socket containers send to (<subscribe dir>/http); enables the validator",
        &SOCKET,
    )
    .option(
        "unbit-subscriptions-router",
        "the router's own subscription socket (http-subscription-server), in a 0700 directory",
        &ROUTER,
    )
    .option(
        "unbit-subscriptions-domains",
        "domains.json from the node sync (default /var/lib/unbit/domains.json)",
        &DOMAINS,
    )
    .option(
        "unbit-subscriptions-containers-dir",
        "where container homes live on the host (default /containers)",
        &HOMES,
    )
    .option("unbit-subscriptions-window", "seconds an announce's timestamp may differ from now (default 60)", &WINDOW)
    .option("unbit-subscriptions-node-ttl", "seconds a silent node is remembered (default 120)", &NODE_TTL)
    .option("unbit-subscriptions-rate", "announces per second allowed per container (default 20)", &RATE)
    .option("unbit-subscriptions-burst", "announce burst allowed per container (default 200)", &BURST)
    .option("unbit-subscriptions-report", "seconds between activity reports in the log (default 60)", &REPORT)
    .option(
        "unbit-subscriptions-router-user",
        "the user the router's http processes run as (http-uid); pinned sockets are held by a process of that user",
        &ROUTER_USER,
    )
    .option(
        "unbit-subscriptions-sni-dir",
        "the router's certificate index, written from the SNI files of accepted announces \
         (default: sni/ beside unbit-subscriptions-router)",
        &SNI_DIR,
    )
    .option(
        "unbit-subscriptions-platform-certs",
        "the platform's certificates to serve (unbit-acme's index.json, e.g. /var/lib/unbit/acme/index.json; default none)",
        &PLATFORM_CERTS,
    );
}

/// The validator's config, `None` when the instance does not run one (no socket option).
pub fn config() -> Result<Option<Config>, String> {
    let Some(socket) = SOCKET.get() else { return Ok(None) };
    let router = ROUTER.get().ok_or("unbit-subscriptions-socket needs unbit-subscriptions-router")?;
    Ok(Some(Config {
        socket,
        router: router.clone(),
        domains: DOMAINS.get_or("/var/lib/unbit/domains.json".into()),
        homes: HOMES.get_or("/containers".into()),
        window_secs: i64::from(WINDOW.get_or(60).max(2)),
        node_ttl_secs: i64::from(NODE_TTL.get_or(120).max(1)),
        rate: RATE.get_or(20),
        burst: BURST.get_or(200),
        report_secs: u64::from(REPORT.get_or(60).max(1)),
        router_user: ROUTER_USER.get().map(|name| RouterUser::lookup(&name)).transpose()?,
        sni_dir: SNI_DIR.get().unwrap_or_else(|| sni_index::default_dir(&router)),
        platform_certs: PLATFORM_CERTS.get(),
    }))
}
