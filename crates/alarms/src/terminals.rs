//! The console broadcast: an alarm shown on every terminal of the container. It runs inside
//! the container, as its uid (the container master's `unbit_alarms` plugin), where
//! `/dev/pts` is the container's own devpts instance: only the container's terminals (its ssh
//! sessions among them) are there. The node never writes into a container's terminals.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `text` on its own line to every terminal in `pts_dir` (`/dev/pts`), never blocking
/// (a terminal whose reader is stuck loses the line). Returns how many got it.
pub fn broadcast(pts_dir: &Path, text: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(pts_dir) else { return 0 };
    let mut reached = 0;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue; // ptmx
        }
        let tty = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(entry.path());
        if let Ok(mut tty) = tty {
            if tty.write_all(format!("\r\n*** {text} ***\r\n").as_bytes()).is_ok() {
                reached += 1;
            }
        }
    }
    reached
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_pts_dir_reaches_no_one() {
        assert_eq!(super::broadcast(std::path::Path::new("/nonexistent/pts"), "x"), 0);
    }
}
