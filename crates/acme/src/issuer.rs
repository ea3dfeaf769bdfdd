//! Talking ACME (RFC 8555) with `instant-acme`: the node's account, one order per name with
//! an HTTP-01 challenge answered by [`crate::responder`], and ARI (RFC 9773) where the CA has it.

use crate::cert::{self, CertInfo};
use crate::responder::Challenges;
use crate::settings::Settings;
use crate::store::{write_atomic, Store};
use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType, Error,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// A certificate the CA issued, checked against the key it was ordered for.
pub struct Issued {
    pub chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub info: CertInfo,
}

pub struct Issuer {
    account: Account,
    challenges: Challenges,
    /// How long one order may wait for the CA (validation, then issuance).
    timeout: Duration,
    /// Whether the CA answers ARI: 0 not asked yet, 1 yes, 2 no.
    ari: AtomicU8,
}

/// An order's failure; `account_gone` when the CA no longer knows the account (a test CA that
/// restarted, an account deactivated by hand): the caller makes a new one.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub account_gone: bool,
}

impl Failure {
    fn new(message: String) -> Failure {
        Failure { message, account_gone: false }
    }
}

fn problem_text(e: &Error) -> String {
    match e {
        Error::Api(p) => {
            let mut s = p.detail.clone().unwrap_or_else(|| "the CA refused".into());
            if let Some(t) = &p.r#type {
                s.push_str(&format!(" ({})", t.trim_start_matches("urn:ietf:params:acme:error:")));
            }
            for sub in &p.subproblems {
                s.push_str(&format!("; {sub}"));
            }
            s
        }
        Error::Timeout(_) => "the CA did not finish in time".into(),
        other => other.to_string(),
    }
}

fn failure(what: &str, e: Error) -> Failure {
    let account_gone =
        matches!(&e, Error::Api(p) if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"));
    Failure { message: format!("{what}: {}", problem_text(&e)), account_gone }
}

fn ari_id(info: &CertInfo) -> Option<CertificateIdentifier<'static>> {
    let (aki, serial) = info.ari_id.as_ref()?;
    Some(CertificateIdentifier {
        authority_key_identifier: BASE64_URL_SAFE_NO_PAD.encode(aki).into(),
        serial: BASE64_URL_SAFE_NO_PAD.encode(serial).into(),
    })
}

fn builder(settings: &Settings) -> Result<AccountBuilder, String> {
    match &settings.ca_root {
        Some(root) => Account::builder_with_root(root).map_err(|e| format!("ca-root {}: {e}", root.display())),
        None => Account::builder().map_err(|e| format!("HTTPS client: {e}")),
    }
}

impl Issuer {
    /// Loads the node's account for the configured CA, or registers one (stored 0600 before it
    /// is used, so a crash cannot leave an account whose key is lost).
    pub async fn connect(
        settings: &Settings,
        directory: &str,
        store: &Store,
        challenges: Challenges,
        timeout: Duration,
        log: &dyn Fn(&str),
    ) -> Result<Issuer, String> {
        let path = store.account_path(directory);
        let account = match std::fs::read(&path) {
            Ok(bytes) => {
                let creds: AccountCredentials =
                    serde_json::from_slice(&bytes).map_err(|e| format!("{}: not an account: {e}", path.display()))?;
                builder(settings)?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| format!("ACME directory {directory}: {}", problem_text(&e)))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
                let (account, creds) = builder(settings)?
                    .create(&new, directory.to_string(), None)
                    .await
                    .map_err(|e| format!("registering an account at {directory}: {}", problem_text(&e)))?;
                let json = serde_json::to_vec_pretty(&creds).map_err(|e| e.to_string())?;
                write_atomic(&path, &json, 0o600)?;
                log(&format!("registered ACME account {} at {directory} (stored in {})", account.id(), path.display()));
                account
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Issuer { account, challenges, timeout, ari: AtomicU8::new(0) })
    }

    /// Forgets the stored account (the CA said it does not exist); the next connect registers.
    pub fn forget_account(store: &Store, directory: &str) {
        let _ = std::fs::remove_file(store.account_path(directory));
    }

