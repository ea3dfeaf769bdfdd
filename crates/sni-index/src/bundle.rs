//! What an entry holds, how it is checked, stored and turned into the router's `SSL_CTX`.
//!
//! The file is small and self-describing: a few text lines, then the certificates and the key
//! in DER (half the size of PEM; a node with 100 000 names keeps them all in its tmpfs):
//!
//! ```text
//! unbit-sni 1
//! owner 30001            the container whose files these are (0: the platform's own)
//! source ~/foobar.crt    where it came from, for the router's log
//! client-ca required     none | optional | required
//! sid <64 hex digits>    the TLS session id context (name and client CA: a session never
//!                        resumes under another name's client-certificate policy)
//! cert <length>\n<DER>\n  the chain, the server's certificate first
//! key <length>\n<DER>\n
//! ca <length>\n<DER>\n    client CAs, when client-ca is not none
//! ```

use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslContext, SslContextBuilder, SslMethod, SslVerifyMode};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use std::fmt::Write as _;

const MAGIC: &str = "unbit-sni 1";
/// Client certificate chains this deep verify: client, an intermediate or two, the root.
pub const CLIENT_VERIFY_DEPTH: u32 = 4;

/// Whether a name's clients must show a certificate signed by its CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientCa {
    None,
    /// `ssl-ca-domain = name key crt ca`: a client may show one; if it does, it must verify.
    Optional,
    /// `ssl-ca-domain = name key crt !ca`: no handshake without one that verifies.
    Required,
}

impl ClientCa {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCa::None => "none",
            ClientCa::Optional => "optional",
            ClientCa::Required => "required",
        }
    }

    pub fn parse(s: &str) -> Option<ClientCa> {
        match s {
            "none" => Some(ClientCa::None),
            "optional" => Some(ClientCa::Optional),
            "required" => Some(ClientCa::Required),
            _ => None,
        }
    }
}

/// A server certificate with its chain and key, and the client CA, checked.
#[derive(Clone)]
pub struct Bundle {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    pub ca: Vec<X509>,
    pub client_ca: ClientCa,
}

/// One entry as the router reads it.
pub struct Entry {
    pub owner: u32,
    pub source: String,
    pub sid: [u8; 32],
    pub bundle: Bundle,
}

