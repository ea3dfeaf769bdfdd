//! A recording fake of [`Syscalls`] over a small in-memory filesystem with a mount table,
//! so the home layout and the whole jail sequence run without root and the tests can check
//! the exact calls: which mounts, with which flags, in which order, and that no lookup ever
//! went through a symlink.
//!
//! The model is deliberately small: nodes keyed by absolute "backing" path, mounts that
//! redirect a directory to another backing path (bind) or to a fresh empty filesystem
//! (tmpfs, proc, ...), `openat2` that honours `RESOLVE_BENEATH`, `RESOLVE_NO_SYMLINKS`,
//! `O_NOFOLLOW`, `O_CREAT|O_EXCL` and `O_DIRECTORY` like the kernel does. Every fd handed out
//! is a real fd (of `/dev/null`) so `OwnedFd` semantics hold; the fake maps its number to
//! the path it was opened on.

use crate::syscalls::{CapSets, FileKind, Stat, Syscalls, RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS};
use nix::mount::{MntFlags, MsFlags};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

/// One recorded privileged call. Paths are "view" paths: what the caller would have seen
/// (the directory fd's path joined with the relative path), with `/proc/self/fd/N`
/// translated back to the path the fd was opened on. `Rename { exclusive: true }` is
/// `RENAME_NOREPLACE`, which never replaces what is at `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Open { path: PathBuf, flags: i32, resolve: u64 },
    Mkdir { path: PathBuf, mode: u32 },
    Mknod { path: PathBuf, major: u32, minor: u32 },
    Symlink { target: PathBuf, path: PathBuf },
    Chown { path: PathBuf, uid: u32, gid: u32 },
    Chmod { path: PathBuf, mode: u32 },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf, exclusive: bool },
    Write { path: PathBuf, data: Vec<u8> },
    Fsync { path: PathBuf },
    Mount { source: Option<PathBuf>, target: PathBuf, fstype: Option<String>, flags: MsFlags, data: Option<String> },
    Umount { target: PathBuf, flags: MntFlags },
    PivotRoot { new_root: PathBuf, put_old: PathBuf },
    Chdir { path: PathBuf },
    Sethostname(String),
    Setgroups,
    Setresgid(u32),
    Setresuid(u32),
    ClearAmbientCaps,
    DropBoundingCaps,
    ClearCaps,
    NoNewPrivs,
    CloseRange(u32, u32),
    ClearEnvironment,
    WriteFile { path: PathBuf, data: String },
    MkdirAbs { path: PathBuf },
    Rmdir { path: PathBuf },
    Kill { pid: i32, signal: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: FileKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub data: Vec<u8>,
    /// Symlink target.
    pub target: Option<PathBuf>,
    pub rdev: (u32, u32),
}

impl Node {
    fn new(kind: FileKind, mode: u32) -> Self {
        Node { kind, mode, uid: 0, gid: 0, nlink: 1, data: Vec::new(), target: None, rdev: (0, 0) }
    }
}

#[derive(Debug, Clone)]
struct FdInfo {
    view: PathBuf,
    backing: PathBuf,
}

#[derive(Debug)]
struct State {
    nodes: BTreeMap<PathBuf, Node>,
    /// Mountpoint backing path -> backing path of the mounted tree (last one wins).
    mounts: Vec<(PathBuf, PathBuf)>,
    fds: HashMap<RawFd, FdInfo>,
    calls: Vec<Call>,
    cwd: FdInfo,
    next_fs: u32,
    ids: (u32, u32),
    groups: usize,
    caps: CapSets,
    nnp: bool,
    /// (operation, path suffix) -> errno, for failure injection.
    failures: Vec<(&'static str, PathBuf, i32)>,
    /// Emulated cgroupfs mounts: a directory made under one gets these control files.
    cgroupfs: Vec<(PathBuf, Vec<(String, String)>)>,
}

/// The recording fake. Not thread-safe by design (tests are sequential per instance).
#[derive(Debug)]
pub struct Fake {
    st: RefCell<State>,
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Lexically normalizes an absolute path (no symlink handling: callers resolve first).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

const ALL_CAPS: u64 = (1u64 << 41) - 1;

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    pub fn new() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(PathBuf::from("/"), Node::new(FileKind::Dir, 0o755));
        let root = FdInfo { view: "/".into(), backing: "/".into() };
        Fake {
            st: RefCell::new(State {
                nodes,
                mounts: Vec::new(),
                fds: HashMap::new(),
                calls: Vec::new(),
                cwd: root,
                next_fs: 0,
                ids: (0, 0),
                groups: 3,
                caps: CapSets {
                    effective: ALL_CAPS,
                    permitted: ALL_CAPS,
                    inheritable: 0,
                    bounding: ALL_CAPS,
                    ambient: 0,
                },
                nnp: false,
                failures: Vec::new(),
                cgroupfs: Vec::new(),
            }),
        }
    }

