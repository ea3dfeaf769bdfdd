//! The production path: the node proves who it is with a client certificate that the API
//! verifies against its CA and finds bound to the server record; the node trusts only the
//! platform's CA. A certificate from the same CA that is not bound to a server gets nothing.

mod common;

use common::{api_binary, run, Killed};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").args(args).current_dir(dir));
}

/// A CA, a server certificate for 127.0.0.1, and two node certificates (PKCS#8 keys).
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=test platform CA",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for (name, cn) in [("api", "127.0.0.1"), ("node", "node n1"), ("stranger", "node nobody")] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &*format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(["-out".into(), format!("{name}.crt")]);
        if name == "api" {
            args.extend(["-extfile".into(), "san.ext".into()]);
        }
        run(Command::new("openssl").args(&args).current_dir(dir));
    }
}

fn sync_once(dir: &Path, port: u16, who: &str, state: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unbit-node-sync"))
        .args(["--api", &format!("https://127.0.0.1:{port}"), "--once"])
        .arg("--cert")
        .arg(dir.join(format!("{who}.crt")))
        .arg("--key")
        .arg(dir.join(format!("{who}.key")))
        .arg("--ca")
        .arg(dir.join("ca.crt"))
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_node_syncs_over_verified_mtls_and_an_unbound_certificate_gets_nothing() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    make_pki(dir);
    let db = dir.join("api.sqlite");
    let admin = |args: &[&str]| run(Command::new(api_binary()).arg("admin").arg("--db").arg(&db).args(args));
    admin(&["server", "add", "--name", "n1", "--address", "127.0.0.1", "--memory", "4096", "--storage", "10000"]);
    admin(&["server", "bind-cert", "--name", "n1", "--cert", &dir.join("node.crt").to_string_lossy()]);
    let distro = admin(&["distro", "add", "--name", "Debian 12", "--path", "bookworm"]);
    admin(&["customer", "add", "--username", "kratos", "--password", "deimos"]);
    let uid: u32 = admin(&[
        "container",
        "add",
        "--customer",
        "kratos",
        "--server",
        "n1",
        "--name",
        "web",
        "--memory",
        "500",
        "--storage",
        "1000",
    ])
    .trim()
    .parse()
    .unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _api = Killed(
        Command::new(api_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(&db)
            .arg("--tls-cert")
            .arg(dir.join("api.crt"))
            .arg("--tls-key")
            .arg(dir.join("api.key"))
            .arg("--client-ca")
            .arg(dir.join("ca.crt"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "unbit-api did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Make the container deployable straight in the database through the customer API over TLS.
    let client = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap())
        .build()
        .unwrap();
    for body in [
        serde_json::json!({"distro": distro.trim().parse::<u32>().unwrap()}),
        serde_json::json!({"ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl kratos@laptop"]}),
    ] {
        let r = client
            .post(format!("https://127.0.0.1:{port}/api/containers/{uid}"))
            .basic_auth("kratos", Some("deimos"))
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    let state = dir.join("specs");
    std::fs::create_dir(&state).unwrap();
    let (ok, log) = sync_once(dir, port, "stranger", &state);
    assert!(!ok, "an unbound certificate was served: {log}");
    assert!(log.contains("403"), "{log}");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);

    let (ok, log) = sync_once(dir, port, "node", &state);
    assert!(ok, "{log}");
    assert!(state.join(format!("{uid}.json")).exists(), "{log}");

    // The same connection from a settings file, with emperor.ini's command line.
    let conf = dir.join("node-sync.conf");
    std::fs::write(
        &conf,
        format!(
            "# as /etc/unbit/node-sync.conf\napi = https://127.0.0.1:{port}\ncert = {d}/node.crt\nkey = {d}/node.key\nca = {d}/ca.crt\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let from_settings = dir.join("specs-from-settings");
    std::fs::create_dir(&from_settings).unwrap();
    let sync = |mode: u32| {
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_unbit-node-sync"))
            .arg("--settings")
            .arg(&conf)
            .arg("--state-dir")
            .arg(&from_settings)
            .arg("--once")
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, log) = sync(0o666);
    assert!(!ok && log.contains("writable by group or others"), "{log}");
    assert_eq!(std::fs::read_dir(&from_settings).unwrap().count(), 0);
    let (ok, log) = sync(0o600);
    assert!(ok, "{log}");
    assert!(from_settings.join(format!("{uid}.json")).exists(), "{log}");
}
