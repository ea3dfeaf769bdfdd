//! Loopboxes: an ext4 image in a container's home, mounted into the *running* container at a
//! home-relative mountpoint (quickstart "Loopboxes", `docs/loopboxes.md`).
//!
//! What the original did wrong (original-platform.md §6) and what this does instead:
//! * it opened the image by path, `O_RDWR`, as root: here the image is looked up from the
//!   home's directory fd with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`,
//!   first as `O_PATH` (a device or FIFO is never opened), and must be a regular file of the
//!   container's uid with exactly one name, at least 1 MiB, holding an ext4 superblock that
//!   fits in it; then it is opened `O_RDONLY` for a read-only loopbox, and the open file is
//!   checked to be the one looked at;
//! * it ignored `ro`: here a read-only loopbox gets a read-only loop device, a read-only
//!   superblock and a read-only mount;
//! * it used fixed loop numbers and set autoclear after mounting: here [`LoopDevice::attach`]
//!   takes a free device under the control device's lock with one `LOOP_CONFIGURE` that sets
//!   autoclear, so the device goes away with the last mount whatever happens afterwards;
//! * it entered the container through a socket in the customer-writable `~/run`: here the
//!   container's pid 1 is found from the kernel ([`crate::enter::find`]) and its mount
//!   namespace, checked to belong to the host's user namespace, is joined by a short-lived
//!   thread that first unshares its filesystem context. The filesystem itself is built on the
//!   host side with the new mount API (`fsopen`/`fsconfig`/`fsmount`: the source device is the
//!   host's `/dev/loopN`, nothing the container can name); the thread inside only looks the
//!   mountpoint up symlink-safely and `move_mount`s the detached mount onto it.
//!
//! The mount is `nosuid,nodev` (like the home), with `errors=remount-ro`, ACLs and user
//! xattrs; not `noexec`, since the home it replaces a directory of is not either.

use crate::enter::Container;
use crate::linux::Linux;
use crate::loopdev::LoopDevice;
use crate::safefs::{open_dir, open_trusted_dir, Dir};
use crate::syscalls::{FileKind, Stat, Syscalls, RESOLVE_SAFE};
use crate::NodePaths;
use container_spec::LoopboxSpec;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Images under this size are refused (the quickstart's rule).
pub const MIN_IMAGE_SIZE: u64 = 1 << 20;
/// openat2: refuse to cross a mount point (linux/openat2.h).
const RESOLVE_NO_XDEV: u64 = 0x01;
/// Lookups of images and mountpoints: below the home, no symlink, no other filesystem.
const RESOLVE_IN_HOME: u64 = RESOLVE_SAFE | RESOLVE_NO_XDEV;

/// The identity of an image file as the node saw it when it mounted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageId {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

/// A loopbox the node mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub spec: LoopboxSpec,
    pub loop_number: u32,
    /// The loop device's `dev_t`: what `st_dev` says for the mounted filesystem's files.
    pub device: u64,
    pub image: ImageId,
}

/// How a mounted loopbox's image looks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    Unchanged,
    /// Deleted, renamed away, or something that is not a regular file in its place.
    Gone,
    /// Another file now has the name.
    Replaced,
    Resized {
        from: u64,
        to: u64,
    },
}

/// `~/<rel>` as the customer reads it.
pub fn show(rel: &str) -> String {
    format!("~/{rel}")
}

fn open_home(sys: &dyn Syscalls, paths: &NodePaths, uid: u32) -> Result<Dir, String> {
    let containers = open_trusted_dir(sys, &paths.containers).map_err(|e| e.to_string())?;
    open_dir(sys, &containers, uid.to_string()).map_err(|e| format!("cannot open the home: {e}"))
}

/// Why a lookup of `what` below the home failed, in the customer's words.
fn lookup_refusal(what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => format!("{what} does not exist"),
        Some(libc::ELOOP) => format!("{what} is a symlink or its path goes through one: refused"),
        Some(libc::EXDEV) => format!("{what} leaves the home or crosses a mount point: refused"),
        Some(libc::ENOTDIR) => format!("a component of {what} is not a directory"),
        _ => format!("{what}: {e}"),
    }
}