    // ---- building the model ----

    /// Creates a directory (and its parents), owned by `uid`.
    pub fn dir(&self, path: impl AsRef<Path>, uid: u32, mode: u32) -> &Self {
        let path = normalize(path.as_ref());
        let mut st = self.st.borrow_mut();
        let mut cur = PathBuf::from("/");
        for c in path.components().skip(1) {
            cur.push(c);
            st.nodes.entry(cur.clone()).or_insert_with(|| Node::new(FileKind::Dir, 0o755));
        }
        let n = st.nodes.get_mut(&path).expect("just inserted");
        n.uid = uid;
        n.gid = uid;
        n.mode = mode;
        self
    }

    pub fn file(&self, path: impl AsRef<Path>, uid: u32, data: &[u8]) -> &Self {
        let path = normalize(path.as_ref());
        if let Some(parent) = path.parent() {
            if !self.st.borrow().nodes.contains_key(parent) {
                self.dir(parent, 0, 0o755);
            }
        }
        let mut n = Node::new(FileKind::File, 0o644);
        n.uid = uid;
        n.gid = uid;
        n.data = data.to_vec();
        self.st.borrow_mut().nodes.insert(path, n);
        self
    }

    pub fn symlink(&self, path: impl AsRef<Path>, target: impl AsRef<Path>) -> &Self {
        let mut n = Node::new(FileKind::Symlink, 0o777);
        n.target = Some(target.as_ref().to_path_buf());
        self.st.borrow_mut().nodes.insert(normalize(path.as_ref()), n);
        self
    }

    /// Changes a node in place (e.g. its link count, to model a hard link).
    pub fn edit(&self, path: impl AsRef<Path>, change: impl FnOnce(&mut Node)) -> &Self {
        let p = normalize(path.as_ref());
        change(self.st.borrow_mut().nodes.get_mut(&p).expect("node exists"));
        self
    }

    /// Makes the next matching operation fail with `errno` (`op` is the method name, the
    /// path is matched as a suffix of the view path).
    pub fn fail(&self, op: &'static str, path_suffix: impl AsRef<Path>, errno: i32) -> &Self {
        self.st.borrow_mut().failures.push((op, path_suffix.as_ref().to_path_buf(), errno));
        self
    }

    /// Emulates a cgroup filesystem at `mount`: the directory is created with `files` (name,
    /// content) in it, and every directory later created below it (by [`Syscalls::mkdir`])
    /// gets them too, with the same initial content.
    pub fn cgroupfs(&self, mount: impl AsRef<Path>, files: &[(&str, &str)]) -> &Self {
        let mount = normalize(mount.as_ref());
        self.dir(&mount, 0, 0o755);
        for (name, content) in files {
            self.file(mount.join(name), 0, content.as_bytes());
        }
        self.st
            .borrow_mut()
            .cgroupfs
            .push((mount, files.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect()));
        self
    }

    /// Contents of a file at a backing path, as text.
    pub fn text(&self, path: impl AsRef<Path>) -> Option<String> {
        self.node(path).map(|n| String::from_utf8_lossy(&n.data).into_owned())
    }

    // ---- inspecting ----

    /// The node at a backing path (no mount or symlink resolution).
    pub fn node(&self, path: impl AsRef<Path>) -> Option<Node> {
        self.st.borrow().nodes.get(&normalize(path.as_ref())).cloned()
    }

    /// The node a view path leads to, following mounts (not symlinks).
    pub fn node_in_view(&self, path: impl AsRef<Path>) -> Option<Node> {
        let st = self.st.borrow();
        let b = st.walk(Path::new("/"), path.as_ref(), RESOLVE_NO_SYMLINKS, true, false).ok()?;
        st.nodes.get(&b).cloned()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.st.borrow().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.st.borrow_mut().calls.clear();
    }

