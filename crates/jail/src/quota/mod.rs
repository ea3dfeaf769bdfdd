//! Disk quota for a container home, behind one trait with one implementation per mechanism:
//! uid quotas through `quotactl` where the kernel and filesystem have them, a btrfs subvolume
//! with a qgroup limit, or an ext4 image file mounted on the home. [`detect_quota_backend`]
//! picks what the host supports.

pub mod btrfs;
pub mod image;
pub mod quotactl;

pub use btrfs::BtrfsQuota;
pub use image::ImageQuota;
pub use quotactl::UidQuota;

use crate::error::{JailError, Result};
use crate::linux::Linux;
use crate::safefs::{ensure_dir, open_trusted_dir, Dir, Owner};
use crate::syscalls::Syscalls;
use std::path::Path;

/// One way of limiting the disk space of a home.
pub trait QuotaBackend {
    /// Short name for logs ("btrfs", "image", "quotactl", "none").
    fn name(&self) -> &'static str;
    /// Makes `<containers>/<uid>` exist in the form this backend needs (a subvolume, a
    /// mounted image, a directory), before the home layout is created. Idempotent.
    /// `storage_mb` is the quota, for backends that size something at creation.
    fn provision_home(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, storage_mb: u64) -> Result<()>;
    /// Sets the limit of the home to `storage_mb` MiB. Idempotent.
    fn apply_quota(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, storage_mb: u64) -> Result<()>;
    /// Bytes the home uses against its quota (the node's `container.quota` metric), or `None`
    /// where this backend cannot tell (the home is not provisioned, or no reading exists yet).
    fn usage(&self, _sys: &dyn Syscalls, _containers: &Dir, _uid: u32) -> Result<Option<u64>> {
        Ok(None)
    }
}

/// No limit at all: only for nodes whose operator explicitly accepts unlimited homes (and for
/// tests of the layout). Never chosen by [`detect_quota_backend`].
#[derive(Debug, Default, Clone, Copy)]
pub struct NoQuota;

impl QuotaBackend for NoQuota {
    fn name(&self) -> &'static str {
        "none"
    }
    fn provision_home(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, _: u64) -> Result<()> {
        ensure_dir(sys, containers, &uid.to_string(), Owner::container(uid), 0o755).map(drop)
    }
    fn apply_quota(&self, _: &dyn Syscalls, _: &Dir, _: u32, _: u64) -> Result<()> {
        Ok(())
    }
}

/// Where the image backend keeps its files, relative to the containers directory (root-owned
/// 0700, not a valid uid, so never a home).
pub const IMAGES_DIR: &str = ".quota-images";

/// The best quota mechanism for the filesystem holding `containers_dir`, in this order:
/// btrfs qgroups (the filesystem is btrfs with quota enabled), uid quotas (`quotactl` answers
/// for user quotas), an ext4 image per home (loop devices and `mkfs.ext4` present). Fails
/// with the reason each one was rejected.
pub fn detect_quota_backend(containers_dir: &Path) -> Result<Box<dyn QuotaBackend>> {
    let dir = open_trusted_dir(&Linux, containers_dir)?;
    let mut why = Vec::new();
    if btrfs::is_btrfs(dir.as_fd()) {
        match btrfs::quota_enabled(dir.as_fd()) {
            Ok(true) => return Ok(Box::new(BtrfsQuota)),
            Ok(false) => why.push("btrfs: quota is not enabled (btrfs quota enable <mountpoint>)".to_string()),
            Err(e) => why.push(format!("btrfs: cannot read the filesystem id: {e}")),
        }
    } else {
        why.push("btrfs: not a btrfs filesystem".to_string());
    }
    match quotactl::user_quota_enabled(dir.as_fd()) {
        Ok(()) => return Ok(Box::new(UidQuota)),
        Err(e) => why.push(format!("quotactl: user quota unavailable ({e})")),
    }
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"].iter().any(|p| Path::new(p).exists());
    match (crate::loopdev::available(), mkfs) {
        (true, true) => {
            return Ok(Box::new(ImageQuota::new(containers_dir.join(IMAGES_DIR))));
        }
        (false, _) => why.push("image: no /dev/loop-control".to_string()),
        (_, false) => why.push("image: mkfs.ext4 not installed".to_string()),
    }
    Err(JailError::unsupported(format!("no disk quota mechanism for {}: {}", containers_dir.display(), why.join("; "))))
}
