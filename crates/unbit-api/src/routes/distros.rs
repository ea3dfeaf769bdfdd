//! `/api/distros/`, `/api/custom_distros/`, `/api/custom_distro/<id>`.

use super::common::{created, message_ok, new_uuid, ok, owned_container, path_uid, ObjectId};
use crate::auth::Customer;
use crate::body::{Fields, Patch, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::revisions::bump_servers;
use crate::specs::uid_of;
use crate::state::AppState;
use crate::store::RowExt;
use crate::validate;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};
use sqlx::AnyConnection;

pub async fn list_distros(State(state): State<AppState>, _customer: Customer) -> ApiResult<Response> {
    let rows = sqlx::query("SELECT id, name FROM distros ORDER BY id").fetch_all(&state.db.pool).await?;
    Ok(ok(rows.iter().map(|r| json!({"id": r.i64("id"), "name": r.str("name")})).collect()))
}

pub async fn list_custom_distros(State(state): State<AppState>, customer: Customer) -> ApiResult<Response> {
    let rows = sqlx::query(
        "SELECT cd.id, cd.name, cd.container_id FROM custom_distros cd \
         JOIN containers c ON c.id = cd.container_id WHERE c.customer_id = $1 ORDER BY cd.id",
    )
    .bind(customer.id)
    .fetch_all(&state.db.pool)
    .await?;
    Ok(ok(rows
        .iter()
        .map(|r| json!({"id": r.i64("id"), "name": r.str("name"), "container": uid_of(r.i64("container_id"))}))
        .collect()))
}

/// Custom distros container `<uid>` may boot from: same customer, same server, stored in
/// another container.
pub async fn usable_custom_distros(
    State(state): State<AppState>,
    customer: Customer,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    let id = path_uid(&uid)?;
    let mut conn = state.db.pool.acquire().await?;
    owned_container(&mut conn, customer.id, id).await?;
    let rows = sqlx::query(
        "SELECT cd.id, cd.name FROM custom_distros cd JOIN containers st ON st.id = cd.container_id \
         WHERE st.customer_id = $1 AND st.id <> $2 AND st.custom_distros_storage = 1 \
         AND st.server_id = (SELECT server_id FROM containers WHERE id = $2) ORDER BY cd.id",
    )
    .bind(customer.id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ok(rows.iter().map(|r| json!({"id": r.i64("id"), "name": r.str("name")})).collect()))
}

async fn custom_distro_json(conn: &mut AnyConnection, customer_id: i64, id: i64) -> ApiResult<Value> {
    let row = sqlx::query(
        "SELECT cd.*, c.customer_id FROM custom_distros cd JOIN containers c ON c.id = cd.container_id \
         WHERE cd.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .filter(|r| r.i64("customer_id") == customer_id)
    .ok_or_else(ApiError::not_found)?;
    Ok(json!({
        "id": row.i64("id"),
        "container": uid_of(row.i64("container_id")),
        "name": row.str("name"),
        "path": row.str("path"),
        "note": row.str("note"),
        "uuid": row.str("uuid"),
    }))
}

fn check_path(path: &str) -> ApiResult<()> {
    if container_spec::is_path_component(path) {
        Ok(())
    } else {
        Err(ApiError::invalid("path", "must be 1-64 characters of A-Z a-z 0-9 . _ - and not '.' or '..'"))
    }
}

pub async fn create_custom_distro(
    State(state): State<AppState>,
    customer: Customer,
    Path(uid): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let id = path_uid(&uid)?;
    let mut f = Fields::parse(&body)?;
    let name = f.required_string("name")?;
    validate::name("name", &name)?;
    let path = f.required_string("path")?;
    check_path(&path)?;
    let note = match f.string("note")? {
        Patch::Set(n) => {
            validate::note("note", &n)?;
            n
        }
        _ => String::new(),
    };
    f.finish()?;
    let mut tx = state.db.write().await?;
    owned_container(&mut tx, customer.id, id).await?;
    let storage = sqlx::query("SELECT custom_distros_storage FROM containers WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?
        .flag("custom_distros_storage");
    if !storage {
        return Err(ApiError::conflict("set custom_distros_storage on this container first"));
    }
    let new_id = sqlx::query(
        "INSERT INTO custom_distros (container_id, name, path, note, uuid) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(id)
    .bind(&name)
    .bind(&path)
    .bind(&note)
    .bind(new_uuid())
    .fetch_one(&mut **tx)
    .await?
    .i64("id");
    let body = custom_distro_json(&mut tx, customer.id, new_id).await?;
    state.commit(tx).await?;
    Ok(created(body))
}

pub async fn get_custom_distro(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    Ok(ok(custom_distro_json(&mut conn, customer.id, id).await?))
}

/// Name, note and path can change; a path change reaches the containers booting from it.
pub async fn update_custom_distro(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let name = f.text("name", false, validate::name)?;
    let path = f.text("path", false, |_, p| check_path(p))?;
    let note = f.text("note", true, validate::note)?;
    f.finish()?;
    let mut tx = state.db.write().await?;
    custom_distro_json(&mut tx, customer.id, id).await?;
    sqlx::query(
        "UPDATE custom_distros SET name = COALESCE($1, name), path = COALESCE($2, path), \
         note = COALESCE($3, note) WHERE id = $4",
    )
    .bind(name)
    .bind(path.clone())
    .bind(note)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if path.is_some() {
        let servers: Vec<i64> = sqlx::query("SELECT DISTINCT server_id FROM containers WHERE custom_distro_id = $1")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.i64("server_id"))
            .collect();
        bump_servers(&mut tx, &servers).await?;
    }
    let body = custom_distro_json(&mut tx, customer.id, id).await?;
    state.commit(tx).await?;
    Ok(ok(body))
}

/// Refused while containers boot from it (the original silently deleted those containers).
pub async fn delete_custom_distro(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
) -> ApiResult<Response> {
    let mut tx = state.db.write().await?;
    custom_distro_json(&mut tx, customer.id, id).await?;
    let users = sqlx::query("SELECT COUNT(*) AS n FROM containers WHERE custom_distro_id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?
        .i64("n");
    if users > 0 {
        return Err(ApiError::conflict(format!(
            "{users} container(s) boot from this custom distro: switch them first"
        )));
    }
    sqlx::query("DELETE FROM custom_distros WHERE id = $1").bind(id).execute(&mut **tx).await?;
    state.commit(tx).await?;
    Ok(message_ok())
}