    pub fn hostname_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Sethostname(h) => Some(h),
                _ => None,
            })
            .collect()
    }

    // ---- internals ----

    fn record(&self, call: Call) {
        self.st.borrow_mut().calls.push(call);
    }

    fn check_failure(&self, op: &'static str, view: &Path) -> io::Result<()> {
        let mut st = self.st.borrow_mut();
        if let Some(i) = st.failures.iter().position(|(o, p, _)| *o == op && view.ends_with(p)) {
            let (_, _, errno) = st.failures.remove(i);
            return Err(err(errno));
        }
        Ok(())
    }

    /// Records and applies a chmod of the node behind `i` (both chmod entry points).
    fn chmod_node(&self, i: &FdInfo, mode: u32) -> io::Result<()> {
        self.record(Call::Chmod { path: i.view.clone(), mode });
        let mut st = self.st.borrow_mut();
        let n = st.nodes.get_mut(&i.backing).ok_or_else(|| err(libc::ENOENT))?;
        n.mode = mode & 0o7777;
        Ok(())
    }

    /// Both rename entry points: moves the entry (a directory with its whole subtree), never
    /// following a symlink at either name, like the kernel.
    fn rename(
        &self,
        old_dir: BorrowedFd<'_>,
        old: &Path,
        new_dir: BorrowedFd<'_>,
        new: &Path,
        exclusive: bool,
    ) -> io::Result<()> {
        let (from, _) = self.child(old_dir, old)?;
        let (to, _) = self.child(new_dir, new)?;
        self.record(Call::Rename { from: from.view.clone(), to: to.view.clone(), exclusive });
        self.check_failure("renameat", &to.view)?;
        let mut st = self.st.borrow_mut();
        let n = st.nodes.get(&from.backing).cloned().ok_or_else(|| err(libc::ENOENT))?;
        if let Some(existing) = st.nodes.get(&to.backing) {
            if exclusive {
                return Err(err(libc::EEXIST));
            }
            if existing.kind == FileKind::Dir && n.kind != FileKind::Dir {
                return Err(err(libc::EISDIR));
            }
        }
        let moved: Vec<PathBuf> = st.nodes.keys().filter(|k| k.starts_with(&from.backing)).cloned().collect();
        for k in moved {
            let node = st.nodes.remove(&k).expect("listed");
            let rest = k.strip_prefix(&from.backing).expect("prefix").to_path_buf();
            let dest = if rest.as_os_str().is_empty() { to.backing.clone() } else { to.backing.join(rest) };
            st.nodes.insert(dest, node);
        }
        Ok(())
    }

    fn fd_info(&self, fd: BorrowedFd<'_>) -> io::Result<FdInfo> {
        self.st.borrow().fds.get(&fd.as_raw_fd()).cloned().ok_or_else(|| err(libc::EBADF))
    }

    fn new_fd(&self, info: FdInfo) -> io::Result<OwnedFd> {
        let f = std::fs::File::open("/dev/null")?;
        let fd: OwnedFd = f.into();
        self.st.borrow_mut().fds.insert(fd.as_raw_fd(), info);
        Ok(fd)
    }

    /// Translates `/proc/self/fd/N` to the fd's infos; other paths are resolved from the
    /// current directory following mounts (trusted absolute paths).
    fn path_arg(&self, p: &Path) -> io::Result<FdInfo> {
        if let Ok(rest) = p.strip_prefix("/proc/self/fd") {
            let n: RawFd = rest.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| err(libc::ENOENT))?;
            return self.st.borrow().fds.get(&n).cloned().ok_or_else(|| err(libc::EBADF));
        }
        let st = self.st.borrow();
        let view = if p.is_absolute() { normalize(p) } else { normalize(&st.cwd.view.join(p)) };
        let start = if p.is_absolute() { PathBuf::from("/") } else { st.cwd.backing.clone() };
        let backing = st.walk(&start, p, 0, true, false)?;
        Ok(FdInfo { view, backing })
    }

    fn child(&self, dir: BorrowedFd<'_>, name: &Path) -> io::Result<(FdInfo, PathBuf)> {
        let d = self.fd_info(dir)?;
        if name.components().count() != 1 || name.is_absolute() {
            return Err(err(libc::EINVAL));
        }
        let view = d.view.join(name);
        let backing = d.backing.join(name);
        Ok((FdInfo { view, backing }, d.backing))
    }
}

impl State {
    fn mounted(&self, backing: &Path) -> Option<&PathBuf> {
        self.mounts.iter().rev().find(|(t, _)| t == backing).map(|(_, b)| b)
    }

