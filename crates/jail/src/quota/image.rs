//! Per-container filesystem image: `<images>/<uid>.img`, an ext4 file sized to the quota,
//! attached to a loop device (`LOOP_CONFIGURE` with autoclear) and mounted on the home with
//! `nosuid,nodev`. Works on any filesystem and kernel with loop devices; the limit is the
//! filesystem size (ENOSPC instead of EDQUOT).
//!
//! The image is created by the trusted host's `mkfs.ext4` (never a guest binary), with the
//! root directory owned by the container uid. The mount lives in the Emperor's (host) mount
//! namespace, so every container clone inherits it. Growing is online (`LOOP_SET_CAPACITY` +
//! `resize2fs`, which needs CAP_SYS_RESOURCE) with an offline fallback; shrinking needs the
//! home unmounted (`e2fsck` + `resize2fs`), which is possible because `prepare_home` runs
//! while the container is stopped.

use super::QuotaBackend;
use crate::error::{JailError, Result};
use crate::loopdev::{self, LoopDevice};
use crate::safefs::{ensure_dir, lstat, Dir, Owner};
use crate::syscalls::{fd_path, FileKind, Syscalls, RESOLVE_SAFE};
use nix::mount::MsFlags;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone)]
pub struct ImageQuota {
    /// Root-owned (0700) directory holding the images, outside every home.
    pub images: PathBuf,
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out =
        cmd.output().map_err(|e| JailError::Command { uid: None, command: shown.clone(), detail: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(JailError::Command {
            uid: None,
            command: shown,
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        })
    }
}

/// The loop device mounted at `mountpoint`, if any (from mountinfo: `major:minor` of the
/// mount, then sysfs).
fn loop_mounted_at(mountpoint: &Path) -> io::Result<Option<u32>> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = mountpoint.to_string_lossy();
    for line in mi.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() > 4 && f[4] == want {
            let (maj, min) = f[2].split_once(':').unwrap_or(("", ""));
            if maj == "7" {
                // loop's block major is 7; the minor is the device number without partitions.
                return Ok(min.parse().ok());
            }
            return Ok(None);
        }
    }
    Ok(None)
}

impl ImageQuota {
    pub fn new(images: impl Into<PathBuf>) -> Self {
        ImageQuota { images: images.into() }
    }

    pub fn image_path(&self, uid: u32) -> PathBuf {
        self.images.join(format!("{uid}.img"))
    }

    fn ensure_images_dir(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.images)
            .map_err(|e| JailError::io("mkdir", &self.images, e))
    }

    /// Creates a sparse image of `mb` MiB with an ext4 whose root belongs to `uid`.
    fn create_image(&self, uid: u32, mb: u64) -> Result<()> {
        let img = self.image_path(uid);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&img)
            .map_err(|e| JailError::io("create", &img, e))?;
        f.set_len(mb << 20).map_err(|e| JailError::io("ftruncate", &img, e))?;
        drop(f);
        let r = run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-E"])
            .arg(format!("root_owner={uid}:{uid}"))
            .arg("-L")
            .arg(format!("home-{uid}"))
            .arg(&img));
        if r.is_err() {
            let _ = std::fs::remove_file(&img);
        }
        r
    }

    /// Attaches the image and mounts it on the home (which must be an empty directory).
    fn mount_image(&self, containers: &Dir, uid: u32) -> Result<()> {
        let img = self.image_path(uid);
        let home = containers.join(uid.to_string());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&img)
            .map_err(|e| JailError::io("open", &img, e))?;
        let dev = LoopDevice::attach(file.as_fd(), false, true).map_err(|e| JailError::io("loop attach", &img, e))?;
        let target = open_mountpoint(containers, &uid.to_string()).map_err(|e| JailError::io("openat2", &home, e))?;
        // The loop fd stays open until the mount holds the device: with autoclear, closing it
        // first would detach the device.
        nix::mount::mount(
            Some(&dev.path()),
            &fd_path(target.as_fd()),
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
            None::<&str>,
        )
        .map_err(|e| JailError::io("mount ext4", &home, io::Error::from_raw_os_error(e as i32)))
    }

    /// Unmounts the home (the loop device then detaches itself).
    pub fn unmount(&self, containers: &Path, uid: u32) -> Result<()> {
        let home = containers.join(uid.to_string());
        if loop_mounted_at(&home).map_err(|e| JailError::io("read", "/proc/self/mountinfo", e))?.is_none() {
            return Ok(());
        }
        nix::mount::umount2(&home, nix::mount::MntFlags::UMOUNT_NOFOLLOW)
            .map_err(|e| JailError::io("umount", &home, io::Error::from_raw_os_error(e as i32)))
    }

    fn mounted_device(&self, containers: &Dir, uid: u32) -> Result<Option<u32>> {
        let home = containers.join(uid.to_string());
        let n = loop_mounted_at(&home).map_err(|e| JailError::io("read", "/proc/self/mountinfo", e))?;
        match n {
            None => Ok(None),
            Some(n) => {
                let img = self.image_path(uid);
                let backing = loopdev::backing_file(n);
                let ours = backing.as_deref().zip(img.canonicalize().ok()).is_some_and(|(b, i)| b == i);
                if ours {
                    Ok(Some(n))
                } else {
                    Err(JailError::unsupported(format!(
                        "{} is mounted from loop{n} backed by {:?}, not by {}",
                        home.display(),
                        backing,
                        img.display()
                    )))
                }
            }
        }
    }
}

