//! `unbit_router`: the node's front door, loaded into the HTTP router instance after `http`
//! (`plugins = http,unbit_subscriptions,unbit_router`).
//!
//! Stock uWSGI's http router matches the Host header byte for byte and answers every failure
//! by closing the connection. This plugin makes it behave like a production edge; the parts
//! live in their own modules, listed here.
//!
//! * [`host`]: the routing key as clients mean it (case, port, trailing dot), for exact and
//!   wildcard names alike; run in the router processes by the wrapped mapper
//!   (`uwsgi::corerouter`) on every request;
//! * [`error_backend`], [`statuses`]: real statuses instead of a closed connection. A request
//!   the router cannot place goes to a gateway of this plugin (400 no Host, 404 unknown name,
//!   503 a known name whose app is down, 502 a dead socket); what the router must answer
//!   itself (431 headers over 64 KB, 400 unparsable) it writes before closing;
//! * [`dechunk`]: the de-chunking proxy for chunked request bodies, a second gateway. Every
//!   request with a Transfer-Encoding goes through it to the node the lookup chose (a detour
//!   of `uwsgi::corerouter`), so the app reads the whole body from `wsgi.input`.
//! * [`acme_challenge`]: the HTTP-01 challenges of names with automatic HTTPS (`"tls": "auto"`
//!   in the domains file) go to `unbit-acme`'s socket instead of the name's app (a detour
//!   before the lookup).
//! * [`sni`]: HTTPS. The certificate for each TLS server name, from the index the subscription
//!   validator keeps (built on a name's first handshake, cached per process), and the
//!   client-certificate rule on every request's Host (421, 403).
//! * [`traffic`]: per-domain hits and bytes of every router process, in a table the processes
//!   share (`unbit-router-domain-counters`), which `unbit-metrics` reads.
//!
//! ```ini
//! plugins = http,unbit_subscriptions,unbit_router
//! unbit-router-errors-socket = /run/unbit-http/errors.sock
//! unbit-router-404-page = /etc/unbit/404.html
//! unbit-router-dechunk-socket = /run/unbit-http/dechunk.sock
//! unbit-router-max-body = 104857600
//! unbit-router-acme-socket = /run/unbit-acme/http-01.sock
//! https = 0.0.0.0:443,/etc/uwsgi/ssl/node.crt,/etc/uwsgi/ssl/node.key,HIGH:!aNULL:!MD5
//! unbit-router-sni-cache = 1000
//! unbit-router-domain-counters = /run/unbit-http/domain-counters
//! unbit-router-domain-slots = 16384
//! ```

pub mod acme_challenge;
pub mod dechunk;
pub mod error_backend;
pub mod host;
pub mod reload;
pub mod sni;
pub mod statuses;
pub mod traffic;

use error_backend::{Backend, KnownDomains, STATUS_VAR};
use statuses::{Connection, Page};
use std::path::PathBuf;
use std::sync::Arc;
use uwsgi::corerouter::{Detour, Failure, FrontDoor, HttpRouter, Key, Miss, Route, Stage};
use uwsgi::{Registry, Setting};

static ERRORS_SOCKET: Setting<PathBuf> = Setting::new();
static NOT_FOUND_PAGE: Setting<PathBuf> = Setting::new();
static DECHUNK_SOCKET: Setting<PathBuf> = Setting::new();
static MAX_BODY: Setting<u64> = Setting::new();
static DECHUNK_SPOOL: Setting<PathBuf> = Setting::new();
static SNI_CACHE: Setting<u32> = Setting::new();
static ACME_SOCKET: Setting<PathBuf> = Setting::new();
static DOMAIN_COUNTERS: Setting<PathBuf> = Setting::new();
static DOMAIN_SLOTS: Setting<u32> = Setting::new();

/// Where the error backend listens unless `unbit-router-errors-socket` says otherwise: beside
/// the router's private subscription socket (vassals-examples/services/http.ini).
const DEFAULT_ERRORS_SOCKET: &str = "/run/unbit-http/errors.sock";
/// The de-chunking proxy's socket, in the same directory.
const DEFAULT_DECHUNK_SOCKET: &str = "/run/unbit-http/dechunk.sock";

struct UnbitRouter;

impl uwsgi::Plugin for UnbitRouter {
    const NAME: &'static std::ffi::CStr = c"unbit_router";

