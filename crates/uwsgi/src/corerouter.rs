//! The stock HTTP router (the `http` plugin), taught by a plugin loaded into the same instance.
//!
//! uWSGI gives a plugin no way to change how the router maps a request to a backend or what it
//! does when that fails: the mapper is chosen inside each forked router process
//! (`uwsgi_corerouter_loop`), and every failure closes the connection. What a plugin can reach
//! is `uhttp.cr.alloc_session`, which the router calls through its struct for every accepted
//! connection, after its loop set the mapper. [`HttpRouter::install`] wraps it (in the master,
//! before the router processes fork); on the first connection of each router process the
//! wrapper wraps the mapper, and on every plain-HTTP connection the client's read hook:
//!
//! * the mapper runs the plugin's [`FrontDoor::route`] on the key (the Host header) before the
//!   router's own lookup, and sends a request the lookup cannot place to an error backend, a
//!   uwsgi-protocol unix socket, with the status in a uwsgi variable; a request one of the
//!   plugin's [`Detour`]s wants goes to that backend instead of its node (in front of the node,
//!   named in a variable, or instead of the lookup);
//! * the read hook catches what the stock parser gives up on: a backend whose unix socket
//!   refuses the connection (the node is marked dead and the request mapped again), a header
//!   block over the router's 64 KB buffer, a request it cannot parse;
//! * the backend's read hook catches a backend that closes (or resets) the connection before
//!   its first byte: the stock router then closes the client's connection without a word, or
//!   with keep-alive leaves the client waiting for an answer that never comes;
//! * with [`FrontDoor::traffic`], the backend's read hook of every session tells the plugin,
//!   after each read, what the router counted for the backend's subscription node: uWSGI keeps
//!   those counters per http process and shows only the first process's (its stats server).
//!
//! What the router answers itself it writes through its own write hook, then closes the
//! connection the way HTTP servers must when the client may still be sending: it half-closes
//! and reads (and drops) what still comes for a while, so the client reads the answer instead
//! of a reset.
//!
//! The router's structures come from its own headers through `uwsgi-sys`. Its functions live
//! in `http_plugin.so` and `corerouter_plugin.so`, which a plugin cannot link against (it would
//! fail to load wherever `http` is not loaded first): they are looked up with `dlsym` once the
//! `http` plugin is loaded (uWSGI loads plugins `RTLD_GLOBAL`).

use crate::guard;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;
use uwsgi_sys::{
    corerouter_peer, corerouter_session, http_session, sockaddr, socklen_t, uwsgi_buffer, uwsgi_corerouter,
    uwsgi_gateway_socket, uwsgi_http,
};

type AllocSession = unsafe extern "C" fn(
    *mut uwsgi_corerouter,
    *mut uwsgi_gateway_socket,
    *mut corerouter_session,
    *mut sockaddr,
    socklen_t,
) -> c_int;
type Mapper = unsafe extern "C" fn(*mut uwsgi_corerouter, *mut corerouter_peer) -> c_int;
type Hook = unsafe extern "C" fn(*mut corerouter_peer) -> isize;
type SetHooks = unsafe extern "C" fn(*mut corerouter_peer, Option<Hook>, Option<Hook>) -> c_int;

// The type of the function looked up by name must be the header's: checked at compile time,
// without a link-time reference (the constant is never used, so no relocation is emitted).
const _: SetHooks = uwsgi_sys::uwsgi_cr_set_hooks;

/// `UMAX16`: the uwsgi packet size is a 16-bit field.
const PACKET_MAX: usize = 0xffff;

/// What [`FrontDoor::route`] decides for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Look the (possibly rewritten) key up with the router's own mapper.
    Lookup,
    /// Send the request to the error backend, which answers this status.
    Answer(u16),
}

/// Why the router's lookup found no backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Nothing serves the key.
    NotServed,
    /// The request's backend failed (its socket refused the connection, or the connect timed
    /// out) and no other backend is left for the key.
    BackendFailed,
}

/// A request the router answers itself, without any backend, before closing the connection.
#[derive(Debug)]
pub enum Failure<'a> {
    /// The header block did not end within the router's 64 KB client buffer.
    HeadersTooLarge,
    /// The stock parser refused the complete header block: a bad request line, a Host over 255
    /// bytes, a line without a colon, or a block whose uwsgi packet would pass 64 KB.
    Unparsable { header_block: &'a [u8] },
    /// The error backend could not be reached; `status` is what it was to answer.
    ErrorBackendDown { status: u16 },
    /// The request's backend closed or reset the connection before the first byte of an
    /// answer (an app that died, or refused the request: a vassal whose `buffer-size` is
    /// smaller than the request).
    BackendClosed,
}

