//! Node identity. Production: a TLS client certificate verified against `--client-ca` whose
//! SHA-256 fingerprint is bound to exactly one server record (`admin server bind-cert`); the
//! source address plays no part. Development: on a plain-HTTP listener, and only from a loopback
//! peer, the `X-Unbit-Node-Token` header issued by `admin server add` identifies the node.

use crate::crypto::sha256_hex;
use crate::error::{ApiError, ApiResult};
use crate::server::ConnInfo;
use crate::state::AppState;
use crate::store::RowExt;
use axum::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

pub const NODE_TOKEN_HEADER: &str = "x-unbit-node-token";

#[derive(Debug, Clone)]
pub struct Node {
    pub server_id: i64,
    pub name: String,
    pub address: String,
}

#[async_trait]
impl FromRequestParts<AppState> for Node {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let conn = parts
            .extensions
            .get::<ConnInfo>()
            .cloned()
            .ok_or_else(|| ApiError::forbidden("no connection information"))?;
        let row = if let Some(fingerprint) = &conn.client_cert_sha256 {
            sqlx::query("SELECT id, name, address FROM servers WHERE cert_sha256 = $1")
                .bind(fingerprint)
                .fetch_optional(&state.db.pool)
                .await?
        } else if !conn.tls && conn.peer.ip().is_loopback() {
            let token =
                parts.headers.get(NODE_TOKEN_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
                    ApiError::forbidden("a node client certificate or (dev mode) node token is required")
                })?;
            sqlx::query("SELECT id, name, address FROM servers WHERE node_token_sha256 = $1")
                .bind(sha256_hex(token.as_bytes()))
                .fetch_optional(&state.db.pool)
                .await?
        } else {
            return Err(ApiError::forbidden("a verified client certificate bound to a server is required"));
        };
        let row = row.ok_or_else(|| ApiError::forbidden("this certificate or token is not bound to a server"))?;
        Ok(Node { server_id: row.i64("id"), name: row.str("name"), address: row.str("address") })
    }
}