fn kind_name(st: &Stat) -> &'static str {
    match st.kind {
        FileKind::Other => "a FIFO, socket or block device",
        k => k.describe(),
    }
}

/// Checks what the image's name points at (an `O_PATH` look, nothing opened).
fn check_image_stat(spec: &LoopboxSpec, st: &Stat) -> Result<(), String> {
    let name = show(&spec.filename);
    if st.kind != FileKind::File {
        return Err(format!("image {name} is {}, not a regular file: refused", kind_name(st)));
    }
    if st.uid != spec.uid {
        return Err(format!(
            "image {name} belongs to uid {}, not to the container ({}): refused (an image must be the container's own file)",
            st.uid, spec.uid
        ));
    }
    if st.nlink != 1 {
        return Err(format!(
            "image {name} has {} names (hard links): refused, an image must have exactly one",
            st.nlink
        ));
    }
    if st.size < MIN_IMAGE_SIZE {
        return Err(format!("image {name} is {} bytes, under the 1 MiB minimum: not mounted", st.size));
    }
    Ok(())
}

/// Reads the ext4 superblock and checks it fits in the image (a filesystem larger than its
/// image, e.g. a file shrunk without `resize2fs`, would fail with I/O errors once mounted).
fn check_superblock(spec: &LoopboxSpec, fd: BorrowedFd<'_>, size: u64) -> Result<(), String> {
    let name = show(&spec.filename);
    let mut sb = [0u8; 1024];
    let n = nix::sys::uio::pread(fd, &mut sb, 1024).map_err(|e| format!("cannot read image {name}: {e}"))?;
    let le16 = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]) as u64;
    let le32 = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]) as u64;
    if n < sb.len() || le16(0x38) != 0xEF53 {
        return Err(format!("image {name} holds no ext4 filesystem (only ext4 is supported: run mkfs.ext4 on it)"));
    }
    let log_block = le32(0x18);
    if log_block > 6 {
        return Err(format!("image {name}: its superblock says blocks of 2^{} bytes: refused", 10 + log_block));
    }
    let incompat_64bit = le32(0x60) & 0x80 != 0;
    let blocks = le32(0x04) | if incompat_64bit { le32(0x150) << 32 } else { 0 };
    let fs_bytes = blocks.saturating_mul(1024 << log_block);
    if fs_bytes > size {
        return Err(format!(
            "image {name}: its filesystem ({fs_bytes} bytes) is larger than the file ({size} bytes); \
             grow the file back or run resize2fs on it"
        ));
    }
    Ok(())
}

/// Opens the image of `spec` from the host side, with every check of the module's rules.
fn open_image(sys: &dyn Syscalls, home: &Dir, spec: &LoopboxSpec) -> Result<(OwnedFd, ImageId), String> {
    let name = show(&spec.filename);
    let rel = Path::new(&spec.filename);
    let probe = sys
        .openat2(Some(home.as_fd()), rel, libc::O_PATH | libc::O_NOFOLLOW, 0, RESOLVE_IN_HOME)
        .map_err(|e| lookup_refusal(&format!("image {name}"), &e))?;
    let seen = sys.fstat(probe.as_fd()).map_err(|e| format!("fstat {name}: {e}"))?;
    check_image_stat(spec, &seen)?;
    // O_NONBLOCK: a FIFO swapped in since the look must not block the Emperor (it is refused
    // just below, as is any other swap).
    let access = if spec.ro { libc::O_RDONLY } else { libc::O_RDWR };
    let fd = sys
        .openat2(Some(home.as_fd()), rel, access | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0, RESOLVE_IN_HOME)
        .map_err(|e| lookup_refusal(&format!("image {name}"), &e))?;
    let st = sys.fstat(fd.as_fd()).map_err(|e| format!("fstat {name}: {e}"))?;
    if (st.dev, st.ino) != (seen.dev, seen.ino) {
        return Err(format!("image {name} was replaced while it was being opened: refused"));
    }
    check_image_stat(spec, &st)?;
    check_superblock(spec, fd.as_fd(), st.size)?;
    Ok((fd, ImageId { dev: st.dev, ino: st.ino, size: st.size }))
}

