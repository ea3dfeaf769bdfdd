//! Certificates for tests and benchmarks: a CA, server certificates with SAN names, client
//! certificates. Real X.509 made with OpenSSL, as `openssl req`/`openssl x509` would make them.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// A key and its certificate, in PEM.
pub struct Pair {
    pub key: PKey<Private>,
    pub cert: X509,
}

impl Pair {
    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().expect("key to PEM")
    }
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("certificate to PEM")
    }
}

pub enum KeyKind {
    Rsa2048,
    P256,
}

fn key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        KeyKind::P256 => {
            PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap())
                .unwrap()
        }
    }
}

fn builder(cn: &str, key: &PKey<Private>, serial: u32) -> X509Builder {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap()).unwrap();
    b
}

/// A CA certificate named `cn` (self-signed, P-256).
pub fn ca(cn: &str) -> Pair {
    let key = key(KeyKind::P256);
    let mut b = builder(cn, &key, 1);
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
    sign(b, &key, None, cn)
}

/// A certificate for `names` (the first is the CN; each a SAN DNS name, `*.x` for wildcards),
/// self-signed when `issuer` is `None`.
pub fn server(names: &[&str], kind: KeyKind, issuer: Option<&Pair>, serial: u32) -> Pair {
    let key = key(kind);
    let mut b = builder(names[0], &key, serial);
    let mut san = SubjectAlternativeName::new();
    for n in names {
        san.dns(n);
    }
    let ext = san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None)).unwrap();
    b.append_extension(ext).unwrap();
    sign(b, &key, issuer, names[0])
}

/// A client certificate with subject `CN=<cn>`, signed by `issuer`.
pub fn client(cn: &str, issuer: &Pair, serial: u32) -> Pair {
    let key = key(KeyKind::P256);
    let b = builder(cn, &key, serial);
    sign(b, &key, Some(issuer), cn)
}

fn sign(mut b: X509Builder, key: &PKey<Private>, issuer: Option<&Pair>, cn: &str) -> Pair {
    match issuer {
        Some(i) => {
            b.set_issuer_name(i.cert.subject_name()).unwrap();
            b.sign(&i.key, MessageDigest::sha256()).unwrap();
        }
        None => {
            let mut name = X509NameBuilder::new().unwrap();
            name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
            b.set_issuer_name(&name.build()).unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
    }
    Pair { key: key.clone(), cert: b.build() }
}
