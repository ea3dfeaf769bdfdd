//! Announces exactly as stock uWSGI 2.0.21 builds them (`uwsgi_subscription_ub`), signed with
//! a customer key: for the tests, the attack suite and the benchmark, which must speak the
//! clients' real wire format.

use crate::wire::{Command, PacketBuilder};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::sign::Signer;

/// What a vassal's `subscribe2 = server=...,key=K,addr=A,sign=SHA256:...` puts in a packet.
#[derive(Clone, Debug)]
pub struct StockAnnounce {
    pub key: String,
    pub address: String,
    pub notify: Option<String>,
    pub sni: Option<(String, String, Option<String>)>,
    /// The sender's clock; stock uWSGI sends `now + cmd`.
    pub now: i64,
    pub load: u64,
}

impl StockAnnounce {
    pub fn new(key: &str, address: &str, now: i64) -> Self {
        StockAnnounce { key: key.into(), address: address.into(), notify: None, sni: None, now, load: 0 }
    }

    fn body(&self, cmd: Command) -> PacketBuilder {
        let mut b = PacketBuilder::new()
            .var("key", &self.key)
            .var("address", &self.address)
            .var("modifier1", "0")
            .var("modifier2", "0")
            .var("cores", "1")
            .var("load", self.load.to_string())
            .var("weight", "0");
        if let Some((k, c, ca)) = &self.sni {
            b = b.var("sni_key", k).var("sni_crt", c);
            if let Some(ca) = ca {
                b = b.var("sni_ca", ca);
            }
        }
        if let Some(n) = &self.notify {
            b = b.var("notify", n);
        }
        b.var("unix", (self.now + i64::from(cmd.byte())).to_string())
    }

    /// Signed with RSA PKCS#1 v1.5 over SHA-256, as `sign=SHA256:key.pem` does.
    pub fn signed(&self, cmd: Command, key: &PKey<Private>) -> Vec<u8> {
        self.body(cmd).signed_with(|body| sign_sha256(key, body)).finish(cmd)
    }

    pub fn unsigned(&self, cmd: Command) -> Vec<u8> {
        self.body(cmd).finish(cmd)
    }
}

pub fn sign_sha256(key: &PKey<Private>, bytes: &[u8]) -> Vec<u8> {
    let mut s = Signer::new(MessageDigest::sha256(), key).expect("a signing key");
    s.update(bytes).expect("hashing");
    s.sign_to_vec().expect("signing")
}