/// How the image of a mounted loopbox looks now (host side, never following anything).
pub fn image_state(paths: &NodePaths, m: &Mounted) -> ImageState {
    let sys = Linux;
    let Ok(home) = open_home(&sys, paths, m.spec.uid) else { return ImageState::Unchanged };
    let probe = match sys.openat2(
        Some(home.as_fd()),
        Path::new(&m.spec.filename),
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
        RESOLVE_IN_HOME,
    ) {
        Ok(fd) => fd,
        Err(_) => return ImageState::Gone,
    };
    match sys.fstat(probe.as_fd()) {
        Ok(st) if st.kind != FileKind::File => ImageState::Gone,
        Ok(st) if (st.dev, st.ino) != (m.image.dev, m.image.ino) => ImageState::Replaced,
        Ok(st) if st.size != m.image.size => ImageState::Resized { from: m.image.size, to: st.size },
        _ => ImageState::Unchanged,
    }
}

// ---- the new mount API (linux/mount.h); nix 0.29 has no wrappers ----

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: libc::c_uint = 0x01;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x02;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x04;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fsconfig(fs: BorrowedFd<'_>, cmd: libc::c_uint, key: Option<&str>, value: Option<&str>) -> io::Result<()> {
    let key = key.map(cstr).transpose()?;
    let value = value.map(cstr).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: both strings (or nulls, where the command takes none) outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, ptr(&key), ptr(&value), 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The messages the kernel left in a filesystem context (`e ext4: ...` lines), for the
/// customer: they say why an image was refused better than an errno does.
fn fs_messages(fs: BorrowedFd<'_>) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = nix::unistd::read(fs.as_raw_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    out.join("; ")
}

/// Builds the ext4 filesystem of `device` (a host path the node chose) and returns it as a
/// detached mount, not yet attached anywhere.
fn make_mount(device: &Path, ro: bool) -> Result<OwnedFd, String> {
    let fstype = cstr("ext4").map_err(|e| e.to_string())?;
    // SAFETY: the name outlives the call; the flag is plain data.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(|e| format!("fsopen(ext4): {e}"))?;
    let fail = |what: &str, e: io::Error| {
        let said = fs_messages(fs.as_fd());
        if said.is_empty() {
            format!("{what}: {e}")
        } else {
            format!("{what}: {e} ({said})")
        }
    };
    let source = device.to_str().ok_or_else(|| "loop device path is not UTF-8".to_string())?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_STRING, Some("source"), Some(source)).map_err(|e| fail("source", e))?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_STRING, Some("errors"), Some("remount-ro"))
        .map_err(|e| fail("errors=remount-ro", e))?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_FLAG, Some("acl"), None).map_err(|e| fail("acl", e))?;
    fsconfig(fs.as_fd(), FSCONFIG_SET_FLAG, Some("user_xattr"), None).map_err(|e| fail("user_xattr", e))?;
    if ro {
        fsconfig(fs.as_fd(), FSCONFIG_SET_FLAG, Some("ro"), None).map_err(|e| fail("ro", e))?;
    }
    fsconfig(fs.as_fd(), FSCONFIG_CMD_CREATE, None, None).map_err(|e| fail("cannot mount the ext4 filesystem", e))?;
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if ro {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    // SAFETY: integer arguments only; returns a new descriptor.
    owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
        .map_err(|e| fail("fsmount", e))
}

