//! The error backend: a gateway process of the router instance that answers, in the uwsgi
//! protocol, the requests the router's mapper could not place.
//!
//! The router sends it the request's packet with [`STATUS_VAR`] added (`400`, `404`, `502`)
//! and relays its answer as it relays an app's, so keep-alive goes on after an error like
//! after any answer. The backend refines `404`: a name in the node's domains file is a site
//! whose application is not running, `503`. It drains the request's body before closing, so
//! the router's session stays usable.
//!
//! The socket is bound by the master, before the router processes fork, in a directory only
//! root writes to and only the router's group may enter; the socket belongs to the router's
//! user. A respawned gateway goes on with the same listening socket: connections made meanwhile
//! wait in its backlog.

use crate::reload::Reloaded;
use crate::statuses::{self, Connection, Page};
use domain_table::DomainTable;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The uwsgi variable in which the router's mapper names the status.
pub const STATUS_VAR: &str = "UNBIT_STATUS";

/// Threads answering at once. An error answer takes a few microseconds; only a client sending
/// a body slowly holds one longer (at most [`IO_TIMEOUT`] per read).
const WORKERS: usize = 16;
/// Limit on every read and write towards the router.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A declared body up to this size is read to its end, so the connection can be kept alive.
const DRAIN_MAX: u64 = 1024 * 1024;
/// A larger or chunked body is read (and dropped) this long after the answer, then the
/// connection closes: closing at once would make the router's next write fail before it has
/// relayed the answer.
const LINGER: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Binds a socket of the router's own backends at `path` (the error backend's, the de-chunking
/// proxy's), reachable by the router processes (`uid`, `gid`: `http-uid`/`http-gid`, 0 when
/// they stay root) and nobody else. The directory is
/// created `root:gid 0710` when missing; an existing one must be root's, with no write access
/// for group or others and no access at all for others.
pub fn bind(path: &Path, uid: u32, gid: u32) -> Result<UnixListener, String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).ok_or_else(|| {
        format!("the router's socket {}: must be an absolute path in a private directory", path.display())
    })?;
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .mode(0o710)
            .create(dir)
            .map_err(|e| format!("cannot create the directory of {}: {e}", path.display()))?;
        std::os::unix::fs::chown(dir, Some(0), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mode = md.permissions().mode() & 0o7777;
    if !md.is_dir() || md.uid() != 0 || mode & 0o022 != 0 || mode & 0o007 != 0 {
        return Err(format!(
            "the directory {} of the router's socket {} must be a directory of root's that only root writes to and \
             others cannot enter (it is {}, uid {}, mode {mode:o}): whoever can replace the socket gets the \
             router's requests",
            dir.display(),
            path.display(),
            if md.is_dir() { "a directory" } else { "not a directory" },
            md.uid()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(old) if std::os::unix::fs::FileTypeExt::is_socket(&old.file_type()) => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the old socket {}: {e}", path.display()))?
        }
        Ok(_) => return Err(format!("{} exists and is not a socket; remove it", path.display())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::os::unix::fs::chown(path, Some(uid), Some(gid)))
        .map_err(|e| format!("cannot give {} to the router's user: {e}", path.display()))?;
    Ok(listener)
}

/// What the backend answers with.
pub struct Backend {
    pub not_found: Page,
    pub domains: KnownDomains,
}

impl Backend {
    /// The status to answer for the router's status and the request's Host.
    pub fn status(&self, asked: Option<&[u8]>, host: Option<&[u8]>) -> u16 {
        let asked = asked.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u16>().ok()).unwrap_or(404);
        match (asked, host) {
            (404, Some(host)) if self.domains.knows(&domain_names::host_key(host)) => 503,
            (status, _) => status,
        }
    }

    fn page(&self, status: u16) -> Page {
        if status == 404 {
            self.not_found.clone()
        } else {
            statuses::default_page(status)
        }
    }
}

/// Serves the router's connections forever, [`WORKERS`] at a time: the body of the gateway.
pub fn serve(listener: Arc<UnixListener>, backend: Arc<Backend>) -> Result<(), String> {
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let (listener, backend) = (Arc::clone(&listener), Arc::clone(&backend));
        let worker = std::thread::Builder::new()
            .name(format!("errors-{n}"))
            .spawn(move || accept_loop(&listener, &backend))
            .map_err(|e| format!("cannot start error backend thread {n}: {e}"))?;
        workers.push(worker);
    }
    for worker in workers {
        let _ = worker.join();
    }
    Err("every error backend thread ended".into())
}

fn accept_loop(listener: &UnixListener, backend: &Backend) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let outcome = uwsgi::guard("error backend request", Ok(()), || answer(stream, backend));
                if let Err(e) = outcome {
                    // The router went away or sent no packet: nothing to answer.
                    if e.kind() != io::ErrorKind::UnexpectedEof {
                        uwsgi::log!("error backend: {e}");
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                uwsgi::log!("error backend: accept failed: {e}");
                std::thread::sleep(ACCEPT_PAUSE);
            }
        }
    }
}

