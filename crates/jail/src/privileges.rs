//! The last privileged step before exec: become the container uid for good.
//!
//! Order matters: the bounding and ambient sets can only be cleared while we still hold
//! CAP_SETPCAP (root), the gid before the uid (setresgid needs CAP_SETGID), and the
//! inheritable set is not cleared by the kernel on setuid, so it is cleared explicitly.
//! Everything is verified afterwards: a half-dropped process must never exec customer code.

use crate::error::{JailError, Result};
use crate::syscalls::{CapSets, Syscalls};
use std::io;
use std::os::fd::RawFd;

/// What the process looks like after the drop (returned for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivilegeReport {
    pub uid: (u32, u32, u32),
    pub gid: (u32, u32, u32),
    pub groups: usize,
    pub caps: CapSets,
    pub no_new_privs: bool,
}

fn step<T>(op: &'static str, r: io::Result<T>) -> Result<T> {
    r.map_err(|e| JailError::io(op, "(process credentials)", e))
}

pub fn drop_privileges_with(sys: &dyn Syscalls, uid: u32, keep_fds: &[RawFd]) -> Result<PrivilegeReport> {
    if uid == 0 {
        return Err(JailError::verify("refusing to 'drop' privileges to uid 0"));
    }
    (|| {
        step("setgroups", sys.setgroups_empty())?;
        step("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", sys.clear_ambient_caps())?;
        step("prctl(PR_CAPBSET_DROP)", sys.drop_bounding_caps())?;
        step("setresgid", sys.setresgid(uid))?;
        step("setresuid", sys.setresuid(uid))?;
        step("capset", sys.clear_caps())?;
        step("prctl(PR_SET_NO_NEW_PRIVS)", sys.set_no_new_privs())?;
        close_fds_except(sys, keep_fds)?;

        let report = PrivilegeReport {
            uid: step("getresuid", sys.getresuid())?,
            gid: step("getresgid", sys.getresgid())?,
            groups: step("getgroups", sys.getgroups_count())?,
            caps: step("capget", sys.caps())?,
            no_new_privs: step("prctl(PR_GET_NO_NEW_PRIVS)", sys.no_new_privs())?,
        };
        let expected = PrivilegeReport {
            uid: (uid, uid, uid),
            gid: (uid, uid, uid),
            groups: 0,
            caps: CapSets::default(),
            no_new_privs: true,
        };
        if report != expected {
            return Err(JailError::verify(format!("after the drop the process is {report:?}, expected {expected:?}")));
        }
        Ok(report)
    })()
    .map_err(|e| e.for_container(uid))
}

/// Closes every fd above 2 except `keep` (close_range over the gaps).
fn close_fds_except(sys: &dyn Syscalls, keep: &[RawFd]) -> Result<()> {
    let mut keep: Vec<u32> = keep.iter().filter(|f| **f > 2).map(|f| *f as u32).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut first = 3u32;
    for k in keep {
        if k > first {
            step("close_range", sys.close_range(first, k - 1))?;
        }
        first = k + 1;
    }
    step("close_range", sys.close_range(first, u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    #[test]
    fn drop_happens_in_the_only_order_that_works_and_is_verified() {
        let f = Fake::new();
        let r = drop_privileges_with(&f, 30001, &[]).unwrap();
        assert_eq!(r.uid, (30001, 30001, 30001));
        assert_eq!(r.caps, CapSets::default());
        assert_eq!(
            f.calls(),
            vec![
                Call::Setgroups,
                Call::ClearAmbientCaps,
                Call::DropBoundingCaps,
                Call::Setresgid(30001),
                Call::Setresuid(30001),
                Call::ClearCaps,
                Call::NoNewPrivs,
                Call::CloseRange(3, u32::MAX),
            ]
        );
    }

    #[test]
    fn kept_fds_split_the_close_range() {
        let f = Fake::new();
        drop_privileges_with(&f, 30001, &[7, 2, 4, 7]).unwrap();
        let closes: Vec<Call> = f.calls().into_iter().filter(|c| matches!(c, Call::CloseRange(..))).collect();
        assert_eq!(closes, vec![Call::CloseRange(3, 3), Call::CloseRange(5, 6), Call::CloseRange(8, u32::MAX)]);
    }

    #[test]
    fn uid_zero_is_refused() {
        let f = Fake::new();
        assert!(drop_privileges_with(&f, 0, &[]).is_err());
        assert!(f.calls().is_empty());
    }
}
