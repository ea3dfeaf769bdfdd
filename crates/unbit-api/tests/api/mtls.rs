//! Node identity over mutual TLS: a CA-verified client certificate bound to the server record.

use crate::harness::{ssh_key, Api, Backend, Who};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};
use serde_json::json;
use std::path::Path;

struct Cert {
    cert: X509,
    key: PKey<Private>,
}

fn cert(cn: &str, issuer: Option<&Cert>, ca: bool, server: bool) -> Cert {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map(|i| i.cert.subject_name()).unwrap_or(&name)).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        b.append_extension(KeyUsage::new().key_cert_sign().crl_sign().build().unwrap()).unwrap();
    } else if server {
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.append_extension(ExtendedKeyUsage::new().server_auth().build().unwrap()).unwrap();
    } else {
        b.append_extension(ExtendedKeyUsage::new().client_auth().build().unwrap()).unwrap();
    }
    b.sign(issuer.map(|i| &i.key).unwrap_or(&key), MessageDigest::sha256()).unwrap();
    Cert { cert: b.build(), key }
}

fn write(dir: &Path, name: &str, c: &Cert) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, c.cert.to_pem().unwrap()).unwrap();
    std::fs::write(&key, c.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, key)
}

fn client(ca: &Cert, identity: Option<&Cert>) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.cert.to_pem().unwrap()).unwrap())
        .timeout(std::time::Duration::from_secs(30));
    if let Some(id) = identity {
        let identity =
            reqwest::Identity::from_pkcs8_pem(&id.cert.to_pem().unwrap(), &id.key.private_key_to_pem_pkcs8().unwrap())
                .unwrap();
        b = b.identity(identity);
    }
    b.build().unwrap()
}

#[test]
fn nodes_are_identified_by_their_bound_client_certificate() {
    let mut api = Api::new(Backend::Sqlite);
    let dir = api.dir.path().to_path_buf();
    let ca = cert("unbit test CA", None, true, false);
    let server = cert("127.0.0.1", Some(&ca), false, true);
    let node = cert("node1", Some(&ca), false, false);
    let unbound = cert("node2", Some(&ca), false, false);
    let rogue = cert("node1", None, false, false);
    let (ca_pem, _) = write(&dir, "ca", &ca);
    let (server_crt, server_key) = write(&dir, "server", &server);
    let (node_crt, _) = write(&dir, "node", &node);

    let token = api.server("node1", "192.0.2.10", 4000, 10_000);
    api.server("node2", "192.0.2.11", 4000, 10_000);
    api.admin(&["server", "bind-cert", "--name", "node1", "--cert", node_crt.to_str().unwrap()]);
    let kratos = api.customer("kratos", "deimos-pass");
    let uid = api.container(&kratos, "node1", "web", 100, 100);
    let distro = api.distro("Debian", "bookworm");
    api.start_with(&[
        "--tls-cert",
        server_crt.to_str().unwrap(),
        "--tls-key",
        server_key.to_str().unwrap(),
        "--client-ca",
        ca_pem.to_str().unwrap(),
    ]);
    let base = format!("https://127.0.0.1:{}/api", api.port);
    let get = |c: &reqwest::blocking::Client, path: &str| c.get(format!("{base}{path}")).send();

    // Customers connect without a certificate.
    let customer = client(&ca, None);
    let r = customer
        .post(format!("{base}/containers/{uid}"))
        .basic_auth("kratos", Some("deimos-pass"))
        .body(json!({"distro": distro, "ssh_keys": [ssh_key()]}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = get(&client(&ca, Some(&node)), "/node/v1/containers").unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["containers"][0]["uid"], uid);

    // CA-signed but bound to no server, or no certificate at all: 403.
    assert_eq!(get(&client(&ca, Some(&unbound)), "/node/v1/containers").unwrap().status(), 403);
    assert_eq!(get(&customer, "/node/v1/containers").unwrap().status(), 403);
    // The dev token is not accepted over TLS.
    let Who::Node(token) = token else { unreachable!() };
    let r = customer.get(format!("{base}/node/v1/containers")).header("X-Unbit-Node-Token", token).send().unwrap();
    assert_eq!(r.status(), 403);
    // A certificate the CA did not sign fails the handshake.
    assert!(get(&client(&ca, Some(&rogue)), "/node/v1/containers").is_err());
}