    /// Orders a certificate for `name`, answering its HTTP-01 challenge through the responder.
    /// `replaces` is the certificate being renewed (told to the CA when it does ARI).
    pub async fn issue(&self, name: &str, replaces: Option<&CertInfo>) -> Result<Issued, Failure> {
        let ids = [Identifier::Dns(name.to_string())];
        let mut new = NewOrder::new(&ids);
        if self.ari.load(Ordering::Relaxed) == 1 {
            if let Some(id) = replaces.and_then(ari_id) {
                new = new.replaces(id);
            }
        }
        let mut order = self.account.new_order(&new).await.map_err(|e| failure("new order", e))?;
        let mut tokens = Vec::new();
        let result = self.complete(name, &mut order, &mut tokens).await;
        for t in &tokens {
            self.challenges.remove(t);
        }
        result
    }

    async fn complete(
        &self,
        name: &str,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
    ) -> Result<Issued, Failure> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| failure("fetching the authorization", e))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(Failure::new(format!("the CA's authorization is {other:?}"))),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| Failure::new("the CA offers no http-01 challenge".into()))?;
            let key_auth = challenge.key_authorization();
            self.challenges.add(&challenge.token, name, key_auth.as_str());
            tokens.push(challenge.token.clone());
            challenge.set_ready().await.map_err(|e| failure("answering the challenge", e))?;
        }
        let retries = RetryPolicy::new().initial_delay(Duration::from_millis(250)).backoff(1.5).timeout(self.timeout);
        let status = match order.poll_ready(&retries).await {
            Ok(status) => status,
            // An invalid order comes back as the order's problem: the challenges say why.
            Err(Error::Api(_)) => OrderStatus::Invalid,
            Err(e) => return Err(failure("waiting for validation", e)),
        };
        if status != OrderStatus::Ready {
            return Err(Failure::new(self.why_invalid(order).await));
        }
        let (key_pem, csr) = cert::new_key_and_csr(name).map_err(Failure::new)?;
        order.finalize_csr(&csr).await.map_err(|e| failure("finalizing the order", e))?;
        let chain = order.poll_certificate(&retries).await.map_err(|e| failure("fetching the certificate", e))?;
        let chain_pem = chain.into_bytes();
        let info = cert::parse_chain(&chain_pem).map_err(|e| Failure::new(format!("the CA's certificate: {e}")))?;
        if !info.names.iter().any(|n| n == name) {
            return Err(Failure::new(format!("the CA's certificate is for {:?}, not {name}", info.names)));
        }
        if !cert::key_matches(&chain_pem, &key_pem) {
            return Err(Failure::new("the CA's certificate does not match the key it was ordered for".into()));
        }
        Ok(Issued { chain_pem, key_pem, info })
    }

    /// The CA's reason an order failed: each challenge's error, fetched afresh.
    async fn why_invalid(&self, order: &mut instant_acme::Order) -> String {
        let mut reasons = Vec::new();
        if let Some(p) = &order.state().error {
            reasons.push(problem_text(&Error::Api(p.clone())));
        }
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            if let Ok(state) = authz.refresh().await {
                for c in state.challenges.iter().filter(|c| c.r#type == ChallengeType::Http01) {
                    if let Some(p) = &c.error {
                        reasons.push(problem_text(&Error::Api(p.clone())));
                    }
                }
            }
        }
        if reasons.is_empty() {
            "the CA could not validate the http-01 challenge".into()
        } else {
            format!("the CA could not validate the http-01 challenge: {}", reasons.join("; "))
        }
    }

    /// The CA's suggested renewal window for a certificate (start, end, unix) and when to ask
    /// again; `None` when the CA has no ARI (remembered: never asked again) or did not answer.
    pub async fn renewal_window(&self, info: &CertInfo, log: &dyn Fn(&str)) -> Option<((i64, i64), Duration)> {
        if self.ari.load(Ordering::Relaxed) == 2 {
            return None;
        }
        let id = ari_id(info)?;
        match self.account.renewal_info(&id).await {
            Ok((ri, again)) => {
                self.ari.store(1, Ordering::Relaxed);
                let w = ri.suggested_window;
                Some(((w.start.unix_timestamp(), w.end.unix_timestamp()), again))
            }
            Err(Error::Unsupported(_)) => {
                self.ari.store(2, Ordering::Relaxed);
                log("the CA has no renewal information (ARI): renewing with a third of each lifetime left");
                None
            }
            Err(e) => {
                log(&format!("renewal information: {}", problem_text(&e)));
                None
            }
        }
    }
}
