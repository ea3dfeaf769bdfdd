//! `/api/domains/`: a customer's domains, added with the DNS TXT proof.

use super::common::{bind_tag_filter, created, message_ok, new_uuid, ok, page_of, ObjectId, QueryMap, Tagged};
use crate::auth::Customer;
use crate::body::{Fields, Patch, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::revisions::bump_servers_of_customer;
use crate::state::AppState;
use crate::store::{now, RowExt};
use crate::validate;
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

fn domain_json(row: &AnyRow, tags: Vec<String>) -> Value {
    json!({
        "id": row.i64("id"),
        "name": row.str("name"),
        "uuid": row.str("uuid"),
        "note": row.str("note"),
        "tags": tags,
        "tls": row.str("tls"),
    })
}

/// `tls`: how the domain gets its HTTPS certificate. `auto` asks the nodes to obtain one
/// through ACME (HTTP-01), which cannot prove a wildcard.
fn tls_mode(f: &mut Fields, name: &str) -> ApiResult<Option<&'static str>> {
    let mode = match f.string("tls")? {
        Patch::Absent => return Ok(None),
        Patch::Set(m) if m == "off" => "off",
        Patch::Set(m) if m == "auto" => "auto",
        _ => return Err(ApiError::invalid("tls", "must be \"off\" or \"auto\"")),
    };
    if mode == "auto" && name.starts_with('.') {
        return Err(ApiError::invalid(
            "tls",
            "automatic certificates are not available for wildcard domains (they need a DNS-01 challenge); \
             use ssl-domain with your own certificate, or add each name",
        ));
    }
    Ok(Some(mode))
}

async fn owned_domain(conn: &mut AnyConnection, customer_id: i64, id: i64) -> ApiResult<Value> {
    let row = sqlx::query("SELECT * FROM domains WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let tags = Tagged::Domain.names_of(conn, &[id]).await?.remove(&id).unwrap_or_default();
    Ok(domain_json(&row, tags))
}

pub async fn list(State(state): State<AppState>, customer: Customer, query: QueryMap) -> ApiResult<Response> {
    let page = query.page()?;
    let tags = query.tags()?;
    let filter = tags.as_ref().map(|t| Tagged::Domain.filter_sql("d", 2, t.len())).unwrap_or_default();
    let mut conn = state.db.pool.acquire().await?;
    let count_sql = format!("SELECT COUNT(*) AS n FROM domains d WHERE d.customer_id = $1{filter}");
    let total = bind_tag_filter(sqlx::query(&count_sql).bind(customer.id), customer.id, &tags)
        .fetch_one(&mut *conn)
        .await?
        .i64("n");
    let list_sql = format!(
        "SELECT d.* FROM domains d WHERE d.customer_id = $1{filter} ORDER BY d.id LIMIT {} OFFSET {}",
        page.limit, page.offset
    );
    let rows =
        bind_tag_filter(sqlx::query(&list_sql).bind(customer.id), customer.id, &tags).fetch_all(&mut *conn).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.i64("id")).collect();
    let mut names = Tagged::Domain.names_of(&mut conn, &ids).await?;
    let items = rows.iter().map(|r| domain_json(r, names.remove(&r.i64("id")).unwrap_or_default())).collect();
    Ok(page_of(items, total))
}

pub async fn create(State(state): State<AppState>, customer: Customer, RawBody(body): RawBody) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let name = validate::domain("name", &f.required_string("name")?)?;
    let note = match f.string("note")? {
        Patch::Set(n) => {
            validate::note("note", &n)?;
            n
        }
        _ => String::new(),
    };
    let tls = tls_mode(&mut f, &name)?.unwrap_or("off");
    f.finish()?;
    let taken = sqlx::query("SELECT id FROM domains WHERE name = $1")
        .bind(&name)
        .fetch_optional(&state.db.pool)
        .await?
        .is_some();
    if taken {
        return Err(ApiError::conflict("this domain is already mapped to an account").field("name"));
    }
    // The DNS lookup happens outside the write transaction: it can take seconds.
    if !state.dns.proves(&name, &customer.uuid).await {
        return Err(ApiError::forbidden(format!(
            "no TXT record \"uwsgi:{}\" found on {} or its parents",
            customer.uuid,
            name.trim_start_matches('.')
        ))
        .field("name"));
    }
    let mut tx = state.db.write().await?;
    let t = now();
    let id = sqlx::query(
        "INSERT INTO domains (name, customer_id, note, uuid, ctime, mtime, tls) \
         VALUES ($1, $2, $3, $4, $5, $5, $6) RETURNING id",
    )
    .bind(&name)
    .bind(customer.id)
    .bind(&note)
    .bind(new_uuid())
    .bind(t)
    .bind(tls)
    .fetch_one(&mut **tx)
    .await?
    .i64("id");
    bump_servers_of_customer(&mut tx, customer.id).await?;
    let mut body = owned_domain(&mut tx, customer.id, id).await?;
    state.commit(tx).await?;
    body["message"] = "Created".into();
    Ok(created(body))
}

async fn delete_domain(state: &AppState, customer: &Customer, id: i64) -> ApiResult<Response> {
    let mut tx = state.db.write().await?;
    let removed = sqlx::query("DELETE FROM domains WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found());
    }
    bump_servers_of_customer(&mut tx, customer.id).await?;
    state.commit(tx).await?;
    Ok(message_ok())
}

/// `DELETE /domains/` with `{"name": ...}` in the body, as the quickstart shows.
pub async fn delete_by_name(
    State(state): State<AppState>,
    customer: Customer,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let name = validate::domain("name", &f.required_string("name")?)?;
    f.finish()?;
    let id = sqlx::query("SELECT id FROM domains WHERE name = $1 AND customer_id = $2")
        .bind(&name)
        .bind(customer.id)
        .fetch_optional(&state.db.pool)
        .await?
        .map(|r| r.i64("id"))
        .ok_or_else(ApiError::not_found)?;
    delete_domain(&state, &customer, id).await
}

pub async fn get_one(State(state): State<AppState>, customer: Customer, ObjectId(id): ObjectId) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    Ok(ok(owned_domain(&mut conn, customer.id, id).await?))
}

pub async fn update(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let note = f.text("note", true, validate::note)?;
    let tags = f.string_list("tags", 100)?;
    let tls_field = f.has("tls");
    let mut tx = state.db.write().await?;
    let current = owned_domain(&mut tx, customer.id, id).await?;
    let tls = if tls_field { tls_mode(&mut f, current["name"].as_str().unwrap_or_default())? } else { None };
    f.finish()?;
    if let Some(tls) = tls.filter(|t| current["tls"] != *t) {
        sqlx::query("UPDATE domains SET tls = $1, mtime = $2 WHERE id = $3")
            .bind(tls)
            .bind(now())
            .bind(id)
            .execute(&mut **tx)
            .await?;
        // The nodes serving this customer read `tls` from their domains endpoint.
        bump_servers_of_customer(&mut tx, customer.id).await?;
    }
    if let Some(note) = note {
        sqlx::query("UPDATE domains SET note = $1, mtime = $2 WHERE id = $3")
            .bind(note)
            .bind(now())
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(names) = tags {
        Tagged::Domain.set(&mut tx, customer.id, id, &names).await?;
    }
    let body = owned_domain(&mut tx, customer.id, id).await?;
    state.commit(tx).await?;
    Ok(ok(body))
}

pub async fn delete_one(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
) -> ApiResult<Response> {
    delete_domain(&state, &customer, id).await
}
