//! The files an announce names, checked on the node's real filesystem without ever following a
//! symlink, and pinned.
//!
//! A socket path in a customer-writable directory can be swapped for a symlink at any moment,
//! and the router's `connect()` would follow it (to another container's socket, or to a host
//! socket: with `modifier1 = 123` the router even pipes raw HTTP there). Checking the path
//! once is not enough. So the validator opens the verified socket `O_PATH` and keeps the
//! descriptor; the router reaches it through `/proc/<pid>/fd/<n>` of the validator or of the pin
//! holder it passes the descriptor to (under a name that is never reused, [`crate::pins`]),
//! which the kernel resolves to exactly the inode that was
//! checked, whatever the customer does to the name afterwards.

use crate::address::Endpoint;
use jail::safefs::{open_trusted_dir, Dir};
use jail::syscalls::{Syscalls, RESOLVE_SAFE};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A checked socket: the open handle (kept while the router may connect to it) and its
/// identity on disk.
#[derive(Debug)]
pub struct Pinned {
    pub fd: Option<OwnedFd>,
    pub dev: u64,
    pub ino: u64,
}

impl Pinned {
    pub fn same_file(&self, other: &Pinned) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// What a file was when it was checked: a changed file (rewritten in place, or a new one
/// renamed over it) has another stamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStamp {
    fn of(md: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            size: md.size(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
        }
    }
}

/// What the validator needs to know about the files of a container's home.
pub trait HomeFiles {
    /// `<uid>/run/<rel>`: must be a socket owned by `uid`, reached without any symlink.
    fn open_socket(&self, uid: u32, rel: &Path) -> Result<Pinned, String>;
    /// `<uid>/<rel>`: must be a regular file owned by `uid`, reached without any symlink.
    fn check_file(&self, uid: u32, rel: &Path) -> Result<FileStamp, String>;
    /// The content of the file [`HomeFiles::check_file`] accepts, at most `max` bytes, with the
    /// stamp of what was read.
    fn read_file(&self, uid: u32, rel: &Path, max: u64) -> Result<(FileStamp, Vec<u8>), String>;
    /// The path this process sends to, to reach a pinned socket.
    fn local_path(&self, uid: u32, rel: &Path, pinned: &Pinned) -> PathBuf;
    /// The host path of `<uid>/<rel>` (for files the router reads itself).
    fn host_path(&self, uid: u32, rel: &Path) -> PathBuf;
}

/// The node's homes, read with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` below the
/// containers dir.
pub struct NodeHomes {
    host_homes: PathBuf,
    dir: Option<Dir>,
}

impl NodeHomes {
    pub fn new(host_homes: &Path) -> NodeHomes {
        NodeHomes { host_homes: host_homes.to_path_buf(), dir: open_trusted_dir(&jail::linux::Linux, host_homes).ok() }
    }

    pub fn host_homes(&self) -> &Path {
        &self.host_homes
    }

    fn open_below(&self, rel: &Path) -> Result<File, String> {
        // The containers dir is the operator's (it may itself be a symlink); it is opened
        // once, and again if it was missing when the validator started.
        let reopened;
        let dir = match &self.dir {
            Some(d) => d,
            None => {
                reopened = open_trusted_dir(&jail::linux::Linux, &self.host_homes)
                    .map_err(|e| format!("containers dir {}: {e}", self.host_homes.display()))?;
                &reopened
            }
        };
        // With O_PATH | O_NOFOLLOW a final symlink is opened itself (no ELOOP): the callers
        // see its type and refuse it.
        let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = jail::linux::Linux.openat2(Some(dir.as_fd()), rel, flags, 0, RESOLVE_SAFE).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ELOOP) => "a symlink is in the way".to_string(),
                Some(libc::EXDEV) => "the path leaves the home".to_string(),
                Some(libc::ENOENT) => "it does not exist".to_string(),
                Some(libc::ENOTDIR) => "a non-directory is in the path".to_string(),
                _ => e.to_string(),
            }
        })?;
        Ok(File::from(fd))
    }

    /// `<uid>/<rel>` opened `O_PATH`: a regular file owned by `uid` (a hard link to another
    /// user's file is that user's inode, so it fails here too).
    fn checked_file(&self, uid: u32, rel: &Path) -> Result<(File, FileStamp), String> {
        let (file, md) = self.owned_below(uid, rel, std::fs::FileType::is_file, "a regular file")?;
        Ok((file, FileStamp::of(&md)))
    }

    /// `<uid>/<rel>` opened `O_PATH`: `kind` (else "it is not `kind_name`") and owned by `uid`.
    fn owned_below(
        &self,
        uid: u32,
        rel: &Path,
        kind: fn(&std::fs::FileType) -> bool,
        kind_name: &str,
    ) -> Result<(File, std::fs::Metadata), String> {
        let file = self.open_below(&Path::new(&uid.to_string()).join(rel))?;
        let md = file.metadata().map_err(|e| e.to_string())?;
        if md.file_type().is_symlink() {
            return Err("a symlink is in the way".into());
        }
        if !kind(&md.file_type()) {
            return Err(format!("it is not {kind_name}"));
        }
        if md.uid() != uid {
            return Err(format!("it belongs to uid {}, not to the container", md.uid()));
        }
        Ok((file, md))
    }
}

