//! The pin holder: lets the router's HTTP processes run without root.
//!
//! The router reaches a pinned socket through `/proc/<pid>/fd/<n>` of the process holding it.
//! The kernel lets a process open another's `/proc/<pid>/fd` only when both have the same uid
//! and gid, the holder is dumpable and holds no capability the opener lacks. The validator
//! must stay root (it reads customer homes and writes to their notify sockets), so it does not
//! hold the sockets the router uses: it passes each verified socket (`SCM_RIGHTS`) to the
//! holder, a gateway process running as the router's own user, dumpable, without capabilities,
//! which keeps it open and answers with the descriptor number. The router's name for the pin
//! (see [`crate::pins`]) is a symlink to `/proc/<holder pid>/fd/<n>`.
//!
//! The two processes talk over a unix datagram pair made by the master before it forks its
//! gateways, so both keep their end across respawns. One text datagram per message:
//!
//! | from | message | meaning |
//! |---|---|---|
//! | holder | `HELLO <pid>` | a (new) holder started: it holds nothing yet |
//! | validator | `HOLD <token>` + one descriptor | keep it |
//! | holder | `HELD <token> <fd> <pid>` | kept as `/proc/<pid>/fd/<fd>` |
//! | validator | `DROP <token>` | close it |
//! | validator | `RESET` | close everything (a new validator starts, with new names) |
//!
//! When the holder dies, its descriptors go with it; the next one says `HELLO` and the
//! validator hands it every pin again and re-points each name (an atomic `rename` of a new
//! symlink), so the router's nodes keep their names and work again.

use crate::homes::Pinned;
use crate::pins::Publish;
use jail::fdpass;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the validator waits for the holder to confirm a descriptor.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);

/// The pair of ends, made once in the master.
pub struct Channel {
    pub validator: UnixDatagram,
    pub holder: UnixDatagram,
}

impl Channel {
    pub fn new() -> Result<Channel, String> {
        let (validator, holder) = UnixDatagram::pair().map_err(|e| format!("socket pair for the pin holder: {e}"))?;
        Ok(Channel { validator, holder })
    }
}

/// The user the router's HTTP processes run as (`http-uid`/`http-gid`), which the holder
/// becomes.
#[derive(Clone, Copy, Debug)]
pub struct RouterUser {
    pub uid: u32,
    pub gid: u32,
}

impl RouterUser {
    /// A user name or a numeric uid (its primary group then is the gid).
    pub fn lookup(name: &str) -> Result<RouterUser, String> {
        let user = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(name),
        }
        .map_err(|e| format!("looking up the router user {name}: {e}"))?
        .ok_or_else(|| format!("the router user {name} does not exist"))?;
        if user.uid.is_root() {
            return Err("the router user must not be root".into());
        }
        Ok(RouterUser { uid: user.uid.as_raw(), gid: user.gid.as_raw() })
    }
}

/// The holder's process: becomes the router's user and keeps what it is given.
pub fn run_holder(end: &UnixDatagram, user: RouterUser) -> Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(user.gid.into()).map_err(|e| format!("setgid({}): {e}", user.gid))?;
    nix::unistd::setuid(user.uid.into()).map_err(|e| format!("setuid({}): {e}", user.uid))?;
    // setuid() from root clears the capability sets; the router must be able to open our
    // /proc/<pid>/fd, which needs a dumpable process.
    nix::sys::prctl::set_dumpable(true).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    let pid = std::process::id();
    send(end, format!("HELLO {pid}").as_bytes(), None)?;
    uwsgi::log!("pin holder {pid} running as uid {} gid {}", user.uid, user.gid);
    let mut held: HashMap<u64, OwnedFd> = HashMap::new();
    loop {
        let (text, fd) = match receive(end, None) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => return Err(format!("pin holder: {e}")),
        };
        let mut words = text.split(' ');
        match (words.next(), words.next().and_then(|t| t.parse::<u64>().ok()), fd) {
            (Some("HOLD"), Some(token), Some(fd)) => {
                let n = fd.as_raw_fd();
                held.insert(token, fd);
                send(end, format!("HELD {token} {n} {pid}").as_bytes(), None)?;
            }
            (Some("DROP"), Some(token), _) => {
                held.remove(&token);
            }
            (Some("RESET"), _, _) => held.clear(),
            _ => uwsgi::log!("pin holder: unexpected message {text:?}"),
        }
    }
}