impl Bundle {
    /// Checks what a customer (or the platform's issuer) gave: PEM certificates, the server's
    /// first; an unencrypted PEM key that belongs to that certificate; client CA certificates
    /// when `ca` is given. Errors say what to fix, in the customer's terms.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], ca: Option<(&[u8], ClientCa)>) -> Result<Bundle, String> {
        let chain = X509::stack_from_pem(chain_pem)
            .map_err(|e| format!("the certificate file is not PEM certificates ({})", first_reason(&e)))?;
        if chain.is_empty() {
            return Err("the certificate file holds no PEM certificate".into());
        }
        if key_pem.windows(9).any(|w| w == b"ENCRYPTED") {
            return Err("the key is encrypted with a passphrase, which the router cannot ask for; \
                 write it unencrypted (openssl pkey -in KEY -out KEY), readable by you only"
                .into());
        }
        let key = PKey::private_key_from_pem(key_pem)
            .map_err(|e| format!("the key file is not a PEM private key ({})", first_reason(&e)))?;
        let leaf_key = chain[0].public_key().map_err(|e| format!("the certificate's public key: {e}"))?;
        if !leaf_key.public_eq(&key) {
            return Err(format!(
                "the key does not belong to the certificate ({}): a key and a certificate of different pairs",
                describe(&chain[0])
            ));
        }
        let (ca, client_ca) = match ca {
            None => (Vec::new(), ClientCa::None),
            Some((_, ClientCa::None)) => (Vec::new(), ClientCa::None),
            Some((pem, policy)) => {
                let certs = X509::stack_from_pem(pem)
                    .map_err(|e| format!("the client CA file is not PEM certificates ({})", first_reason(&e)))?;
                if certs.is_empty() {
                    return Err("the client CA file holds no PEM certificate".into());
                }
                (certs, policy)
            }
        };
        // Parsing PEM leaves "no start line" on OpenSSL's queue even when it worked; an error
        // left there fails the next TLS handshake of this process.
        let _ = ErrorStack::get();
        let bundle = Bundle { chain, key, ca, client_ca };
        bundle.context(&[0; 32]).map_err(|e| format!("OpenSSL refuses the pair: {}", first_reason(&e)))?;
        Ok(bundle)
    }

    /// The server certificate's subject, issuer and end of validity, for the customer's log.
    pub fn summary(&self) -> String {
        let mut s = self.chain.first().map(describe).unwrap_or_else(|| "no certificate".into());
        if let (true, Some(ca)) = (self.client_ca != ClientCa::None, self.ca.first()) {
            let _ = write!(s, "; client certificates {} from {}", self.client_ca.as_str(), describe(ca));
        }
        s
    }

    /// Warnings a customer should read (the pair is served anyway): an expired certificate, or
    /// one that does not name `name`.
    pub fn warnings(&self, name: &str) -> Vec<String> {
        let Some(leaf) = self.chain.first() else { return vec!["no certificate".into()] };
        let mut out = Vec::new();
        if let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) {
            if leaf.not_after() < now {
                out.push(format!("the certificate expired on {}", leaf.not_after()));
            }
        }
        if !covers(leaf, name) {
            out.push(format!("the certificate does not name {name} (browsers will warn)"));
        }
        out
    }

    /// The TLS session id context for `name` with this client-certificate policy: sessions
    /// resume only under the name and CA they were made with.
    pub fn session_context(&self, name: &str) -> [u8; 32] {
        let mut h = openssl::sha::Sha256::new();
        h.update(b"unbit-sni\0");
        h.update(name.as_bytes());
        h.update(self.client_ca.as_str().as_bytes());
        for ca in &self.ca {
            if let Ok(d) = ca.digest(MessageDigest::sha256()) {
                h.update(&d);
            }
        }
        h.finish()
    }

    /// The entry file for `name`.
    pub fn encode(&self, name: &str, owner: u32, source: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(4096);
        let sid: String = self.session_context(name).iter().map(|b| format!("{b:02x}")).collect();
        let source: String = source.chars().filter(|c| !c.is_control()).collect();
        out.extend_from_slice(
            format!("{MAGIC}\nowner {owner}\nsource {source}\nclient-ca {}\nsid {sid}\n", self.client_ca.as_str())
                .as_bytes(),
        );
        let der = |what: &str, e: ErrorStack| format!("encoding the {what}: {e}");
        for cert in &self.chain {
            push(&mut out, "cert", &cert.to_der().map_err(|e| der("certificate", e))?);
        }
        push(&mut out, "key", &self.key.private_key_to_der().map_err(|e| der("key", e))?);
        for ca in &self.ca {
            push(&mut out, "ca", &ca.to_der().map_err(|e| der("client CA", e))?);
        }
        Ok(out)
    }

    /// The router's context for this entry. Only what differs per name is set here; protocol
    /// versions, ciphers, groups and session tickets stay the https socket's (OpenSSL keeps
    /// them from the context a connection started with).
    pub fn context(&self, sid: &[u8]) -> Result<SslContext, ErrorStack> {
        // The fields are public: an empty chain (which `decode` and `from_pem` never make) is an
        // OpenSSL error here, never a panic in the handshake callback.
        let (leaf, rest) = self.chain.split_first().ok_or_else(ErrorStack::get)?;
        let mut b = SslContextBuilder::new(SslMethod::tls_server())?;
        b.set_certificate(leaf)?;
        for c in rest {
            b.add_extra_chain_cert(c.clone())?;
        }
        b.set_private_key(&self.key)?;
        b.check_private_key()?;
        b.set_session_id_context(sid)?;
        if self.client_ca != ClientCa::None {
            let mut store = X509StoreBuilder::new()?;
            let mut names = Stack::new()?;
            for ca in &self.ca {
                store.add_cert(ca.clone())?;
                names.push(ca.subject_name().to_owned()?)?;
            }
            b.set_cert_store(store.build());
            b.set_client_ca_list(names);
            b.set_verify_depth(CLIENT_VERIFY_DEPTH);
            b.set_verify(verify_mode(self.client_ca));
        }
        let ctx = b.build();
        let _ = ErrorStack::get();
        Ok(ctx)
    }
}

/// The verify mode a connection takes from an entry with this policy.
pub fn verify_mode(policy: ClientCa) -> SslVerifyMode {
    match policy {
        ClientCa::None => SslVerifyMode::NONE,
        ClientCa::Optional => SslVerifyMode::PEER,
        ClientCa::Required => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
    }
}