    fn on_load(reg: &mut Registry) {
        reg.option(
            "unbit-router-errors-socket",
            "the error backend's unix socket, in a directory of root's that others cannot enter \
             (default /run/unbit-http/errors.sock)",
            &ERRORS_SOCKET,
        )
        .option(
            "unbit-router-404-page",
            "the body answered for an unknown domain (HTML when the name ends in .html; default a line of text)",
            &NOT_FOUND_PAGE,
        )
        .option(
            "unbit-router-dechunk-socket",
            "the de-chunking proxy's unix socket, beside the error backend's \
             (default /run/unbit-http/dechunk.sock)",
            &DECHUNK_SOCKET,
        )
        .option(
            "unbit-router-max-body",
            "the largest chunked request body, in bytes, passed to an app (default 104857600, 100 MiB); \
             larger ones are answered 413",
            &MAX_BODY,
        )
        .option(
            "unbit-router-dechunk-spool",
            "where chunked bodies over 256 KiB wait, in unlinked files, until complete (default the temp dir); \
             the router's user must be able to write there",
            &DECHUNK_SPOOL,
        )
        .option(
            "unbit-router-acme-socket",
            "unbit-acme's challenge socket, where /.well-known/acme-challenge/ of names with tls auto goes \
             (default /run/unbit-acme/http-01.sock)",
            &ACME_SOCKET,
        )
        .option(
            "unbit-router-sni-cache",
            "TLS contexts (one per name in use) each router process keeps, least recently used out first (default 1000)",
            &SNI_CACHE,
        )
        .option(
            "unbit-router-domain-counters",
            "the table of per-domain hits and bytes all router processes write and unbit-metrics reads, \
             made anew at every start (default domain-counters beside the error backend's socket)",
            &DOMAIN_COUNTERS,
        )
        .option(
            "unbit-router-domain-slots",
            "(container, domain) pairs the counters table holds, 288 bytes each (default 16384); \
             pairs past it are counted in its overflow total",
            &DOMAIN_SLOTS,
        );
    }

    /// After the http plugin's `init` (which set up the router) and before the master forks
    /// the router processes.
    fn post_init() {
        if let Err(e) = start() {
            uwsgi::log!("{e}");
            std::process::exit(1);
        }
    }
}

fn start() -> Result<(), String> {
    let Some(router) = uwsgi::corerouter::http_router()? else {
        uwsgi::log!("no http socket in this instance: the front door has nothing to do");
        return Ok(());
    };
    if !uwsgi::server::has_master() {
        return Err("the front door needs master = true (its error backend is a gateway process)".into());
    }
    let socket = ERRORS_SOCKET.get_or(DEFAULT_ERRORS_SOCKET.into());
    let not_found = match NOT_FOUND_PAGE.get() {
        Some(path) => Page::from_file(&path)?,
        None => statuses::default_page(404),
    };
    // The validator's file: both must agree on which names exist.
    let domains = PathBuf::from(
        uwsgi::config::value("unbit-subscriptions-domains").unwrap_or_else(|| domain_table::DEFAULT_PATH.into()),
    );
    let listener = Arc::new(error_backend::bind(&socket, router.uid(), router.gid())?);
    let backend = Arc::new(Backend { not_found, domains: KnownDomains::new(domains.clone(), uwsgi::log::line) });
    acme_challenge::init(domains, uwsgi::log::line);
    let acme_socket = ACME_SOCKET.get_or(acme_challenge::DEFAULT_SOCKET.into());
    let dechunk_socket = DECHUNK_SOCKET.get_or(DEFAULT_DECHUNK_SOCKET.into());
    let dechunk_gateway = dechunk_gateway(&router, &dechunk_socket)?;
    let counters = DOMAIN_COUNTERS.get().unwrap_or_else(|| socket.with_file_name("domain-counters"));
    let slots = DOMAIN_SLOTS.get_or(domain_counters::DEFAULT_CAPACITY);
    traffic::init(&counters, slots, uwsgi::log::line)?;
    router.install(FrontDoor {
        route,
        no_backend,
        answer,
        error_backend: socket.to_string_lossy().into_owned(),
        status_var: STATUS_VAR,
        detours: vec![
            Detour {
                wanted: acme_challenge::wanted,
                socket: acme_socket.to_string_lossy().into_owned(),
                stage: Stage::BeforeLookup,
            },
            Detour {
                wanted: has_transfer_encoding,
                socket: dechunk_socket.to_string_lossy().into_owned(),
                stage: Stage::AfterLookup {
                    backend_var: dechunk::BACKEND_VAR,
                    domain_var: dechunk::DOMAIN_VAR,
                    uid_var: dechunk::UID_VAR,
                },
            },
        ],
        traffic: Some(traffic::count),
    })?;
    uwsgi::gateway::register("unbit-router-errors", move || {
        error_backend::serve(Arc::clone(&listener), Arc::clone(&backend))
    })?;
    uwsgi::gateway::register("unbit-router-dechunk", dechunk_gateway)?;
    uwsgi::log!(
        "front door: Host matching normalised, errors answered by {}, chunked bodies de-chunked by {}, \
         ACME challenges of tls-auto names answered by {}, per-domain hits and bytes of every process in {} \
         ({slots} slots)",
        socket.display(),
        dechunk_socket.display(),
        acme_socket.display(),
        counters.display()
    );
    https()
}

