//! Keys, CSRs and what the issuer reads from a certificate, with OpenSSL (already linked by the
//! workspace; the router's SNI plugin reads the same files with it).

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509Req, X509};

/// What the issuer needs to know of an installed certificate (its leaf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: i64,
    pub not_after: i64,
    /// Lowercase hex, no leading zeros: names the version directory.
    pub serial_hex: String,
    /// DNS names of the subjectAltName.
    pub names: Vec<String>,
    /// ARI's certificate id (RFC 9773 §4.1): keyIdentifier of the AKI and the serial's DER
    /// content octets; `None` without an AKI.
    pub ari_id: Option<(Vec<u8>, Vec<u8>)>,
}

fn unix(t: &Asn1TimeRef) -> Result<i64, String> {
    let epoch = Asn1Time::from_unix(0).map_err(|e| e.to_string())?;
    let d = epoch.diff(t).map_err(|e| e.to_string())?;
    Ok(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The leaf of a PEM chain (the first certificate).
pub fn parse_chain(chain_pem: &[u8]) -> Result<CertInfo, String> {
    let chain = X509::stack_from_pem(chain_pem).map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    let leaf = chain.first().ok_or("the chain holds no certificate")?;
    let names = leaf
        .subject_alt_names()
        .map(|sans| sans.iter().filter_map(|n| n.dnsname().map(str::to_ascii_lowercase)).collect())
        .unwrap_or_default();
    let serial = leaf.serial_number().to_bn().map_err(|e| e.to_string())?;
    let mut serial_der = serial.to_vec();
    // DER INTEGER content: positive, minimal, a leading zero when the top bit is set.
    if serial_der.first().is_none_or(|b| b & 0x80 != 0) {
        serial_der.insert(0, 0);
    }
    let serial_hex = serial.to_hex_str().map_err(|e| e.to_string())?.to_ascii_lowercase();
    let ari_id = leaf.authority_key_id().map(|aki| (aki.as_slice().to_vec(), serial_der));
    Ok(CertInfo { not_before: unix(leaf.not_before())?, not_after: unix(leaf.not_after())?, serial_hex, names, ari_id })
}

/// Whether the chain's leaf certifies the public half of `key_pem`: a pair that does not match
/// is never installed (and an installed one that does not is ordered again).
pub fn key_matches(chain_pem: &[u8], key_pem: &[u8]) -> bool {
    let (Ok(leaf), Ok(key)) = (X509::from_pem(chain_pem), PKey::private_key_from_pem(key_pem)) else {
        return false;
    };
    leaf.public_key().is_ok_and(|public| public.public_eq(&key))
}

/// A new ECDSA P-256 key (PKCS#8 PEM) and a CSR for `name` signed with it (DER). P-256: every
/// client of the last decade has it, and it signs handshakes ~25 times faster than RSA-2048.
pub fn new_key_and_csr(name: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let ctx = |e: openssl::error::ErrorStack| format!("CSR for {name}: {e}");
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(ctx)?;
    let key: PKey<Private> = PKey::from_ec_key(EcKey::generate(&group).map_err(ctx)?).map_err(ctx)?;
    let mut req = X509Req::builder().map_err(ctx)?;
    req.set_pubkey(&key).map_err(ctx)?;
    let san = SubjectAlternativeName::new().dns(name).build(&req.x509v3_context(None)).map_err(ctx)?;
    let mut exts = Stack::new().map_err(ctx)?;
    exts.push(san).map_err(ctx)?;
    req.add_extensions(&exts).map_err(ctx)?;
    req.sign(&key, MessageDigest::sha256()).map_err(ctx)?;
    let csr = req.build().to_der().map_err(ctx)?;
    Ok((key.private_key_to_pem_pkcs8().map_err(ctx)?, csr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::bn::BigNum;
    use openssl::x509::extension::{AuthorityKeyIdentifier, SubjectKeyIdentifier};
    use openssl::x509::X509NameBuilder;

    /// A self-signed certificate for `name` with the given serial, key and lifetime.
    fn cert(name: &str, serial: &[u8], key: &PKey<Private>, days: u32) -> Vec<u8> {
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_slice(serial).unwrap().to_asn1_integer().unwrap()).unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", name).unwrap();
        let n = n.build();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(key).unwrap();
        b.set_not_before(&Asn1Time::from_unix(1_700_000_000).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::from_unix(1_700_000_000 + i64::from(days) * 86_400).unwrap()).unwrap();
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(ski).unwrap();
        let aki = AuthorityKeyIdentifier::new().keyid(true).build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(aki).unwrap();
        let san = SubjectAlternativeName::new().dns(name).build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(san).unwrap();
        b.sign(key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    #[test]
    fn the_leaf_gives_dates_names_serial_and_ari_id() {
        let (key_pem, csr) = new_key_and_csr("shop.example.org").unwrap();
        let key = PKey::private_key_from_pem(&key_pem).unwrap();
        let req = X509Req::from_der(&csr).unwrap();
        assert!(req.verify(&key).unwrap());
        let pem = cert("shop.example.org", &[0x8f, 0x01], &key, 90);
        let info = parse_chain(&pem).unwrap();
        assert_eq!((info.not_before, info.not_after), (1_700_000_000, 1_700_000_000 + 90 * 86_400));
        assert_eq!(info.names, ["shop.example.org"]);
        assert_eq!(info.serial_hex, "8f01");
        let (aki, serial) = info.ari_id.unwrap();
        assert_eq!(aki.len(), 20, "SHA-1 key id");
        assert_eq!(serial, [0x00, 0x8f, 0x01], "a high bit gets a leading zero, as DER encodes it");
        assert!(key_matches(&pem, &key_pem));
        let (other, _) = new_key_and_csr("shop.example.org").unwrap();
        assert!(!key_matches(&pem, &other));
        assert!(!key_matches(b"junk", &key_pem));
        assert!(parse_chain(b"junk").is_err());
    }
}