    /// Follows every mount stacked on `p`.
    fn cross_mounts(&self, mut p: PathBuf) -> PathBuf {
        for _ in 0..64 {
            match self.mounted(&p) {
                Some(b) if *b != p => p = b.clone(),
                _ => break,
            }
        }
        p
    }

    /// Resolves `rel` from the backing path `start`. Returns the backing path of the result
    /// (which may not exist when `allow_missing_last`).
    fn walk(
        &self,
        start: &Path,
        rel: &Path,
        resolve: u64,
        follow_last: bool,
        allow_missing_last: bool,
    ) -> io::Result<PathBuf> {
        self.walk_depth(start, rel, resolve, follow_last, allow_missing_last, 0)
    }

    fn walk_depth(
        &self,
        start: &Path,
        rel: &Path,
        resolve: u64,
        follow_last: bool,
        allow_missing_last: bool,
        depth: u32,
    ) -> io::Result<PathBuf> {
        if depth > 40 {
            return Err(err(libc::ELOOP));
        }
        let beneath = resolve & RESOLVE_BENEATH != 0;
        let comps: Vec<Component> = rel.components().collect();
        let mut stack: Vec<PathBuf> = vec![self.cross_mounts(start.to_path_buf())];
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            match c {
                Component::RootDir => {
                    if beneath {
                        return Err(err(libc::EXDEV));
                    }
                    stack = vec![self.cross_mounts(PathBuf::from("/"))];
                }
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    if stack.len() == 1 {
                        if beneath {
                            return Err(err(libc::EXDEV));
                        }
                    } else {
                        stack.pop();
                    }
                }
                Component::Normal(n) => {
                    let cur = stack.last().expect("never empty").clone();
                    match self.nodes.get(&cur) {
                        Some(node) if node.kind == FileKind::Dir => {}
                        Some(_) => return Err(err(libc::ENOTDIR)),
                        None => return Err(err(libc::ENOENT)),
                    }
                    let next = cur.join(n);
                    match self.nodes.get(&next) {
                        None if last && allow_missing_last => {
                            stack.push(next);
                        }
                        None => return Err(err(libc::ENOENT)),
                        Some(node) if node.kind == FileKind::Symlink => {
                            if last && !follow_last {
                                stack.push(next);
                                continue;
                            }
                            if resolve & RESOLVE_NO_SYMLINKS != 0 {
                                return Err(err(libc::ELOOP));
                            }
                            let target = node.target.clone().expect("symlink has a target");
                            let base = if target.is_absolute() {
                                if beneath {
                                    return Err(err(libc::EXDEV));
                                }
                                PathBuf::from("/")
                            } else {
                                cur.clone()
                            };
                            let resolved =
                                self.walk_depth(&base, &target, resolve, true, last && allow_missing_last, depth + 1)?;
                            stack.push(resolved);
                        }
                        Some(_) => stack.push(self.cross_mounts(next)),
                    }
                }
            }
        }
        Ok(stack.pop().expect("never empty"))
    }

    fn stat(&self, backing: &Path) -> io::Result<Stat> {
        let n = self.nodes.get(backing).ok_or_else(|| err(libc::ENOENT))?;
        // One "device" per mounted filesystem root: the fs number, or 1 for the base tree.
        let dev = backing
            .strip_prefix("/.fake-fs")
            .ok()
            .and_then(|r| r.components().next())
            .and_then(|c| c.as_os_str().to_str())
            .and_then(|s| s.split('-').next())
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(1, |n| n + 100);
        Ok(Stat {
            kind: n.kind,
            mode: n.mode,
            uid: n.uid,
            gid: n.gid,
            nlink: n.nlink,
            size: n.data.len() as u64,
            dev,
            ino: backing.as_os_str().len() as u64,
        })
    }
}

fn view_join(base: &Path, rel: &Path) -> PathBuf {
    if rel.is_absolute() {
        normalize(rel)
    } else {
        normalize(&base.join(rel))
    }
}