/// One request: read the packet, answer, drain the body, close.
fn answer(mut stream: UnixStream, backend: &Backend) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let packet = crate::dechunk::Packet::read_from(&mut stream)?;
    let status = backend.status(packet.get(STATUS_VAR), packet.get("HTTP_HOST"));
    let head = packet.get("REQUEST_METHOD") == Some(b"HEAD");
    let declared = packet.get("CONTENT_LENGTH").and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let chunked = packet.get("HTTP_TRANSFER_ENCODING").is_some();
    let drain = match declared {
        Some(len) if !chunked && len <= DRAIN_MAX => Some(len),
        None if !chunked => Some(0),
        _ => None,
    };
    let connection = if drain.is_some() { Connection::Default } else { Connection::Close };
    stream.write_all(&statuses::response(status, &backend.page(status), head, connection))?;
    match drain {
        Some(len) => {
            io::copy(&mut (&mut stream).take(len), &mut io::sink())?;
        }
        None => linger(&mut stream),
    }
    Ok(())
}

/// Reads and drops whatever still comes, for at most [`LINGER`].
fn linger(stream: &mut UnixStream) {
    let until = Instant::now() + LINGER;
    let mut buf = [0u8; 16 * 1024];
    while let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
        if stream.set_read_timeout(Some(left)).is_err() || !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
            return;
        }
    }
}

/// The node's domains file, read again when it changes (the node sync replaces it by rename):
/// a name in it with no live backend is a site that is down, not an unknown one.
pub struct KnownDomains(Mutex<Reloaded<Arc<DomainTable>>>);

impl KnownDomains {
    /// `log`: where a file that does not load is reported (`uwsgi::log::line` in the gateway).
    pub fn new(path: PathBuf, log: fn(&str)) -> KnownDomains {
        let parse = |b: &[u8]| DomainTable::from_json(b).map(|loaded| Arc::new(loaded.table));
        KnownDomains(Mutex::new(Reloaded::new(path, "error backend: domains file", parse, log)))
    }

    /// Whether `key` (a normalised Host) is served on this node: the name itself or a wildcard
    /// above it, looked up as the router and the validator do.
    pub fn knows(&self, key: &[u8]) -> bool {
        let Ok(name) = std::str::from_utf8(key) else { return false };
        let table = self.0.lock().unwrap_or_else(|e| e.into_inner()).get().cloned();
        table.is_some_and(|t| t.owner_of(name).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains_file(dir: &Path, names: &[&str]) -> PathBuf {
        let rsa = openssl::rsa::Rsa::generate(1024).unwrap();
        let pem = String::from_utf8(openssl::pkey::PKey::from_rsa(rsa).unwrap().public_key_to_pem().unwrap()).unwrap();
        let list: Vec<_> = names
            .iter()
            .map(|n| serde_json::json!({"name": n, "owner_uids": [30001], "public_key_pem": pem}))
            .collect();
        let path = dir.join("domains.json");
        let tmp = dir.join("domains.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&list).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    #[test]
    fn a_known_name_without_backend_is_503_and_the_file_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = domains_file(dir.path(), &["example.test", ".wild.test"]);
        let backend =
            Backend { not_found: statuses::default_page(404), domains: KnownDomains::new(path, |l| eprintln!("{l}")) };
        assert_eq!(backend.status(Some(b"404"), Some(b"Example.Test:80")), 503);
        assert_eq!(backend.status(Some(b"404"), Some(b"a.wild.test")), 503);
        assert_eq!(backend.status(Some(b"404"), Some(b"nobody.test")), 404);
        assert_eq!(backend.status(Some(b"400"), None), 400);
        assert_eq!(backend.status(Some(b"502"), Some(b"nobody.test")), 502);
        assert_eq!(backend.status(None, None), 404);
        // The node sync replaces the file: the new table is used.
        domains_file(dir.path(), &["nobody.test"]);
        assert_eq!(backend.status(Some(b"404"), Some(b"nobody.test")), 503);
        assert_eq!(backend.status(Some(b"404"), Some(b"example.test")), 404);
    }

    #[test]
    fn the_socket_directory_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = bind(&open.join("errors.sock"), 0, 0).unwrap_err();
        assert!(err.contains("mode 755"), "{err}");
        let fresh = dir.path().join("fresh");
        let listener = bind(&fresh.join("errors.sock"), 0, 0).unwrap();
        let md = std::fs::metadata(&fresh).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o710);
        let sock = std::fs::metadata(fresh.join("errors.sock")).unwrap();
        assert_eq!(sock.permissions().mode() & 0o777, 0o600);
        drop(listener);
        // A restarted router binds again over its old socket.
        bind(&fresh.join("errors.sock"), 0, 0).unwrap();
    }
}
