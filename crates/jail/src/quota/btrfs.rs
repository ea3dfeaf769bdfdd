//! btrfs: each home is a subvolume with a qgroup limit on its referenced bytes.
//!
//! Done with the btrfs ioctls directly rather than the `btrfs` CLI: no process to spawn in the
//! Emperor, no output to parse, and the kernel's errno (ENOTCONN = quota off) maps straight to
//! a clear message. Enabling quota on the filesystem stays an operator step
//! (`btrfs quota enable <mount>`), detected here.

use super::QuotaBackend;
use crate::error::{JailError, Result};
use crate::safefs::{lstat, open_dir, Dir};
use crate::syscalls::{FileKind, Syscalls};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
/// The root directory of every subvolume has this inode number.
pub const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

#[repr(C)]
#[derive(Default)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// BTRFS_IOC_SUBVOL_CREATE: a new subvolume `name` in the directory `dir`.
pub fn create_subvolume(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    if name.len() >= 4088 || name.contains('/') || name.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut args = VolArgs { fd: 0, name: [0; 4088] };
    args.name[..name.len()].copy_from_slice(name.as_bytes());
    let req = nix::request_code_write!(BTRFS_IOCTL_MAGIC, 14, std::mem::size_of::<VolArgs>());
    // SAFETY: the kernel reads one btrfs_ioctl_vol_args that outlives the call.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), req, &args) })
}

/// BTRFS_IOC_QGROUP_LIMIT on the subvolume `subvol` is open on (qgroupid 0 = "this one").
pub fn limit_subvolume(subvol: BorrowedFd<'_>, max_referenced: u64) -> io::Result<()> {
    let args = QgroupLimitArgs {
        qgroupid: 0,
        lim: QgroupLimit { flags: BTRFS_QGROUP_LIMIT_MAX_RFER, max_rfer: max_referenced, ..QgroupLimit::default() },
    };
    let req = nix::request_code_read!(BTRFS_IOCTL_MAGIC, 43, std::mem::size_of::<QgroupLimitArgs>());
    // SAFETY: the kernel reads one btrfs_ioctl_qgroup_limit_args that outlives the call.
    check(unsafe { libc::ioctl(subvol.as_raw_fd(), req, &args) })
}

/// The filesystem UUID (BTRFS_IOC_FS_INFO), formatted like sysfs names it.
pub fn fsid(fd: BorrowedFd<'_>) -> io::Result<String> {
    let mut buf = [0u8; 1024];
    let req = nix::request_code_read!(BTRFS_IOCTL_MAGIC, 31, buf.len());
    // SAFETY: the kernel writes one 1024-byte btrfs_ioctl_fs_info_args into `buf`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, buf.as_mut_ptr()) })?;
    let h: Vec<String> = buf[16..32].iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

pub fn is_btrfs(fd: BorrowedFd<'_>) -> bool {
    nix::sys::statfs::fstatfs(fd).map(|s| s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC).unwrap_or(false)
}

/// Whether qgroups are enabled on the btrfs filesystem holding `fd`.
pub fn quota_enabled(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let id = fsid(fd)?;
    Ok(PathBuf::from(format!("/sys/fs/btrfs/{id}/qgroups")).exists())
}

/// Homes are btrfs subvolumes limited by qgroups.
#[derive(Debug, Default, Clone, Copy)]
pub struct BtrfsQuota;

impl QuotaBackend for BtrfsQuota {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn provision_home(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, _: u64) -> Result<()> {
        let name = uid.to_string();
        let path = containers.join(&name);
        match lstat(sys, containers, &name)? {
            None => create_subvolume(containers.as_fd(), &name)
                .map_err(|e| JailError::io("btrfs subvolume create", &path, e)),
            Some(st) if st.kind == FileKind::Dir => {
                if st.ino != BTRFS_FIRST_FREE_OBJECTID {
                    return Err(JailError::unsupported(format!(
                        "{} is a plain directory, not a btrfs subvolume: its quota cannot be \
                         enforced until it is migrated into a subvolume",
                        path.display()
                    )));
                }
                Ok(())
            }
            Some(st) => Err(JailError::planted(path, st.kind.describe())),
        }
    }

    fn apply_quota(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, storage_mb: u64) -> Result<()> {
        let home = open_dir(sys, containers, uid.to_string())?;
        limit_subvolume(home.as_fd(), storage_mb << 20).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTCONN) {
                JailError::unsupported(format!(
                    "btrfs quota is not enabled on the filesystem of {} (btrfs quota enable <mountpoint>)",
                    home.path.display()
                ))
            } else {
                JailError::io("btrfs qgroup limit", &home.path, e)
            }
        })
    }
}
