//! A real ACME CA on loopback, never a public one: Debian's `pebble` with an HTTPS certificate
//! the kit makes with openssl, its DNS pointed at a dnsmasq that resolves the test's names to
//! 127.0.0.1, and its HTTP-01 validations sent to the port the test names (the router under
//! test). Both run as long as the [`TestCa`] and are stopped by PID when it is dropped, also
//! while a failed test unwinds. Used by `crates/acme/tests` (the issuer behind a stock router)
//! and `tests/automatic_https.rs` (the issuer behind the node's front door).

use crate::ports::free_port;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HINT: &str = "run scripts/install-deps.sh (as root) to install the test servers";

/// `path`, which the Debian `package` installs; the test fails with the hint when it is missing.
pub fn require(path: &str, package: &str) -> PathBuf {
    assert!(Path::new(path).exists(), "{path} is missing (Debian package {package}): {HINT}");
    PathBuf::from(path)
}

/// A child stopped by PID when dropped (also while a failed test unwinds), with `signal`
/// (uWSGI takes SIGTERM as "reload": give it SIGINT).
pub struct Guard {
    pub child: Child,
    pub signal: nix::sys::signal::Signal,
}

impl Guard {
    /// Stopped with SIGKILL.
    pub fn new(child: Child) -> Guard {
        Guard { child, signal: nix::sys::signal::Signal::SIGKILL }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, self.signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 20 s for a TCP listener on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `cmd` to its end; its stdout, or a panic with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `openssl ARGS` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) -> String {
    run(Command::new(require("/usr/bin/openssl", "openssl")).current_dir(dir).args(args))
}

/// `openssl` with its arguments written as one line (none of them has a blank).
fn openssl_line(dir: &Path, line: &str) -> String {
    openssl(dir, &line.split_whitespace().collect::<Vec<_>>())
}

/// One test's CA and its DNS, on loopback ports of their own.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The ACME directory URL (`https://127.0.0.1:<port>/dir`).
    pub directory: String,
    mgmt_port: u16,
    _dns: Guard,
    _pebble: Guard,
}

impl TestCa {
    /// Starts dnsmasq answering 127.0.0.1 for `names` (and nothing else) and pebble, which
    /// validates HTTP-01 challenges on `127.0.0.1:http_port` (its `httpPort`) without the
    /// random waits it makes by default.
    pub fn start(names: &[&str], http_port: u16) -> TestCa {
        let dir = tempfile::Builder::new().prefix("unbit-test-ca").tempdir().unwrap();
        let d = dir.path();
        // Pebble's own HTTPS certificate, from a CA the issuer is told to trust (ca-root).
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl_line(
            d,
            &format!("req -x509 {ec} -keyout tls-ca.key -out tls-ca.pem -subj /CN=unbit-acme-test-CA -days 2"),
        );
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
        openssl_line(d, &format!("req {ec} -keyout pebble.key -out pebble.csr -subj /CN=localhost"));
        openssl_line(
            d,
            "x509 -req -in pebble.csr -CA tls-ca.pem -CAkey tls-ca.key -CAcreateserial -out pebble.pem -days 2 -extfile san.ext",
        );

        let dns_port = free_port();
        let mut dns = Command::new(require("/usr/sbin/dnsmasq", "dnsmasq-base"));
        dns.args(["--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
            .args(["--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file="])
            .arg(format!("--port={dns_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for n in names {
            dns.arg(format!("--address=/{n}/127.0.0.1"));
        }
        let dns = Guard::new(dns.spawn().expect("dnsmasq starts"));
        wait_for_port(dns_port, "dnsmasq");

        let (acme_port, mgmt_port, tls_port) = (free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": d.join("pebble.pem"),
            "privateKey": d.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(d.join("pebble.json"), config.to_string()).unwrap();
        let pebble = Command::new(require("/usr/bin/pebble", "pebble"))
            .args(["-config", d.join("pebble.json").to_str().unwrap(), "-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(std::fs::File::create(d.join("pebble.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble starts");
        let pebble = Guard::new(pebble);
        wait_for_port(acme_port, "pebble");
        wait_for_port(mgmt_port, "pebble's management interface");
        TestCa { dir, directory: format!("https://127.0.0.1:{acme_port}/dir"), mgmt_port, _dns: dns, _pebble: pebble }
    }

    /// Writes `unbit-acme`'s settings for this CA at `path` (root's, 0600, as the issuer
    /// wants it): its directory, a contact, and the root its HTTPS certificate comes from.
    pub fn write_settings(&self, path: &Path) {
        std::fs::write(
            path,
            format!(
                "directory = {}\ncontact = mailto:ops@example.net\nca-root = {}\n",
                self.directory,
                self.dir.path().join("tls-ca.pem").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Pebble's issuing root (made afresh at each start, from its management interface),
    /// written to `path`: what a client trusts to verify the certificates it issued.
    pub fn write_root(&self, path: &Path) {
        let pem = run(Command::new("curl")
            .args(["-sSf", "--cacert", self.dir.path().join("tls-ca.pem").to_str().unwrap()])
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port)));
        std::fs::write(path, pem).unwrap();
    }

    /// What pebble logged (its validations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}
