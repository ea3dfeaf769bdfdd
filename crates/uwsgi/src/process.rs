//! Starting helper processes from inside a uWSGI instance without leaking its descriptors
//! (sockets, the Emperor pipes, log files) into them.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Spawns `cmd` in its own session with every descriptor above 2 closed, whatever its
/// close-on-exec flag. uWSGI opens many descriptors without `O_CLOEXEC`.
pub fn spawn_detached(mut cmd: Command) -> std::io::Result<Child> {
    // SAFETY: the closure runs between fork and exec in the child; it only calls setsid(2) and
    // close_range(2), which are async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            if libc::close_range(3, u32::MAX, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs `f` when this process ends with `exit(3)`, as the Emperor does when it is stopped
/// ("The Emperor is buried"), whether or not it runs under a master (a plugin's `atexit`
/// callback is only registered on some of those paths). Processes forked from this one
/// inherit the registration: `f` must check it runs in the process it was meant for. `f` must
/// not unwind.
pub fn at_exit(f: extern "C" fn()) -> std::io::Result<()> {
    // SAFETY: atexit(3) only stores the function pointer, which is valid for the whole life of
    // the program (a plain fn item, not a closure).
    if unsafe { libc::atexit(f) } != 0 {
        return Err(std::io::Error::other("atexit: no room for another handler"));
    }
    Ok(())
}
