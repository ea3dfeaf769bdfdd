//! Who is calling: HTTP Basic (split on the first `:` only, so passwords may contain `:`) or the
//! original's hex-encoded `X-uwsgi-it-username` / `X-uwsgi-it-password` headers. Passwords are
//! argon2id hashes; customers without a local hash may be checked against LDAP.
//!
//! argon2 is deliberately slow, so a successful check is remembered as a keyed digest of the
//! password next to the exact stored hash it was checked against: the next request with the same
//! password skips argon2, and a password change anywhere (another API host included) changes the
//! stored hash and so invalidates the memory.

use crate::error::{ApiError, ApiResult};
use crate::ldap::LdapBackend;
use crate::state::AppState;
use crate::store::RowExt;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use axum::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use base64::Engine;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An authenticated customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: i64,
    pub username: String,
    pub uuid: String,
}

pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Reads credentials from the request. `Ok(None)` means none were sent; a malformed or
/// non-Basic `Authorization` header is an error (401), as in the original.
pub fn credentials(headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::unauthorized())?;
        let (scheme, encoded) = value.split_once(' ').ok_or_else(ApiError::unauthorized)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(ApiError::unauthorized());
        }
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| ApiError::unauthorized())?;
        let decoded = String::from_utf8(decoded).map_err(|_| ApiError::unauthorized())?;
        let (username, password) = decoded.split_once(':').ok_or_else(ApiError::unauthorized)?;
        return Ok(Some(Credentials { username: username.to_string(), password: password.to_string() }));
    }
    let hex_header = |name: &str| -> ApiResult<Option<String>> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) => {
                let bytes = hex::decode(v.as_bytes()).map_err(|_| ApiError::unauthorized())?;
                String::from_utf8(bytes).map(Some).map_err(|_| ApiError::unauthorized())
            }
        }
    };
    match (hex_header("x-uwsgi-it-username")?, hex_header("x-uwsgi-it-password")?) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (None, None) => Ok(None),
        _ => Err(ApiError::unauthorized()),
    }
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing with default parameters cannot fail")
        .to_string()
}

/// At most this many argon2 computations run at once. Each takes ~19 MiB and a core for a few
/// milliseconds; without a bound, a flood of wrong passwords would fill the blocking pool (512
/// threads, ~10 GiB) instead of queueing.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs argon2 work on the blocking pool, a bounded number at a time.
async fn argon2_work<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    let _slot = ARGON2_SLOTS.acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(work).await.map_err(|_| ApiError::internal())
}

