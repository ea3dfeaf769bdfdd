//! What the tests look at and clean up on the host: processes, mounts, the platform's cgroups,
//! the containers' logs. Shared by the test node and the whole local platform.

use jail::safefs::{open_dir, open_trusted_dir};
use jail::syscalls::RESOLVE_SAFE;
use jail::Syscalls;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Polls `done` until it holds; returns how long that took.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// A running process: its real uid and its command line (arguments joined by spaces).
pub struct Process {
    pub pid: i32,
    pub uid: Option<u32>,
    pub cmdline: String,
}

/// Every process on the host right now.
pub fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse().ok());
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ").trim().to_string();
            Some(Process { pid, uid, cmdline })
        })
        .collect()
}

/// Pids of the processes running as `uid` (a container's).
pub fn pids_of_uid(uid: u32) -> Vec<i32> {
    processes().into_iter().filter(|p| p.uid == Some(uid)).map(|p| p.pid).collect()
}

/// Pids of the container's own uWSGI processes (its master and the customer's vassals), not
/// the short-lived ones of ssh sessions that run as the same uid.
pub fn uwsgi_pids_of_uid(uid: u32) -> Vec<i32> {
    processes().into_iter().filter(|p| p.uid == Some(uid) && p.cmdline.contains("uwsgi")).map(|p| p.pid).collect()
}

/// Mount points below `root` in this mount namespace, deepest first.
pub fn mounts_below(root: &Path) -> Vec<String> {
    let prefix = root.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points
}

/// Unmounts everything mounted below `root` (homes on quota images), deepest first; loop
/// devices attached with autoclear go away with their last mount.
pub fn unmount_below(root: &Path) {
    for p in mounts_below(root) {
        if let Err(e) = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("cannot unmount {p}: {e}");
        }
    }
}

/// The cgroup directories named `name` at the top of every hierarchy (v1 controllers and v2).
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return vec![] };
    let mut roots: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots.into_iter().map(|r| r.join(name)).filter(|d| d.is_dir()).collect()
}

/// Removes a cgroup subtree bottom-up (only empty cgroups can be removed).
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Prints the tail of every container's `~/logs/emperor.log` (what the customer reads). The
/// homes are the customers' to write: the log is opened without following any symlink.
pub fn print_container_logs(containers_dir: &Path, lines: usize) {
    let Ok(homes) = std::fs::read_dir(containers_dir) else { return };
    for home in homes.flatten() {
        let name = home.file_name().to_string_lossy().into_owned();
        eprintln!("---- container {name}: last {lines} lines of logs/emperor.log ----");
        match read_beneath(containers_dir, &Path::new(&name).join("logs"), "emperor.log") {
            Ok(text) => {
                let tail: Vec<&str> = text.lines().rev().take(lines).collect();
                tail.iter().rev().for_each(|l| eprintln!("{l}"));
            }
            Err(e) => eprintln!("(not readable: {e})"),
        }
    }
}

/// A container's `~/logs/emperor.log`, read as root without following any symlink.
pub fn read_container_log(containers_dir: &Path, uid: u32) -> Result<String, String> {
    read_beneath(containers_dir, &Path::new(&uid.to_string()).join("logs"), "emperor.log")
}

fn read_beneath(root: &Path, dir: &Path, file: &str) -> Result<String, String> {
    let sys = jail::linux::Linux;
    let root = open_trusted_dir(&sys, root).map_err(|e| e.to_string())?;
    let dir = open_dir(&sys, &root, dir).map_err(|e| e.to_string())?;
    let fd = sys
        .openat2(Some(dir.as_fd()), Path::new(file), libc::O_RDONLY | libc::O_NOFOLLOW, 0, RESOLVE_SAFE)
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    std::fs::File::from(fd).read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_logs_are_read_without_following_a_planted_symlink() {
        let root = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        std::fs::write(secret.path().join("emperor.log"), "host secret").unwrap();
        std::fs::create_dir_all(root.path().join("30001/logs")).unwrap();
        std::fs::write(root.path().join("30001/logs/emperor.log"), "customer log").unwrap();
        std::fs::create_dir(root.path().join("30002")).unwrap();
        std::os::unix::fs::symlink(secret.path(), root.path().join("30002/logs")).unwrap();
        std::fs::create_dir_all(root.path().join("30003/logs")).unwrap();
        std::os::unix::fs::symlink(secret.path().join("emperor.log"), root.path().join("30003/logs/emperor.log"))
            .unwrap();

        let read = |uid: &str| read_beneath(root.path(), &Path::new(uid).join("logs"), "emperor.log");
        assert_eq!(read("30001").unwrap(), "customer log");
        // A symlinked directory and a symlinked file are both refused, never read through.
        assert!(read("30002").is_err());
        assert!(read("30003").is_err());
    }
}
