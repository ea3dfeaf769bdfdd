//! The container's own user in its `/etc/passwd` and `/etc/group`: `id`, `whoami`, `ls -l`,
//! a shell prompt and the distro's `sftp-server` (which exits "No user found for uid" without
//! one) look the uid up there. The distro is read-only and shared by every container, so each
//! container gets its own copies: the distro's files (read as root without following a link,
//! size-bounded: a custom distro is a customer's tree) with the container's line added, written
//! by root into a private tmpfs and bind-mounted read-only over the distro's, as the home's
//! `etc/hosts` is. Nothing of it is in the customer's home: the customer cannot change which
//! uid a name stands for.

use super::{bind, mount_fs, open_dir, open_path, Dir, FileKind, IoContext, Result, Syscalls, READ_ONLY};
use crate::error::JailError;
use crate::safefs::{atomic_write, open_existing_file, Owner};
use crate::syscalls::fd_path;
use nix::mount::{MntFlags, MsFlags};
use std::os::fd::AsFd;
use std::path::Path;

/// The largest distro passwd or group file the jail reads (Debian's are about 1 KiB).
const MAX_USER_DB_BYTES: u64 = 256 << 10;

/// The distro's `etc/passwd` and `etc/group`, each with the container's line, mounted over the
/// distro's own in the jail being built at `root`. Uses the distro's `tmp` as a scratch
/// mountpoint: call before the home's `tmp` is bound there.
pub fn mount_user_db(sys: &dyn Syscalls, root: &Dir, uid: u32) -> Result<()> {
    let shell = if has_bash(sys, root) { "/bin/bash" } else { "/bin/sh" };
    let etc = open_dir(sys, root, "etc")?;
    let passwd =
        with_own_line(&read_db(sys, &etc, "passwd")?, uid, &format!("{uid}:x:{uid}:{uid}::/containers/{uid}:{shell}"));
    let group = with_own_line(&read_db(sys, &etc, "group")?, uid, &format!("{uid}:x:{uid}:"));
    drop(etc);

    // Root's files in a tmpfs of their own; once they are bound, the tmpfs is detached from
    // `tmp` and lives on only under the two read-only file mounts.
    mount_fs(
        sys,
        root,
        "tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=1m,nr_inodes=8"),
    )?;
    let scratch = open_dir(sys, root, "tmp")?;
    for (name, text) in [("passwd", passwd), ("group", group)] {
        atomic_write(sys, &scratch, name, text.as_bytes(), Owner::ROOT, 0o644)?;
        let file = open_path(sys, &scratch, name, FileKind::File)?;
        bind(sys, file.as_fd(), root, Path::new("etc").join(name), FileKind::File, READ_ONLY | MsFlags::MS_NOEXEC)?;
    }
    drop(scratch);
    let tmp = open_path(sys, root, "tmp", FileKind::Dir)?;
    sys.umount2(&fd_path(tmp.as_fd()), MntFlags::MNT_DETACH).ctx("umount2 (user db scratch)", root.join("tmp"))
}

/// Debian's bash, where a merged-/usr distro keeps it (`/bin` is a link there) or an older one.
fn has_bash(sys: &dyn Syscalls, root: &Dir) -> bool {
    ["usr/bin/bash", "bin/bash"].iter().any(|p| open_path(sys, root, p, FileKind::File).is_ok())
}

/// The distro's file as text, or nothing if it has none.
fn read_db(sys: &dyn Syscalls, etc: &Dir, name: &str) -> Result<String> {
    let Some(file) = open_existing_file(sys, etc, name)? else { return Ok(String::new()) };
    let path = etc.join(name);
    let too_large = || {
        JailError::io(
            "read",
            &path,
            std::io::Error::other(format!("larger than {MAX_USER_DB_BYTES} bytes: not a user database")),
        )
    };
    if file.stat.size > MAX_USER_DB_BYTES {
        return Err(too_large());
    }
    let bytes = sys.read_at_most(file.fd.as_fd(), MAX_USER_DB_BYTES + 1).ctx("read", &path)?;
    if bytes.len() as u64 > MAX_USER_DB_BYTES {
        return Err(too_large());
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `db` without any entry naming the container's uid (as its name or its id: a distro's line
/// must not stand for the container's uid) and with `own` appended.
fn with_own_line(db: &str, uid: u32, own: &str) -> String {
    let uid_text = uid.to_string();
    let mut out = String::with_capacity(db.len() + own.len() + 1);
    for line in db.lines() {
        let mut fields = line.split(':');
        let (name, id) = (fields.next(), fields.nth(1));
        if name == Some(uid_text.as_str()) || id == Some(uid_text.as_str()) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(own);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_line_is_added_and_any_entry_for_its_uid_dropped() {
        let db = "root:x:0:0:root:/root:/bin/bash\nimpostor:x:30001:0::/:/bin/sh\n30001:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/usr/sbin/nologin";
        assert_eq!(
            with_own_line(db, 30001, "30001:x:30001:30001::/containers/30001:/bin/bash"),
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\n\
             30001:x:30001:30001::/containers/30001:/bin/bash\n"
        );
        assert_eq!(with_own_line("", 30001, "30001:x:30001:"), "30001:x:30001:\n");
        // 300010 is another uid, not a prefix match.
        assert_eq!(with_own_line("300010:x:300010:\n", 30001, "30001:x:30001:"), "300010:x:300010:\n30001:x:30001:\n");
    }
}
