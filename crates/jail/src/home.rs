//! The container home `<containers>/<uid>`: created and repaired by root in the host view
//! before every start (the original's ASAP hooks, §4.4 steps 3-11), but symlink-safe and
//! atomic (WEAK-4): every step works on directory fds, never follows a link the customer
//! planted, and replaces files with temp file + `renameat`.

use crate::error::{JailError, Result};
use crate::quota::QuotaBackend;
use crate::safefs::{
    atomic_write, create_empty, ensure_dir, lstat, open_dir, open_existing_file, open_trusted_dir, sync_file, Dir,
    Owner,
};
use crate::syscalls::{FileKind, Syscalls};
use crate::NodePaths;
use container_spec::ContainerSpec;
use std::os::fd::AsFd;

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
) -> Result<()> {
    spec.validate().map_err(JailError::InvalidSpec)?;
    let uid = spec.uid;
    prepare(sys, paths, spec, quota).map_err(|e| e.for_container(uid))
}

fn prepare(sys: &dyn Syscalls, paths: &NodePaths, spec: &ContainerSpec, quota: &dyn QuotaBackend) -> Result<()> {
    let containers = open_trusted_dir(sys, &paths.containers)?;
    quota.provision_home(sys, &containers, spec.uid, spec.storage_mb)?;
    layout(sys, &containers, spec)?;
    // After the layout's fds are closed: a backend may have to unmount the home to resize it.
    quota.apply_quota(sys, &containers, spec.uid, spec.storage_mb)
}

fn layout(sys: &dyn Syscalls, containers: &Dir, spec: &ContainerSpec) -> Result<()> {
    let me = Owner::container(spec.uid);
    let home = ensure_dir(sys, containers, &spec.uid.to_string(), me, 0o755)?;
    let st = sys.fstat(home.as_fd()).map_err(|e| JailError::io("fstat", &home.path, e))?;
    if st.mode & 0o022 != 0 {
        // sshd refuses keys under a group/world-writable home; the original forced 755.
        sys.fchmod(home.as_fd(), st.mode & !0o022).map_err(|e| JailError::io("fchmod", &home.path, e))?;
    }
    for (name, mode) in HOME_DIRS {
        ensure_dir(sys, &home, name, me, *mode)?;
    }
    let run = open_dir(sys, &home, "run")?;
    for name in RUN_MOUNTPOINTS {
        ensure_dir(sys, &run, name, Owner::ROOT, 0o755)?;
    }
    for name in RUN_DIRS {
        ensure_dir(sys, &run, name, me, 0o755)?;
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

/// Key-only update for a home that already exists. See [`crate::write_authorized_keys`].
pub fn write_authorized_keys_with(sys: &dyn Syscalls, paths: &NodePaths, spec: &ContainerSpec) -> Result<()> {
    spec.validate().map_err(JailError::InvalidSpec)?;
    let uid = spec.uid;
    (|| {
        let containers = open_trusted_dir(sys, &paths.containers)?;
        let home = open_dir(sys, &containers, uid.to_string())?;
        let ssh = ensure_dir(sys, &home, ".ssh", Owner::container(uid), 0o700)?;
        write_keys(sys, &ssh, spec)
    })()
    .map_err(|e| e.for_container(uid))
}

/// `~/distros/` for containers that store custom distro images.
pub fn ensure_distros_dir_with(sys: &dyn Syscalls, paths: &NodePaths, spec: &ContainerSpec) -> Result<()> {
    let uid = spec.uid;
    (|| {
        let containers = open_trusted_dir(sys, &paths.containers)?;
        let home = open_dir(sys, &containers, uid.to_string())?;
        ensure_dir(sys, &home, "distros", Owner::container(uid), 0o755).map(drop)
    })()
    .map_err(|e| e.for_container(uid))
}
