//! Network namespaces for tests: made by a thread that unshares, held open by a descriptor (the
//! kernel frees the namespace with the last descriptor and process, so a failing test leaves
//! nothing behind), entered by threads that run a closure there; processes those threads spawn
//! live in the namespace too.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Netns(pub OwnedFd);

impl Netns {
    /// A new, empty namespace (only `lo`, down). Needs root.
    pub fn new() -> Netns {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): run as root");
            let ns = std::fs::File::open("/proc/thread-self/ns/net").expect("/proc/thread-self/ns/net");
            Netns(ns.into())
        })
        .join()
        .unwrap()
    }

    /// The namespace of a running process (a container's, through one of its processes).
    pub fn of_pid(pid: i32) -> Option<Netns> {
        std::fs::File::open(format!("/proc/{pid}/ns/net")).ok().map(|f| Netns(f.into()))
    }

    /// The namespace's inode: equal for two handles on the same namespace.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::File::from(self.0.try_clone().unwrap()).metadata().unwrap().ino()
    }

    /// A detached thread inside the namespace (servers that live until the test ends).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let fd = self.0.try_clone().unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        });
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(self.0.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Runs a shell command inside the namespace; panics with its stderr when it fails.
    pub fn sh(&self, cmd: &str) {
        self.run(|| {
            let out = std::process::Command::new("sh").args(["-c", cmd]).output().unwrap();
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        })
    }
}

/// A server thread's stop flag, raised when dropped (the thread notices within 10 ms, or at
/// its next read timeout).
pub struct Server(Arc<AtomicBool>);

impl Server {
    /// A flag for a new server thread: the thread runs while `!flag.load()`.
    pub fn new() -> (Server, Arc<AtomicBool>) {
        let flag = Arc::new(AtomicBool::new(false));
        (Server(flag.clone()), flag)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Netns {
    /// A TCP server on `at` in this namespace: every connection gets `answer(peer)`, then is
    /// closed. Panics when `at` cannot be bound.
    pub fn tcp_server(&self, at: SocketAddr, answer: impl Fn(SocketAddr) -> String + Send + 'static) -> Server {
        let (server, stop) = Server::new();
        let listener = self.run(|| TcpListener::bind(at).unwrap_or_else(|e| panic!("bind {at}: {e}")));
        listener.set_nonblocking(true).unwrap();
        self.spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.write_all(answer(peer).as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        server
    }

    /// What a TCP client in this namespace reads from `to` until the server closes, `None`
    /// when it cannot connect within `connect_timeout` (dropped or refused) or reads nothing
    /// within 2 s.
    pub fn probe(&self, to: SocketAddr, connect_timeout: Duration) -> Option<String> {
        self.run(|| {
            let mut s = TcpStream::connect_timeout(&to, connect_timeout).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).ok()?;
            Some(answer)
        })
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}
