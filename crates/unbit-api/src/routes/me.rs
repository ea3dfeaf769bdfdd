//! `/api/me/`: the account.

use super::common::ok;
use crate::auth::{hash_password_async, Customer};
use crate::body::{Fields, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::specs::uid_of;
use crate::state::AppState;
use crate::store::{now, RowExt};
use crate::validate;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use sqlx::AnyConnection;

async fn me_json(conn: &mut AnyConnection, customer_id: i64) -> ApiResult<Value> {
    let row = sqlx::query("SELECT email, vat, company, uuid FROM customers WHERE id = $1")
        .bind(customer_id)
        .fetch_one(&mut *conn)
        .await?;
    let containers: Vec<i64> = sqlx::query("SELECT id FROM containers WHERE customer_id = $1 ORDER BY id")
        .bind(customer_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| uid_of(r.i64("id")))
        .collect();
    let servers: Vec<String> = sqlx::query("SELECT address FROM servers WHERE owner_id = $1 ORDER BY id")
        .bind(customer_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.str("address"))
        .collect();
    Ok(json!({
        "email": row.str("email"),
        "vat": row.str("vat"),
        "company": row.str("company"),
        "uuid": row.str("uuid"),
        "containers": containers,
        "servers": servers,
    }))
}

pub async fn get_me(State(state): State<AppState>, customer: Customer) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    Ok(ok(me_json(&mut conn, customer.id).await?))
}

pub async fn post_me(State(state): State<AppState>, customer: Customer, RawBody(body): RawBody) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let company = f.text("company", true, |k, s| validate::line(k, s, 255))?;
    let vat = f.text("vat", true, |k, s| validate::line(k, s, 64))?;
    let email = f.text("email", true, |k, s| validate::line(k, s, 254))?;
    if let Some(e) = &email {
        validate::email("email", e)?;
    }
    let password = f.text("password", false, validate::password)?;
    f.finish()?;
    let password_hash = match password {
        Some(p) => Some(hash_password_async(p).await?),
        None => None,
    };

    let mut tx = state.db.write().await?;
    if password_hash.is_some() && state.auth.has_ldap() {
        let local: Option<String> = sqlx::query("SELECT password_hash FROM customers WHERE id = $1")
            .bind(customer.id)
            .fetch_one(&mut **tx)
            .await?
            .opt_str("password_hash");
        if local.is_none() {
            return Err(
                ApiError::conflict("this account's password is managed by the directory (LDAP)").field("password")
            );
        }
    }
    sqlx::query(
        "UPDATE customers SET company = COALESCE($1, company), vat = COALESCE($2, vat), \
         email = COALESCE($3, email), password_hash = COALESCE($4, password_hash), mtime = $5 \
         WHERE id = $6",
    )
    .bind(company)
    .bind(vat)
    .bind(email)
    .bind(password_hash.clone())
    .bind(now())
    .bind(customer.id)
    .execute(&mut **tx)
    .await?;
    let body = me_json(&mut tx, customer.id).await?;
    state.commit(tx).await?;
    if password_hash.is_some() {
        state.auth.forget(&customer.username);
    }
    Ok(ok(body))
}
