//! The HTTP-01 responder: a unix socket speaking the uwsgi protocol, which is what the stock
//! HTTP router speaks to every backend. The router's front door sends it the requests for
//! `http://<name>/.well-known/acme-challenge/<token>` of the names with automatic TLS, as it
//! would send them to a customer's app; the responder answers the key authorization of a
//! pending challenge of that name, and 404 to anything else.
//!
//! The socket lives in a directory of root's that only the router's group may enter (0710),
//! and is 0660 root:<group>: the router's unprivileged http processes connect to it, nothing
//! else on the node does. What it tells is public anyway (the CA fetches it over plain HTTP).

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Pending challenges: token -> (name, key authorization).
#[derive(Clone, Default)]
pub struct Challenges(Arc<Mutex<HashMap<String, (String, String)>>>);

impl Challenges {
    pub fn add(&self, token: &str, name: &str, key_authorization: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(token.into(), (name.into(), key_authorization.into()));
    }

    pub fn remove(&self, token: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(token);
    }

    /// The key authorization for `token` when the request's Host is the challenge's name.
    pub fn answer(&self, host: &str, token: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let (name, key_auth) = map.get(token)?;
        (normalise_host(host) == *name).then(|| key_auth.clone())
    }
}

/// `Example.ORG.:80` -> `example.org`: the Host as the router's front door matches it
/// (`domain_names::host_key`, the one request-side rule; blanks around it trimmed).
pub fn normalise_host(host: &str) -> String {
    String::from_utf8_lossy(&domain_names::host_key(host.trim().as_bytes())).into_owned()
}

/// The request variables of one uwsgi packet (modifier1 0): the 4-byte header (modifier1,
/// little-endian size, modifier2) is already read; `vars` is the block of `size` bytes.
pub fn parse_vars(vars: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut rest = vars;
    let take = |rest: &mut &[u8]| -> Result<String, String> {
        if rest.len() < 2 {
            return Err("truncated uwsgi variable length".into());
        }
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < 2 + len {
            return Err("uwsgi variable longer than its packet".into());
        }
        let s = String::from_utf8_lossy(&rest[2..2 + len]).into_owned();
        *rest = &rest[2 + len..];
        Ok(s)
    };
    while !rest.is_empty() {
        let key = take(&mut rest)?;
        let value = take(&mut rest)?;
        out.insert(key, value);
    }
    Ok(out)
}