fn move_mount(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let empty = c"";
    // SAFETY: the empty path strings are static; the fds are valid for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `f` on a thread of its own that joined the container's mount namespace. The thread
/// unshares its filesystem context first (the kernel refuses `setns` into a mount namespace
/// to a task sharing it with other threads), so the rest of the process, the Emperor, stays
/// where it is; the thread ends with `f`. No fork: the Emperor may have threads, and a child
/// of a multi-threaded process may not run ordinary Rust code.
fn in_mount_namespace<T: Send>(
    container: &Container,
    f: impl FnOnce(&Dir) -> Result<T, String> + Send,
) -> Result<T, String> {
    let ns = container.mount_namespace().ok_or("the container shares the host's mount namespace: refused")?;
    let uid = container.uid;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(|e| format!("unshare(CLONE_FS): {e}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("setns into the container's mount namespace: {e}"))?;
            // The container's own view: `/containers/<uid>` is its home, on a read-only tmpfs
            // only the platform writes.
            let home_path = PathBuf::from(format!("/containers/{uid}"));
            let fd = Linux
                .openat2(None, &home_path, libc::O_PATH | libc::O_DIRECTORY, 0, crate::syscalls::RESOLVE_NO_SYMLINKS)
                .map_err(|e| format!("cannot open the home inside the container: {e}"))?;
            f(&Dir { fd, path: home_path })
        })
        .join()
        .unwrap_or_else(|_| Err("the mount thread panicked".to_string()))
    })
}

/// Mounts the loopbox `spec` into the running `container` (whose pid 1 [`crate::enter::find`]
/// pinned): every rule of the module, then the loop device, the filesystem, the root's owner,
/// the move. On failure nothing is left: the loop device is freed with the last descriptor.
pub fn mount(paths: &NodePaths, container: &Container, spec: &LoopboxSpec) -> Result<Mounted, String> {
    if spec.uid != container.uid {
        return Err(format!("loopbox {} is container {}'s, not {}'s", spec.id, spec.uid, container.uid));
    }
    spec.validate().map_err(|e| format!("loopbox {}: {e}", spec.id))?;
    let sys = Linux;
    let home = open_home(&sys, paths, spec.uid)?;
    let mountpoint = show(&spec.mountpoint);
    // Looked at from the host first (the same directory the container sees as its home), so
    // a bad mountpoint is refused before a device is bound; the lookup that counts is the
    // one inside, below.
    check_mountpoint(&sys, &home, spec)?;
    let (image, id) = open_image(&sys, &home, spec)?;
    let dev =
        LoopDevice::attach(image.as_fd(), spec.ro, true).map_err(|e| format!("cannot attach a loop device: {e}"))?;
    drop(image);
    let device = dev.rdev().map_err(|e| format!("fstat {}: {e}", dev.path().display()))?;
    let mnt = make_mount(&dev.path(), spec.ro)?;
    // The kernel holds the device open through the filesystem now; with autoclear, the last
    // unmount (or the container's mount namespace going away) frees it.
    let loop_number = dev.number;
    drop(dev);
    if !spec.ro {
        // mkfs.ext4 leaves the root root's: the customer could not write in their own box.
        sys.fchown(mnt.as_fd(), spec.uid, spec.uid).map_err(|e| format!("chown of the filesystem's root: {e}"))?;
    }
    in_mount_namespace(container, |home| {
        let target = check_mountpoint(&Linux, home, spec)?;
        move_mount(mnt.as_fd(), target.as_fd()).map_err(|e| format!("cannot mount on {mountpoint}: {e}"))
    })?;
    Ok(Mounted { spec: spec.clone(), loop_number, device, image: id })
}

