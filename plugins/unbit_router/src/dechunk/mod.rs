//! The de-chunking proxy: chunked request bodies for apps that read `wsgi.input`.
//!
//! Stock uWSGI 2.0.21 never de-chunks a request body in a vassal. With `http-chunked-input`
//! the HTTP router pipes a `Transfer-Encoding: chunked` body to the backend as the client sent
//! it, and the app sees no `CONTENT_LENGTH` and reads 0 bytes from `wsgi.input` (only
//! `uwsgi.chunked_read()` gets the body). So the router's mapper sends such a request here
//! instead of to the app, with one more variable naming the node it chose:
//!
//! ```text
//! router --uwsgi packet (+ UNBIT_BACKEND=<node>, UNBIT_BACKEND_DOMAIN, UNBIT_BACKEND_UID)
//!        + raw chunked body--> dechunk proxy
//! dechunk proxy --packet - UNBIT_BACKEND* - HTTP_TRANSFER_ENCODING + CONTENT_LENGTH + body--> node
//! node --response bytes, unchanged, until EOF--> dechunk proxy --> router --> client
//! ```
//!
//! The router counts such a request as a hit of its node but never sees the bytes exchanged
//! with the node, so the proxy adds them to the node's per-domain counters
//! ([`crate::traffic::Meter`]): the packet and body it writes to the node, and every byte it
//! reads from it, in the pair the router's pool key and recorded uid name.
//!
//! The proxy reads the whole body before it connects to the node: that is what gives the app
//! an exact `CONTENT_LENGTH`. The body is decoded strictly ([`chunked`]), bounded by
//! [`Config::max_body`], kept in memory up to [`Config::memory_threshold`] and spooled to an
//! unlinked temp file beyond. `Expect: 100-continue` is answered here, where the body is read.
//!
//! A malformed body is answered `400`, and so is a request with both Content-Length and
//! Transfer-Encoding or a Transfer-Encoding other than `chunked` alone (`501` when chunked
//! comes after a coding the app could not undo); a too large body `413` (as soon as a chunk
//! size says so, before its data is read), a body that stops coming `408`; a node that cannot
//! be reached or says nothing `502`, or `504` on a timeout; with no free slot `503`; a router
//! that names no node `500`. Each answer has a short plain-text body and closes the
//! connection; the proxy then reads and drops what the router still sends for a few seconds,
//! as without that the router may drop the session before the client has the answer (seen
//! with curl: the 413 lost one time in three). Once the node has answered, its bytes go to the
//! router as they are, until the node closes.
//!
//! Design: one thread per connection, blocking sockets with a timeout on every read, write and
//! connect. A request is a strict sequence (read all, connect, write all, relay), which reads
//! plainly as blocking code; chunked uploads are rare, so a thread each is cheap, and
//! [`Config::max_connections`] bounds threads, memory (times the memory threshold) and disk
//! (times the maximum body). A slow client holds only its own thread. tokio would add a
//! runtime to the router's gateway process for no gain at this concurrency, and spooling to
//! disk is blocking I/O anyway. The chunk decoder is our own small state machine: `httparse`
//! only parses the size line, and more leniently than this proxy wants (an empty size is read
//! as 0, any byte passes in an extension).
//!
//! Whoever can connect to the proxy's socket can make it connect to any socket it can reach
//! (the variable names the node): bind it where only the router's processes can connect.

pub mod backend;
pub mod chunked;
pub mod packet;
mod proxy;

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use chunked::{ChunkError, Dechunker};
pub use packet::Packet;

/// The variable in which the router names the node the request is for (`/path/to.sock`,
/// `@abstract`, `ip:port`), taken out before the request goes on.
pub const BACKEND_VAR: &str = "UNBIT_BACKEND";
/// The key of the node's pool (the domain as announced), for a subscription node: the pair
/// its bytes are counted in, with [`UID_VAR`]. Taken out before the request goes on.
pub const DOMAIN_VAR: &str = "UNBIT_BACKEND_DOMAIN";
/// The uid the router recorded with the node's announce (decimal; 0 unless it took
/// credentials). Taken out before the request goes on.
pub const UID_VAR: &str = "UNBIT_BACKEND_UID";

/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct Config {
    /// Largest de-chunked body accepted; larger ones are answered 413.
    pub max_body: u64,
    /// Bodies up to this size stay in memory, larger ones go to a temp file.
    pub memory_threshold: usize,
    /// Where bodies are spooled (`None`: the process's temp dir, `TMPDIR` or `/tmp`).
    pub spool_dir: Option<PathBuf>,
    /// Limit on every read, write and connect, towards the router and the node alike: an idle
    /// limit, not a deadline for the whole request.
    pub timeout: Duration,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
    /// Where failures are logged (`uwsgi::log::line` in a gateway).
    pub log: fn(&str),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_body: 100 * 1024 * 1024,
            memory_threshold: 256 * 1024,
            spool_dir: None,
            // The router's own default `http-timeout`.
            timeout: Duration::from_secs(60),
            max_connections: 256,
            log: |line| eprintln!("{line}"),
        }
    }
}

/// Serves the router's connections on `listener`, each in its own thread, forever. Run it as
/// the body of a gateway (`uwsgi::gateway::register`).
pub fn serve(listener: UnixListener, config: Config) -> ! {
    let config = Arc::new(config);
    let active = Arc::new(AtomicUsize::new(0));
    if let Err(e) = listener.set_nonblocking(false) {
        (config.log)(&format!("dechunk: cannot make the listening socket blocking: {e}"));
    }
    loop {
        match listener.accept() {
            Ok((stream, _)) => dispatch(stream, &config, &active),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                (config.log)(&format!("dechunk: accept failed: {e}"));
                std::thread::sleep(ACCEPT_PAUSE);
            }
        }
    }
}

fn dispatch(stream: UnixStream, config: &Arc<Config>, active: &Arc<AtomicUsize>) {
    let Some(slot) = Slot::take(active, config.max_connections) else {
        (config.log)(&format!("dechunk: {} connections already, answered 503", config.max_connections));
        // The answer is a few bytes into a fresh socket's empty buffer: it cannot block.
        let answer = proxy::response("HTTP/1.1", proxy::Status::ServiceUnavailable, None);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = std::io::Write::write_all(&mut &stream, &answer);
        return;
    };
    let thread_config = Arc::clone(config);
    let spawned = std::thread::Builder::new().name("dechunk".into()).spawn(move || {
        let _slot = slot;
        proxy::handle(stream, &thread_config);
    });
    if let Err(e) = spawned {
        (config.log)(&format!("dechunk: cannot start a thread for a connection: {e}"));
    }
}

/// One of `max_connections`, given back when the connection's thread ends (panics included).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        let taken = active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1));
        taken.ok().map(|_| Slot(Arc::clone(active)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
