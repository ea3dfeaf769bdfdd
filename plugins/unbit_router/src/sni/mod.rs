//! HTTPS for every customer domain: certificate selection on the router's `https` sockets, and
//! the client-certificate rule on every request.
//!
//! A module of the front door rather than a plugin of its own, because half of the job is the
//! front door's: a request whose Host names a client-certificate-protected domain must be
//! refused whatever name the TLS connection was set up for, and only the front door's mapper
//! sees each request's Host next to its connection. One plugin also means one wrapper around
//! the router's mapper, and one place that owns the router's decisions.
//!
//! **Selection** ([`cache`]): in the master, after the config, the `https` sockets' contexts get
//! a client-hello callback (run before OpenSSL looks at sessions or extensions, so a resumed
//! session is checked against the selected name's session context), groups X25519, P-256 and
//! P-384 (stock uWSGI forces P-256 alone: a HelloRetryRequest for every curl and browser, a
//! failure for an X25519-only client), TLS 1.2 at least. In each router process the callback
//! reads the `server_name`, finds the name's entry in the certificate index the validator keeps
//! (exact, else the wildcard one label up; the validator's index first, then the certificates
//! the Legion's members sealed to this node, [`sni_index::CLUSTER_DIR`]), builds or reuses its
//! context and switches the connection to it, with the entry's client-certificate verification. No name, or no entry:
//! the socket's own certificate, the node's default.
//!
//! **Sessions**: tickets are sealed with the keys of the socket's context, made by the master
//! before it forks, so a session resumes in any router process; each entry has its own session
//! id context, so a session made for one name (and its client certificate) never resumes
//! under another.
//!
//! **Client certificates** ([`policy`]): the request's Host is looked up in the index's
//! client-CA list; a Host whose entry has a client CA is only served over a connection set up
//! for that very entry (else 421 Misdirected Request), and with `!` (required) only with a
//! verified client certificate (else 403; plain HTTP too). `HTTPS`, `HTTPS_DN` and
//! `HTTPS_CLIENT_CERTIFICATE` are the stock router's (`plugins/http/https.c`).

pub mod cache;
pub mod policy;

use cache::Cache;
use openssl::error::ErrorStack;
use openssl::ex_data::Index;
use openssl::ssl::{ClientHelloResponse, SniError, Ssl, SslAlert, SslRef, SslVersion};
use sni_index::bundle::{verify_mode, CLIENT_VERIFY_DEPTH};
use sni_index::{names, ClientCa};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use uwsgi::corerouter::Key;

/// What the client-hello callback chose for a connection, read again by [`policy`] for each of
/// its requests.
#[derive(Clone, Debug)]
pub struct Selected {
    /// The entry serving the connection; `None`: the socket's default certificate.
    pub entry: Option<Arc<str>>,
    pub client_ca: ClientCa,
}

/// Where the certificate index is when the instance names no validator socket.
pub const DEFAULT_DIR: &str = "/run/unbit-http/sni";
/// Contexts per router process unless `unbit-router-sni-cache` says otherwise.
pub const DEFAULT_CACHE: u32 = 1000;

/// Key exchange groups, best first. X25519 first: what browsers and curl send a key share
/// for, so no HelloRetryRequest.
pub const GROUPS: &str = "X25519:P-256:P-384";

struct Installed {
    dir: PathBuf,
    capacity: usize,
    selected: Index<Ssl, Selected>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
/// The names with a client CA, for every request's Host (set in the master, read per process).
static CA_LIST: OnceLock<Mutex<policy::CaList>> = OnceLock::new();
/// This router process's contexts: made on the first handshake after the fork.
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Takes over certificate selection on every `https` socket of the http router, and checks
/// every request against the client-CA list (plain HTTP too). Call in the master
/// (`post_init`). Returns the https sockets' addresses.
pub fn start(dir: PathBuf, capacity: usize) -> Result<Vec<String>, String> {
    let _ = CA_LIST.set(Mutex::new(policy::CaList::new(&dir)));
    let sockets = uwsgi::tls::https_sockets();
    if sockets.is_empty() {
        return Ok(Vec::new());
    }
    let selected = Ssl::new_ex_index::<Selected>().map_err(|e| format!("OpenSSL ex_data index: {e}"))?;
    INSTALLED
        .set(Installed { dir, capacity, selected })
        .map_err(|_| "the SNI selection is already installed".to_string())?;
    for socket in &sockets {
        socket
            .configure(|b| -> Result<(), ErrorStack> {
                b.set_groups_list(GROUPS)?;
                b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
                b.set_client_hello_callback(client_hello);
                b.set_servername_callback(server_name_ack);
                Ok(())
            })
            .map_err(|e| format!("https socket {}: {e}", socket.name()))?;
    }
    Ok(sockets.iter().map(|s| s.name().to_string()).collect())
}

/// The client-hello callback, in a router process, on every handshake.
fn client_hello(ssl: &mut SslRef, _alert: &mut SslAlert) -> Result<ClientHelloResponse, ErrorStack> {
    let Some(installed) = INSTALLED.get() else { return Ok(ClientHelloResponse::SUCCESS) };
    // A panic must not unwind into OpenSSL: the connection then gets the default certificate.
    let chosen = uwsgi::guard("sni selection", None, || {
        let name = uwsgi::tls::client_hello_server_name(ssl).and_then(names::server_name)?;
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(|| {
            Cache::new(installed.dir.clone(), installed.capacity, uwsgi::log::line)
                .then(sni_index::cluster_dir(&installed.dir))
        });
        cache.select(&name, Instant::now())
    });
    let selected = match chosen {
        Some(choice) => {
            ssl.set_ssl_context(&choice.ctx)?;
            ssl.set_verify(verify_mode(choice.client_ca));
            if choice.client_ca != ClientCa::None {
                ssl.param_mut().set_depth(CLIENT_VERIFY_DEPTH as i32);
            }
            Selected { entry: Some(choice.entry), client_ca: choice.client_ca }
        }
        None => Selected { entry: None, client_ca: ClientCa::None },
    };
    ssl.set_ex_data(installed.selected, selected);
    // Nothing a lookup left on OpenSSL's error queue may fail this handshake.
    let _ = ErrorStack::get();
    Ok(ClientHelloResponse::SUCCESS)
}

/// Acknowledges the client's server name when an entry serves it (OpenSSL then keeps the name
/// in the session), not when the default certificate does.
fn server_name_ack(ssl: &mut SslRef, _alert: &mut SslAlert) -> Result<(), SniError> {
    match selection(ssl) {
        Some(Selected { entry: Some(_), .. }) => Ok(()),
        _ => Err(SniError::NOACK),
    }
}

/// The status refusing this request (its Host is protected by a client CA its connection does
/// not satisfy), if refused. On every request, after the Host is normalised.
pub fn refusal(key: &Key<'_>) -> Option<u16> {
    let list = CA_LIST.get()?;
    policy::refusal(list, key.bytes(), policy::Connection::of(key.tls()))
}

/// What the client-hello callback chose for this connection.
pub fn selection(ssl: &SslRef) -> Option<&Selected> {
    ssl.ex_data(INSTALLED.get()?.selected)
}

/// Contexts built and cached in this process (for the log and the benchmark).
pub fn cached() -> usize {
    CACHE.lock().map(|c| c.as_ref().map_or(0, Cache::len)).unwrap_or(0)
}
