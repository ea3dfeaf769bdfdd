//! The customer sshd's `AuthorizedKeysCommand`: `unbit-ssh-keys --specs <dir> %u`.
//!
//! Prints the container's keys as authorized_keys lines, or nothing. A refusal is one line on
//! stderr (sshd logs it) and exit status 0: sshd treats no keys as a refused login, so every
//! failure ends the same way (fail closed).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, user) = match args.as_slice() {
        [flag, dir, user] if flag == "--specs" => (PathBuf::from(dir), user.as_str()),
        _ => {
            eprintln!("usage: unbit-ssh-keys --specs <spec folder> <user>");
            return ExitCode::from(2);
        }
    };
    // The spec folder decides who logs in: only root may be able to change it.
    match ssh_access::authorized_keys(&dir, user, 0) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("unbit-ssh-keys: user {user:?}: cannot write the keys: {e}");
            }
        }
        Err(reason) => eprintln!("unbit-ssh-keys: {reason}"),
    }
    ExitCode::SUCCESS
}
