//! The relay socket. Root binds it in a root-owned directory (the routers' subscription
//! dir), mode 0666 so any container can connect; what a peer may do is decided by its uid as
//! the kernel reports it, never by what it writes.

use super::{log, Relay};
use crate::protocol::{self, Request, MAX_LINE};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Lines a connection may send; a sender has no reason to send more than a few.
const MAX_LINES: usize = 16;
/// Connections allowed to stay open without sending anything (console watchers aside).
const IDLE: Duration = Duration::from_secs(10);
/// Connections one uid may hold open at once (its watchers among them): a container cannot
/// use up the relay's descriptors. Root (the node Emperor) is not counted.
pub const MAX_CONNECTIONS: usize = 32;

/// Counts a peer's open connection while it lives.
pub(super) struct Open {
    relay: Arc<Relay>,
    uid: u32,
}

impl Open {
    pub(super) fn new(relay: &Arc<Relay>, uid: u32) -> Option<Open> {
        let mut open = relay.connections.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(uid).or_default();
        if *n >= MAX_CONNECTIONS {
            return None;
        }
        *n += 1;
        Some(Open { relay: relay.clone(), uid })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self.relay.connections.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

pub fn bind(path: &Path) -> Result<UnixListener, String> {
    // Only a socket is replaced (a stale one from the last run): anything else there is not ours.
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        Ok(_) => return Err(format!("{}: exists and is not a socket; not replacing it", path.display())),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
}

pub async fn serve(relay: Arc<Relay>, listener: UnixListener) -> Result<(), String> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let relay = relay.clone();
                tokio::spawn(async move { connection(relay, stream).await });
            }
            Err(e) => {
                log(&format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(relay: Arc<Relay>, mut stream: UnixStream) {
    let Ok(cred) = stream.peer_cred() else { return };
    let peer = cred.uid();
    // A container uid must be one of this node's containers; root is the node itself.
    if peer != 0 {
        if let Err(e) = relay.spec(peer) {
            log(&format!("refused a connection from uid {peer}: not a container of this node ({e})"));
            return;
        }
    }
    let _open = match peer {
        0 => None,
        uid => match Open::new(&relay, uid) {
            Some(o) => Some(o),
            None => return log(&format!("container {uid}: over {MAX_CONNECTIONS} open connections; refused one")),
        },
    };
    let mut buf = Vec::new();
    let mut lines = 0;
    loop {
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            lines += 1;
            match Request::parse(&line[..line.len() - 1]) {
                Ok(r) if r.watch && peer != 0 => return watch(relay, peer, stream).await,
                Ok(r) if r.watch => return log("refused a console watch from root: watchers are containers"),
                Ok(r) => {
                    let uid = match (peer, r.uid) {
                        (0, Some(uid)) => uid,
                        (0, None) => {
                            log("refused an alarm from root without a container uid");
                            continue;
                        }
                        (p, None) => p,
                        (p, Some(u)) if u == p => p,
                        (p, Some(u)) => {
                            log(&format!("refused an alarm from container {p} naming container {u}"));
                            return;
                        }
                    };
                    let kind = r.kind.unwrap_or_default();
                    let msg = protocol::clean_message(r.msg.unwrap_or_default().as_bytes());
                    relay.raise(uid, &kind, &msg).await;
                }
                Err(e) => {
                    log(&format!("uid {peer}: {e}"));
                    return;
                }
            }
            if lines >= MAX_LINES {
                return;
            }
        }
        if buf.len() > MAX_LINE {
            return log(&format!("uid {peer}: a line over {MAX_LINE} bytes; connection closed"));
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(IDLE, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}

/// A container's console listener: the container's alarms are written to it as they come.
/// The relay only ever writes to a connection the container opened to it, with a deadline;
/// a listener that stops reading is dropped.
async fn watch(relay: Arc<Relay>, uid: u32, mut stream: UnixStream) {
    let (tx, mut rx) = mpsc::channel::<String>(16);
    relay.watchers.lock().unwrap_or_else(|e| e.into_inner()).entry(uid).or_default().push(tx);
    log(&format!("container {uid}: console listener connected"));
    let (mut read, mut write) = stream.split();
    let mut sink = [0u8; 64];
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { return };
                match tokio::time::timeout(Duration::from_secs(5), write.write_all(line.as_bytes())).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            // Anything the listener sends, or its end, closes the watch.
            _ = read.read(&mut sink) => return,
        }
    }
}
