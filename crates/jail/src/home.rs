//! The container home `<containers>/<uid>`: created and repaired by root in the host view
//! before every start (the original's ASAP hooks, §4.4 steps 3-11), but symlink-safe and
//! atomic (WEAK-4): every step works on directory fds, never follows a link the customer
//! planted, and replaces files with temp file + `renameat`.

use crate::error::IoContext;
use crate::error::{JailError, Result};
use crate::quota::QuotaBackend;
use crate::safefs::{
    atomic_write, create_empty, ensure_dir, ensure_own_dir, lookup_error, lstat, open_dir, open_existing_file,
    open_trusted_dir, sync_file, Dir, Displaced, Owner,
};
use crate::syscalls::{is_enoent, FileKind, Syscalls, RESOLVE_SAFE};
use crate::NodePaths;
use container_spec::ContainerSpec;
use std::os::fd::AsFd;
use std::path::Path;

/// Directories directly under the home, with the mode they get when created.
/// `.ssh` is private: sshd's StrictModes and the customer's own keys.
pub const HOME_DIRS: &[(&str, u32)] =
    &[("vassals", 0o755), ("logs", 0o755), ("etc", 0o755), ("run", 0o755), ("tmp", 0o755), (".ssh", 0o700)];

/// Under `run/`: mountpoints owned by root (the jail mounts over them) and the spool.
pub const RUN_MOUNTPOINTS: &[&str] = &["subscribe", "shm"];
pub const RUN_DIRS: &[&str] = &["spool"];

/// The jail bind-mounts these from `~/etc` over the distro's `/etc/<name>`.
pub const ETC_FILES: &[&str] = &["hosts", "hostname", "resolv.conf"];

pub const AUTHORIZED_KEYS: &str = "uwsgi_authorized_keys";
pub const EMPEROR_LOG: &str = "emperor.log";

/// Used when the spec carries no `etc_hosts` lines: a container must at least resolve
/// localhost.
const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost\n";