/// The plugin's policy, installed once in the master with [`HttpRouter::install`].
pub struct FrontDoor {
    /// Runs on every request before the router's lookup, and again when a failed request is
    /// mapped anew. It is the hot path: it must not allocate or make system calls.
    pub route: fn(&mut Key<'_>) -> Route,
    /// The status for a request the lookup found no backend for.
    pub no_backend: fn(Miss) -> u16,
    /// The whole HTTP response for a [`Failure`]; the router writes it and closes.
    pub answer: fn(&Failure<'_>) -> Vec<u8>,
    /// The error backend: a uwsgi-protocol unix socket (a path without `:`).
    pub error_backend: String,
    /// The uwsgi variable carrying the status to the error backend.
    pub status_var: &'static str,
    /// Backends for the requests they want, in their [`Stage`]; the first of a stage that
    /// wants a request takes it.
    pub detours: Vec<Detour>,
    /// Told, in the router process, after every read from a subscription node (each part of
    /// an answer, and its end), what the router has counted for that node so far.
    pub traffic: Option<fn(&NodeTraffic<'_>)>,
}

/// A subscription node's counters, as the router process that served it has them. uWSGI keeps
/// them per http process (each has its own subscription table), cumulative since the node
/// joined that process's table: `requests` on every connection to it, `rx` the bytes written to
/// it, `tx` the bytes read from it (`plugins/corerouter/cr.h`).
pub struct NodeTraffic<'a> {
    /// The node's identity in this process while it lives (a freed node's may be reused, by a
    /// node of another name or of counters that start again).
    pub node: usize,
    /// The node's address: a socket path or `host:port`.
    pub name: &'a [u8],
    /// The key of the node's pool: the domain as announced (`.example.com` for a wildcard).
    pub domain: &'a [u8],
    /// The sender uid the router recorded with the announce (0 unless it took credentials).
    pub uid: u32,
    pub requests: u64,
    pub rx: u64,
    pub tx: u64,
    /// The report is made when a request for this node goes to a [`Stage::AfterLookup`]
    /// detour instead (the de-chunking proxy, which then talks to the node itself): one
    /// request the node's own counters never show.
    pub detoured: bool,
}

/// A uwsgi-protocol backend that the requests picked by [`Detour::wanted`] go to instead of
/// their node: the router relays its answer like an app's. A request whose detour refuses the
/// connection is mapped again and then answered 502 by the error backend, never sent to its
/// node directly.
pub struct Detour {
    /// Runs when [`FrontDoor::route`] chose a lookup, at the detour's stage; like `route`, on
    /// the hot path (what it reads beyond the key and the variables should be rare).
    pub wanted: fn(&Key<'_>) -> bool,
    /// A unix socket path without `:`.
    pub socket: String,
    pub stage: Stage,
}

/// When a [`Detour`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Instead of the lookup: the request never reaches the key's nodes, whether any runs or
    /// not (the ACME challenges a platform service answers for a name).
    BeforeLookup,
    /// After a lookup that found a node, in front of it: the node's address (as the router has
    /// it) goes to the detour in `backend_var` (the de-chunking proxy, for request bodies an
    /// app cannot read as they come). When the node is a subscription node, its pool's key
    /// goes in `domain_var` and the uid recorded with its announce (decimal) in `uid_var`: what
    /// [`NodeTraffic`] tells of it, so the detour can count the bytes it exchanges with the node
    /// as the node's own.
    AfterLookup { backend_var: &'static str, domain_var: &'static str, uid_var: &'static str },
}

/// The routing key of one request (the Host header's value, at most 255 bytes), which the
/// plugin may rewrite in place before the lookup.
pub struct Key<'a> {
    peer: &'a mut corerouter_peer,
}

impl Key<'_> {
    pub fn bytes(&self) -> &[u8] {
        key_of(self.peer)
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.peer.key_len);
        // SAFETY: `key` is a `char[255]` and `key_len` (a u8) never exceeds it; c_char and u8
        // have the same layout.
        unsafe { std::slice::from_raw_parts_mut(self.peer.key.as_mut_ptr().cast::<u8>(), len) }
    }

    /// Shortens the key to `len` bytes (no-op when it is not shorter).
    pub fn truncate(&mut self, len: usize) {
        if len < usize::from(self.peer.key_len) {
            self.peer.key_len = len as u8;
        }
    }

    /// False when the request had no Host header. The stock parser then leaves the machine's
    /// hostname as the key (`http_headers_parse`), so a key equal to the hostname is checked
    /// against the packet's variables: O(key length) unless the Host really is the hostname.
    pub fn from_host_header(&self) -> bool {
        // SAFETY: `hostname` is a NUL-padded char[256] set at startup and never written again;
        // `hostname_len` is its length.
        let hostname = unsafe {
            let len = usize::try_from(uwsgi_sys::uwsgi.hostname_len).unwrap_or(0).min(256);
            std::slice::from_raw_parts(std::ptr::addr_of!(uwsgi_sys::uwsgi.hostname).cast::<u8>(), len)
        };
        self.bytes() != hostname || packet_var(self.peer, b"HTTP_HOST").is_some()
    }

    /// The value of one of the request's uwsgi variables (`HTTP_TRANSFER_ENCODING`: the first
    /// header of that name). A walk over the variables: a few hundred bytes.
    pub fn var(&self, name: &[u8]) -> Option<&[u8]> {
        packet_var(self.peer, name)
    }

    /// The session the request belongs to (its connection, for `crate::tls`).
    #[cfg_attr(not(uwsgi_ssl), allow(dead_code))]
    pub(crate) fn session(&self) -> *mut corerouter_session {
        self.peer.session
    }
}