/// The validator's side: gives the holder each pin and names it.
pub struct HolderLink {
    end: UnixDatagram,
    dir: PathBuf,
    generation: String,
    next: u64,
    /// Every pin given out: its token, a descriptor of our own (to hand a new holder) and its
    /// name.
    pins: HashMap<String, (u64, OwnedFd)>,
    /// Names withdrawn (unlinked) whose quarantine is not over: their token, to drop at
    /// [`Publish::forget`]. A new holder never gets them, and their names are never pointed
    /// again: a name re-created now would outlive the `DROP` and dangle to a descriptor number
    /// the holder hands to the next pin, another customer's socket.
    withdrawn: HashMap<String, u64>,
    /// Where lines for the operator go (the uWSGI log; tests run without uWSGI).
    log: fn(&str),
}

impl HolderLink {
    /// `dir` as for [`crate::pins::LinkDir::create`] (emptied), readable by the router's user.
    pub fn create(end: UnixDatagram, dir: &Path, user: RouterUser, log: fn(&str)) -> Result<HolderLink, String> {
        let names = crate::pins::LinkDir::create(dir)?;
        // root:<router gid> 0750: the router's processes follow the names, nobody else lists them.
        std::os::unix::fs::chown(dir, Some(0), Some(user.gid)).map_err(|e| format!("chown {}: {e}", dir.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
        let mut link = HolderLink {
            end,
            dir: dir.to_path_buf(),
            generation: names.generation().to_string(),
            next: 0,
            pins: HashMap::new(),
            withdrawn: HashMap::new(),
            log,
        };
        // What a previous validator had the holder keep is named nowhere any more.
        send(&link.end, b"RESET", None)?;
        link.poll();
        Ok(link)
    }

    /// Handles what the holder said meanwhile: a new holder gets every pin again. Call often.
    pub fn poll(&mut self) {
        while let Ok(Some((text, _))) = receive(&self.end, Some(Duration::ZERO)) {
            self.handle(&text);
        }
    }

    fn handle(&mut self, text: &str) {
        let Some(pid) = text.strip_prefix("HELLO ").and_then(|p| p.parse::<u32>().ok()) else {
            // A late answer to a request that already timed out.
            return;
        };
        let names: Vec<String> = self.pins.keys().cloned().collect();
        for name in names {
            if let Err(e) = self.rehold(&name) {
                (self.log)(&format!("re-pinning {name} in the new pin holder: {e}"));
            }
        }
        if !self.pins.is_empty() {
            (self.log)(&format!("pin holder {pid} started: {} pinned sockets handed to it again", self.pins.len()));
        }
    }

    fn rehold(&mut self, name: &str) -> Result<(), String> {
        let (token, fd) = self.pins.get(name).map(|(t, fd)| (*t, fd.try_clone())).ok_or("unknown name")?;
        let fd = fd.map_err(|e| e.to_string())?;
        let target = self.hold(token, &fd)?;
        point(Path::new(name), &target)
    }

    /// Sends one descriptor and waits for its `/proc` path in the holder.
    fn hold(&mut self, token: u64, fd: &OwnedFd) -> Result<String, String> {
        send(&self.end, format!("HOLD {token}").as_bytes(), Some(fd))?;
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the pin holder did not answer (is it running?)".into());
            }
            let Some((text, _)) = receive(&self.end, Some(left))? else { continue };
            let words: Vec<&str> = text.split(' ').collect();
            match words.as_slice() {
                ["HELD", t, n, pid] if t.parse() == Ok(token) => {
                    // Numbers only: the holder's words become the target of a name the router
                    // follows.
                    let (Ok(n), Ok(pid)) = (n.parse::<u32>(), pid.parse::<u32>()) else {
                        return Err(format!("the pin holder answered {text:?}"));
                    };
                    return Ok(format!("/proc/{pid}/fd/{n}"));
                }
                ["HELLO", ..] => {
                    // A holder (re)started while we asked: our request may have gone to the
                    // dead one; this new one gets everything, this pin included, below.
                    self.handle(&text);
                    send(&self.end, format!("HOLD {token}").as_bytes(), Some(fd))?;
                }
                _ => {}
            }
        }
    }
}

