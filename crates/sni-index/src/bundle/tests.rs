use super::*;
use crate::testing::{ca, client, server, KeyKind};

#[test]
fn a_good_pair_round_trips_through_the_entry_file() {
    let authority = ca("Customer CA");
    let pair = server(&["example.org"], KeyKind::Rsa2048, None, 7);
    let bundle =
        Bundle::from_pem(&pair.cert_pem(), &pair.key_pem(), Some((&authority.cert_pem(), ClientCa::Required))).unwrap();
    assert!(bundle.summary().contains("CN=example.org, issued by CN=example.org"), "{}", bundle.summary());
    assert!(bundle.summary().contains("client certificates required from CN=Customer CA"));
    assert!(bundle.warnings("example.org").is_empty(), "{:?}", bundle.warnings("example.org"));
    let bytes = bundle.encode("example.org", 30001, "~/foobar.crt").unwrap();
    let entry = Entry::decode(&bytes).unwrap();
    assert_eq!((entry.owner, entry.source.as_str()), (30001, "~/foobar.crt"));
    assert_eq!(entry.bundle.client_ca, ClientCa::Required);
    assert_eq!(entry.sid, bundle.session_context("example.org"));
    assert_eq!(entry.bundle.chain[0].to_der().unwrap(), pair.cert.to_der().unwrap());
    assert!(entry.bundle.key.public_eq(&pair.key));
    entry.context().unwrap();
    // Another name, or another CA: another session context.
    assert_ne!(bundle.session_context("example.net"), entry.sid);
    let other = Bundle::from_pem(&pair.cert_pem(), &pair.key_pem(), Some((&ca("B").cert_pem(), ClientCa::Required)));
    assert_ne!(other.unwrap().session_context("example.org"), entry.sid);
    // A cut file is refused, not half-read.
    assert!(Entry::decode(&bytes[..bytes.len() - 10]).is_err());
    // So is an item length that would overflow.
    let header_end = bytes.windows(5).position(|w| w == b"cert ").unwrap();
    let mut huge = bytes[..header_end].to_vec();
    huge.extend_from_slice(format!("cert {}\n", usize::MAX).as_bytes());
    assert_eq!(Entry::decode(&huge).err().as_deref(), Some("bad item length"));
}

#[test]
fn mistakes_are_explained() {
    let a = server(&["a.example"], KeyKind::P256, None, 1);
    let b = server(&["b.example"], KeyKind::P256, None, 2);
    let err = |chain: &[u8], key: &[u8]| Bundle::from_pem(chain, key, None).err().unwrap();
    assert!(err(&a.cert_pem(), &b.key_pem()).contains("the key does not belong to the certificate (CN=a.example"));
    assert!(err(b"hello", &a.key_pem()).contains("holds no PEM certificate"), "{}", err(b"hello", &a.key_pem()));
    assert!(err(&a.key_pem(), &a.key_pem()).contains("holds no PEM certificate"));
    assert!(err(&a.cert_pem(), &a.cert_pem()).contains("not a PEM private key"));
    let encrypted = a.key.private_key_to_pem_pkcs8_passphrase(openssl::symm::Cipher::aes_128_cbc(), b"secret").unwrap();
    assert!(err(&a.cert_pem(), &encrypted).contains("encrypted with a passphrase"));
    let no_ca = Bundle::from_pem(&a.cert_pem(), &a.key_pem(), Some((b"nothing", ClientCa::Optional)));
    assert!(no_ca.err().unwrap().contains("client CA file holds no PEM certificate"));
    // Nothing is left on OpenSSL's error queue for the next handshake.
    assert!(openssl::error::ErrorStack::get().errors().is_empty());
}

#[test]
fn warnings_name_what_browsers_will_complain_about() {
    let wild = server(&["*.example.org"], KeyKind::P256, None, 1);
    let bundle = Bundle::from_pem(&wild.cert_pem(), &wild.key_pem(), None).unwrap();
    assert!(bundle.warnings(".example.org").is_empty());
    assert!(bundle.warnings("shop.example.org").is_empty());
    assert_eq!(bundle.warnings("example.net"), ["the certificate does not name example.net (browsers will warn)"]);
}

#[test]
fn a_chain_keeps_its_order_and_client_certificates_verify_against_the_ca() {
    let authority = ca("Customer CA");
    let leaf = server(&["shop.example"], KeyKind::P256, Some(&authority), 9);
    let mut chain = leaf.cert_pem();
    chain.extend_from_slice(&authority.cert_pem());
    let bundle = Bundle::from_pem(&chain, &leaf.key_pem(), Some((&authority.cert_pem(), ClientCa::Optional))).unwrap();
    assert_eq!(bundle.chain.len(), 2);
    let alice = client("alice", &authority, 3);
    assert!(alice.cert.verify(&authority.key).unwrap());
    assert_eq!(verify_mode(ClientCa::Optional), SslVerifyMode::PEER);
}