fn key_of(peer: &corerouter_peer) -> &[u8] {
    // SAFETY: as in `Key::bytes_mut`, read-only.
    unsafe { std::slice::from_raw_parts(peer.key.as_ptr().cast::<u8>(), usize::from(peer.key_len)) }
}

/// The installed front door and the router's functions, shared by every router process (set in
/// the master before they fork, never changed).
struct Installed {
    front: FrontDoor,
    /// `front.error_backend`, NUL-terminated, leaked: peers point at it.
    error_backend: &'static CStr,
    /// `front.detours`' sockets, the same way, in their order.
    detour_sockets: Vec<&'static CStr>,
    alloc_session: AllocSession,
    hr_read: Hook,
    hr_write: Hook,
    hr_instance_read: Hook,
    set_hooks: SetHooks,
}

/// How much a closing connection may still send after the router's own answer before it is
/// closed anyway.
const LINGER_MAX: usize = 256 * 1024;

/// A backend peer's `sid` (a SPDY stream id, unused by plain-HTTP sessions) while the backend
/// has not sent a byte of its answer.
const SID_NOT_ANSWERED: u32 = 0x756e_6274;

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The mapper the router's loop chose, saved by the first connection of each router process
/// (a fork of the master, where this is never set).
static ROUTER_MAPPER: OnceLock<Mapper> = OnceLock::new();

/// The stock HTTP router of this instance.
pub struct HttpRouter {
    raw: *mut uwsgi_http,
}

/// Finds the stock HTTP router: `Err` when the `http` plugin is not loaded, `Ok(None)` when it
/// is but the instance has no `http`/`https` socket (no router process will run).
pub fn http_router() -> Result<Option<HttpRouter>, String> {
    let raw = lookup(c"uhttp").ok_or("the http plugin is not loaded (plugins = http,...,unbit_router)")?;
    let router = HttpRouter { raw: raw.cast() };
    // SAFETY: `uhttp` is the http plugin's `struct uwsgi_http`, laid out as the generated type;
    // we only read a field the plugin's options set during configuration.
    Ok((unsafe { (*router.raw).cr.has_sockets } > 0).then_some(router))
}

impl HttpRouter {
    /// The uid the router processes drop to (`http-uid`), 0 when they stay root.
    pub fn uid(&self) -> u32 {
        // SAFETY: as in `http_router`.
        unsafe { (*self.raw).cr.uid }
    }

    /// The gid the router processes drop to (`http-gid`), 0 when they keep root's.
    pub fn gid(&self) -> u32 {
        // SAFETY: as in `http_router`.
        unsafe { (*self.raw).cr.gid }
    }

    /// `http-timeout`: how long the router waits on a connection that says nothing.
    pub fn timeout(&self) -> std::time::Duration {
        // SAFETY: as in `http_router`.
        let seconds = unsafe { (*self.raw).cr.socket_timeout };
        std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    }

    /// Wraps the router's session allocation; call it in the master, in `post_init` (after the
    /// `http` plugin's `init`, before the router processes fork). Once per instance.
    pub fn install(self, front: FrontDoor) -> Result<(), String> {
        let address = unix_socket_address("error backend", &front.error_backend)?;
        let mut detour_sockets = Vec::with_capacity(front.detours.len());
        for detour in &front.detours {
            if detour.socket == front.error_backend {
                return Err(format!("a detour and the error backend share the socket {}", detour.socket));
            }
            detour_sockets.push(Box::leak(unix_socket_address("detour", &detour.socket)?.into_boxed_c_str()) as &CStr);
        }
        let function = |name: &CStr| lookup(name).ok_or_else(|| format!("the http plugin has no {name:?}"));
        let hr_read = function(c"hr_read")?;
        let hr_write = function(c"hr_write")?;
        let hr_instance_read = function(c"hr_instance_read")?;
        let set_hooks = function(c"uwsgi_cr_set_hooks")?;
        // SAFETY: as in `http_router`; `alloc_session` was set by `http_init`, which ran before
        // any `post_init`.
        let alloc_session = unsafe { (*self.raw).cr.alloc_session }.ok_or("the http router has no alloc_session")?;
        // SAFETY: the symbols are the http and corerouter plugins' functions with the
        // prototypes of their headers (`hr_read`, `hr_write`, `hr_instance_read` are `ssize_t
        // (*)(struct corerouter_peer *)` hooks; `uwsgi_cr_set_hooks` is checked against the
        // header above).
        let (hr_read, hr_write, hr_instance_read, set_hooks) = unsafe {
            (
                std::mem::transmute::<*mut c_void, Hook>(hr_read),
                std::mem::transmute::<*mut c_void, Hook>(hr_write),
                std::mem::transmute::<*mut c_void, Hook>(hr_instance_read),
                std::mem::transmute::<*mut c_void, SetHooks>(set_hooks),
            )
        };
        let installed = Installed {
            front,
            error_backend: Box::leak(address.into_boxed_c_str()),
            detour_sockets,
            alloc_session,
            hr_read,
            hr_write,
            hr_instance_read,
            set_hooks,
        };
        INSTALLED.set(installed).map_err(|_| "the http router is already wrapped".to_string())?;
        // SAFETY: the master is single-threaded while it configures; the router processes fork
        // later and inherit the wrapped pointer.
        unsafe { (*self.raw).cr.alloc_session = Some(alloc_session_wrapper) };
        Ok(())
    }
}