impl Syscalls for Fake {
    fn openat2(
        &self,
        dir: Option<BorrowedFd<'_>>,
        path: &Path,
        flags: i32,
        mode: u32,
        resolve: u64,
    ) -> io::Result<OwnedFd> {
        let base = match dir {
            Some(d) => self.fd_info(d)?,
            None => self.st.borrow().cwd.clone(),
        };
        let view = view_join(&base.view, path);
        self.record(Call::Open { path: view.clone(), flags, resolve });
        self.check_failure("openat2", &view)?;
        let creat = flags & libc::O_CREAT != 0;
        let nofollow = flags & libc::O_NOFOLLOW != 0 || flags & libc::O_EXCL != 0 && creat;
        let start = if path.is_absolute() { PathBuf::from("/") } else { base.backing.clone() };
        let backing = {
            let st = self.st.borrow();
            st.walk(&start, path, resolve, !nofollow, creat)?
        };
        let mut st = self.st.borrow_mut();
        match st.nodes.get(&backing).cloned() {
            None => {
                debug_assert!(creat);
                let mut n = Node::new(FileKind::File, mode & 0o7777);
                n.uid = st.ids.0;
                n.gid = st.ids.1;
                st.nodes.insert(backing.clone(), n);
            }
            Some(n) => {
                if creat && flags & libc::O_EXCL != 0 {
                    return Err(err(libc::EEXIST));
                }
                if n.kind == FileKind::Symlink && flags & libc::O_PATH == 0 {
                    return Err(err(libc::ELOOP));
                }
                if flags & libc::O_DIRECTORY != 0 && n.kind != FileKind::Dir {
                    return Err(err(libc::ENOTDIR));
                }
                let writes = flags & (libc::O_WRONLY | libc::O_RDWR) != 0;
                if writes && n.kind == FileKind::Dir {
                    return Err(err(libc::EISDIR));
                }
                if flags & libc::O_TRUNC != 0 && writes {
                    st.nodes.get_mut(&backing).expect("exists").data.clear();
                }
            }
        }
        drop(st);
        self.new_fd(FdInfo { view, backing })
    }

    fn fstat(&self, fd: BorrowedFd<'_>) -> io::Result<Stat> {
        let i = self.fd_info(fd)?;
        self.st.borrow().stat(&i.backing)
    }

    fn fstatat_nofollow(&self, dir: BorrowedFd<'_>, name: &Path) -> io::Result<Stat> {
        let (i, _) = self.child(dir, name)?;
        self.check_failure("fstatat", &i.view)?;
        let st = self.st.borrow();
        let b = st.cross_mounts(i.backing);
        st.stat(&b)
    }

