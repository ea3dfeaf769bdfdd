//! `/api/loopboxes/`: ext4 images in a container's home mounted at a home-relative path.
//! Filename and mountpoint pass `container_spec::LoopboxSpec::validate`, the same check the
//! node applies, before anything is stored.

use super::common::{bind_tag_filter, created, message_ok, ok, owned_container, page_of, ObjectId, QueryMap, Tagged};
use crate::auth::Customer;
use crate::body::{parse_int, Fields, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::revisions::bump_server_of_container;
use crate::specs::{container_id_of, uid_of};
use crate::state::AppState;
use crate::store::RowExt;
use axum::extract::State;
use axum::response::Response;
use container_spec::LoopboxSpec;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

fn loopbox_json(row: &AnyRow, tags: Vec<String>) -> Value {
    json!({
        "id": row.i64("id"),
        "container": uid_of(row.i64("container_id")),
        "filename": row.str("filename"),
        "mountpoint": row.str("mountpoint"),
        "ro": row.flag("ro"),
        "tags": tags,
    })
}

const SELECT: &str = "SELECT l.* FROM loopboxes l JOIN containers c ON c.id = l.container_id";

async fn owned_loopbox(conn: &mut AnyConnection, customer_id: i64, id: i64) -> ApiResult<Value> {
    let row = sqlx::query(&format!("{SELECT} WHERE l.id = $1 AND c.customer_id = $2"))
        .bind(id)
        .bind(customer_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let tags = Tagged::Loopbox.names_of(conn, &[id]).await?.remove(&id).unwrap_or_default();
    Ok(loopbox_json(&row, tags))
}

pub async fn list(State(state): State<AppState>, customer: Customer, query: QueryMap) -> ApiResult<Response> {
    let page = query.page()?;
    let tags = query.tags()?;
    let mut conn = state.db.pool.acquire().await?;
    let container = match query.get("container") {
        Some(u) => {
            let id = container_id_of(parse_int("container", u, 0, i64::MAX)?).ok_or_else(ApiError::not_found)?;
            owned_container(&mut conn, customer.id, id).await?;
            Some(id)
        }
        None => None,
    };
    // $1 customer, $2 container (or 0 = any), then the tag filter.
    let filter = tags.as_ref().map(|t| Tagged::Loopbox.filter_sql("l", 3, t.len())).unwrap_or_default();
    let cond = format!("c.customer_id = $1 AND ($2 = 0 OR l.container_id = $2){filter}");
    let count_sql =
        format!("SELECT COUNT(*) AS n FROM loopboxes l JOIN containers c ON c.id = l.container_id WHERE {cond}");
    let total =
        bind_tag_filter(sqlx::query(&count_sql).bind(customer.id).bind(container.unwrap_or(0)), customer.id, &tags)
            .fetch_one(&mut *conn)
            .await?
            .i64("n");
    let list_sql = format!("{SELECT} WHERE {cond} ORDER BY l.id LIMIT {} OFFSET {}", page.limit, page.offset);
    let rows =
        bind_tag_filter(sqlx::query(&list_sql).bind(customer.id).bind(container.unwrap_or(0)), customer.id, &tags)
            .fetch_all(&mut *conn)
            .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.i64("id")).collect();
    let mut names = Tagged::Loopbox.names_of(&mut conn, &ids).await?;
    let items = rows.iter().map(|r| loopbox_json(r, names.remove(&r.i64("id")).unwrap_or_default())).collect();
    Ok(page_of(items, total))
}

pub async fn create(State(state): State<AppState>, customer: Customer, RawBody(body): RawBody) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let uid = f.required_int("container", 0, i64::MAX)?;
    let filename = f.required_string("filename")?;
    let mountpoint = f.required_string("mountpoint")?;
    let ro = f.bool("ro")?.unwrap_or(false);
    let tags = f.string_list("tags", 100)?;
    f.finish()?;
    let id = container_id_of(uid).ok_or_else(|| ApiError::invalid("container", "no such container"))?;
    let spec = LoopboxSpec { id: 0, uid: uid as u32, filename: filename.clone(), mountpoint: mountpoint.clone(), ro };
    if let Err(e) = spec.validate() {
        let first = &e.errors[0];
        return Err(ApiError::invalid(first.field.clone(), first.reason.clone()));
    }
    let mut tx = state.db.write().await?;
    owned_container(&mut tx, customer.id, id).await.map_err(|_| ApiError::invalid("container", "no such container"))?;
    let clash = sqlx::query("SELECT id FROM loopboxes WHERE container_id = $1 AND (filename = $2 OR mountpoint = $3)")
        .bind(id)
        .bind(&filename)
        .bind(&mountpoint)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if clash {
        return Err(ApiError::conflict("this container already has a loopbox with this filename or mountpoint"));
    }
    let new_id = sqlx::query(
        "INSERT INTO loopboxes (container_id, filename, mountpoint, ro) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(id)
    .bind(&filename)
    .bind(&mountpoint)
    .bind(ro as i64)
    .fetch_one(&mut **tx)
    .await?
    .i64("id");
    if let Some(names) = tags {
        Tagged::Loopbox.set(&mut tx, customer.id, new_id, &names).await?;
    }
    bump_server_of_container(&mut tx, id).await?;
    let body = owned_loopbox(&mut tx, customer.id, new_id).await?;
    state.commit(tx).await?;
    Ok(created(body))
}

pub async fn get_one(State(state): State<AppState>, customer: Customer, ObjectId(id): ObjectId) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    Ok(ok(owned_loopbox(&mut conn, customer.id, id).await?))
}

/// Only `tags` can change: other fields would race with the node's mount namespace, so a
/// loopbox is deleted and recreated instead (as the quickstart says).
pub async fn update(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    for fixed in ["container", "filename", "mountpoint", "ro"] {
        if f.has(fixed) {
            return Err(ApiError::invalid(
                fixed,
                "loopboxes cannot be changed, only their tags: delete and recreate it",
            ));
        }
    }
    let tags = f.string_list("tags", 100)?;
    f.finish()?;
    let mut tx = state.db.write().await?;
    owned_loopbox(&mut tx, customer.id, id).await?;
    if let Some(names) = tags {
        Tagged::Loopbox.set(&mut tx, customer.id, id, &names).await?;
    }
    let body = owned_loopbox(&mut tx, customer.id, id).await?;
    state.commit(tx).await?;
    Ok(ok(body))
}

pub async fn delete_one(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
) -> ApiResult<Response> {
    let mut tx = state.db.write().await?;
    let container_id = sqlx::query(&format!("{SELECT} WHERE l.id = $1 AND c.customer_id = $2"))
        .bind(id)
        .bind(customer.id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.i64("container_id"))
        .ok_or_else(ApiError::not_found)?;
    sqlx::query("DELETE FROM loopboxes WHERE id = $1").bind(id).execute(&mut **tx).await?;
    bump_server_of_container(&mut tx, container_id).await?;
    state.commit(tx).await?;
    Ok(message_ok())
}