/// A backend socket as the router's `cr_connect` takes it: a name with `:` would be TCP.
fn unix_socket_address(what: &str, path: &str) -> Result<CString, String> {
    if path.contains(':') || path.is_empty() {
        return Err(format!("{what} {path:?}: must be a unix socket path without ':'"));
    }
    CString::new(path).map_err(|_| format!("{what} {path:?} contains a NUL"))
}

fn lookup(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only searches the loaded
    // objects; it returns NULL when none defines the symbol.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

unsafe extern "C" fn alloc_session_wrapper(
    ucr: *mut uwsgi_corerouter,
    ugs: *mut uwsgi_gateway_socket,
    cs: *mut corerouter_session,
    sa: *mut sockaddr,
    sl: socklen_t,
) -> c_int {
    guard("http router session", -1, || {
        let Some(installed) = INSTALLED.get() else { return -1 };
        // SAFETY: the router calls this with its own corerouter struct (the first field of
        // `uhttp`) in its single-threaded event loop; its mapper was set by the loop before
        // the first connection was accepted.
        unsafe {
            let current = (*ucr).mapper;
            if current.map(|f| f as usize) != Some(mapper_wrapper as Mapper as usize) {
                if let Some(router_mapper) = current {
                    let _ = ROUTER_MAPPER.set(router_mapper);
                }
                (*ucr).mapper = Some(mapper_wrapper);
            }
        }
        // SAFETY: forwarding the router's own arguments to its own function.
        let ret = unsafe { (installed.alloc_session)(ucr, ugs, cs, sa, sl) };
        if ret != 0 {
            return ret;
        }
        // SAFETY: a session the router just set up: its main peer is live. Only plain HTTP
        // (`hr_read`) is wrapped; HTTPS sessions switch their hooks inside the TLS layer.
        unsafe {
            let main_peer = (*cs).main_peer;
            if same_fn((*main_peer).last_hook_read, installed.hr_read)
                && (installed.set_hooks)(main_peer, Some(read_wrapper), None) != 0
            {
                return -1;
            }
        }
        0
    })
}

unsafe extern "C" fn mapper_wrapper(ucr: *mut uwsgi_corerouter, peer: *mut corerouter_peer) -> c_int {
    guard("http router mapper", -1, || {
        let (Some(installed), Some(router_mapper)) = (INSTALLED.get(), ROUTER_MAPPER.get()) else { return -1 };
        // SAFETY: the router calls its mapper with a backend peer of a live session, from its
        // single-threaded loop; nothing else uses the peer during the call.
        let peer = unsafe { &mut *peer };
        watch_first_byte(installed, peer);
        let mut key = Key { peer };
        // The plugin's decisions run under a guard of their own: a panic there answers 500
        // through the error backend instead of the closed connection the outer guard leaves.
        let route = guard("front door route", Route::Answer(500), || (installed.front.route)(&mut key));
        let peer = key.peer;
        match route {
            Route::Answer(status) => to_error_backend(installed, peer, status),
            // The stock dotsplit mapper reads out of bounds on an empty key.
            Route::Lookup if peer.key_len == 0 => to_error_backend(installed, peer, 400),
            Route::Lookup => {
                if let Some((detour, socket)) = installed.detour(peer, |s| s == Stage::BeforeLookup) {
                    return instead_of_lookup(installed, peer, detour, socket);
                }
                // SAFETY: the router's own mapper, with its own arguments.
                let ret = unsafe { router_mapper(ucr, peer) };
                if ret != 0 {
                    return ret;
                }
                if peer.instance_address_len > 0 {
                    return match installed.detour(peer, |s| s != Stage::BeforeLookup) {
                        Some((detour @ Detour { stage: Stage::AfterLookup { .. }, .. }, socket)) => {
                            to_detour(installed, peer, detour, socket)
                        }
                        _ => 0,
                    };
                }
                let miss = if peer.retries > 0 { Miss::BackendFailed } else { Miss::NotServed };
                let status = guard("front door no_backend", 500, || (installed.front.no_backend)(miss));
                to_error_backend(installed, peer, status)
            }
        }
    })
}

impl Installed {
    /// The first detour of a stage `at` accepts that wants the peer's request, and its socket.
    fn detour(&self, peer: &mut corerouter_peer, at: impl Fn(Stage) -> bool) -> Option<(&Detour, &'static CStr)> {
        let key = Key { peer };
        self.front
            .detours
            .iter()
            .zip(&self.detour_sockets)
            .find(|(d, _)| at(d.stage) && (d.wanted)(&key))
            .map(|(d, socket)| (d, *socket))
    }
}

fn same_fn(a: Option<Hook>, b: Hook) -> bool {
    a.map(|f| f as usize) == Some(b as usize)
}

/// Wraps the backend's read hook: in a plain-HTTP session (its client hook is ours) until the
/// backend's first byte, so a backend that closes without answering gets a status; in every
/// session for good when the front door counts [`NodeTraffic`].
fn watch_first_byte(installed: &Installed, peer: &mut corerouter_peer) {
    if !same_fn(peer.last_hook_read, installed.hr_instance_read) {
        return;
    }
    // SAFETY: a backend peer's session and main peer are live while the peer is.
    let plain = unsafe { same_fn((*(*peer.session).main_peer).last_hook_read, read_wrapper) };
    if plain {
        peer.last_hook_read = Some(instance_read_wrapper);
        peer.sid = SID_NOT_ANSWERED;
    } else if installed.front.traffic.is_some() {
        peer.last_hook_read = Some(instance_read_wrapper);
    }
}

/// Tells the front door what the peer's node has counted so far (after a read from it, or as
/// its request is `detoured`).
fn report_traffic(installed: &Installed, peer: &corerouter_peer, detoured: bool) {
    let Some(traffic) = installed.front.traffic else { return };
    let Some(report) = node_traffic(peer, detoured) else { return };
    guard("front door traffic", (), || traffic(&report));
}

/// What the router counted for the peer's subscription node (none when the peer has none).
fn node_traffic(peer: &corerouter_peer, detoured: bool) -> Option<NodeTraffic<'_>> {
    let un = peer.un;
    if un.is_null() {
        return None;
    }
    // SAFETY: `un` is the node of the router's subscription table the peer holds a reference
    // on (the lookup took it; it is released when the peer closes, after this hook, or by
    // `release_node` after the borrow of the peer ends), so it and its slot are live; names
    // and keys are char arrays of 255 bytes with their lengths.
    unsafe {
        let un = &*un;
        if un.len == 0 || un.slot.is_null() {
            return None;
        }
        let slot = &*un.slot;
        Some(NodeTraffic {
            node: un as *const _ as usize,
            name: std::slice::from_raw_parts(un.name.as_ptr().cast::<u8>(), usize::from(un.len).min(un.name.len())),
            domain: std::slice::from_raw_parts(
                slot.key.as_ptr().cast::<u8>(),
                usize::from(slot.keylen).min(slot.key.len()),
            ),
            uid: un.uid,
            requests: un.requests,
            rx: un.rx,
            tx: un.tx,
            detoured,
        })
    }
}