impl HomeFiles for NodeHomes {
    fn open_socket(&self, uid: u32, rel: &Path) -> Result<Pinned, String> {
        let (file, md) = self.owned_below(uid, &Path::new("run").join(rel), FileTypeExt::is_socket, "a socket")?;
        Ok(Pinned { dev: md.dev(), ino: md.ino(), fd: Some(file.into()) })
    }

    fn check_file(&self, uid: u32, rel: &Path) -> Result<FileStamp, String> {
        self.checked_file(uid, rel).map(|(_, stamp)| stamp)
    }

    fn read_file(&self, uid: u32, rel: &Path, max: u64) -> Result<(FileStamp, Vec<u8>), String> {
        let (path_fd, stamp) = self.checked_file(uid, rel)?;
        if stamp.size > max {
            return Err(format!("it is larger than {max} bytes"));
        }
        // The O_PATH handle is the inode just checked; opening it again through /proc reads
        // that very inode, whatever the customer does to the name meanwhile. Nothing is opened
        // for reading before its type is known (a FIFO would block, a device could act).
        let file = File::open(format!("/proc/self/fd/{}", path_fd.as_raw_fd())).map_err(|e| e.to_string())?;
        let mut bytes = Vec::with_capacity(stamp.size as usize);
        std::io::Read::read_to_end(&mut std::io::Read::take(&file, max + 1), &mut bytes).map_err(|e| e.to_string())?;
        if bytes.len() as u64 > max {
            return Err(format!("it is larger than {max} bytes"));
        }
        Ok((stamp, bytes))
    }

    fn local_path(&self, uid: u32, rel: &Path, pinned: &Pinned) -> PathBuf {
        match &pinned.fd {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
            None => self.host_path(uid, &Path::new("run").join(rel)),
        }
    }

    fn host_path(&self, uid: u32, rel: &Path) -> PathBuf {
        self.host_homes.join(uid.to_string()).join(rel)
    }
}

/// How an endpoint is named in logs and messages to the customer: as the customer wrote it.
pub fn describe(endpoint: &Endpoint, uid: u32) -> String {
    match endpoint {
        Endpoint::RunSocket(rel) => format!("{}/{uid}/run/{}", crate::address::HOMES_INSIDE, rel.display()),
        Endpoint::OwnIp(a) => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// Runs as any user: the owner checks compare with the test's own uid.
    #[test]
    fn sockets_are_pinned_and_symlinks_or_foreign_files_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::getuid().as_raw();
        let run = tmp.path().join(me.to_string()).join("run");
        std::fs::create_dir_all(&run).unwrap();
        let _app = UnixDatagram::bind(run.join("app.socket")).unwrap();
        std::fs::write(run.join("plain"), "x").unwrap();
        std::os::unix::fs::symlink(run.join("app.socket"), run.join("link.socket")).unwrap();
        std::os::unix::fs::symlink(&run, tmp.path().join(me.to_string()).join("runlink")).unwrap();

        let homes = NodeHomes::new(tmp.path());
        let pinned = homes.open_socket(me, Path::new("app.socket")).unwrap();
        let via_proc = homes.local_path(me, Path::new("app.socket"), &pinned);
        assert!(via_proc.starts_with("/proc/self/fd/"));
        // The pinned path reaches the very socket that was checked, even once the name is
        // replaced by a symlink.
        std::fs::rename(run.join("app.socket"), run.join("moved.socket")).unwrap();
        std::os::unix::fs::symlink("/dev/log", run.join("app.socket")).unwrap();
        UnixDatagram::unbound().unwrap().send_to(b"hi", &via_proc).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(_app.recv(&mut buf).unwrap(), 2);

        let err = |rel: &str| homes.open_socket(me, Path::new(rel)).unwrap_err();
        assert!(err("link.socket").contains("symlink"), "{}", err("link.socket"));
        assert!(err("app.socket").contains("symlink"));
        assert!(err("plain").contains("not a socket"));
        assert!(err("missing.socket").contains("does not exist"));
        assert!(homes.open_socket(me + 1, Path::new("app.socket")).is_err());
        assert!(homes.check_file(me, Path::new("run/plain")).is_ok());
        assert!(homes.check_file(me, Path::new("runlink/plain")).unwrap_err().contains("symlink"));
    }
}