/// Opens the mountpoint of `spec` below `home` (`O_PATH`): a directory, reached without a
/// symlink and without crossing a mount (so one already mounted on is refused too).
fn check_mountpoint(sys: &dyn Syscalls, home: &Dir, spec: &LoopboxSpec) -> Result<OwnedFd, String> {
    let mountpoint = show(&spec.mountpoint);
    // No O_DIRECTORY: with it a final symlink reads as "not a directory"; the kind is checked
    // on the descriptor below.
    let flags = libc::O_PATH | libc::O_NOFOLLOW;
    let target =
        sys.openat2(Some(home.as_fd()), Path::new(&spec.mountpoint), flags, 0, RESOLVE_IN_HOME).map_err(|e| match e
            .raw_os_error()
        {
            Some(libc::ENOENT) => format!("mountpoint {mountpoint} does not exist: create it with mkdir"),
            Some(libc::EXDEV) => {
                format!("mountpoint {mountpoint} is already a mount point or leaves the home: refused")
            }
            _ => lookup_refusal(&format!("mountpoint {mountpoint}"), &e),
        })?;
    let st = sys.fstat(target.as_fd()).map_err(|e| format!("fstat {mountpoint}: {e}"))?;
    if st.kind != FileKind::Dir {
        return Err(format!("mountpoint {mountpoint} is {}, not a directory", kind_name(&st)));
    }
    Ok(target)
}

/// How an unmount went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    Now,
    /// Files were open on it: detached now, the loop device goes when they are closed.
    Lazily,
    /// Nothing of ours was mounted there any more.
    AlreadyGone,
}

