//! Who a host end `uw<uid>` belongs to, written on the interface itself (its alias,
//! `IFLA_IFALIAS`, what `ip link` shows as `alias`): the platform (its table name) and the
//! container's first process, by host pid and start time.
//!
//! Why: a veth pair lives as long as the container's network namespace, and the namespace
//! outlives the container while the kernel still holds sockets of it (a TCP connection closed
//! while its peer was unreachable keeps retransmitting its FIN for minutes). Waiting for the
//! kernel would leave a restarted container without `uwsgi0`, and the node with interfaces of
//! dead containers. With the owner on the interface, the platform deletes exactly the host
//! ends of its own dead containers and nothing else: an interface without an alias, another
//! platform's, or one whose owner still runs is never touched.

use std::fmt;

/// The prefix of every alias the platform writes; what follows is `<table> <pid> <start>`.
const PREFIX: &str = "unbit-container";

/// The owner of a host end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The platform's nftables table name (`unbit` in production): one name per platform on a
    /// machine, so two platforms never reclaim each other's interfaces.
    pub platform: String,
    /// The container's first process, as the node's `/proc` numbers it.
    pub pid: u32,
    /// Its start time, field 22 of `/proc/<pid>/stat` (clock ticks since boot): a pid reused
    /// by another process has another start time.
    pub start: u64,
}

impl Owner {
    /// The calling process as the owner. In the container's cloned child this must run before
    /// the jail mounts the container's own `/proc`: the node's `/proc` still numbers the
    /// child with its node pid, not 1.
    pub fn current(platform: &str) -> std::io::Result<Owner> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        let (pid, start) = parse_stat(&stat)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "unreadable /proc/self/stat"))?;
        Ok(Owner { platform: platform.to_string(), pid, start })
    }

    /// The owner an alias names, `None` for any other alias.
    pub fn parse(alias: &str) -> Option<Owner> {
        let mut words = alias.split(' ');
        if words.next()? != PREFIX {
            return None;
        }
        let platform = words.next()?.to_string();
        let pid = words.next()?.parse().ok()?;
        let start = words.next()?.parse().ok()?;
        if words.next().is_some() || platform.is_empty() {
            return None;
        }
        Some(Owner { platform, pid, start })
    }

    /// Whether the owner still runs: its pid exists with the same start time and is not a
    /// zombie (a zombie's namespaces are already released). A `/proc` read that fails for any
    /// reason but the process being gone (out of descriptors, memory) counts as alive: an
    /// interface kept a while longer costs less than a running container's cut off.
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(stat) => parse_stat(&stat).is_some_and(|(_, start)| start == self.start) && state(&stat) != Some('Z'),
            Err(e) => e.kind() != std::io::ErrorKind::NotFound && e.raw_os_error() != Some(nix::libc::ESRCH),
        }
    }
}

impl fmt::Display for Owner {
    /// The alias: `unbit-container <table> <pid> <start>` (well under the kernel's 255 bytes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX} {} {} {}", self.platform, self.pid, self.start)
    }
}

/// `(pid, starttime)` from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted from the
/// last `)` (proc(5)).
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let pid = stat.split(' ').next()?.parse().ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')': field 3 (state) is the first word; starttime is field 22.
    let start = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some((pid, start))
}

fn state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_round_trips_and_other_aliases_are_not_ours() {
        let o = Owner { platform: "unbit".into(), pid: 4242, start: 987654 };
        assert_eq!(Owner::parse(&o.to_string()), Some(o));
        for other in [
            "",
            "uplink",
            "unbit-container",
            "unbit-container unbit 1",
            "unbit-container unbit x 2",
            "unbit-container unbit 1 2 3",
            "unbit-container  1 2",
        ] {
            assert_eq!(Owner::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 10 0 0 0 0 0 0 0 20 0 1 0 123456 1000 50";
        assert_eq!(parse_stat(stat), Some((77, 123456)));
        assert_eq!(state(stat), Some('S'));
    }

    #[test]
    fn the_current_process_is_alive_and_a_finished_one_is_not() {
        let me = Owner::current("t").unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.alive());
        assert!(!Owner { start: me.start + 1, ..me.clone() }.alive(), "a reused pid counted as the owner");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let (pid, start) = parse_stat(&stat).unwrap();
        let owner = Owner { platform: "t".into(), pid, start };
        assert!(owner.alive());
        child.kill().unwrap();
        // Killed but not reaped yet: a zombie no longer holds its namespaces.
        let zombie = || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| state(&s) == Some('Z'));
        let t = std::time::Instant::now();
        while !zombie() && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(zombie() && !owner.alive(), "a zombie counted as alive");
        child.wait().unwrap();
        assert!(!owner.alive());
    }
}
