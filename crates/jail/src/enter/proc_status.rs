//! What procfs says of a process: its parent, uids and pids in each pid namespace, and the
//! children of a process.

use crate::error::{JailError, Result};

/// The lines of `/proc/<pid>/status` that identify a container's pid 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub ppid: i32,
    /// Real, effective, saved and filesystem uid.
    pub uids: [u32; 4],
    /// The pid in every pid namespace from ours down to the process's own (`NSpid:`).
    pub ns_pids: Vec<i32>,
}

impl Status {
    pub fn read(pid: i32) -> Option<Status> {
        Status::parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    pub fn parse(text: &str) -> Option<Status> {
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':'))).map(str::trim)
        };
        let ppid = field("PPid")?.parse().ok()?;
        let uids: Vec<u32> = field("Uid")?.split_whitespace().map(|u| u.parse().ok()).collect::<Option<_>>()?;
        let ns_pids = field("NSpid")?.split_whitespace().map(|p| p.parse().ok()).collect::<Option<_>>()?;
        Some(Status { ppid, uids: uids.try_into().ok()?, ns_pids })
    }

    /// A root process of the caller's pid namespace (the node's master and Emperor are).
    pub fn is_host_root(&self) -> bool {
        self.uids == [0; 4] && self.ns_pids.len() == 1
    }

    /// A container's pid 1 as the node Emperor `parent` starts it: its direct child, every uid
    /// the container's, and pid 1 of a pid namespace exactly one level below the caller's.
    pub fn is_container_init(&self, parent: i32, uid: u32) -> bool {
        self.ppid == parent && self.uids.iter().all(|u| *u == uid) && self.ns_pids.len() == 2 && self.ns_pids[1] == 1
    }
}

/// The children of `pid`, from every thread's `children` file (Linux 3.5+,
/// CONFIG_PROC_CHILDREN).
pub fn children(pid: i32) -> Result<Vec<i32>> {
    let tasks = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&tasks).map_err(|e| JailError::io("read_dir", &tasks, e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path().join("children");
        // A thread that exited since the listing has no file any more.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
    }
    Ok(out)
}

/// How many threads the calling process has.
pub fn own_threads() -> Result<usize> {
    let text =
        std::fs::read_to_string("/proc/self/status").map_err(|e| JailError::io("read", "/proc/self/status", e))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| JailError::verify("no Threads: line in /proc/self/status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &str = "Name:\tuwsgi\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4242\n\
                        PPid:\t100\nTracerPid:\t0\nUid:\t30009\t30009\t30009\t30009\nGid:\t30009\t30009\t30009\t30009\n\
                        NStgid:\t4242\t1\nNSpid:\t4242\t1\nNSpgid:\t4242\t1\n";

    #[test]
    fn only_the_emperors_child_running_as_the_uid_as_pid_1_one_level_down_is_the_container() {
        let s = Status::parse(INIT).unwrap();
        assert_eq!(s, Status { ppid: 100, uids: [30009; 4], ns_pids: vec![4242, 1] });
        assert!(s.is_container_init(100, 30009));
        assert!(!s.is_container_init(101, 30009), "another parent");
        assert!(!s.is_container_init(100, 30010), "another container");
        let nested = INIT.replace("NSpid:\t4242\t1", "NSpid:\t4242\t7\t1");
        assert!(!Status::parse(&nested).unwrap().is_container_init(100, 30009), "a pid namespace the customer made");
        let not_init = INIT.replace("NSpid:\t4242\t1", "NSpid:\t4242\t2");
        assert!(!Status::parse(&not_init).unwrap().is_container_init(100, 30009));
        let setuid_half = INIT.replace("Uid:\t30009\t30009\t30009\t30009", "Uid:\t30009\t0\t30009\t0");
        assert!(!Status::parse(&setuid_half).unwrap().is_container_init(100, 30009), "still root: being built");
        let host = INIT.replace("NSpid:\t4242\t1", "NSpid:\t4242");
        assert!(!Status::parse(&host).unwrap().is_container_init(100, 30009), "in the host's pid namespace");
    }

    #[test]
    fn a_status_without_the_lines_is_no_status() {
        assert_eq!(Status::parse("Name:\tx\n"), None);
        assert_eq!(Status::parse(&INIT.replace("Uid:\t30009\t30009\t30009\t30009", "Uid:\t1 2")), None);
    }

    #[test]
    fn our_own_children_are_listed() {
        let mut child = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let listed = children(std::process::id() as i32).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(listed.contains(&(child.id() as i32)), "{listed:?}");
    }
}
