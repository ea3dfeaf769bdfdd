//! The production path: the node proves who it is with a client certificate that the API
//! verifies against its CA and finds bound to the server record; the node trusts only the
//! platform's CA. A certificate from the same CA that is not bound to a server gets nothing.

mod common;

use common::{api_binary, run, Killed};
use std::path::{Path, PathBuf};
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

/// A test's temporary directory with [`make_pki`]'s certificates and the API's database.
struct Platform {
    work: tempfile::TempDir,
    db: PathBuf,
}

impl Platform {
    fn new() -> Platform {
        let work = tempfile::tempdir().unwrap();
        make_pki(work.path());
        let db = work.path().join("api.sqlite");
        Platform { work, db }
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    /// `unbit-api admin --db <db> <args>`'s output; panics on failure.
    fn admin(&self, args: &[&str]) -> String {
        run(Command::new(api_binary()).arg("admin").arg("--db").arg(&self.db).args(args))
    }
}

fn sync_once(dir: &Path, port: u16, who: &str, state: &Path) -> (bool, String) {
    sync_once_with(dir, port, who, state, &[])
}

fn sync_once_with(dir: &Path, port: u16, who: &str, state: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unbit-node-sync"))
        .args(["--api", &format!("https://127.0.0.1:{port}"), "--once"])
        .args(extra)
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

/// The API over TLS with `make_pki`'s certificates, asking clients for theirs; its port.
fn serve_tls(dir: &Path, db: &Path) -> (Killed, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let api = Killed(
        Command::new(api_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
            .arg(db)
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
    (api, port)
}

#[test]
fn a_node_syncs_over_verified_mtls_and_an_unbound_certificate_gets_nothing() {
    let platform = Platform::new();
    let (dir, db) = (platform.dir(), &platform.db);
    let admin = |args: &[&str]| platform.admin(args);
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

    let (_api, port) = serve_tls(dir, db);
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

/// The Legion's members file reaches the node's cluster instance, and the links members file
/// its `unbit-links`, through node-sync over its mTLS channel (docs/clustering.md,
/// docs/networking.md): the operator sets each server's keys in the API once instead of copying
/// files to every node.
#[test]
fn a_node_of_a_legion_gets_the_members_files_over_mtls_and_a_stranger_gets_nothing() {
    let platform = Platform::new();
    let (dir, db) = (platform.dir(), &platform.db);
    let admin = |args: &[&str]| platform.admin(args);
    let (key_1, key_2) = ("11".repeat(32), "22".repeat(32));
    for (name, address) in [("n1", "192.168.250.1"), ("n2", "192.168.250.2")] {
        admin(&["server", "add", "--name", name, "--address", address, "--memory", "4096", "--storage", "10000"]);
    }
    admin(&["server", "bind-cert", "--name", "n1", "--cert", &dir.join("node.crt").to_string_lossy()]);
    admin(&["legion", "add", "--name", "l1", "--address", "192.168.250.100"]);
    for name in ["n1", "n2"] {
        admin(&["legion", "add-node", "--legion", "l1", "--server", name]);
    }
    admin(&["server", "set-cluster-keys", "--name", "n1", "--public-key", &key_1]);
    admin(&["server", "set-cluster-keys", "--name", "n2", "--public-key", &key_2, "--x25519-key", &"33".repeat(32)]);
    // WireGuard keys (`unbit-links pubkey`) and a container on each node, for the links file.
    let (wg_1, wg_2) = ("ERERERERERERERERERERERERERERERERERERERERERE=", "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=");
    admin(&["server", "set-links-key", "--name", "n1", "--public-key", wg_1]);
    admin(&["server", "set-links-key", "--name", "n2", "--public-key", wg_2]);
    admin(&["customer", "add", "--username", "kratos", "--password", "deimos"]);
    let uid_on = |server: &str| -> u32 {
        let add = ["container", "add", "--customer", "kratos", "--server", server, "--name", server];
        admin(&[&add[..], &["--memory", "256", "--storage", "1000"]].concat()).trim().parse().unwrap()
    };
    let (uid_1, uid_2) = (uid_on("n1"), uid_on("n2"));
    let (_api, port) = serve_tls(dir, db);

    let state = dir.join("specs");
    std::fs::create_dir(&state).unwrap();
    let file = dir.join("members.json");
    let links = dir.join("links-members.json");
    let flag = ["--legion-members-file", file.to_str().unwrap(), "--links-members-file", links.to_str().unwrap()];
    let (ok, log) = sync_once_with(dir, port, "stranger", &state, &flag);
    assert!(!ok && log.contains("403"), "{log}");
    assert!(!file.exists(), "a certificate bound to no server got the members file: {log}");
    assert!(!links.exists(), "a certificate bound to no server got the links members file: {log}");

    let (ok, log) = sync_once_with(dir, port, "node", &state, &flag);
    assert!(ok, "{log}");
    assert!(log.contains(&format!("legion members updated in {}", file.display())), "{log}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"members": [
            {"name": "n1", "cluster": "192.168.250.1:3022", "fastrouter": "192.168.250.1:1999", "public_key": key_1},
            {"name": "n2", "cluster": "192.168.250.2:3022", "fastrouter": "192.168.250.2:1999", "public_key": key_2,
             "x25519_key": "33".repeat(32)},
        ]})
    );
    assert!(log.contains(&format!("links members updated in {}", links.display())), "{log}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&links).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"members": [
            {"name": "n1", "endpoint": "192.168.250.1:51820", "public_key": wg_1, "containers": [uid_1]},
            {"name": "n2", "endpoint": "192.168.250.2:51820", "public_key": wg_2, "containers": [uid_2]},
        ]})
    );
    // Readable by the cluster instance and unbit-links, written by root only: public keys,
    // addresses and uids.
    use std::os::unix::fs::PermissionsExt;
    for f in [&file, &links] {
        assert_eq!(std::fs::metadata(f).unwrap().permissions().mode() & 0o777, 0o644, "{}", f.display());
    }

    // A member leaves the Legion: the next pass takes it out of the file.
    admin(&["legion", "remove-node", "--legion", "l1", "--server", "n2"]);
    let (ok, log) = sync_once_with(dir, port, "node", &state, &flag);
    assert!(ok, "{log}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written["members"].as_array().unwrap().len(), 1, "{written}");
    assert_eq!(written["members"][0]["name"], "n1");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&links).unwrap()).unwrap();
    assert_eq!(written["members"].as_array().unwrap().len(), 1, "{written}");
    assert_eq!(written["members"][0]["containers"], serde_json::json!([uid_1]));

    // Back in, with a host name as its address (a row from before the admin CLI checked, or
    // edited by hand): the API lists it as skipped; the node logs that, and its files hold
    // the members only (unbit-links refuses a file with any other field).
    admin(&["legion", "add-node", "--legion", "l1", "--server", "n2"]);
    run(Command::new("sqlite3").arg(db).arg("UPDATE servers SET address = 'n2.example' WHERE name = 'n2'"));
    let (ok, log) = sync_once_with(dir, port, "node", &state, &flag);
    assert!(ok, "{log}");
    for (f, what) in [(&file, "legion members"), (&links, "links members")] {
        let left_out = format!("{what}: the API left a server out of {}: n2: ", f.display());
        assert!(log.contains(&left_out) && log.contains("\"n2.example\" is not an IP address"), "{log}");
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        assert_eq!(written.as_object().unwrap().keys().collect::<Vec<_>>(), ["members"], "{written}");
        assert_eq!(written["members"].as_array().unwrap().len(), 1, "{written}");
    }
}
