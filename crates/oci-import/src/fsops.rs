//! The image tree being built, reached only through directory fds: every lookup is
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` below the tree's
//! root and every change an `*at` call on the parent's fd, so nothing an image contains (a
//! symlink to `/`, to `..`, to another directory of the customer's) is ever followed.

use crate::{err, Result};
use jail::linux::Linux;
use jail::syscalls::{FileKind, Stat, RESOLVE_SAFE};
use jail::Syscalls;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const SYS: Linux = Linux;

/// A directory (the distros dir, or an image root being built) and what is done below it.
pub struct Tree {
    fd: OwnedFd,
    path: PathBuf,
}

fn io_err(op: &str, path: &Path, e: io::Error) -> crate::ImportError {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::EXDEV) => err(format!(
            "{op} {}: the path passes through a symlink (or leaves the image); refused, nothing followed",
            path.display()
        )),
        _ => err(format!("{op} {}: {e}", path.display())),
    }
}

fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

fn split(rel: &Path) -> (&Path, &Path) {
    (rel.parent().unwrap_or(Path::new("")), Path::new(rel.file_name().unwrap_or_default()))
}

impl Tree {
    /// Opens the directory the customer named (their own path: followed as given).
    pub fn open_dir(path: &Path) -> Result<Tree> {
        let fd = SYS
            .openat2(None, path, libc::O_RDONLY | libc::O_DIRECTORY, 0, 0)
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        Ok(Tree { fd, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lstat_at(&self, dir: &OwnedFd, name: &Path, shown: &Path) -> Result<Option<Stat>> {
        match SYS.fstatat_nofollow(dir.as_fd(), name) {
            Ok(st) => Ok(Some(st)),
            Err(e) if is_enoent(&e) => Ok(None),
            Err(e) => Err(io_err("lstat", shown, e)),
        }
    }

    pub fn exists(&self, name: &str) -> Result<bool> {
        Ok(self.lstat_at(&self.fd, Path::new(name), &self.path.join(name))?.is_some())
    }

    fn open_beneath(&self, rel: &Path) -> io::Result<OwnedFd> {
        let rel = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        SYS.openat2(Some(self.fd.as_fd()), rel, libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_SAFE)
    }

    /// The directory `rel` names, created (0755, one component at a time, none followed) when
    /// `create` and missing; `None` when missing and not `create`.
    fn dir(&self, rel: &Path, create: bool) -> Result<Option<OwnedFd>> {
        match self.open_beneath(rel) {
            Ok(fd) => return Ok(Some(fd)),
            Err(e) if is_enoent(&e) && create => {}
            Err(e) if is_enoent(&e) => return Ok(None),
            Err(e) => return Err(io_err("open", rel, e)),
        }
        let mut cur = self.open_beneath(Path::new("")).map_err(|e| io_err("open", &self.path, e))?;
        let mut so_far = PathBuf::new();
        for c in rel.components() {
            so_far.push(c);
            let name = Path::new(c.as_os_str());
            match SYS.mkdirat(cur.as_fd(), name, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(io_err("mkdir", &so_far, e)),
            }
            cur = SYS
                .openat2(Some(cur.as_fd()), name, libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_SAFE)
                .map_err(|e| io_err("open", &so_far, e))?;
        }
        Ok(Some(cur))
    }

    /// A new, empty directory `name` right below this one, as a tree of its own.
    pub fn create_subtree(&self, name: &str) -> Result<Tree> {
        let shown = self.path.join(name);
        SYS.mkdirat(self.fd.as_fd(), Path::new(name), 0o755).map_err(|e| io_err("mkdir", &shown, e))?;
        let fd = SYS
            .openat2(Some(self.fd.as_fd()), Path::new(name), libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_SAFE)
            .map_err(|e| io_err("open", &shown, e))?;
        Ok(Tree { fd, path: shown })
    }

    /// Renames the finished `work` to `name`; with `replace`, an existing `name` is swapped out
    /// and removed.
    pub fn install(&self, work: &str, name: &str, replace: bool) -> Result<()> {
        let d = self.fd.as_fd();
        match SYS.renameat_noreplace(d, Path::new(work), d, Path::new(name)) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && replace => {}
            Err(e) => {
                let _ = self.remove_tree(work);
                return Err(io_err("rename into place", &self.path.join(name), e));
            }
        }
        let old = format!(".old-{name}-{}", std::process::id());
        SYS.renameat(d, Path::new(name), d, Path::new(&old)).map_err(|e| io_err("rename", &self.path.join(name), e))?;
        SYS.renameat(d, Path::new(work), d, Path::new(name)).map_err(|e| io_err("rename", &self.path.join(name), e))?;
        self.remove_tree(&old)
    }

    /// Removes `name` below this directory, whatever it is, following nothing.
    pub fn remove_tree(&self, name: &str) -> Result<()> {
        remove_at(&self.fd, Path::new(name), &self.path.join(name))
    }

    /// Removes `rel` (a whiteout); nothing there is fine.
    pub fn remove(&self, rel: &Path) -> Result<()> {
        let (dir, name) = split(rel);
        match self.dir(dir, false)? {
            Some(fd) => remove_at(&fd, name, rel),
            None => Ok(()),
        }
    }

    /// Removes every child of `rel` for which `keep` (given the child's path) is false.
    pub fn clear_dir(&self, rel: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<()> {
        let Some(fd) = self.dir(rel, false)? else { return Ok(()) };
        for child in list(&fd, rel)? {
            let path = rel.join(&child);
            if !keep(&path) {
                remove_at(&fd, Path::new(&child), &path)?;
            }
        }
        Ok(())
    }

    /// Makes `rel` a directory with `mode` (keeping what a lower layer put in it).
    pub fn mkdir(&self, rel: &Path, mode: u32) -> Result<()> {
        let (dir, name) = split(rel);
        let parent = self.dir(dir, true)?.expect("created");
        match self.lstat_at(&parent, name, rel)? {
            Some(st) if st.kind == FileKind::Dir => {}
            Some(_) => {
                remove_at(&parent, name, rel)?;
                SYS.mkdirat(parent.as_fd(), name, 0o700).map_err(|e| io_err("mkdir", rel, e))?;
            }
            None => SYS.mkdirat(parent.as_fd(), name, 0o700).map_err(|e| io_err("mkdir", rel, e))?,
        }
        let fd = SYS
            .openat2(Some(parent.as_fd()), name, libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_SAFE)
            .map_err(|e| io_err("open", rel, e))?;
        SYS.fchmod(fd.as_fd(), mode).map_err(|e| io_err("chmod", rel, e))
    }

    /// Writes a new regular file `rel` (replacing whatever was there) from `data`; returns
    /// its size.
    pub fn write_file(&self, rel: &Path, mode: u32, data: &mut dyn Read) -> Result<u64> {
        let (dir, name) = split(rel);
        let parent = self.dir(dir, true)?.expect("created");
        remove_at(&parent, name, rel)?;
        let fd = SYS
            .openat2(
                Some(parent.as_fd()),
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
                RESOLVE_SAFE,
            )
            .map_err(|e| io_err("create", rel, e))?;
        let mut file = std::fs::File::from(fd);
        let n = io::copy(data, &mut file).map_err(|e| io_err("write", rel, e))?;
        SYS.fchmod(file.as_fd(), mode).map_err(|e| io_err("chmod", rel, e))?;
        Ok(n)
    }

    /// A symlink `rel` -> `target`. The target is stored as the image has it (absolute ones
    /// included: they mean the container's own root once booted) and never followed here.
    pub fn symlink(&self, rel: &Path, target: &Path) -> Result<()> {
        let (dir, name) = split(rel);
        let parent = self.dir(dir, true)?.expect("created");
        remove_at(&parent, name, rel)?;
        SYS.symlinkat(target, parent.as_fd(), name).map_err(|e| io_err("symlink", rel, e))
    }

    /// A hard link `rel` to `target`, a file already in this tree (looked up beneath it, no
    /// symlink on the way, the target itself not followed). `false` when there is no such
    /// file: nothing is linked then.
    pub fn hardlink(&self, rel: &Path, target: &Path) -> Result<bool> {
        let (tdir, tname) = split(target);
        let Some(tparent) = self.dir(tdir, false)? else { return Ok(false) };
        match self.lstat_at(&tparent, tname, target)? {
            Some(st) if matches!(st.kind, FileKind::File | FileKind::Symlink) => {}
            _ => return Ok(false),
        }
        let (dir, name) = split(rel);
        let parent = self.dir(dir, true)?.expect("created");
        if rel == target {
            return Ok(true);
        }
        remove_at(&parent, name, rel)?;
        nix::unistd::linkat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&tparent)),
            tname,
            Some(std::os::fd::AsRawFd::as_raw_fd(&parent)),
            name,
            nix::fcntl::AtFlags::empty(),
        )
        .map_err(|e| io_err("link", rel, io::Error::from_raw_os_error(e as i32)))?;
        Ok(true)
    }

    /// Makes `rel` a directory if it is not one (a symlink there is replaced); `true` if it
    /// changed anything.
    pub fn ensure_dir(&self, rel: &Path) -> Result<bool> {
        let (dir, name) = split(rel);
        let parent = self.dir(dir, true)?.expect("created");
        match self.lstat_at(&parent, name, rel)? {
            Some(st) if st.kind == FileKind::Dir => Ok(false),
            other => {
                if other.is_some() {
                    remove_at(&parent, name, rel)?;
                }
                SYS.mkdirat(parent.as_fd(), name, 0o755).map_err(|e| io_err("mkdir", rel, e))?;
                Ok(true)
            }
        }
    }

    /// Makes `rel` a regular file (with `seed` when it has to be created; a symlink there is
    /// replaced); `true` if it changed anything.
    pub fn ensure_file(&self, rel: &Path, seed: &[u8]) -> Result<bool> {
        let (dir, name) = split(rel);
        let parent = self.dir(dir, true)?.expect("created");
        match self.lstat_at(&parent, name, rel)? {
            Some(st) if st.kind == FileKind::File => Ok(false),
            _ => {
                self.write_file(rel, 0o644, &mut &seed[..])?;
                Ok(true)
            }
        }
    }
}

/// The names in a directory (not `.` and `..`).
fn list(dir: &OwnedFd, shown: &Path) -> Result<Vec<OsString>> {
    let fd = SYS
        .openat2(Some(dir.as_fd()), Path::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_SAFE)
        .map_err(|e| io_err("open", shown, e))?;
    let mut d =
        nix::dir::Dir::from(fd).map_err(|e| io_err("opendir", shown, io::Error::from_raw_os_error(e as i32)))?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(|e| io_err("readdir", shown, io::Error::from_raw_os_error(e as i32)))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from(std::ffi::OsStr::from_bytes(name)));
        }
    }
    Ok(names)
}

/// Removes `name` in `dir`, recursively for a directory, following nothing; missing is fine.
fn remove_at(dir: &OwnedFd, name: &Path, shown: &Path) -> Result<()> {
    let st = match SYS.fstatat_nofollow(dir.as_fd(), name) {
        Ok(st) => st,
        Err(e) if is_enoent(&e) => return Ok(()),
        Err(e) => return Err(io_err("lstat", shown, e)),
    };
    if st.kind == FileKind::Dir {
        let sub = SYS
            .openat2(Some(dir.as_fd()), name, libc::O_RDONLY | libc::O_DIRECTORY, 0, RESOLVE_SAFE)
            .map_err(|e| io_err("open", shown, e))?;
        // A lower layer's 0555 directory: its owner (this uid) may always open it up.
        if st.mode & 0o700 != 0o700 {
            SYS.fchmod(sub.as_fd(), st.mode | 0o700).map_err(|e| io_err("chmod", shown, e))?;
        }
        for child in list(&sub, shown)? {
            remove_at(&sub, Path::new(&child), &shown.join(&child))?;
        }
    }
    SYS.unlinkat(dir.as_fd(), name, st.kind == FileKind::Dir).map_err(|e| io_err("remove", shown, e))
}
