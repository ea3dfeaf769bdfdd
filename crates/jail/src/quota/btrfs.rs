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

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// BTRFS_IOC_INO_LOOKUP for the root directory of the subvolume `subvol` is open on: the
/// subvolume's id (its tree's id), which names its level-0 qgroup (`0/<id>`). Asking for the
/// subvolume's own root directory needs no privilege and no tree search.
pub fn subvolume_id(subvol: BorrowedFd<'_>) -> io::Result<u64> {
    let mut args = InoLookupArgs { treeid: 0, objectid: BTRFS_FIRST_FREE_OBJECTID, name: [0; 4080] };
    let req = nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, 18, std::mem::size_of::<InoLookupArgs>());
    // SAFETY: the kernel reads and writes one btrfs_ioctl_ino_lookup_args that outlives the call.
    check(unsafe { libc::ioctl(subvol.as_raw_fd(), req, &mut args) })?;
    Ok(args.treeid)
}

/// struct btrfs_ioctl_search_key
#[repr(C)]
#[derive(Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

/// struct btrfs_ioctl_search_args: the key, then the items found.
#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; 4096 - std::mem::size_of::<SearchKey>()],
}

const BTRFS_QUOTA_TREE_OBJECTID: u64 = 8;
const BTRFS_QGROUP_INFO_KEY: u32 = 242;
/// struct btrfs_ioctl_search_header: transid, objectid, offset (u64), type, len (u32).
const SEARCH_HEADER: usize = 32;

/// The bytes the qgroup `0/<subvolume>` counts as referenced (what a qgroup limit set by
/// [`limit_subvolume`] holds against; `btrfs qgroup show --raw`'s `rfer`): its info item in the
/// quota tree, found with BTRFS_IOC_TREE_SEARCH on any descriptor of the filesystem (root only,
/// CAP_SYS_ADMIN). `None` when the subvolume has no qgroup. btrfs accounts qgroups when a
/// transaction commits (every 30 s by default, or at a sync), so the figure trails writes by
/// up to that long. Quota off (no quota tree): ENOENT.
pub fn qgroup_referenced(fs: BorrowedFd<'_>, subvolume: u64) -> io::Result<Option<u64>> {
    let mut args = SearchArgs {
        key: SearchKey {
            tree_id: BTRFS_QUOTA_TREE_OBJECTID,
            // level-0 qgroups: the key's objectid is 0, its offset the qgroup id
            min_objectid: 0,
            max_objectid: 0,
            min_offset: subvolume,
            max_offset: subvolume,
            min_transid: 0,
            max_transid: u64::MAX,
            min_type: BTRFS_QGROUP_INFO_KEY,
            max_type: BTRFS_QGROUP_INFO_KEY,
            nr_items: 1,
            ..SearchKey::default()
        },
        buf: [0; 4096 - std::mem::size_of::<SearchKey>()],
    };
    let req = nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, 17, std::mem::size_of::<SearchArgs>());
    // SAFETY: the kernel reads the key and writes at most `buf.len()` bytes of results into
    // the one btrfs_ioctl_search_args that outlives the call.
    check(unsafe { libc::ioctl(fs.as_raw_fd(), req, &mut args) })?;
    if args.key.nr_items == 0 {
        return Ok(None);
    }
    Ok(referenced_of(&args.buf, subvolume))
}

/// The `rfer` field of the first result in a TREE_SEARCH buffer when it is the info item of
/// qgroup `0/<subvolume>` (struct btrfs_qgroup_info_item: generation, rfer, ... little-endian).
fn referenced_of(buf: &[u8], subvolume: u64) -> Option<u64> {
    let u64_at = |b: &[u8], at: usize| Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let (offset, kind) = (u64_at(buf, 16)?, u32::from_ne_bytes(buf.get(24..28)?.try_into().ok()?));
    let len = u32::from_ne_bytes(buf.get(28..32)?.try_into().ok()?) as usize;
    if offset != subvolume || kind != BTRFS_QGROUP_INFO_KEY || len < 16 {
        return None;
    }
    let item = buf.get(SEARCH_HEADER..SEARCH_HEADER + len)?;
    Some(u64::from_le_bytes(item.get(8..16)?.try_into().ok()?))
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
        limit_subvolume(home.as_fd(), storage_mb << 20)
            .map_err(|e| qgroup_error("btrfs qgroup limit", libc::ENOTCONN, &home.path, e))
    }

    /// The qgroup's referenced bytes of the home's subvolume ([`qgroup_referenced`]): what the
    /// limit counts, read the way the limit is set (ioctls: no `btrfs` process, no output to
    /// parse). A home that is missing or a plain directory (not limited) has no value.
    fn usage(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32) -> Result<Option<u64>> {
        let name = uid.to_string();
        match lstat(sys, containers, &name)? {
            Some(st) if st.kind == FileKind::Dir && st.ino == BTRFS_FIRST_FREE_OBJECTID => {}
            _ => return Ok(None),
        }
        let home = open_dir(sys, containers, name)?;
        let id = subvolume_id(home.as_fd()).map_err(|e| JailError::io("btrfs subvolume id", &home.path, e))?;
        qgroup_referenced(home.as_fd(), id).map_err(|e| qgroup_error("btrfs qgroup info", libc::ENOENT, &home.path, e))
    }
}

/// A qgroup ioctl's error: `quota_off` is the errno by which that ioctl says quota is not
/// enabled on the filesystem (the operator's step), said so; anything else as it is.
fn qgroup_error(what: &'static str, quota_off: i32, home: &std::path::Path, e: io::Error) -> JailError {
    if e.raw_os_error() == Some(quota_off) {
        JailError::unsupported(format!(
            "btrfs quota is not enabled on the filesystem of {} (btrfs quota enable <mountpoint>)",
            home.display()
        ))
    } else {
        JailError::io(what, home, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_the_kernels() {
        assert_eq!(std::mem::size_of::<SearchKey>(), 104);
        assert_eq!(std::mem::size_of::<SearchArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
    }

    #[test]
    fn the_referenced_bytes_of_the_asked_qgroup_only() {
        let mut buf = vec![0u8; 200];
        buf[8..16].copy_from_slice(&0u64.to_ne_bytes());
        buf[16..24].copy_from_slice(&257u64.to_ne_bytes());
        buf[24..28].copy_from_slice(&BTRFS_QGROUP_INFO_KEY.to_ne_bytes());
        buf[28..32].copy_from_slice(&40u32.to_ne_bytes());
        buf[32 + 8..32 + 16].copy_from_slice(&(12_345_678u64).to_le_bytes());
        assert_eq!(referenced_of(&buf, 257), Some(12_345_678));
        assert_eq!(referenced_of(&buf, 258), None, "another qgroup's item");
        buf[28..32].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(referenced_of(&buf, 257), None, "an item too short");
        assert_eq!(referenced_of(&buf[..20], 257), None);
    }
}