/// Points the peer at the error backend and adds the status variable to its uwsgi packet.
fn to_error_backend(installed: &Installed, peer: &mut corerouter_peer, status: u16) -> c_int {
    point_at(peer, installed.error_backend);
    let mut digits = [0u8; 20];
    let value = decimal(u64::from(status), &mut digits);
    if add_var(peer, installed.front.status_var.as_bytes(), value) {
        0
    } else {
        -1
    }
}

/// Points the peer at a detour of [`Stage::BeforeLookup`], as the lookup would at a node
/// (modifiers 0: the detour speaks plain uwsgi). A request mapped again (`retries`) was sent
/// to the detour before, which then refused the connection: 502, never the key's nodes.
fn instead_of_lookup(
    installed: &Installed,
    peer: &mut corerouter_peer,
    detour: &Detour,
    socket: &'static CStr,
) -> c_int {
    if peer.retries > 0 {
        detour_unreachable(peer, detour);
        return to_error_backend(installed, peer, 502);
    }
    point_at(peer, socket);
    0
}

/// Points the peer at one of the front door's own sockets (no subscription node, plain uwsgi).
fn point_at(peer: &mut corerouter_peer, socket: &'static CStr) {
    peer.un = std::ptr::null_mut();
    peer.instance_address = socket.as_ptr() as *mut c_char;
    peer.instance_address_len = socket.to_bytes().len() as u64;
    peer.modifier1 = 0;
    peer.modifier2 = 0;
}

fn detour_unreachable(peer: &corerouter_peer, detour: &Detour) {
    crate::log::line(&format!(
        "{} => detour {} unreachable; answering 502",
        String::from_utf8_lossy(key_of(peer)),
        detour.socket
    ));
}

/// Points the peer at the detour, naming its node in `backend_var` (and a subscription node's
/// pool and uid in `domain_var` and `uid_var`). A packet that already names one was sent to
/// the detour before, which then refused the connection: the request gets a 502 rather than a
/// second variable or its node directly.
fn to_detour(installed: &Installed, peer: &mut corerouter_peer, detour: &Detour, socket: &'static CStr) -> c_int {
    let Stage::AfterLookup { backend_var, domain_var, uid_var } = detour.stage else { return -1 };
    if packet_var(peer, backend_var.as_bytes()).is_some() {
        detour_unreachable(peer, detour);
        // SAFETY: the router's lookup just set `un` (a node of its table, or NULL).
        unsafe { release_node(peer) };
        return to_error_backend(installed, peer, 502);
    }
    // SAFETY: the lookup pointed `instance_address` at its node's name (`un->name`, or a
    // mapper's own buffer), `instance_address_len` bytes, alive during this call; `add_var`
    // copies it into the packet before the pointer is replaced.
    let node =
        unsafe { std::slice::from_raw_parts(peer.instance_address.cast::<u8>(), peer.instance_address_len as usize) };
    if !add_var(peer, backend_var.as_bytes(), node) {
        return -1;
    }
    // Copied out of the node (a chunked request is rare: the copy is cheap enough), as adding
    // the variables needs the peer mutably.
    let pool = node_traffic(peer, true).map(|t| {
        let mut domain = [0u8; 255];
        let len = t.domain.len().min(domain.len());
        domain[..len].copy_from_slice(&t.domain[..len]);
        (domain, len, t.uid)
    });
    if let Some((domain, len, uid)) = pool {
        let mut digits = [0u8; 20];
        if !add_var(peer, domain_var.as_bytes(), &domain[..len])
            || !add_var(peer, uid_var.as_bytes(), decimal(u64::from(uid), &mut digits))
        {
            return -1;
        }
    }
    report_traffic(installed, peer, true);
    // SAFETY: as above.
    unsafe { release_node(peer) };
    peer.instance_address = socket.as_ptr() as *mut c_char;
    peer.instance_address_len = socket.to_bytes().len() as u64;
    0
}