impl Publish for HolderLink {
    fn publish(&mut self, pinned: &Pinned) -> Result<String, String> {
        self.poll();
        let fd = pinned.fd.as_ref().ok_or("the socket is not open")?;
        let own = fd.try_clone().map_err(|e| format!("dup: {e}"))?;
        self.next += 1;
        let token = self.next;
        let target = self.hold(token, &own)?;
        let name = self.dir.join(format!("{}-{token}", self.generation));
        std::os::unix::fs::symlink(&target, &name)
            .map_err(|e| format!("creating the router's name {}: {e}", name.display()))?;
        let name = name.display().to_string();
        self.pins.insert(name.clone(), (token, own));
        Ok(name)
    }

    fn withdraw(&mut self, address: &str) -> Result<(), String> {
        crate::pins::unlink_name(address)?;
        if let Some((token, _)) = self.pins.remove(address) {
            self.withdrawn.insert(address.to_string(), token);
        }
        Ok(())
    }

    fn tick(&mut self) {
        self.poll();
    }

    fn forget(&mut self, address: &str) {
        let token = self.withdrawn.remove(address).or_else(|| self.pins.remove(address).map(|(token, _)| token));
        if let Some(token) = token {
            let _ = send(&self.end, format!("DROP {token}").as_bytes(), None);
        }
    }
}

/// Points the name at a new target atomically: the router never sees it missing.
fn point(name: &Path, target: &str) -> Result<(), String> {
    let tmp = name.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| format!("symlink {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, name).map_err(|e| format!("rename {}: {e}", name.display()))
}

fn send(end: &UnixDatagram, text: &[u8], fd: Option<&OwnedFd>) -> Result<(), String> {
    // Never blocking: a dead holder must not stall the validator; a lost message is repaired
    // by the next holder's HELLO.
    fdpass::send(end.as_fd(), text, fd.map(|f| f.as_fd())).map_err(|e| format!("sending to the pin holder: {e}"))
}

/// One message and the descriptor it carries; `None` when `timeout` passed first (`None`
/// timeout: wait for ever).
fn receive(end: &UnixDatagram, timeout: Option<Duration>) -> Result<Option<(String, Option<OwnedFd>)>, String> {
    let mut buf = [0u8; 256];
    match fdpass::receive(end.as_fd(), &mut buf, timeout) {
        Ok(Some((n, fd))) => Ok(Some((String::from_utf8_lossy(&buf[..n]).into_owned(), fd))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("receiving from the pin holder: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::Arc;

    fn pinned() -> Pinned {
        Pinned { fd: Some(std::fs::File::open("/dev/null").unwrap().into()), dev: 0, ino: 0 }
    }

    #[test]
    fn a_new_holder_never_brings_back_a_withdrawn_name() {
        let dir = tempfile::tempdir().unwrap();
        let channel = Channel::new().unwrap();
        let holder_end = channel.holder;
        let restarted = holder_end.try_clone().unwrap();
        let pid = Arc::new(AtomicU32::new(4242));
        let stop = Arc::new(AtomicBool::new(false));
        // Answers like the holder, without becoming another user.
        let fake = {
            let (pid, stop) = (pid.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some((text, fd))) = receive(&holder_end, Some(Duration::from_millis(50))) else { continue };
                    if let (Some(token), Some(fd)) = (text.strip_prefix("HOLD "), fd) {
                        let answer = format!("HELD {token} {} {}", fd.as_raw_fd(), pid.load(Ordering::Relaxed));
                        send(&holder_end, answer.as_bytes(), None).unwrap();
                    }
                }
            })
        };
        let mut link =
            HolderLink::create(channel.validator, &dir.path().join("pins"), RouterUser { uid: 1, gid: 0 }, |l| {
                eprintln!("{l}")
            })
            .unwrap();
        let kept = link.publish(&pinned()).unwrap();
        let gone = link.publish(&pinned()).unwrap();
        link.withdraw(&gone).unwrap();

        // The holder restarts while the withdrawn name is in quarantine.
        pid.store(4343, Ordering::Relaxed);
        send(&restarted, b"HELLO 4343", None).unwrap();
        link.tick();
        link.forget(&gone);
        stop.store(true, Ordering::Relaxed);
        fake.join().unwrap();

        let target = std::fs::read_link(&kept).unwrap();
        assert!(target.starts_with("/proc/4343/fd/"), "the live name follows the new holder: {target:?}");
        assert_eq!(
            std::fs::symlink_metadata(&gone).map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::NotFound),
            "a withdrawn name was re-created"
        );
    }
}