pub async fn hash_password_async(password: String) -> ApiResult<String> {
    argon2_work(move || hash_password(&password)).await
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

struct Remembered {
    /// The stored hash the password was checked against (or `ldap:` for directory binds).
    checked_against: String,
    digest: [u8; 32],
    expires: Instant,
}

pub struct Authenticator {
    ldap: Option<LdapBackend>,
    secret: [u8; 32],
    remembered: Mutex<HashMap<String, Remembered>>,
}

const REMEMBER_LOCAL: Duration = Duration::from_secs(3600);
/// A directory password can change outside our knowledge: re-bind at least this often.
const REMEMBER_LDAP: Duration = Duration::from_secs(60);
const REMEMBER_MAX: usize = 100_000;

impl Authenticator {
    pub fn new(ldap: Option<LdapBackend>) -> Self {
        let mut secret = [0u8; 32];
        openssl::rand::rand_bytes(&mut secret).expect("the OpenSSL random generator works");
        Authenticator { ldap, secret, remembered: Mutex::new(HashMap::new()) }
    }

    fn digest(&self, username: &str, password: &str) -> [u8; 32] {
        let mut h = openssl::sha::Sha256::new();
        h.update(&self.secret);
        h.update(username.as_bytes());
        h.update(&[0]);
        h.update(password.as_bytes());
        h.finish()
    }

    fn recall(&self, username: &str, password: &str, checked_against: &str) -> bool {
        let digest = self.digest(username, password);
        let map = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        map.get(username).is_some_and(|r| {
            r.checked_against == checked_against
                && r.expires > Instant::now()
                && openssl::memcmp::eq(&r.digest, &digest)
        })
    }

    fn remember(&self, username: &str, password: &str, checked_against: &str, ttl: Duration) {
        let digest = self.digest(username, password);
        let mut map = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= REMEMBER_MAX {
            map.clear();
        }
        map.insert(
            username.to_string(),
            Remembered { checked_against: checked_against.to_string(), digest, expires: Instant::now() + ttl },
        );
    }

    pub fn forget(&self, username: &str) {
        let mut map = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(username);
    }

    pub fn has_ldap(&self) -> bool {
        self.ldap.is_some()
    }
}

/// Checks a username and password against the database (and LDAP for customers without a
/// local password).
pub async fn authenticate(state: &AppState, creds: &Credentials) -> ApiResult<Customer> {
    if creds.username.is_empty() || creds.username.len() > 150 || creds.password.is_empty() {
        return Err(ApiError::unauthorized());
    }
    let row = sqlx::query("SELECT id, uuid, password_hash FROM customers WHERE username = $1")
        .bind(&creds.username)
        .fetch_optional(&state.db.pool)
        .await?;
    let Some(row) = row else {
        // Spend the same time as a real check so user names cannot be probed by timing.
        let password = creds.password.clone();
        let _ =
            argon2_work(move || verify_password(&password, DUMMY_HASH.get_or_init(|| hash_password("dummy-password"))))
                .await;
        return Err(ApiError::unauthorized());
    };
    let customer = Customer { id: row.i64("id"), username: creds.username.clone(), uuid: row.str("uuid") };
    let auth = &state.auth;
    match row.opt_str("password_hash") {
        Some(phc) => {
            if auth.recall(&creds.username, &creds.password, &phc) {
                return Ok(customer);
            }
            let (password, stored) = (creds.password.clone(), phc.clone());
            let ok = argon2_work(move || verify_password(&password, &stored)).await?;
            if !ok {
                return Err(ApiError::unauthorized());
            }
            auth.remember(&creds.username, &creds.password, &phc, REMEMBER_LOCAL);
            Ok(customer)
        }
        None => {
            let Some(ldap) = &auth.ldap else {
                return Err(ApiError::unauthorized());
            };
            if auth.recall(&creds.username, &creds.password, "ldap:") {
                return Ok(customer);
            }
            match ldap.bind(&creds.username, &creds.password).await {
                Ok(true) => {
                    auth.remember(&creds.username, &creds.password, "ldap:", REMEMBER_LDAP);
                    Ok(customer)
                }
                Ok(false) => Err(ApiError::unauthorized()),
                Err(e) => {
                    tracing::warn!(error = %e, "LDAP directory unreachable");
                    Err(ApiError::unavailable("the account directory is unreachable"))
                }
            }
        }
    }
}

static DUMMY_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[async_trait]
impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let creds = credentials(&parts.headers)?.ok_or_else(ApiError::unauthorized)?;
        authenticate(state, &creds).await
    }
}

/// For the few endpoints where credentials are optional (`/news/`, alarm raising with a key).
pub struct MaybeCustomer(pub Option<Customer>);

#[async_trait]
impl FromRequestParts<AppState> for MaybeCustomer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        match credentials(&parts.headers)? {
            None => Ok(MaybeCustomer(None)),
            Some(creds) => authenticate(state, &creds).await.map(|c| MaybeCustomer(Some(c))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn basic(userpass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(userpass));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[test]
    fn basic_auth_splits_on_the_first_colon_only() {
        let c = credentials(&basic("kratos:dei:mos:17")).unwrap().unwrap();
        assert_eq!(c.username, "kratos");
        assert_eq!(c.password, "dei:mos:17");
    }

    #[test]
    fn hex_headers_are_decoded() {
        let mut h = HeaderMap::new();
        h.insert("x-uwsgi-it-username", HeaderValue::from_static("6b7261746f73"));
        h.insert("x-uwsgi-it-password", HeaderValue::from_static("6465696d6f73"));
        let c = credentials(&h).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("kratos", "deimos"));
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert!(credentials(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(credentials(&h).is_err());
        assert!(credentials(&basic("no-colon")).is_err());
        assert!(credentials(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn argon2_hashes_verify_only_the_right_password() {
        let phc = hash_password("pass:word");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify_password("pass:word", &phc));
        assert!(!verify_password("pass:wore", &phc));
    }
}
