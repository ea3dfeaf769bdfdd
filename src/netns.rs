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

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}
