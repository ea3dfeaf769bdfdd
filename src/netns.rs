//! Network namespaces for tests: made by a thread that unshares, held open by a descriptor (the
//! kernel frees the namespace with the last descriptor and process, so a failing test leaves
//! nothing behind), entered by threads that run a closure there; processes those threads spawn
//! live in the namespace too.

use std::os::fd::{AsFd, OwnedFd};

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

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}
