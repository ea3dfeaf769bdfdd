//! Runs the OpenAPI-driven schemathesis fuzz (tests/run-fuzz.sh) against this build's binary,
//! so `cargo test` (and `make test`) covers it; no 5xx and no server error log may appear.

use std::process::Command;

#[test]
fn openapi_fuzz_finds_no_server_errors() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/run-fuzz.sh");
    let found = Command::new("sh").args(["-c", "command -v schemathesis"]).output().map(|o| o.status.success());
    assert!(found.unwrap_or(false), "schemathesis is not installed: {}", crate::harness::INSTALL_HINT);
    let out = Command::new("bash")
        .arg(script)
        .env("UNBIT_API_BIN", env!("CARGO_BIN_EXE_unbit-api"))
        .env("MAX_EXAMPLES", std::env::var("MAX_EXAMPLES").unwrap_or_else(|_| "20".into()))
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "the fuzz run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