/// Gives back the reference the router's lookup took on the peer's subscription node: the
/// peer no longer talks to it, so its connection's failures are not the node's, and a node
/// that dies is removed without waiting for the detour's request.
///
/// # Safety
/// `peer.un` is NULL or a node of the router's subscription table on which the lookup took a
/// reference.
unsafe fn release_node(peer: &mut corerouter_peer) {
    let un = std::mem::replace(&mut peer.un, std::ptr::null_mut());
    // SAFETY: guaranteed by the caller.
    unsafe {
        if !un.is_null() && (*un).len > 0 {
            (*un).reference = (*un).reference.saturating_sub(1);
        }
    }
}

/// `n` in decimal, written without allocating (the mapper's path).
fn decimal(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = n;
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}

/// Adds `key=value` to the peer's uwsgi packet. On the first mapping the router has not sized
/// the packet yet (`http_parse` does after the mapper) and it is appended; when a failed
/// request is mapped again (`retries > 0`) the packet is complete, body bytes may follow the
/// variables, so the pair is inserted after them and the size fixed.
fn add_var(peer: &mut corerouter_peer, key: &[u8], value: &[u8]) -> bool {
    let out = peer.out;
    if out.is_null() || key.len() > PACKET_MAX || value.len() > PACKET_MAX {
        return false;
    }
    if peer.retries == 0 {
        // SAFETY: `out` is the peer's live packet buffer; the pointers are read-only inputs
        // the function copies (it takes `char *` without writing through them).
        return unsafe {
            uwsgi_sys::uwsgi_buffer_append_keyval(
                out,
                key.as_ptr() as *mut c_char,
                key.len() as u16,
                value.as_ptr() as *mut c_char,
                value.len() as u16,
            )
        } == 0;
    }
    let Some(size) = packet_size(peer) else { return false };
    let pair_len = 4 + key.len() + value.len();
    if size + pair_len > PACKET_MAX {
        return false;
    }
    let mut pair = Vec::with_capacity(pair_len);
    pair.extend_from_slice(&(key.len() as u16).to_le_bytes());
    pair.extend_from_slice(key);
    pair.extend_from_slice(&(value.len() as u16).to_le_bytes());
    pair.extend_from_slice(value);
    // SAFETY: as above; `uwsgi_buffer_insert` grows the buffer (within its 64 KB limit) and
    // moves the body bytes after the insertion point.
    if unsafe { uwsgi_sys::uwsgi_buffer_insert(out, 4 + size, pair.as_mut_ptr().cast(), pair.len()) } != 0 {
        return false;
    }
    let new_size = (size + pair_len) as u16;
    // SAFETY: the buffer holds at least the 4-byte header (packet_size checked it).
    unsafe {
        let buf = (*out).buf.cast::<u8>();
        *buf.add(1) = (new_size & 0xff) as u8;
        *buf.add(2) = (new_size >> 8) as u8;
    }
    true
}

/// The bytes of the peer's packet buffer.
fn packet(peer: &corerouter_peer) -> Option<&[u8]> {
    let out = peer.out;
    if out.is_null() {
        return None;
    }
    // SAFETY: a live uwsgi_buffer: `buf` holds `pos` initialised bytes.
    unsafe {
        let out = &*out;
        (!out.buf.is_null()).then(|| std::slice::from_raw_parts(out.buf.cast::<u8>(), out.pos))
    }
}

/// The size field of a complete packet (checked against the buffer).
fn packet_size(peer: &corerouter_peer) -> Option<usize> {
    let bytes = packet(peer)?;
    let size = usize::from(u16::from_le_bytes([*bytes.get(1)?, *bytes.get(2)?]));
    (4 + size <= bytes.len()).then_some(size)
}

/// The value of a uwsgi variable of the peer's packet.
fn packet_var<'p>(peer: &'p corerouter_peer, name: &[u8]) -> Option<&'p [u8]> {
    let bytes = packet(peer)?;
    let end = if peer.retries > 0 { 4 + packet_size(peer)? } else { bytes.len() };
    let mut vars = bytes.get(4..end)?;
    while vars.len() >= 2 {
        let klen = usize::from(u16::from_le_bytes([vars[0], vars[1]]));
        let key = vars.get(2..2 + klen)?;
        let rest = vars.get(2 + klen..)?;
        let vlen = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
        let value = rest.get(2..2 + vlen)?;
        if key == name {
            return Some(value);
        }
        vars = &rest[2 + vlen..];
    }
    None
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The client's read hook (plain HTTP). The stock hook runs first; only when it gives up on
/// the session does the recovery look at why.
unsafe extern "C" fn read_wrapper(main_peer: *mut corerouter_peer) -> isize {
    guard("http router read", -1, || {
        let Some(installed) = INSTALLED.get() else { return -1 };
        // SAFETY: the router's own read hook, called as the router would.
        let ret = unsafe { (installed.hr_read)(main_peer) };
        if ret >= 0 || errno() == libc::EINPROGRESS {
            return ret;
        }
        // SAFETY: the hook is called with the main peer of a live http session (the session
        // struct starts with `corerouter_session`), from the router's single-threaded loop.
        unsafe { recover(installed, main_peer) }
    })
}

