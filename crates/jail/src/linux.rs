//! The real [`Syscalls`]: thin wrappers over nix where it has a safe wrapper, raw syscalls
//! (each with its SAFETY note) where it does not (openat2, capget/capset, close_range).

use crate::syscalls::{CapSets, FileKind, Stat, Syscalls};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The host kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

fn nix_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn stat_of(st: &libc::stat) -> Stat {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FileKind::Dir,
        libc::S_IFREG => FileKind::File,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFCHR => FileKind::CharDevice,
        _ => FileKind::Other,
    };
    Stat {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        nlink: st.st_nlink,
        size: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
    }
}

/// Reads a borrowed fd without taking ownership of it.
fn borrowed_file(fd: BorrowedFd<'_>) -> std::mem::ManuallyDrop<std::fs::File> {
    // SAFETY: the fd is valid for the borrow; ManuallyDrop guarantees the File never closes it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) })
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn prctl(option: libc::c_int, arg2: u64, arg3: u64) -> io::Result<libc::c_int> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    let r = unsafe {
        libc::prctl(option, arg2 as libc::c_ulong, arg3 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong)
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Syscalls for Linux {
    fn openat2(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &Path,
        flags: i32,
        mode: u32,
        resolve: u64,
    ) -> io::Result<OwnedFd> {
        let c = cstring(path)?;
        // SAFETY: open_how is plain data; zeroed is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 { mode as u64 } else { 0 };
        how.resolve = resolve;
        let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
        // SAFETY: c and how outlive the call; the size passed is the size of `how`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }

    fn fstat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat> {
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(nix_err)?;
        Ok(stat_of(&st))
    }

    fn fstatat_nofollow(&self, dir: BorrowedFd<'_>, name: &Path) -> io::Result<Stat> {
        let st = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(nix_err)?;
        Ok(stat_of(&st))
    }

    fn mkdirat(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()> {
        nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode)).map_err(nix_err)
    }

    fn mknod_char(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        nix::sys::stat::mknodat(
            Some(dir.as_raw_fd()),
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::makedev(major as u64, minor as u64),
        )
        .map_err(nix_err)
    }

    fn symlinkat(&self, target: &Path, dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
        nix::unistd::symlinkat(target, Some(dir.as_raw_fd()), name).map_err(nix_err)
    }

    fn fchown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
        nix::unistd::fchownat(
            Some(fd.as_raw_fd()),
            "",
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(nix_err)
    }

    fn fchmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(nix_err)
    }

    fn fchmodat(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()> {
        nix::sys::stat::fchmodat(
            Some(dir.as_raw_fd()),
            name,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(nix_err)
    }

    fn unlinkat(&self, dir: BorrowedFd<'_>, name: &Path, is_dir: bool) -> io::Result<()> {
        let flag = if is_dir { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
        nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, flag).map_err(nix_err)
    }

    fn renameat(&self, old_dir: BorrowedFd<'_>, old: &Path, new_dir: BorrowedFd<'_>, new: &Path) -> io::Result<()> {
        nix::fcntl::renameat(Some(old_dir.as_raw_fd()), old, Some(new_dir.as_raw_fd()), new).map_err(nix_err)
    }

    fn renameat_noreplace(
        &self,
        old_dir: BorrowedFd<'_>,
        old: &Path,
        new_dir: BorrowedFd<'_>,
        new: &Path,
    ) -> io::Result<()> {
        nix::fcntl::renameat2(
            Some(old_dir.as_raw_fd()),
            old,
            Some(new_dir.as_raw_fd()),
            new,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(nix_err)
    }

    fn write_all(&self, fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
        borrowed_file(fd).write_all(data)
    }

    fn read_all(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        borrowed_file(fd).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn read_at_most(&self, fd: BorrowedFd<'_>, max: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        (&*borrowed_file(fd)).take(max).read_to_end(&mut buf)?;
        Ok(buf)
    }

    fn fsync(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        nix::unistd::fsync(fd.as_raw_fd()).map_err(nix_err)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(nix_err)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(nix_err)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(nix_err)
    }

    fn fchdir(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        nix::unistd::fchdir(fd.as_raw_fd()).map_err(nix_err)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(nix_err)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(nix_err)
    }

    fn setgroups_empty(&self) -> io::Result<()> {
        nix::unistd::setgroups(&[]).map_err(nix_err)
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(nix_err)
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u).map_err(nix_err)
    }

    fn getresuid(&self) -> io::Result<(u32, u32, u32)> {
        let r = nix::unistd::getresuid().map_err(nix_err)?;
        Ok((r.real.as_raw(), r.effective.as_raw(), r.saved.as_raw()))
    }

    fn getresgid(&self) -> io::Result<(u32, u32, u32)> {
        let r = nix::unistd::getresgid().map_err(nix_err)?;
        Ok((r.real.as_raw(), r.effective.as_raw(), r.saved.as_raw()))
    }

    fn getgroups_count(&self) -> io::Result<usize> {
        // SAFETY: size 0 with a null list only asks for the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as u64, 0).map(drop)
    }

    fn drop_bounding_caps(&self) -> io::Result<()> {
        for cap in 0..64 {
            match prctl(libc::PR_CAPBSET_DROP, cap, 0) {
                Ok(_) => {}
                // EINVAL: past the kernel's last capability.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn clear_caps(&self) -> io::Result<()> {
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData::default(); 2];
        // SAFETY: version 3 takes two CapData entries; both structs outlive the call.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn caps(&self) -> io::Result<CapSets> {
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        // SAFETY: version 3 fills two CapData entries; both structs outlive the call.
        let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let join = |lo: u32, hi: u32| (lo as u64) | ((hi as u64) << 32);
        let mut sets = CapSets {
            effective: join(data[0].effective, data[1].effective),
            permitted: join(data[0].permitted, data[1].permitted),
            inheritable: join(data[0].inheritable, data[1].inheritable),
            ..CapSets::default()
        };
        for cap in 0..64u64 {
            match prctl(libc::PR_CAPBSET_READ, cap, 0) {
                Ok(1) => sets.bounding |= 1 << cap,
                Ok(_) => {}
                // EINVAL: past the kernel's last capability.
                Err(_) => break,
            }
            let ambient = prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_IS_SET as u64, cap);
            if let Ok(1) = ambient {
                sets.ambient |= 1 << cap;
            }
        }
        Ok(sets)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(nix_err)
    }

    fn no_new_privs(&self) -> io::Result<bool> {
        nix::sys::prctl::get_no_new_privs().map_err(nix_err)
    }

    fn close_range(&self, first: u32, last: u32) -> io::Result<()> {
        // SAFETY: closes fds by number; the caller guarantees no Rust object still owns them
        // (it runs right before exec).
        let r = unsafe { libc::close_range(first, last, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn clear_environment(&self) -> io::Result<()> {
        // SAFETY: called in the Emperor's forked child right before exec, which runs a single
        // thread: nothing reads or writes the environment concurrently.
        if unsafe { libc::clearenv() } != 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        // Kernel control files take one value per write(2): never split the buffer.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let n = f.write(data)?;
        if n != data.len() {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "short write"));
        }
        Ok(())
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        nix::unistd::mkdir(path, Mode::from_bits_truncate(mode)).map_err(nix_err)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        let sig = nix::sys::signal::Signal::try_from(signal).map_err(nix_err)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(nix_err)
    }
}

/// Waits up to `timeout_ms` for `fd` to be readable (or hung up): `Ok(true)` when it is. For a
/// descriptor the caller holds by number only, such as the Emperor's pipe a container's init
/// inherited (uWSGI's vassal protocol hands it over as a number in the environment).
pub fn wait_readable(fd: std::os::fd::RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd on the stack, valid for the call; poll(2) only reads `fd` as a number
    // (a closed or invalid one comes back as POLLNVAL, not undefined behaviour).
    let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(r > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0)
}