/// HTTPS ([`sni`]): certificate selection on the https sockets, from the index the validator
/// keeps, and the client-certificate rule on every request.
fn https() -> Result<(), String> {
    let dir = match uwsgi::config::value("unbit-subscriptions-sni-dir") {
        Some(dir) => PathBuf::from(dir),
        None => uwsgi::config::value("unbit-subscriptions-router")
            .map_or_else(|| PathBuf::from(sni::DEFAULT_DIR), |r| sni_index::default_dir(std::path::Path::new(&r))),
    };
    let capacity = SNI_CACHE.get_or(sni::DEFAULT_CACHE).max(1) as usize;
    let sockets = sni::start(dir.clone(), capacity)?;
    if !sockets.is_empty() {
        uwsgi::log!(
            "HTTPS on {}: certificates for SNI names from {} (built on first use, {capacity} per process at most), \
             groups {}, the sockets' own certificate for other names",
            sockets.join(", "),
            dir.display(),
            sni::GROUPS
        );
    }
    Ok(())
}

/// Binds the de-chunking proxy's socket (as the error backend's: only the router's processes
/// may connect, since the proxy connects wherever a request names) and returns the gateway's
/// body. The gateway runs as the router's user: it parses what clients send, and that user
/// reaches the pinned sockets of the nodes (`/proc/<pin holder>/fd/N`) like the router does.
fn dechunk_gateway(
    router: &HttpRouter,
    socket: &std::path::Path,
) -> Result<impl Fn() -> Result<(), String> + Send + Sync + 'static, String> {
    let listener = error_backend::bind(socket, router.uid(), router.gid())?;
    let (uid, gid) = (router.uid(), router.gid());
    if router.timeout().is_zero() {
        return Err("the de-chunking proxy needs an http-timeout above 0".into());
    }
    let config = dechunk::Config {
        max_body: MAX_BODY.get_or(dechunk::Config::default().max_body),
        spool_dir: DECHUNK_SPOOL.get(),
        timeout: proxy_timeout(router.timeout()),
        log: uwsgi::log::line,
        ..dechunk::Config::default()
    };
    Ok(move || {
        if uid != 0 {
            drop_privileges(uid, gid)?;
        }
        let listener = listener.try_clone().map_err(|e| format!("de-chunking proxy: {e}"))?;
        dechunk::serve(listener, config.clone())
    })
}

/// The proxy's limit on each read, write and connect: a tenth under the router's own
/// (`http-timeout`), which every event on a session restarts for the client and the proxy's
/// connection alike. With the same limit the router would often close the session first, and
/// a client whose body stalled, or whose app stays silent, would get a closed connection
/// instead of the proxy's 408 or 504.
fn proxy_timeout(router: std::time::Duration) -> std::time::Duration {
    (router - router / 10).max(std::time::Duration::from_secs(1))
}

fn drop_privileges(uid: u32, gid: u32) -> Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("de-chunking proxy: setgroups: {e}"))?;
    nix::unistd::setgid(gid.into()).map_err(|e| format!("de-chunking proxy: setgid({gid}): {e}"))?;
    nix::unistd::setuid(uid.into()).map_err(|e| format!("de-chunking proxy: setuid({uid}): {e}"))
}

/// Requests whose body the router pipes as the client framed it (or not at all): any
/// Transfer-Encoding, which the proxy decodes when it is `chunked` and refuses otherwise.
fn has_transfer_encoding(key: &Key<'_>) -> bool {
    key.var(b"HTTP_TRANSFER_ENCODING").is_some()
}

/// Every request, in the router processes: no Host, 400; a Host protected by a client CA its
/// connection does not satisfy, 421 or 403 ([`sni`]); otherwise the normalised key is looked up.
fn route(key: &mut Key<'_>) -> Route {
    if !key.from_host_header() {
        return Route::Answer(400);
    }
    let len = domain_names::host_key_in_place(key.bytes_mut());
    key.truncate(len);
    if len == 0 {
        Route::Answer(400)
    } else if let Some(status) = sni::refusal(key) {
        Route::Answer(status)
    } else {
        Route::Lookup
    }
}

/// 404 for a name nothing serves (the error backend makes it 503 for a known one), 502 when
/// the request's backend failed and none is left.
fn no_backend(miss: Miss) -> u16 {
    match miss {
        Miss::NotServed => 404,
        Miss::BackendFailed => 502,
    }
}

/// What the router writes itself before closing.
fn answer(failure: &Failure<'_>) -> Vec<u8> {
    let (status, page) = match failure {
        Failure::HeadersTooLarge => (431, statuses::default_page(431)),
        Failure::Unparsable { header_block } if host::exceeds_packet(header_block) => {
            (431, statuses::default_page(431))
        }
        Failure::Unparsable { .. } => (400, Page::text("400 Bad Request: the request could not be parsed.\n")),
        Failure::ErrorBackendDown { status } => (*status, statuses::default_page(*status)),
        Failure::BackendClosed => {
            (502, Page::text("502 Bad Gateway: the site's application closed the connection without answering.\n"))
        }
    };
    statuses::response(status, &page, false, Connection::Close)
}

uwsgi::plugin!(unbit_router_plugin: UnbitRouter);
