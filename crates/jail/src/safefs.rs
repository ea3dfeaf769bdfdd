//! Symlink-safe, atomic file operations inside customer-writable trees, built on
//! [`Syscalls`]. Every lookup is `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a
//! directory fd we hold; decisions are made on `fstatat(AT_SYMLINK_NOFOLLOW)` results and
//! re-checked on the opened fd; writes go to a fresh `O_EXCL|O_NOFOLLOW` temp file in the same
//! directory, then `renameat` over the name (rename replaces a planted symlink itself and
//! never writes through it).

use crate::error::{IoContext, JailError, Result};
use crate::syscalls::{is_enoent, FileKind, Stat, Syscalls, RESOLVE_SAFE};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An open directory and the path it stands for (for error messages only: the path is
/// never used to reach the directory again).
#[derive(Debug)]
pub struct Dir {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

impl Dir {
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

/// Maps the errors a safe lookup gives when it meets something planted.
pub fn lookup_error(op: &'static str, path: PathBuf, e: io::Error) -> JailError {
    match e.raw_os_error() {
        Some(libc::ELOOP) => JailError::planted(path, "a symlink"),
        Some(libc::EXDEV) => JailError::planted(path, "a path leaving its directory"),
        Some(libc::ENOTDIR) => JailError::planted(path, "a non-directory in the path"),
        _ => JailError::io(op, path, e),
    }
}

/// Opens a host directory the operator configured (it may legitimately contain symlinks,
/// e.g. `/containers -> /srv/containers`; customers cannot write there).
pub fn open_trusted_dir(sys: &dyn Syscalls, path: &Path) -> Result<Dir> {
    let fd = sys.openat2(None, path, libc::O_RDONLY | libc::O_DIRECTORY, 0, 0).ctx("open", path)?;
    Ok(Dir { fd, path: path.to_path_buf() })
}

/// Opens `rel` below `dir` as a directory without ever traversing a symlink.
pub fn open_dir(sys: &dyn Syscalls, dir: &Dir, rel: impl AsRef<Path>) -> Result<Dir> {
    let rel = rel.as_ref();
    let path = dir.join(rel);
    let fd = sys
        .openat2(Some(dir.as_fd()), rel, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0, RESOLVE_SAFE)
        .map_err(|e| lookup_error("openat2", path.clone(), e))?;
    Ok(Dir { fd, path })
}

/// Opens `rel` below `dir` as an `O_PATH` handle (for mounting), never through a symlink,
/// and checks it is of the expected kind.
pub fn open_path(sys: &dyn Syscalls, dir: &Dir, rel: impl AsRef<Path>, want: FileKind) -> Result<OwnedFd> {
    let rel = rel.as_ref();
    let path = dir.join(rel);
    let mut flags = libc::O_PATH | libc::O_NOFOLLOW;
    if want == FileKind::Dir {
        flags |= libc::O_DIRECTORY;
    }
    let fd = sys
        .openat2(Some(dir.as_fd()), rel, flags, 0, RESOLVE_SAFE)
        .map_err(|e| lookup_error("openat2", path.clone(), e))?;
    let st = sys.fstat(fd.as_fd()).ctx("fstat", &path)?;
    if st.kind != want {
        return Err(JailError::planted(path, st.kind.describe()));
    }
    Ok(fd)
}

/// What sits at a name, without following it.
pub fn lstat(sys: &dyn Syscalls, dir: &Dir, name: &str) -> Result<Option<Stat>> {
    match sys.fstatat_nofollow(dir.as_fd(), Path::new(name)) {
        Ok(st) => Ok(Some(st)),
        Err(e) if is_enoent(&e) => Ok(None),
        Err(e) => Err(JailError::io("fstatat", dir.join(name), e)),
    }
}

/// Who should own a platform-made entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
    pub fn container(uid: u32) -> Owner {
        Owner { uid, gid: uid }
    }
}

/// Something the platform found in its way in a customer's tree and moved aside, never deleted
/// and never followed: the customer finds it, whole, under the new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Displaced {
    pub from: PathBuf,
    pub to: PathBuf,
    /// What it was ("a regular file", "a symlink"...).
    pub found: &'static str,
}

/// How many names [`displace`] tries before it gives up.
const DISPLACE_TRIES: u32 = 64;

/// Moves `dir/name` out of the platform's way, to `<name>.displaced` (or `-2`, `-3`...) in the
/// same directory, without a leading dot so the customer sees it. `RENAME_NOREPLACE`: a
/// customer file already at one of those names is never replaced; the rename moves the entry
/// itself (a symlink stays a symlink, pointing where it did).
pub fn displace(sys: &dyn Syscalls, dir: &Dir, name: &str, found: FileKind) -> Result<Displaced> {
    let from = dir.join(name);
    let base = format!("{}.displaced", name.trim_start_matches('.'));
    for n in 1..=DISPLACE_TRIES {
        let new = if n == 1 { base.clone() } else { format!("{base}-{n}") };
        match sys.renameat_noreplace(dir.as_fd(), Path::new(name), dir.as_fd(), Path::new(&new)) {
            Ok(()) => return Ok(Displaced { from, to: dir.join(new), found: found.describe() }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(JailError::io("renameat2 (moving an obstacle aside)", from, e)),
        }
    }
    Err(JailError::planted(
        from,
        format!("{} and {DISPLACE_TRIES} names to move it aside to all taken", found.describe()),
    ))
}

/// What [`ensure_dir`] does with a non-directory at the name.
enum Obstacles<'a> {
    /// A root-owned tree: a symlink is removed (unlinking a link never touches its target),
    /// anything else is reported, since only root could have put it there.
    Refuse,
    /// A customer's tree: whatever it is, it is moved aside ([`displace`]) and listed here.
    MoveAside(&'a mut Vec<Displaced>),
}

/// Makes sure `parent/name` is a real directory owned by `owner`, creating it with `mode`
/// if missing, in a tree only root writes (see [`ensure_own_dir`] for a customer's tree). A
/// symlink in its place is removed and replaced; any other non-directory is reported.
/// Returns the open directory.
pub fn ensure_dir(sys: &dyn Syscalls, parent: &Dir, name: &str, owner: Owner, mode: u32) -> Result<Dir> {
    make_dir(sys, parent, name, owner, mode, Obstacles::Refuse)
}

/// [`ensure_dir`] for one of the platform's own directories in a customer's tree (`~/.ssh`,
/// `~/logs`...): whatever non-directory the customer put at the name (a file, a symlink, a
/// FIFO) is moved aside with [`displace`] and listed in `moved`, so the platform's setup
/// always goes on and the customer is told where their entry went.
pub fn ensure_own_dir(
    sys: &dyn Syscalls,
    parent: &Dir,
    name: &str,
    owner: Owner,
    mode: u32,
    moved: &mut Vec<Displaced>,
) -> Result<Dir> {
    make_dir(sys, parent, name, owner, mode, Obstacles::MoveAside(moved))
}

fn make_dir(
    sys: &dyn Syscalls,
    parent: &Dir,
    name: &str,
    owner: Owner,
    mode: u32,
    mut obstacles: Obstacles,
) -> Result<Dir> {
    let path = parent.join(name);
    let mut created = false;
    // Two rounds: a racing customer can put something back between the removal and mkdir
    // once; a second loss is reported rather than retried forever.
    for _ in 0..2 {
        match (lstat(sys, parent, name)?, &mut obstacles) {
            (Some(st), _) if st.kind == FileKind::Dir => break,
            (Some(st), Obstacles::MoveAside(moved)) => moved.push(displace(sys, parent, name, st.kind)?),
            (Some(st), Obstacles::Refuse) if st.kind == FileKind::Symlink => {
                sys.unlinkat(parent.as_fd(), Path::new(name), false).ctx("unlinkat (planted symlink)", &path)?;
            }
            (Some(st), Obstacles::Refuse) => return Err(JailError::planted(&path, st.kind.describe())),
            (None, _) => {}
        }
        match sys.mkdirat(parent.as_fd(), Path::new(name), mode) {
            Ok(()) => {
                created = true;
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(JailError::io("mkdirat", path, e)),
        }
    }
    let dir = open_dir(sys, parent, name)?;
    let st = sys.fstat(dir.as_fd()).ctx("fstat", &path)?;
    if st.uid != owner.uid || st.gid != owner.gid {
        sys.fchown(dir.as_fd(), owner.uid, owner.gid).ctx("fchown", &path)?;
    }
    if created && st.mode != mode {
        // mkdir applied the umask.
        sys.fchmod(dir.as_fd(), mode).ctx("fchmod", &path)?;
    }
    Ok(dir)
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(name: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!(".{name}.unbit-{}-{}-{nanos:x}", std::process::id(), TMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Replaces `dir/name` atomically with `data`, owned by `owner` with exactly `mode`.
/// Whatever was at `name` (file, planted symlink) is replaced, never written through; a
/// directory at `name` is reported.
pub fn atomic_write(sys: &dyn Syscalls, dir: &Dir, name: &str, data: &[u8], owner: Owner, mode: u32) -> Result<()> {
    let path = dir.join(name);
    let (tmp, fd) = {
        let mut attempt = 0;
        loop {
            let tmp = temp_name(name);
            match sys.openat2(
                Some(dir.as_fd()),
                Path::new(&tmp),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
                RESOLVE_SAFE,
            ) {
                Ok(fd) => break (tmp, fd),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempt < 8 => attempt += 1,
                Err(e) => return Err(lookup_error("openat2 (temp file)", dir.join(&tmp), e)),
            }
        }
    };
    let result = (|| {
        sys.write_all(fd.as_fd(), data).ctx("write", dir.join(&tmp))?;
        sys.fchown(fd.as_fd(), owner.uid, owner.gid).ctx("fchown", dir.join(&tmp))?;
        sys.fchmod(fd.as_fd(), mode).ctx("fchmod", dir.join(&tmp))?;
        // No fsync: everything written here is derived from the spec and compared with what
        // is on disk at every start (`sync_file`), so a file a crash left empty is rewritten at
        // the next start. Six fsyncs per new home cost ~5 ms each on a busy disk, serialized in
        // the Emperor for every container.
        sys.renameat(dir.as_fd(), Path::new(&tmp), dir.as_fd(), Path::new(name)).map_err(|e| match e.raw_os_error() {
            Some(libc::EISDIR) | Some(libc::ENOTEMPTY) => JailError::planted(&path, "a directory"),
            _ => JailError::io("renameat", &path, e),
        })
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and holds nothing secret beyond `data`.
        let _ = sys.unlinkat(dir.as_fd(), Path::new(&tmp), false);
    }
    result
}

/// Makes `dir/name` hold exactly `data` with this owner and mode, writing (atomically) only
/// when something differs. Skipping identical rewrites keeps mtimes meaningful and lets a
/// container whose disk is full at its quota still start (a rewrite would need new blocks).
pub fn sync_file(sys: &dyn Syscalls, dir: &Dir, name: &str, data: &[u8], owner: Owner, mode: u32) -> Result<()> {
    match open_existing_file(sys, dir, name) {
        Ok(Some(f))
            if f.stat.nlink == 1
                && (f.stat.uid, f.stat.gid) == (owner.uid, owner.gid)
                && f.stat.mode == mode
                && f.stat.size == data.len() as u64 =>
        {
            let current = sys.read_all(f.fd.as_fd()).ctx("read", dir.join(name))?;
            if current == data {
                return Ok(());
            }
        }
        Ok(_) | Err(JailError::Planted { .. }) => {}
        Err(e) => return Err(e),
    }
    atomic_write(sys, dir, name, data, owner, mode)
}

/// Creates `dir/name` as an empty file if nothing is there (O_EXCL: never opens something a
/// customer put there in the meantime). Returns whether it was created.
pub fn create_empty(sys: &dyn Syscalls, dir: &Dir, name: &str, owner: Owner, mode: u32) -> Result<bool> {
    let path = dir.join(name);
    match sys.openat2(
        Some(dir.as_fd()),
        Path::new(name),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        mode,
        RESOLVE_SAFE,
    ) {
        Ok(fd) => {
            sys.fchown(fd.as_fd(), owner.uid, owner.gid).ctx("fchown", &path)?;
            sys.fchmod(fd.as_fd(), mode).ctx("fchmod", &path)?;
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(lookup_error("openat2", path, e)),
    }
}

/// A regular file found at a name, opened without following anything.
pub struct Existing {
    pub fd: OwnedFd,
    pub stat: Stat,
}

/// Opens `dir/name` read-only if it is a regular file; `None` if it is missing; an error
/// naming the path if it is a symlink or anything else.
pub fn open_existing_file(sys: &dyn Syscalls, dir: &Dir, name: &str) -> Result<Option<Existing>> {
    let path = dir.join(name);
    let open = |flags| match sys.openat2(Some(dir.as_fd()), Path::new(name), flags, 0, RESOLVE_SAFE) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if is_enoent(&e) => Ok(None),
        Err(e) => Err(lookup_error("openat2", path.clone(), e)),
    };
    // Looked at through an O_PATH descriptor first, so a device node planted here is never
    // opened (that would run its driver's open; on a nodev home it fails with EACCES).
    let Some(probe) = open(libc::O_PATH | libc::O_NOFOLLOW)? else { return Ok(None) };
    let seen = sys.fstat(probe.as_fd()).ctx("fstat", &path)?;
    if seen.kind != FileKind::File {
        return Err(JailError::planted(path, seen.kind.describe()));
    }
    // O_NONBLOCK: a FIFO swapped in meanwhile must not block the Emperor.
    let Some(fd) = open(libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK)? else { return Ok(None) };
    let stat = sys.fstat(fd.as_fd()).ctx("fstat", &path)?;
    if stat.kind != FileKind::File || (stat.dev, stat.ino) != (seen.dev, seen.ino) {
        return Err(JailError::planted(path, "a file replaced while it was being opened"));
    }
    Ok(Some(Existing { fd, stat }))
}
