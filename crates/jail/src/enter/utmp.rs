//! The login record of a terminal session, in the container's own utmp (`/run/utmp`, the
//! home's `run/`), so `who` and `w` inside show the container's sessions and nobody else's.
//! Written by the session as the container uid, after the privilege drop: the file is the
//! customer's, and so is whatever they write into it. No logout record is needed: `who`
//! skips entries whose process is gone, and the next session on the same line replaces it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What a login record says.
pub struct Login<'a> {
    /// `pts/N`.
    pub line: &'a str,
    pub user: &'a str,
    /// The client's address (sshd's `SSH_CLIENT`, first word).
    pub host: &'a str,
    /// The session's pid as the container sees it.
    pub pid: i32,
}

fn copy(dst: &mut [libc::c_char], src: &str) {
    // utmp fields are fixed-size and need not be NUL-terminated when full.
    for (d, s) in dst.iter_mut().zip(src.bytes()) {
        *d = s as libc::c_char;
    }
}

/// Adds (or replaces, for the same line) the USER_PROCESS record of `login` in `file`,
/// creating the file (0644) if missing. Links are not followed.
pub fn record_login(file: &Path, login: &Login<'_>) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)?;
    let name = CString::new(file.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: an all-zero utmpx is a valid (empty) record.
    let mut u: libc::utmpx = unsafe { std::mem::zeroed() };
    u.ut_type = libc::USER_PROCESS;
    u.ut_pid = login.pid;
    copy(&mut u.ut_line, login.line);
    // The id is the line's last four characters, as login(1) and sshd make it.
    let id = &login.line[login.line.len().saturating_sub(4)..];
    copy(&mut u.ut_id, id);
    copy(&mut u.ut_user, login.user);
    copy(&mut u.ut_host, login.host);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u.ut_tv.tv_sec = now.as_secs() as i32;
    u.ut_tv.tv_usec = now.subsec_micros() as i32;
    // SAFETY: glibc's utmp functions keep a global position in the named file; the session
    // process is single-threaded, and `name` and `u` outlive the calls.
    let written = unsafe {
        if libc::utmpxname(name.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::setutxent();
        let r = libc::pututxline(&u);
        libc::endutxent();
        r
    };
    if written.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
