//! Loop devices the modern way (anchors §4.2-4.3): `LOOP_CTL_GET_FREE` and one atomic
//! `LOOP_CONFIGURE` with `LO_FLAGS_AUTOCLEAR`, under an flock on `/dev/loop-control` so two
//! allocators on the node never race for the same device; EBUSY (lost race with an allocator
//! that does not lock) means "try the next free one". Never a fixed device number.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;

pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel >= 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. With autoclear, the kernel detaches it when the last user (this
/// fd, a mount) goes away.
#[derive(Debug)]
pub struct LoopDevice {
    file: File,
    pub number: u32,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// The backing file of a bound loop device, from sysfs (`None` when unbound).
pub fn backing_file(number: u32) -> Option<PathBuf> {
    let p = format!("/sys/block/loop{number}/loop/backing_file");
    std::fs::read_to_string(p).ok().map(|s| PathBuf::from(s.trim_end_matches('\n')))
}

impl LoopDevice {
    /// Attaches `backing` to a free loop device.
    pub fn attach(backing: BorrowedFd<'_>, read_only: bool, autoclear: bool) -> io::Result<Self> {
        let control = std::fs::OpenOptions::new().read(true).write(true).open("/dev/loop-control")?;
        // SAFETY: flock on an fd we own; released when `control` is closed.
        check(unsafe { libc::flock(control.as_raw_fd(), libc::LOCK_EX) })?;
        let mut flags = 0;
        if read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        if autoclear {
            flags |= LO_FLAGS_AUTOCLEAR;
        }
        let mut last = io::Error::from_raw_os_error(libc::EBUSY);
        for _ in 0..64 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })? as u32;
            let file = match std::fs::OpenOptions::new().read(true).write(!read_only).open(device_path(n)) {
                Ok(f) => f,
                // The node may appear a moment after GET_FREE created the device.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = e;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // SAFETY: all-zero is a valid loop_config; every field is plain data.
            let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
            cfg.fd = backing.as_raw_fd() as u32;
            cfg.info.lo_flags = flags;
            // SAFETY: LOOP_CONFIGURE reads one loop_config that outlives the call.
            match check(unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CONFIGURE, &cfg) }) {
                Ok(_) => return Ok(LoopDevice { file, number: n }),
                // Someone bound it between GET_FREE and CONFIGURE: take another.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Opens an already attached device (to resize or detach it).
    pub fn open(number: u32) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(device_path(number))?;
        Ok(LoopDevice { file, number })
    }

    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }

    /// The device's `dev_t` (what `st_dev` says of the files of a filesystem on it).
    pub fn rdev(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.rdev())
    }

    /// Re-reads the backing file's size after it grew.
    pub fn set_capacity(&self) -> io::Result<()> {
        // SAFETY: LOOP_SET_CAPACITY takes no argument.
        check(unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_SET_CAPACITY, 0) }).map(drop)
    }

    /// Unbinds the device now (with autoclear and a mount on it, the kernel defers this
    /// until the unmount).
    pub fn detach(&self) -> io::Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        check(unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD, 0) }).map(drop)
    }

    pub fn into_fd(self) -> OwnedFd {
        self.file.into()
    }
}

/// Whether this host can attach loop devices at all.
pub fn available() -> bool {
    Path::new("/dev/loop-control").exists()
}