/// # Safety
/// `main_peer` is the main peer of a live http session, in the router's loop.
unsafe fn recover(installed: &Installed, main_peer: *mut corerouter_peer) -> isize {
    // SAFETY: guaranteed by the caller: the session and its corerouter outlive this call.
    let (cs, ucr) = unsafe {
        let cs = (*main_peer).session;
        (cs, (*cs).corerouter)
    };
    let hr = cs.cast::<http_session>();
    let answer_now = |failure: &Failure<'_>| {
        // SAFETY: `cs` is the live plain-HTTP session whose client hook this is.
        unsafe { answer(installed, cs, failure) }
    };
    loop {
        // SAFETY: the session's first backend peer, NULL or live; nothing else touches it while
        // the hook runs (the router's loop is single-threaded). `hr` is the session
        // (http_session starts with corerouter_session), `in_` the client's live input buffer.
        let (peer, rnrn, headers_size, input) =
            unsafe { ((*cs).peers.as_mut(), (*hr).rnrn, (*hr).headers_size, &*(*main_peer).in_) };
        match peer {
            Some(peer) if peer.failed != 0 && peer.fd == -1 && peer.instance_address_len > 0 => {
                if peer.instance_address.cast_const() == installed.error_backend.as_ptr() {
                    let status = packet_var(peer, installed.front.status_var.as_bytes())
                        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                        .unwrap_or(502);
                    crate::log::line(&format!(
                        "error backend {} unreachable ({}); answering {status} from the router",
                        installed.front.error_backend,
                        std::io::Error::from_raw_os_error(peer.soopt)
                    ));
                    return answer_now(&Failure::ErrorBackendDown { status });
                }
                // The connect() to a unix socket failed at once (`cr_connect`): stock uWSGI
                // closes the session and keeps routing to the dead node.
                // SAFETY: `ucr` is the session's router, `peer.un` a node of its table or NULL.
                unsafe { mark_failed(ucr, peer) };
                peer.failed = 0;
                peer.soopt = 0;
                peer.instance_address = std::ptr::null_mut();
                peer.instance_address_len = 0;
                peer.retries = peer.retries.saturating_add(1);
                // SAFETY: a plain field of the session's router.
                let max_retries = unsafe { (*ucr).max_retries };
                if i32::from(peer.retries) > max_retries
                    && to_error_backend(installed, peer, (installed.front.no_backend)(Miss::BackendFailed)) != 0
                {
                    return answer_now(&Failure::ErrorBackendDown { status: 502 });
                }
                // SAFETY: the session's retry hook (`hr_retry`), called as the router's own
                // retry calls it: it maps the peer when it has no address, then connects it.
                let connecting = unsafe { (*cs).retry.is_some_and(|retry| retry(peer) == 0) };
                if connecting {
                    return 1;
                }
            }
            None if rnrn != 4 && buffer_full(input) => return answer_now(&Failure::HeadersTooLarge),
            Some(peer) if rnrn == 4 && peer.fd == -1 && peer.failed == 0 => {
                if peer.retries > 0 {
                    return answer_now(&Failure::ErrorBackendDown { status: 502 });
                }
                // SAFETY: `headers_size` is the offset of the block's last byte, inside the
                // buffer's `pos` initialised bytes (http_parse found it there).
                let block =
                    unsafe { std::slice::from_raw_parts(input.buf.cast::<u8>(), (headers_size + 1).min(input.pos)) };
                return answer_now(&Failure::Unparsable { header_block: block });
            }
            _ => return -1,
        }
    }
}

/// The client buffer reached its limit (64 KB) and cannot take another page.
fn buffer_full(input: &uwsgi_buffer) -> bool {
    // SAFETY: a plain read of a field set at startup.
    let page = usize::try_from(unsafe { uwsgi_sys::uwsgi.page_size }).unwrap_or(4096);
    input.limit > 0 && input.len >= input.limit && input.len - input.pos < page
}

/// Marks the peer's subscription node dead, as the router does for asynchronous failures
/// (`corerouter_close_peer`), and drops the peer's reference to it.
///
/// # Safety
/// `ucr` is the peer's router; `peer.un` is NULL or a node of its subscription table.
unsafe fn mark_failed(ucr: *mut uwsgi_corerouter, peer: &mut corerouter_peer) {
    let un = peer.un;
    peer.un = std::ptr::null_mut();
    // SAFETY: guaranteed by the caller; the node stays valid until removed below.
    unsafe {
        if un.is_null() || (*un).len == 0 {
            return;
        }
        let name = std::slice::from_raw_parts((*un).name.as_ptr().cast::<u8>(), usize::from((*un).len).min(255));
        if (*un).death_mark == 0 {
            crate::log::line(&format!(
                "{} => marking {} as failed: {}",
                String::from_utf8_lossy(key_of(peer)),
                String::from_utf8_lossy(name),
                std::io::Error::from_raw_os_error(peer.soopt)
            ));
        }
        (*un).reference = (*un).reference.saturating_sub(1);
        (*un).death_mark = 1;
        (*un).failcnt += 1;
        if (*un).reference == 0 && !(*ucr).subscriptions.is_null() {
            uwsgi_sys::uwsgi_remove_subscribe_node((*ucr).subscriptions, un);
        }
    }
}

