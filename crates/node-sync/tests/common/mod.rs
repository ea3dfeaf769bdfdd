//! What both API-backed tests need: the `unbit-api` binary, and children that die with the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// `unbit-api` is built by `cargo test --workspace` / `make test` next to the test binaries.
pub fn api_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(Path::parent).unwrap().join("unbit-api");
    assert!(bin.exists(), "{} is missing: build it with `cargo build -p unbit-api` (make test does)", bin.display());
    bin
}

/// A child process killed and reaped when the test ends, passing or not.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd`, fails the test with its stderr if it fails, returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