impl Entry {
    /// Reads an entry file (as written by [`Bundle::encode`]).
    pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
        let mut rest = bytes;
        let mut line = || -> Result<&str, String> {
            let end = rest.iter().position(|&b| b == b'\n').ok_or("truncated header")?;
            let l = std::str::from_utf8(&rest[..end]).map_err(|_| "header is not UTF-8")?;
            rest = &rest[end + 1..];
            Ok(l)
        };
        if line()? != MAGIC {
            return Err("not an index entry (unbit-sni 1)".into());
        }
        let mut owner = None;
        let mut source = String::new();
        let mut client_ca = None;
        let mut sid = None;
        for _ in 0..4 {
            let l = line()?;
            let (k, v) = l.split_once(' ').ok_or_else(|| format!("bad header line {l:?}"))?;
            match k {
                "owner" => owner = v.parse::<u32>().ok(),
                "source" => source = v.to_string(),
                "client-ca" => client_ca = ClientCa::parse(v),
                "sid" => sid = parse_hex32(v),
                _ => return Err(format!("unknown header {k:?}")),
            }
        }
        let (Some(owner), Some(client_ca), Some(sid)) = (owner, client_ca, sid) else {
            return Err("incomplete header".into());
        };
        let (mut chain, mut key, mut ca) = (Vec::new(), None, Vec::new());
        while !rest.is_empty() {
            let end = rest.iter().position(|&b| b == b'\n').ok_or("truncated item")?;
            let head = std::str::from_utf8(&rest[..end]).map_err(|_| "item header is not UTF-8")?;
            let (kind, len) = head.split_once(' ').ok_or("bad item header")?;
            let len: usize = len.parse().map_err(|_| "bad item length")?;
            // A length near usize::MAX must not overflow (a panic in a debug build).
            let stop = (end + 1).checked_add(len).ok_or("bad item length")?;
            let body = rest.get(end + 1..stop).ok_or("truncated item")?;
            if rest.get(stop) != Some(&b'\n') {
                return Err("item not terminated".into());
            }
            rest = &rest[stop + 1..];
            let bad = |e: ErrorStack| format!("{kind}: {e}");
            match kind {
                "cert" => chain.push(X509::from_der(body).map_err(bad)?),
                "key" => key = Some(PKey::private_key_from_der(body).map_err(bad)?),
                "ca" => ca.push(X509::from_der(body).map_err(bad)?),
                _ => return Err(format!("unknown item {kind:?}")),
            }
        }
        let key = key.ok_or("no key")?;
        if chain.is_empty() || (client_ca != ClientCa::None && ca.is_empty()) {
            return Err("no certificate, or a client-ca policy without a CA".into());
        }
        Ok(Entry { owner, source, sid, bundle: Bundle { chain, key, ca, client_ca } })
    }

    pub fn context(&self) -> Result<SslContext, ErrorStack> {
        self.bundle.context(&self.sid)
    }
}

fn push(out: &mut Vec<u8>, kind: &str, der: &[u8]) {
    out.extend_from_slice(format!("{kind} {}\n", der.len()).as_bytes());
    out.extend_from_slice(der);
    out.push(b'\n');
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The first reason OpenSSL gave, without its error codes.
fn first_reason(e: &ErrorStack) -> String {
    e.errors().first().and_then(|e| e.reason().map(str::to_string)).unwrap_or_else(|| "unreadable".into())
}

/// `CN=example.org, issued by CN=Example CA, valid until Jun  1 12:00:00 2027 GMT`.
fn describe(cert: &X509) -> String {
    format!(
        "{}, issued by {}, valid until {}",
        name_line(cert.subject_name()),
        name_line(cert.issuer_name()),
        cert.not_after()
    )
}

fn name_line(name: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .filter_map(|e| {
            let key = e.object().nid().short_name().ok()?;
            let value = e.data().to_string().ok()?;
            Some(format!("{key}={value}"))
        })
        .collect();
    if parts.is_empty() {
        "(no subject)".into()
    } else {
        parts.join("/")
    }
}

/// Whether the certificate names `name` (a SAN DNS name, or the CN when there is no SAN), with
/// `*.` wildcards one label deep; `name` may itself be a wildcard entry (`.example.org`).
fn covers(cert: &X509, name: &str) -> bool {
    let wanted = match name.strip_prefix('.') {
        Some(rest) => format!("*.{rest}"),
        None => name.to_string(),
    };
    let matches = |pattern: &str| {
        let pattern = pattern.to_ascii_lowercase();
        if pattern == wanted {
            return true;
        }
        match (pattern.strip_prefix("*."), wanted.split_once('.')) {
            (Some(suffix), Some((_, rest))) => suffix == rest,
            _ => false,
        }
    };
    match cert.subject_alt_names() {
        Some(sans) => sans.iter().filter_map(|n| n.dnsname()).any(matches),
        None => cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok())
            .any(|cn| matches(&cn)),
    }
}

#[cfg(test)]
mod tests;
