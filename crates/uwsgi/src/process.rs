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

/// Replaces this process's command line (`/proc/<pid>/cmdline`, what `ps` shows) with `name`
/// (cut to the room there is). The whole argument area is cleared: nothing of the old command
/// line stays after `name`, and with its last byte NUL the kernel shows none of the
/// environment strings that follow it either.
pub fn set_cmdline(name: &str) -> Result<(), String> {
    // The area's bounds, as the kernel knows them (fields 48 and 49, after the command name,
    // which may itself hold spaces and parentheses).
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<usize>().ok());
    let (Some(arg_start), Some(arg_end)) = (field(48), field(49)) else {
        return Err("/proc/self/stat has no argument area".into());
    };
    // SAFETY: read on uWSGI's single thread of this process; `orig_argv` is main()'s argv,
    // set before any plugin is loaded.
    let argv0 = unsafe {
        let argv = uwsgi_sys::uwsgi.orig_argv;
        if argv.is_null() {
            return Err("uWSGI has no argv".into());
        }
        *argv
    };
    // Only ever the strings the kernel laid out for this process, which start with argv[0].
    if argv0 as usize != arg_start || arg_end <= arg_start {
        return Err(format!("the argument area {arg_start:#x}-{arg_end:#x} does not start at argv[0]"));
    }
    let len = arg_end - arg_start;
    let bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(len - 1).collect();
    // SAFETY: `arg_start..arg_end` holds this process's original argument strings, writable
    // memory of its stack that nothing reads any more (uWSGI keeps strdup'ed copies in
    // `uwsgi.argv`, and overwrites the same area itself for its process names); `bytes` is
    // shorter than the area and does not overlap it.
    unsafe {
        let start = argv0.cast::<u8>();
        std::ptr::write_bytes(start, 0, len);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), start, bytes.len());
    }
    Ok(())
}
