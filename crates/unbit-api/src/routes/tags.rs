//! `/api/tags/`: a customer's own labels for containers, domains and loopboxes.

use super::common::{created, message_ok, ok, page_of, ObjectId, QueryMap};
use crate::auth::Customer;
use crate::body::{Fields, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::RowExt;
use crate::validate;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use sqlx::AnyConnection;

async fn owned_tag(conn: &mut AnyConnection, customer_id: i64, id: i64) -> ApiResult<Value> {
    let row = sqlx::query("SELECT id, name, note FROM tags WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json!({"id": row.i64("id"), "name": row.str("name"), "note": row.str("note")}))
}

pub async fn list(State(state): State<AppState>, customer: Customer, query: QueryMap) -> ApiResult<Response> {
    let page = query.page()?;
    let mut conn = state.db.pool.acquire().await?;
    let total = sqlx::query("SELECT COUNT(*) AS n FROM tags WHERE customer_id = $1")
        .bind(customer.id)
        .fetch_one(&mut *conn)
        .await?
        .i64("n");
    let rows = sqlx::query("SELECT id, name FROM tags WHERE customer_id = $1 ORDER BY id LIMIT $2 OFFSET $3")
        .bind(customer.id)
        .bind(page.limit)
        .bind(page.offset)
        .fetch_all(&mut *conn)
        .await?;
    let items = rows.iter().map(|r| json!({"id": r.i64("id"), "name": r.str("name")})).collect();
    Ok(page_of(items, total))
}

pub async fn create(State(state): State<AppState>, customer: Customer, RawBody(body): RawBody) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let name = f.required_string("name")?;
    validate::tag("name", &name)?;
    let note = f.text("note", true, validate::note)?.unwrap_or_default();
    f.finish()?;
    let mut tx = state.db.write().await?;
    let exists = sqlx::query("SELECT id FROM tags WHERE customer_id = $1 AND name = $2")
        .bind(customer.id)
        .bind(&name)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if exists {
        return Err(ApiError::conflict("you already have a tag with this name").field("name"));
    }
    let id = sqlx::query("INSERT INTO tags (customer_id, name, note) VALUES ($1, $2, $3) RETURNING id")
        .bind(customer.id)
        .bind(&name)
        .bind(&note)
        .fetch_one(&mut **tx)
        .await?
        .i64("id");
    let body = owned_tag(&mut tx, customer.id, id).await?;
    state.commit(tx).await?;
    Ok(created(body))
}

pub async fn get_one(State(state): State<AppState>, customer: Customer, ObjectId(id): ObjectId) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    Ok(ok(owned_tag(&mut conn, customer.id, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let name = f.text("name", false, validate::tag)?;
    let note = f.text("note", true, validate::note)?;
    f.finish()?;
    let mut tx = state.db.write().await?;
    owned_tag(&mut tx, customer.id, id).await?;
    if let Some(name) = &name {
        let clash = sqlx::query("SELECT id FROM tags WHERE customer_id = $1 AND name = $2 AND id <> $3")
            .bind(customer.id)
            .bind(name)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if clash {
            return Err(ApiError::conflict("you already have a tag with this name").field("name"));
        }
    }
    sqlx::query("UPDATE tags SET name = COALESCE($1, name), note = COALESCE($2, note) WHERE id = $3")
        .bind(name)
        .bind(note)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    let body = owned_tag(&mut tx, customer.id, id).await?;
    state.commit(tx).await?;
    Ok(ok(body))
}

pub async fn delete_one(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
) -> ApiResult<Response> {
    let mut tx = state.db.write().await?;
    let removed = sqlx::query("DELETE FROM tags WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found());
    }
    state.commit(tx).await?;
    Ok(message_ok())
}