/// The raw HTTP answer for one request's variables.
pub fn respond(challenges: &Challenges, vars: &HashMap<String, String>) -> Vec<u8> {
    let method = vars.get("REQUEST_METHOD").map(String::as_str).unwrap_or("");
    let path = vars.get("PATH_INFO").map(String::as_str).unwrap_or("");
    let host = vars.get("HTTP_HOST").map(String::as_str).unwrap_or("");
    let token = path.strip_prefix(CHALLENGE_PREFIX).unwrap_or("");
    let valid_token = !token.is_empty() && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let (status, body) = if method != "GET" && method != "HEAD" {
        ("405 Method Not Allowed", "only GET and HEAD are answered here\n".to_string())
    } else {
        match valid_token.then(|| challenges.answer(host, token)).flatten() {
            Some(key_auth) => ("200 OK", key_auth),
            None => ("404 Not Found", "no pending ACME challenge for this name and token\n".to_string()),
        }
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn serve_one(mut conn: UnixStream, challenges: Challenges) -> Result<(), String> {
    let mut header = [0u8; 4];
    conn.read_exact(&mut header).await.map_err(|e| format!("reading the uwsgi header: {e}"))?;
    if header[0] != 0 {
        return Err(format!("uwsgi modifier1 {} is not a request (0)", header[0]));
    }
    let size = u16::from_le_bytes([header[1], header[2]]) as usize;
    let mut vars = vec![0u8; size];
    conn.read_exact(&mut vars).await.map_err(|e| format!("reading the uwsgi variables: {e}"))?;
    let vars = parse_vars(&vars)?;
    conn.write_all(&respond(&challenges, &vars)).await.map_err(|e| format!("answering: {e}"))?;
    conn.shutdown().await.map_err(|e| format!("closing: {e}"))
}

/// Binds the socket: its directory is created 0710 root:`gid` (or tightened to that), a stale
/// socket from an earlier run is replaced, the socket is 0660 root:`gid`.
pub fn bind(path: &Path, gid: Option<u32>) -> Result<UnixListener, String> {
    let dir = path.parent().ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    if let Some(above) = dir.parent() {
        std::fs::create_dir_all(above).map_err(|e| format!("cannot create {}: {e}", above.display()))?;
    }
    match std::fs::DirBuilder::new().mode(0o710).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let restrict = |p: &Path, mode: u32| -> Result<(), String> {
        std::os::unix::fs::chown(p, Some(0).filter(|_| nix::unistd::geteuid().is_root()), gid)
            .map_err(|e| format!("cannot chown {}: {e}", p.display()))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", p.display()))
    };
    restrict(dir, 0o710)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale {}: {e}", path.display()))?
        }
        Ok(_) => return Err(format!("{} exists and is not a socket: not replacing it", path.display())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    restrict(path, 0o660)?;
    Ok(listener)
}

/// Serves requests until the process ends; `log` hears of broken requests.
pub async fn serve(listener: UnixListener, challenges: Challenges, socket: PathBuf, log: fn(&str)) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                let challenges = challenges.clone();
                let socket = socket.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), serve_one(conn, challenges)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => log(&format!("challenge socket {}: {e}", socket.display())),
                        Err(_) => log(&format!("challenge socket {}: a request took over 10 s", socket.display())),
                    }
                });
            }
            Err(e) => {
                log(&format!("challenge socket {}: accept: {e}", socket.display()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in vars {
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    fn ask(c: &Challenges, method: &str, host: &str, path: &str) -> String {
        let vars =
            parse_vars(&packet(&[("REQUEST_METHOD", method), ("HTTP_HOST", host), ("PATH_INFO", path)])).unwrap();
        String::from_utf8(respond(c, &vars)).unwrap()
    }

    #[test]
    fn only_the_pending_token_of_the_right_name_is_answered() {
        let c = Challenges::default();
        c.add("tok-EN_1", "shop.example.org", "tok-EN_1.thumb");
        let ok = ask(&c, "GET", "Shop.Example.ORG.:80", "/.well-known/acme-challenge/tok-EN_1");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\ntok-EN_1.thumb"), "{ok}");
        let head = ask(&c, "HEAD", "shop.example.org", "/.well-known/acme-challenge/tok-EN_1");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        for (method, host, path) in [
            ("GET", "other.example.org", "/.well-known/acme-challenge/tok-EN_1"),
            ("GET", "shop.example.org", "/.well-known/acme-challenge/other"),
            ("GET", "shop.example.org", "/.well-known/acme-challenge/"),
            ("GET", "shop.example.org", "/.well-known/acme-challenge/tok-EN_1/.."),
            ("GET", "shop.example.org", "/index.html"),
        ] {
            assert!(ask(&c, method, host, path).starts_with("HTTP/1.1 404 "), "{method} {host} {path}");
        }
        assert!(
            ask(&c, "POST", "shop.example.org", "/.well-known/acme-challenge/tok-EN_1").starts_with("HTTP/1.1 405 ")
        );
        c.remove("tok-EN_1");
        assert!(ask(&c, "GET", "shop.example.org", "/.well-known/acme-challenge/tok-EN_1").starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn broken_packets_are_errors() {
        assert!(parse_vars(&[5]).is_err());
        assert!(parse_vars(&[5, 0, b'a']).is_err());
        let mut p = packet(&[("A", "b")]);
        p.truncate(p.len() - 1);
        assert!(parse_vars(&p).is_err());
        assert_eq!(parse_vars(&[]).unwrap().len(), 0);
    }

    #[test]
    fn hosts_are_normalised_as_the_front_door_does() {
        assert_eq!(normalise_host("EXAMPLE.org"), "example.org");
        assert_eq!(normalise_host("example.org:8080"), "example.org");
        assert_eq!(normalise_host("example.org."), "example.org");
        assert_eq!(normalise_host(" example.org "), "example.org");
    }
}