fn lines(v: &[String]) -> String {
    let mut s = String::new();
    for l in v {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Creates or repairs the home. See [`crate::prepare_home`].
pub fn prepare_home_with(
    sys: &dyn Syscalls,
    paths: &NodePaths,
    spec: &ContainerSpec,
    quota: &dyn QuotaBackend,
) -> Result<Vec<Displaced>> {
    spec.validate().map_err(JailError::InvalidSpec)?;
    let uid = spec.uid;
    let mut moved = Vec::new();
    prepare(sys, paths, spec, quota, &mut moved).map_err(|e| e.for_container(uid))?;
    Ok(moved)
}

fn prepare(
    sys: &dyn Syscalls,
    paths: &NodePaths,
    spec: &ContainerSpec,
    quota: &dyn QuotaBackend,
    moved: &mut Vec<Displaced>,
) -> Result<()> {
    let containers = open_trusted_dir(sys, &paths.containers)?;
    quota.provision_home(sys, &containers, spec.uid, spec.storage_mb)?;
    layout(sys, &containers, spec, moved)?;
    // After the layout's fds are closed: a backend may have to unmount the home to resize it.
    quota.apply_quota(sys, &containers, spec.uid, spec.storage_mb)
}

fn layout(sys: &dyn Syscalls, containers: &Dir, spec: &ContainerSpec, moved: &mut Vec<Displaced>) -> Result<()> {
    let me = Owner::container(spec.uid);
    // The home itself sits in the root-owned containers dir: nothing of the customer's there.
    let home = ensure_dir(sys, containers, &spec.uid.to_string(), me, 0o755)?;
    let st = sys.fstat(home.as_fd()).map_err(|e| JailError::io("fstat", &home.path, e))?;
    if st.mode & 0o022 != 0 {
        // sshd refuses keys under a group/world-writable home; the original forced 755.
        sys.fchmod(home.as_fd(), st.mode & !0o022).map_err(|e| JailError::io("fchmod", &home.path, e))?;
    }
    for (name, mode) in HOME_DIRS {
        ensure_own_dir(sys, &home, name, me, *mode, moved)?;
    }
    let run = open_dir(sys, &home, "run")?;
    for name in RUN_MOUNTPOINTS {
        ensure_own_dir(sys, &run, name, Owner::ROOT, 0o755, moved)?;
    }
    for name in RUN_DIRS {
        ensure_own_dir(sys, &run, name, me, 0o755, moved)?;
    }

    let etc = open_dir(sys, &home, "etc")?;
    let hosts = if spec.etc_hosts.is_empty() { DEFAULT_HOSTS.to_string() } else { lines(&spec.etc_hosts) };
    seed_if_missing(sys, &etc, "hosts", hosts.as_bytes(), me)?;
    seed_if_missing(sys, &etc, "resolv.conf", lines(&spec.etc_resolv_conf).as_bytes(), me)?;
    sync_file(sys, &etc, "hostname", format!("{}\n", spec.hostname()).as_bytes(), me, 0o644)?;
    // The subscription key: readable by the container, by no other host user (WEAK-10).
    sync_file(sys, &etc, "uwsgi.key", spec.subscription_key.private_pem.as_bytes(), me, 0o400)?;
    sync_file(sys, &etc, "uwsgi.pubkey", spec.subscription_key.public_pem.as_bytes(), me, 0o444)?;
    ensure_owned_file(sys, &open_dir(sys, &home, "logs")?, EMPEROR_LOG, me)?;
    write_keys(sys, &open_dir(sys, &home, ".ssh")?, spec)
}

/// Writes `name` with `seed` only when it is missing, as promised to customers who edit it.
/// What is not a plain file of theirs is replaced by the seed: a planted symlink, or a hard
/// link / foreign-owned file (the jail bind-mounts this file into the container, so it must
/// be the container's own).
fn seed_if_missing(sys: &dyn Syscalls, dir: &Dir, name: &str, seed: &[u8], me: Owner) -> Result<()> {
    match lstat(sys, dir, name)? {
        None => atomic_write(sys, dir, name, seed, me, 0o644),
        Some(st) if st.kind == FileKind::Symlink => atomic_write(sys, dir, name, seed, me, 0o644),
        Some(st) if st.kind == FileKind::File => match open_existing_file(sys, dir, name) {
            Ok(Some(f)) if f.stat.uid == me.uid && f.stat.nlink == 1 => Ok(()),
            Ok(_) | Err(JailError::Planted { .. }) => atomic_write(sys, dir, name, seed, me, 0o644),
            Err(e) => Err(e),
        },
        Some(st) => Err(JailError::planted(dir.join(name), st.kind.describe())),
    }
}

/// Makes sure `name` exists as a plain file owned by the container (the log the container
/// master writes after dropping privileges). A planted link is replaced by an empty file.
fn ensure_owned_file(sys: &dyn Syscalls, dir: &Dir, name: &str, me: Owner) -> Result<()> {
    if create_empty(sys, dir, name, me, 0o644)? {
        return Ok(());
    }
    match open_existing_file(sys, dir, name) {
        Ok(Some(f)) if f.stat.nlink == 1 => {
            if f.stat.uid != me.uid || f.stat.gid != me.gid {
                // Safe: the fd is this very file (opened O_NOFOLLOW beneath the home) and it
                // has no other name anywhere.
                sys.fchown(f.fd.as_fd(), me.uid, me.gid).map_err(|e| JailError::io("fchown", dir.join(name), e))?;
            }
            Ok(())
        }
        // Missing again (raced), a hard link, or a planted symlink: start a fresh file.
        Ok(_) | Err(JailError::Planted { .. }) => atomic_write(sys, dir, name, b"", me, 0o644),
        Err(e) => Err(e),
    }
}

fn keys_content(spec: &ContainerSpec) -> String {
    lines(&spec.ssh_keys)
}

/// Rewrites `.ssh/uwsgi_authorized_keys` atomically if its content differs (no write, no
/// mtime change otherwise). Keys never contain control characters (spec validation), so one
/// key is always exactly one line.
fn write_keys(sys: &dyn Syscalls, ssh: &Dir, spec: &ContainerSpec) -> Result<()> {
    sync_file(sys, ssh, AUTHORIZED_KEYS, keys_content(spec).as_bytes(), Owner::container(spec.uid), 0o600)
}

/// Opens `<containers>/<uid>` (the home of an existing container).
fn open_home(sys: &dyn Syscalls, paths: &NodePaths, uid: u32) -> Result<Dir> {
    let containers = open_trusted_dir(sys, &paths.containers)?;
    open_dir(sys, &containers, uid.to_string())
}

/// Key-only update for a home that already exists. See [`crate::write_authorized_keys`].
pub fn write_authorized_keys_with(
    sys: &dyn Syscalls,
    paths: &NodePaths,
    spec: &ContainerSpec,
) -> Result<Vec<Displaced>> {
    spec.validate().map_err(JailError::InvalidSpec)?;
    let uid = spec.uid;
    let mut moved = Vec::new();
    (|| {
        let home = open_home(sys, paths, uid)?;
        let ssh = ensure_own_dir(sys, &home, ".ssh", Owner::container(uid), 0o700, &mut moved)?;
        write_keys(sys, &ssh, spec)
    })()
    .map_err(|e| e.for_container(uid))?;
    Ok(moved)
}

/// Removes `.ssh/uwsgi_authorized_keys` when the keys the spec asks for could not be written:
/// a key the owner removed must stop working even then. Removing needs no disk space (a full
/// quota cannot block it) and never follows anything. `Ok` when there is no such file, or no
/// `.ssh` directory to hold one.
pub fn revoke_authorized_keys_with(sys: &dyn Syscalls, paths: &NodePaths, uid: u32) -> Result<()> {
    (|| {
        let home = open_home(sys, paths, uid)?;
        let ssh = match open_dir(sys, &home, ".ssh") {
            Ok(d) => d,
            // No directory there (missing, or something else the keys cannot be read from).
            Err(JailError::Planted { .. }) => return Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        match sys.unlinkat(ssh.as_fd(), Path::new(AUTHORIZED_KEYS), false) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            // A directory there holds no keys sshd would read.
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(()),
            Err(e) => Err(JailError::io("unlinkat", ssh.join(AUTHORIZED_KEYS), e)),
        }
    })()
    .map_err(|e| e.for_container(uid))
}

/// Appends `text` to the customer's `~/logs/emperor.log`, as root, without ever writing
/// anywhere else: the file is opened beneath the home with no symlink anywhere on the way,
/// `O_APPEND|O_NOFOLLOW|O_NONBLOCK` (a FIFO cannot block the Emperor), and written only if it
/// is a regular file owned by the container with a single name (not a hard link to a file
/// of the host's). Otherwise nothing is written and the error says why.
pub fn append_to_customer_log_with(sys: &dyn Syscalls, paths: &NodePaths, uid: u32, text: &str) -> Result<()> {
    (|| {
        let logs = open_dir(sys, &open_home(sys, paths, uid)?, "logs")?;
        let path = logs.join(EMPEROR_LOG);
        let fd = sys
            .openat2(
                Some(logs.as_fd()),
                Path::new(EMPEROR_LOG),
                libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
                0,
                RESOLVE_SAFE,
            )
            .map_err(|e| lookup_error("openat2", path.clone(), e))?;
        let st = sys.fstat(fd.as_fd()).ctx("fstat", &path)?;
        if st.kind != FileKind::File {
            return Err(JailError::planted(path, st.kind.describe()));
        }
        if st.uid != uid || st.nlink != 1 {
            return Err(JailError::planted(path, "a file that is not the container's own"));
        }
        sys.write_all(fd.as_fd(), text.as_bytes()).ctx("write", &path)
    })()
    .map_err(|e| e.for_container(uid))
}

/// `~/distros/` for containers that store custom distro images.
pub fn ensure_distros_dir_with(sys: &dyn Syscalls, paths: &NodePaths, spec: &ContainerSpec) -> Result<Vec<Displaced>> {
    let uid = spec.uid;
    let mut moved = Vec::new();
    (|| {
        let home = open_home(sys, paths, uid)?;
        ensure_own_dir(sys, &home, "distros", Owner::container(uid), 0o755, &mut moved).map(drop)
    })()
    .map_err(|e| e.for_container(uid))?;
    Ok(moved)
}