/// A backend's read hook until its first byte, or for good when traffic is counted (see
/// [`watch_first_byte`]).
unsafe extern "C" fn instance_read_wrapper(peer: *mut corerouter_peer) -> isize {
    guard("http router backend read", -1, || {
        let Some(installed) = INSTALLED.get() else { return -1 };
        // SAFETY: the router's own backend hook, called as the router would.
        let ret = unsafe { (installed.hr_instance_read)(peer) };
        // SAFETY: the hook is called with a live backend peer, from the router's loop.
        let peer = unsafe { &mut *peer };
        report_traffic(installed, peer, false);
        if ret > 0 {
            peer.sid = 0;
            if installed.front.traffic.is_none() {
                peer.last_hook_read = Some(installed.hr_instance_read);
            }
            return ret;
        }
        if peer.sid != SID_NOT_ANSWERED || (ret < 0 && errno() == libc::EINPROGRESS) {
            return ret;
        }
        peer.sid = 0;
        // SAFETY: the peer's session is a live plain-HTTP session (checked when wrapped).
        unsafe { answer(installed, peer.session, &Failure::BackendClosed) }
    })
}

/// The client's write hook for the router's own answer: the router's, then a half-close and
/// [`linger_read`] once the last byte is out.
unsafe extern "C" fn linger_write(main_peer: *mut corerouter_peer) -> isize {
    guard("http router answer", -1, || {
        let Some(installed) = INSTALLED.get() else { return -1 };
        // SAFETY: the router's own write hook on its main peer; it returns 0 once the answer
        // is written (`wait_full_write`).
        let ret = unsafe { (installed.hr_write)(main_peer) };
        if ret != 0 {
            return ret;
        }
        // SAFETY: the main peer and its socket are live until this hook returns 0; out_pos
        // counts what is dropped from now on (the answer is written, its buffer unused).
        unsafe {
            libc::shutdown((*main_peer).fd, libc::SHUT_WR);
            (*main_peer).out_pos = 0;
            if (installed.set_hooks)(main_peer, Some(linger_read), None) != 0 {
                return -1;
            }
        }
        1
    })
}

/// Reads and drops what the client still sends, until it closes, [`LINGER_MAX`] bytes, or the
/// router's timeout for the connection.
unsafe extern "C" fn linger_read(main_peer: *mut corerouter_peer) -> isize {
    guard("http router linger", -1, || {
        let mut buf = [0u8; 16 * 1024];
        // SAFETY: reading into a local buffer from the main peer's live socket.
        let n = unsafe { libc::read((*main_peer).fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return if errno() == libc::EAGAIN { 1 } else { 0 };
        }
        // SAFETY: as above; only this hook uses out_pos now.
        let dropped = unsafe {
            (*main_peer).out_pos += n as usize;
            (*main_peer).out_pos
        };
        if n == 0 || dropped > LINGER_MAX {
            0
        } else {
            1
        }
    })
}

/// Writes the plugin's response for `failure` to the client, then the session closes: the
/// response goes through the router's own write hook, `wait_full_write` ends the session after
/// the last byte (as the router's 413 does), and [`linger_write`] closes it gracefully.
///
/// # Safety
/// `cs` is a live plain-HTTP session in the router's loop.
unsafe fn answer(installed: &Installed, cs: *mut corerouter_session, failure: &Failure<'_>) -> isize {
    let mut response = (installed.front.answer)(failure);
    // SAFETY: guaranteed by the caller. The buffer is the main peer's own (`out_need_free`),
    // freed with it; the backend peers are made inert (no hooks, no retry) so their timeouts
    // only delete them.
    unsafe {
        let buffer = uwsgi_sys::uwsgi_buffer_new(0);
        if uwsgi_sys::uwsgi_buffer_append(buffer, response.as_mut_ptr().cast(), response.len()) != 0 {
            uwsgi_sys::uwsgi_buffer_destroy(buffer);
            return -1;
        }
        let main_peer = (*cs).main_peer;
        (*main_peer).out = buffer;
        (*main_peer).out_pos = 0;
        (*main_peer).out_need_free = 1;
        (*cs).can_keepalive = 0;
        (*cs).wait_full_write = 1;
        let mut peer = (*cs).peers;
        while !peer.is_null() {
            (*peer).failed = 0;
            (*peer).can_retry = 0;
            if (installed.set_hooks)(peer, None, None) != 0 {
                return -1;
            }
            peer = (*peer).next;
        }
        if (installed.set_hooks)(main_peer, None, Some(linger_write)) != 0 {
            return -1;
        }
    }
    1
}
