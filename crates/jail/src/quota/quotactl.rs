//! Classic uid quotas (ext4/xfs with `usrquota`/`usrjquota` and quota turned on): one block
//! hard limit per container uid, like the original's `setquota`, set with `quotactl_fd(2)`
//! on the filesystem holding the homes (no block device path to look up).

use super::QuotaBackend;
use crate::error::{JailError, Result};
use crate::safefs::{ensure_dir, Dir, Owner};
use crate::syscalls::Syscalls;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const Q_GETFMT: u32 = 0x80_0004;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const USRQUOTA: u32 = 0;
/// `QIF_BLIMITS`: the block soft and hard limits are valid.
const QIF_BLIMITS: u32 = 1;

fn qcmd(cmd: u32, kind: u32) -> u32 {
    (cmd << 8) | (kind & 0xff)
}

/// `struct if_dqblk` (linux/quota.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IfDqblk {
    pub dqb_bhardlimit: u64,
    pub dqb_bsoftlimit: u64,
    pub dqb_curspace: u64,
    pub dqb_ihardlimit: u64,
    pub dqb_isoftlimit: u64,
    pub dqb_curinodes: u64,
    pub dqb_btime: u64,
    pub dqb_itime: u64,
    pub dqb_valid: u32,
}

/// The request: a hard block limit only (blocks are 1 KiB for quotactl), no soft limit, no
/// inode limits: exactly what the original set.
pub fn block_limit(storage_mb: u64) -> IfDqblk {
    IfDqblk { dqb_bhardlimit: storage_mb * 1024, dqb_bsoftlimit: 0, dqb_valid: QIF_BLIMITS, ..IfDqblk::default() }
}

fn quotactl_fd(fd: BorrowedFd<'_>, cmd: u32, id: u32, addr: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: `addr` points to a buffer of the type `cmd` expects (the callers below), valid
    // for the call.
    let r = unsafe { libc::syscall(libc::SYS_quotactl_fd, fd.as_raw_fd(), cmd, id, addr) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether user quotas are on for the filesystem holding `fd` (`Q_GETFMT` answers only then).
pub fn user_quota_enabled(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut fmt: u32 = 0;
    quotactl_fd(fd, qcmd(Q_GETFMT, USRQUOTA), 0, &mut fmt as *mut u32 as *mut libc::c_void)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct UidQuota;

impl QuotaBackend for UidQuota {
    fn name(&self) -> &'static str {
        "quotactl"
    }

    fn provision_home(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, _: u64) -> Result<()> {
        ensure_dir(sys, containers, &uid.to_string(), Owner::container(uid), 0o755).map(drop)
    }

    fn apply_quota(&self, _: &dyn Syscalls, containers: &Dir, uid: u32, storage_mb: u64) -> Result<()> {
        let mut q = block_limit(storage_mb);
        quotactl_fd(containers.as_fd(), qcmd(Q_SETQUOTA, USRQUOTA), uid, &mut q as *mut IfDqblk as *mut libc::c_void)
            .map_err(|e| JailError::io("quotactl(Q_SETQUOTA)", &containers.path, e))
    }

    fn usage(&self, _: &dyn Syscalls, containers: &Dir, uid: u32) -> Result<Option<u64>> {
        let mut q = IfDqblk::default();
        match quotactl_fd(
            containers.as_fd(),
            qcmd(Q_GETQUOTA, USRQUOTA),
            uid,
            &mut q as *mut IfDqblk as *mut libc::c_void,
        ) {
            Ok(()) => Ok(Some(q.dqb_curspace)),
            // No quota record for this uid yet: nothing written.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
            Err(e) => Err(JailError::io("quotactl(Q_GETQUOTA)", containers.join(uid.to_string()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_a_hard_block_limit_in_kib() {
        let q = block_limit(20);
        assert_eq!(q.dqb_bhardlimit, 20 * 1024);
        assert_eq!(q.dqb_bsoftlimit, 0);
        assert_eq!(q.dqb_valid, QIF_BLIMITS);
        assert_eq!(qcmd(Q_SETQUOTA, USRQUOTA), 0x8000_0800);
        assert_eq!(std::mem::size_of::<IfDqblk>(), 72);
    }
}
