//! Key material: the customers' subscription key pairs, random tokens and their digests.

use openssl::pkey::PKey;
use openssl::rsa::Rsa;

/// A customer's subscription key pair: PKCS#8 private PEM (what stock uWSGI's
/// `subscribe2 ... sign=SHA256:<file>` reads) and the SPKI public PEM the router verifies with.
#[derive(Debug, Clone)]
pub struct SubscriptionKeyPair {
    pub private_pem: String,
    pub public_pem: String,
}

pub const RSA_BITS: u32 = 2048;

pub fn generate_subscription_key() -> anyhow_free::Result<SubscriptionKeyPair> {
    let rsa = Rsa::generate(RSA_BITS)?;
    let key = PKey::from_rsa(rsa)?;
    Ok(SubscriptionKeyPair {
        private_pem: String::from_utf8(key.private_key_to_pem_pkcs8()?)?,
        public_pem: String::from_utf8(key.public_key_to_pem()?)?,
    })
}

/// `n` random bytes from the OpenSSL CSPRNG, hex encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    openssl::rand::rand_bytes(&mut buf).expect("the OpenSSL random generator works");
    hex::encode(buf)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha256(data))
}

/// Tokens are compared through their digests: the database only holds digests, and equal-length
/// hex comparison of digests leaks nothing useful about the token.
pub fn token_matches(token: &str, stored_digest: &str) -> bool {
    let digest = sha256_hex(token.as_bytes());
    digest.len() == stored_digest.len() && openssl::memcmp::eq(digest.as_bytes(), stored_digest.as_bytes())
}

/// Minimal boxed error for the few non-HTTP paths (admin commands, key generation).
pub mod anyhow_free {
    pub type Error = Box<dyn std::error::Error + Send + Sync>;
    pub type Result<T> = std::result::Result<T, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_keys_are_2048_bit_pkcs8_and_spki() {
        let pair = generate_subscription_key().unwrap();
        assert!(pair.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let key = PKey::private_key_from_pem(pair.private_pem.as_bytes()).unwrap();
        assert_eq!(key.bits(), 2048);
        let public = PKey::public_key_from_pem(pair.public_pem.as_bytes()).unwrap();
        assert!(key.public_eq(&public));
    }

    #[test]
    fn token_digests_match_only_the_token() {
        let digest = sha256_hex(b"secret");
        assert!(token_matches("secret", &digest));
        assert!(!token_matches("secreT", &digest));
        assert!(!token_matches("secret", ""));
    }
}