/// Unmounts a loopbox from the running container. The mountpoint is looked up symlink-safely
/// and unmounted only if the node's filesystem is what is mounted there.
pub fn unmount(container: &Container, m: &Mounted) -> Result<Unmounted, String> {
    let mountpoint = show(&m.spec.mountpoint);
    let rel = Path::new(&m.spec.mountpoint);
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (if p.as_os_str().is_empty() { Path::new(".") } else { p }, n),
        _ => return Err(format!("mountpoint {mountpoint}: not a path below the home")),
    };
    in_mount_namespace(container, |home| {
        let dir = match Linux.openat2(
            Some(home.as_fd()),
            parent,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
            RESOLVE_IN_HOME,
        ) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Unmounted::AlreadyGone),
            Err(e) => return Err(lookup_refusal(&format!("the directory of {mountpoint}"), &e)),
        };
        match Linux.fstatat_nofollow(dir.as_fd(), Path::new(name)) {
            Ok(st) if st.dev == m.device => {}
            _ => return Ok(Unmounted::AlreadyGone),
        }
        // The thread's own cwd (it unshared its filesystem context): the name is resolved
        // from the directory just checked, and a final symlink is never followed.
        nix::unistd::fchdir(dir.as_raw_fd()).map_err(|e| format!("fchdir to the directory of {mountpoint}: {e}"))?;
        let flags = nix::mount::MntFlags::UMOUNT_NOFOLLOW;
        match nix::mount::umount2(name, flags) {
            Ok(()) => Ok(Unmounted::Now),
            Err(nix::errno::Errno::EBUSY) => nix::mount::umount2(name, flags | nix::mount::MntFlags::MNT_DETACH)
                .map(|()| Unmounted::Lazily)
                .map_err(|e| format!("cannot unmount {mountpoint}: {e}")),
            Err(e) => Err(format!("cannot unmount {mountpoint}: {e}")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LoopboxSpec {
        LoopboxSpec { id: 7, uid: 31001, filename: "zeus001".into(), mountpoint: "zeus".into(), ro: false }
    }

    fn stat(kind: FileKind, uid: u32, nlink: u64, size: u64) -> Stat {
        Stat { kind, mode: 0o644, uid, gid: uid, nlink, size, dev: 1, ino: 2 }
    }

    #[test]
    fn only_a_regular_file_of_the_container_with_one_name_and_at_least_1_mib_is_an_image() {
        let s = spec();
        assert_eq!(check_image_stat(&s, &stat(FileKind::File, 31001, 1, MIN_IMAGE_SIZE)), Ok(()));
        let refused = |st: Stat, why: &str| {
            let e = check_image_stat(&s, &st).unwrap_err();
            assert!(e.contains(why) && e.contains("~/zeus001"), "{e}");
        };
        refused(stat(FileKind::Other, 31001, 1, 1 << 30), "FIFO");
        refused(stat(FileKind::CharDevice, 31001, 1, 0), "character device");
        refused(stat(FileKind::Dir, 31001, 1, 4096), "directory");
        refused(stat(FileKind::File, 31002, 1, 1 << 30), "belongs to uid 31002");
        refused(stat(FileKind::File, 0, 1, 1 << 30), "belongs to uid 0");
        refused(stat(FileKind::File, 31001, 2, 1 << 30), "hard links");
        refused(stat(FileKind::File, 31001, 1, MIN_IMAGE_SIZE - 1), "under the 1 MiB minimum");
    }

    #[test]
    fn the_image_is_looked_at_through_o_path_first_then_opened_read_only_for_a_read_only_loopbox() {
        use crate::fake::{Call, Fake};
        let f = Fake::new();
        let big = vec![0u8; MIN_IMAGE_SIZE as usize];
        f.dir("/containers", 0, 0o755)
            .dir("/containers/31001", 31001, 0o755)
            .file("/containers/31001/zeus001", 31001, &big)
            .file("/containers/31001/null", 31001, b"")
            .edit("/containers/31001/null", |n| {
                n.kind = FileKind::CharDevice;
                n.rdev = (1, 3);
            });
        let paths = NodePaths { containers: "/containers".into(), ..NodePaths::default() };
        let home = open_home(&f, &paths, 31001).unwrap();
        let opens = || -> Vec<(i32, u64)> {
            f.calls()
                .into_iter()
                .filter_map(|c| match c {
                    Call::Open { flags, resolve, .. } => Some((flags, resolve)),
                    _ => None,
                })
                .collect()
        };
        for (ro, access) in [(true, libc::O_RDONLY), (false, libc::O_RDWR)] {
            f.clear_calls();
            // The fake's descriptors read as empty: the superblock check is where it stops.
            let e = open_image(&f, &home, &LoopboxSpec { ro, ..spec() }).unwrap_err();
            assert!(e.contains("no ext4 filesystem"), "{e}");
            let o = opens();
            assert_eq!(o.len(), 2, "{o:?}");
            assert_eq!(o[0].0 & libc::O_PATH, libc::O_PATH, "looked at without being opened first");
            assert_eq!(o[1].0 & libc::O_ACCMODE, access, "ro: {ro}");
            assert!(o.iter().all(|(flags, r)| *r == RESOLVE_IN_HOME && flags & libc::O_NOFOLLOW != 0), "{o:?}");
        }
        // A device node is refused on the O_PATH look: its driver's open never runs.
        f.clear_calls();
        let e = open_image(&f, &home, &LoopboxSpec { filename: "null".into(), ..spec() }).unwrap_err();
        assert!(e.contains("character device"), "{e}");
        assert_eq!(opens().len(), 1);
    }

    fn superblock(blocks: u32, log_block: u32) -> tempfile::NamedTempFile {
        let mut img = vec![0u8; 2048];
        img[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[1024 + 0x04..1024 + 0x08].copy_from_slice(&blocks.to_le_bytes());
        img[1024 + 0x18..1024 + 0x1c].copy_from_slice(&log_block.to_le_bytes());
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), img).unwrap();
        f
    }

    #[test]
    fn the_filesystem_must_be_ext4_and_fit_in_its_image() {
        let s = spec();
        let f = superblock(1024, 2); // 1024 blocks of 4 KiB: 4 MiB
        let fd = std::fs::File::open(f.path()).unwrap();
        assert_eq!(check_superblock(&s, fd.as_fd(), 4 << 20), Ok(()));
        let e = check_superblock(&s, fd.as_fd(), 2 << 20).unwrap_err();
        assert!(e.contains("larger than the file"), "{e}");
        let zeros = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(zeros.path(), vec![0u8; 4096]).unwrap();
        let e = check_superblock(&s, std::fs::File::open(zeros.path()).unwrap().as_fd(), 4096).unwrap_err();
        assert!(e.contains("no ext4 filesystem"), "{e}");
    }
}