    fn mkdirat(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()> {
        let (i, parent) = self.child(dir, name)?;
        self.record(Call::Mkdir { path: i.view.clone(), mode });
        self.check_failure("mkdirat", &i.view)?;
        let mut st = self.st.borrow_mut();
        if st.nodes.get(&parent).map(|n| n.kind) != Some(FileKind::Dir) {
            return Err(err(libc::ENOENT));
        }
        if st.nodes.contains_key(&i.backing) {
            return Err(err(libc::EEXIST));
        }
        let mut n = Node::new(FileKind::Dir, mode & 0o7777);
        n.uid = st.ids.0;
        n.gid = st.ids.1;
        st.nodes.insert(i.backing, n);
        Ok(())
    }

    fn mknod_char(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        let (i, _) = self.child(dir, name)?;
        self.record(Call::Mknod { path: i.view.clone(), major, minor });
        let mut st = self.st.borrow_mut();
        if st.nodes.contains_key(&i.backing) {
            return Err(err(libc::EEXIST));
        }
        let mut n = Node::new(FileKind::CharDevice, mode & 0o7777);
        n.rdev = (major, minor);
        st.nodes.insert(i.backing, n);
        Ok(())
    }

    fn symlinkat(&self, target: &Path, dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
        let (i, _) = self.child(dir, name)?;
        self.record(Call::Symlink { target: target.to_path_buf(), path: i.view.clone() });
        let mut st = self.st.borrow_mut();
        if st.nodes.contains_key(&i.backing) {
            return Err(err(libc::EEXIST));
        }
        let mut n = Node::new(FileKind::Symlink, 0o777);
        n.target = Some(target.to_path_buf());
        st.nodes.insert(i.backing, n);
        Ok(())
    }

    fn fchown(&self, fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
        let i = self.fd_info(fd)?;
        self.record(Call::Chown { path: i.view.clone(), uid, gid });
        self.check_failure("fchown", &i.view)?;
        let mut st = self.st.borrow_mut();
        let n = st.nodes.get_mut(&i.backing).ok_or_else(|| err(libc::ENOENT))?;
        n.uid = uid;
        n.gid = gid;
        Ok(())
    }

    fn fchmod(&self, fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
        let i = self.fd_info(fd)?;
        self.chmod_node(&i, mode)
    }

    fn fchmodat(&self, dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<()> {
        let (i, _) = self.child(dir, name)?;
        self.chmod_node(&i, mode)
    }

    fn unlinkat(&self, dir: BorrowedFd<'_>, name: &Path, is_dir: bool) -> io::Result<()> {
        let (i, _) = self.child(dir, name)?;
        self.record(Call::Unlink { path: i.view.clone() });
        let mut st = self.st.borrow_mut();
        let n = st.nodes.get(&i.backing).ok_or_else(|| err(libc::ENOENT))?;
        match (n.kind == FileKind::Dir, is_dir) {
            (true, false) => return Err(err(libc::EISDIR)),
            (false, true) => return Err(err(libc::ENOTDIR)),
            (true, true) if st.nodes.keys().any(|k| k != &i.backing && k.starts_with(&i.backing)) => {
                return Err(err(libc::ENOTEMPTY));
            }
            _ => {}
        }
        st.nodes.remove(&i.backing);
        Ok(())
    }

    fn renameat(&self, old_dir: BorrowedFd<'_>, old: &Path, new_dir: BorrowedFd<'_>, new: &Path) -> io::Result<()> {
        self.rename(old_dir, old, new_dir, new, false)
    }

    fn renameat_noreplace(
        &self,
        old_dir: BorrowedFd<'_>,
        old: &Path,
        new_dir: BorrowedFd<'_>,
        new: &Path,
    ) -> io::Result<()> {
        self.rename(old_dir, old, new_dir, new, true)
    }

    fn write_all(&self, fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
        let i = self.fd_info(fd)?;
        self.record(Call::Write { path: i.view.clone(), data: data.to_vec() });
        self.check_failure("write", &i.view)?;
        let mut st = self.st.borrow_mut();
        let n = st.nodes.get_mut(&i.backing).ok_or_else(|| err(libc::ENOENT))?;
        n.data.extend_from_slice(data);
        Ok(())
    }

    fn read_all(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        let i = self.fd_info(fd)?;
        let st = self.st.borrow();
        let n = st.nodes.get(&i.backing).ok_or_else(|| err(libc::ENOENT))?;
        Ok(n.data.clone())
    }

    fn read_at_most(&self, fd: BorrowedFd<'_>, max: u64) -> io::Result<Vec<u8>> {
        let mut data = self.read_all(fd)?;
        data.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        Ok(data)
    }

    fn fsync(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let i = self.fd_info(fd)?;
        self.record(Call::Fsync { path: i.view });
        Ok(())
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        let t = self.path_arg(target)?;
        let s = match source {
            Some(p) if flags.contains(MsFlags::MS_BIND) && !flags.contains(MsFlags::MS_REMOUNT) => {
                Some(self.path_arg(p)?)
            }
            _ => None,
        };
        let shown_source = s.as_ref().map(|i| i.view.clone()).or_else(|| source.map(Path::to_path_buf));
        self.record(Call::Mount {
            source: shown_source,
            target: t.view.clone(),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        self.check_failure("mount", &t.view)?;
        let mut st = self.st.borrow_mut();
        if flags.contains(MsFlags::MS_REMOUNT) {
            // Like the kernel: remounting is only valid on the root of a mount.
            let is_mount_root = st.mounts.iter().any(|(_, b)| *b == t.backing);
            return if is_mount_root { Ok(()) } else { Err(err(libc::EINVAL)) };
        }
        if flags.intersects(MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_SHARED) {
            return Ok(());
        }
        if !st.nodes.contains_key(&t.backing) {
            return Err(err(libc::ENOENT));
        }
        let backing = if let Some(s) = s {
            let src = st.nodes.get(&s.backing).ok_or_else(|| err(libc::ENOENT))?;
            let tgt = st.nodes.get(&t.backing).expect("checked");
            if (src.kind == FileKind::Dir) != (tgt.kind == FileKind::Dir) {
                return Err(err(if tgt.kind == FileKind::Dir { libc::ENOTDIR } else { libc::EISDIR }));
            }
            s.backing
        } else {
            // A fresh, empty filesystem (tmpfs, proc, devpts, mqueue).
            st.next_fs += 1;
            let root = PathBuf::from(format!("/.fake-fs/{}-{}", st.next_fs, fstype.unwrap_or("none")));
            st.nodes.insert(root.clone(), Node::new(FileKind::Dir, 0o755));
            root
        };
        st.mounts.push((t.backing, backing));
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        let t = self.path_arg(target)?;
        self.record(Call::Umount { target: t.view, flags });
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        let st = self.st.borrow();
        let new = view_join(&st.cwd.view, new_root);
        let old = view_join(&st.cwd.view, put_old);
        drop(st);
        self.record(Call::PivotRoot { new_root: new, put_old: old });
        Ok(())
    }

    fn fchdir(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let i = self.fd_info(fd)?;
        self.record(Call::Chdir { path: i.view.clone() });
        self.st.borrow_mut().cwd = i;
        Ok(())
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        let i = self.path_arg(path)?;
        self.record(Call::Chdir { path: i.view.clone() });
        self.st.borrow_mut().cwd = i;
        Ok(())
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(Call::Sethostname(name.to_string()));
        Ok(())
    }

    fn setgroups_empty(&self) -> io::Result<()> {
        self.record(Call::Setgroups);
        self.st.borrow_mut().groups = 0;
        Ok(())
    }

    fn setresgid(&self, gid: u32) -> io::Result<()> {
        self.record(Call::Setresgid(gid));
        let mut st = self.st.borrow_mut();
        if st.ids.0 != 0 {
            return Err(err(libc::EPERM));
        }
        st.ids.1 = gid;
        Ok(())
    }

    fn setresuid(&self, uid: u32) -> io::Result<()> {
        self.record(Call::Setresuid(uid));
        let mut st = self.st.borrow_mut();
        if st.ids.0 != 0 && uid != st.ids.0 {
            return Err(err(libc::EPERM));
        }
        st.ids.0 = uid;
        if uid != 0 {
            // The kernel clears permitted and effective when every uid leaves 0.
            st.caps.effective = 0;
            st.caps.permitted = 0;
            st.caps.ambient = 0;
        }
        Ok(())
    }

    fn getresuid(&self) -> io::Result<(u32, u32, u32)> {
        let u = self.st.borrow().ids.0;
        Ok((u, u, u))
    }

    fn getresgid(&self) -> io::Result<(u32, u32, u32)> {
        let g = self.st.borrow().ids.1;
        Ok((g, g, g))
    }

    fn getgroups_count(&self) -> io::Result<usize> {
        Ok(self.st.borrow().groups)
    }

    fn clear_ambient_caps(&self) -> io::Result<()> {
        self.record(Call::ClearAmbientCaps);
        self.st.borrow_mut().caps.ambient = 0;
        Ok(())
    }

    fn drop_bounding_caps(&self) -> io::Result<()> {
        self.record(Call::DropBoundingCaps);
        let mut st = self.st.borrow_mut();
        // CAP_SETPCAP (8) is needed to shrink the bounding set.
        if st.caps.effective & (1 << 8) == 0 {
            return Err(err(libc::EPERM));
        }
        st.caps.bounding = 0;
        Ok(())
    }

    fn clear_caps(&self) -> io::Result<()> {
        self.record(Call::ClearCaps);
        let mut st = self.st.borrow_mut();
        st.caps.effective = 0;
        st.caps.permitted = 0;
        st.caps.inheritable = 0;
        Ok(())
    }

    fn caps(&self) -> io::Result<CapSets> {
        Ok(self.st.borrow().caps)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        self.record(Call::NoNewPrivs);
        self.st.borrow_mut().nnp = true;
        Ok(())
    }

    fn no_new_privs(&self) -> io::Result<bool> {
        Ok(self.st.borrow().nnp)
    }

    fn close_range(&self, first: u32, last: u32) -> io::Result<()> {
        self.record(Call::CloseRange(first, last));
        Ok(())
    }

    fn clear_environment(&self) -> io::Result<()> {
        // Recorded only: the test process keeps its environment.
        self.record(Call::ClearEnvironment);
        Ok(())
    }

    fn write_file(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let view = normalize(path);
        self.record(Call::WriteFile { path: view.clone(), data: String::from_utf8_lossy(data).into_owned() });
        self.check_failure("write_file", &view)?;
        let mut st = self.st.borrow_mut();
        let b = st.walk(Path::new("/"), path, 0, true, false)?;
        let n = st.nodes.get_mut(&b).ok_or_else(|| err(libc::ENOENT))?;
        if n.kind != FileKind::File {
            return Err(err(libc::EISDIR));
        }
        n.data = data.to_vec();
        Ok(())
    }

    fn read_file(&self, path: &Path) -> io::Result<String> {
        let st = self.st.borrow();
        let b = st.walk(Path::new("/"), path, 0, true, false)?;
        let n = st.nodes.get(&b).ok_or_else(|| err(libc::ENOENT))?;
        Ok(String::from_utf8_lossy(&n.data).into_owned())
    }

    fn mkdir(&self, path: &Path, mode: u32) -> io::Result<()> {
        let view = normalize(path);
        self.record(Call::MkdirAbs { path: view.clone() });
        self.check_failure("mkdir", &view)?;
        let mut st = self.st.borrow_mut();
        let b = st.walk(Path::new("/"), path, 0, true, true)?;
        if st.nodes.contains_key(&b) {
            return Err(err(libc::EEXIST));
        }
        match b.parent().and_then(|p| st.nodes.get(p)) {
            Some(n) if n.kind == FileKind::Dir => {}
            _ => return Err(err(libc::ENOENT)),
        }
        let files: Vec<(String, String)> =
            st.cgroupfs.iter().filter(|(m, _)| b.starts_with(m)).flat_map(|(_, f)| f.clone()).collect();
        for (name, content) in files {
            let mut n = Node::new(FileKind::File, 0o644);
            n.data = content.into_bytes();
            st.nodes.insert(b.join(name), n);
        }
        st.nodes.insert(b, Node::new(FileKind::Dir, mode));
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        let view = normalize(path);
        self.record(Call::Rmdir { path: view.clone() });
        self.check_failure("rmdir", &view)?;
        let mut st = self.st.borrow_mut();
        let b = st.walk(Path::new("/"), path, 0, true, false)?;
        // cgroupfs: a cgroup directory holds only control files, removed with it.
        st.nodes.retain(|k, _| !k.starts_with(&b));
        Ok(())
    }

    fn kill(&self, pid: i32, signal: i32) -> io::Result<()> {
        self.record(Call::Kill { pid, signal });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::RESOLVE_SAFE;
    use std::os::fd::AsFd;

    #[test]
    fn openat2_refuses_symlinks_like_the_kernel() {
        let f = Fake::new();
        f.dir("/home/u", 30001, 0o755).symlink("/home/u/etc", "/etc");
        f.dir("/etc", 0, 0o755).file("/etc/shadow", 0, b"secret");
        let home = f.openat2(None, Path::new("/home/u"), libc::O_PATH, 0, 0).unwrap();
        let e = f.openat2(Some(home.as_fd()), Path::new("etc/shadow"), libc::O_RDONLY, 0, RESOLVE_SAFE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e =
            f.openat2(Some(home.as_fd()), Path::new("../../etc/shadow"), libc::O_RDONLY, 0, RESOLVE_SAFE).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
        // Without the resolve flags the fake follows, as the kernel would.
        let fd = f.openat2(Some(home.as_fd()), Path::new("etc/shadow"), 0, 0, 0).unwrap();
        assert_eq!(f.read_all(fd.as_fd()).unwrap(), b"secret");
    }

    #[test]
    fn bind_mounts_redirect_lookups_and_remount_needs_a_mount_root() {
        let f = Fake::new();
        f.dir("/src/a", 0, 0o755).dir("/dst/a", 0, 0o755);
        f.file("/src/a/x", 0, b"x");
        let src = f.openat2(None, Path::new("/src/a"), libc::O_PATH, 0, 0).unwrap();
        let dst = f.openat2(None, Path::new("/dst/a"), libc::O_PATH, 0, 0).unwrap();
        f.mount(
            Some(&crate::syscalls::fd_path(src.as_fd())),
            &crate::syscalls::fd_path(dst.as_fd()),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .unwrap();
        assert!(f.node_in_view("/dst/a/x").is_some());
        // The old fd still points at the covered directory: remounting it is refused.
        let e = f
            .mount(None, &crate::syscalls::fd_path(dst.as_fd()), None, MsFlags::MS_REMOUNT | MsFlags::MS_BIND, None)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
        let again = f.openat2(None, Path::new("/dst/a"), libc::O_PATH, 0, 0).unwrap();
        f.mount(
            None,
            &crate::syscalls::fd_path(again.as_fd()),
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID,
            None,
        )
        .unwrap();
    }
}