/// `O_PATH` handle of `dir/name`, never through a symlink (a mount target).
fn open_mountpoint(dir: &Dir, name: &str) -> io::Result<std::os::fd::OwnedFd> {
    crate::linux::Linux.openat2(
        Some(dir.as_fd()),
        Path::new(name),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
        RESOLVE_SAFE,
    )
}

/// Whether `dir/name` has entries other than `.` and `..`.
fn has_entries(dir: &Dir, name: &str) -> io::Result<bool> {
    let mut d = nix::dir::Dir::openat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir.fd)),
        name,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    for entry in d.iter() {
        let entry = entry.map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(true);
        }
    }
    Ok(false)
}

impl QuotaBackend for ImageQuota {
    fn name(&self) -> &'static str {
        "image"
    }

    fn provision_home(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32, storage_mb: u64) -> Result<()> {
        if self.mounted_device(containers, uid)?.is_some() {
            return Ok(());
        }
        let name = uid.to_string();
        let path = containers.join(&name);
        match lstat(sys, containers, &name)? {
            // The mountpoint: root-owned until the image (whose root is the container's)
            // covers it.
            None => drop(ensure_dir(sys, containers, &name, Owner::ROOT, 0o755)?),
            Some(st) if st.kind == FileKind::Dir => {
                if has_entries(containers, &name).map_err(|e| JailError::io("readdir", &path, e))? {
                    return Err(JailError::unsupported(format!(
                        "{} already holds files: mounting its quota image over it would hide \
                         them (move them into the image first)",
                        path.display()
                    )));
                }
            }
            Some(st) => return Err(JailError::planted(path, st.kind.describe())),
        }
        self.ensure_images_dir()?;
        if !self.image_path(uid).exists() {
            self.create_image(uid, storage_mb)?;
        }
        self.mount_image(containers, uid)
    }

    /// What the home's own filesystem uses (ext4's metadata included): one `fstatvfs` on the
    /// home, no mountinfo scan, so a collection over 1 000 homes stays cheap.
    fn usage(&self, sys: &dyn Syscalls, containers: &Dir, uid: u32) -> Result<Option<u64>> {
        let home = match crate::safefs::open_dir(sys, containers, uid.to_string()) {
            Ok(home) => home,
            Err(_) => return Ok(None),
        };
        let dev = |dir: &Dir| {
            use std::os::fd::AsRawFd;
            nix::sys::stat::fstat(dir.fd.as_raw_fd())
                .map(|st| st.st_dev)
                .map_err(|e| JailError::io("fstat", &dir.path, e.into()))
        };
        // Not mounted (the container is stopped): the home is a plain directory of the
        // containers filesystem, whose usage is not the container's.
        if dev(&home)? == dev(containers)? {
            return Ok(None);
        }
        let st =
            nix::sys::statvfs::fstatvfs(home.as_fd()).map_err(|e| JailError::io("fstatvfs", &home.path, e.into()))?;
        Ok(Some(st.blocks().saturating_sub(st.blocks_free()) * st.fragment_size()))
    }

    fn apply_quota(&self, _: &dyn Syscalls, containers: &Dir, uid: u32, storage_mb: u64) -> Result<()> {
        let img = self.image_path(uid);
        let want = storage_mb << 20;
        let have = std::fs::metadata(&img).map_err(|e| JailError::io("stat", &img, e))?.len();
        if want == have {
            return Ok(());
        }
        let n = self
            .mounted_device(containers, uid)?
            .ok_or_else(|| JailError::verify(format!("{} is not mounted on its home", img.display())))?;
        let set_len = |len: u64| {
            File::options()
                .write(true)
                .open(&img)
                .and_then(|f| f.set_len(len))
                .map_err(|e| JailError::io("ftruncate", &img, e))
        };
        if want > have {
            // Online grow: bigger file, tell the loop device, grow the mounted ext4. Needs
            // CAP_SYS_RESOURCE; without it, the offline path below does the same.
            set_len(want)?;
            LoopDevice::open(n)
                .and_then(|d| d.set_capacity())
                .map_err(|e| JailError::io("LOOP_SET_CAPACITY", loopdev::device_path(n), e))?;
            if run(Command::new("resize2fs").arg(loopdev::device_path(n))).is_ok() {
                return Ok(());
            }
        }
        // Offline: the container is stopped while prepare_home runs.
        self.unmount(&containers.path, uid)?;
        let resized = fsck(&img).and_then(|_| {
            if want > have {
                run(Command::new("resize2fs").arg(&img))
            } else {
                run(Command::new("resize2fs").arg(&img).arg(format!("{}K", want >> 10))).and_then(|_| set_len(want))
            }
        });
        // Mounted again either way: a failed shrink (more data than the new quota) leaves
        // the old size in place and says why.
        let remount = self.mount_image(containers, uid);
        resized.and(remount)
    }
}

/// `e2fsck -f` (resize2fs insists on a freshly checked filesystem). Exit status 1 means
/// "errors corrected", which is fine here.
fn fsck(img: &Path) -> Result<()> {
    let out = Command::new("e2fsck").args(["-f", "-y"]).arg(img).output().map_err(|e| JailError::Command {
        uid: None,
        command: "e2fsck".into(),
        detail: e.to_string(),
    })?;
    match out.status.code() {
        Some(0) | Some(1) => Ok(()),
        _ => Err(JailError::Command {
            uid: None,
            command: format!("e2fsck -f -y {}", img.display()),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        }),
    }
}
