//! `/api/portmappings/<server address>`: public ports of a dedicated server forwarded to its
//! containers, managed by the server's owner. A public port is unique per server and protocol
//! (the original only enforced it per container).

use super::common::{created, message_ok, ok};
use crate::auth::Customer;
use crate::body::{Fields, RawBody};
use crate::error::{ApiError, ApiResult};
use crate::specs::{container_id_of, uid_of};
use crate::state::AppState;
use crate::store::RowExt;
use axum::extract::{Path, State};
use axum::response::Response;
use container_spec::ip_of;
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

/// Ports the platform itself uses on every node (fastrouter, legion, dgram routers).
pub const RESERVED_PORTS: &[i64] = &[1999, 2000, 3022, 3026];

fn mapping_json(row: &AnyRow) -> Value {
    let uid = uid_of(row.i64("container_id"));
    json!({
        "id": row.i64("id"),
        "proto": row.str("proto"),
        "public_port": row.i64("public_port"),
        "container": uid,
        "container_ip": ip_of(uid as u32).to_string(),
        "private_port": row.i64("private_port"),
    })
}

async fn owned_server(conn: &mut AnyConnection, customer_id: i64, address: &str) -> ApiResult<i64> {
    sqlx::query("SELECT id FROM servers WHERE address = $1 AND owner_id = $2")
        .bind(address)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?
        .map(|r| r.i64("id"))
        .ok_or_else(ApiError::not_found)
}

pub async fn list(
    State(state): State<AppState>,
    customer: Customer,
    Path(server): Path<String>,
) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    let server_id = owned_server(&mut conn, customer.id, &server).await?;
    let rows = sqlx::query("SELECT * FROM portmaps WHERE server_id = $1 ORDER BY id")
        .bind(server_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(ok(rows.iter().map(mapping_json).collect()))
}

pub async fn create(
    State(state): State<AppState>,
    customer: Customer,
    Path(server): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let uid = f.required_int("container", 0, i64::MAX)?;
    let proto = f.required_string("proto")?;
    if proto != "tcp" && proto != "udp" {
        return Err(ApiError::invalid("proto", "must be tcp or udp"));
    }
    let public_port = f.required_int("public_port", 1024, 65535)?;
    if RESERVED_PORTS.contains(&public_port) {
        return Err(ApiError::invalid("public_port", "reserved for the platform"));
    }
    let private_port = f.required_int("private_port", 1024, 65535)?;
    f.finish()?;
    let mut tx = state.db.write().await?;
    let server_id = owned_server(&mut tx, customer.id, &server).await?;
    let container = container_id_of(uid).ok_or_else(|| ApiError::invalid("container", "no such container"))?;
    sqlx::query("SELECT id FROM containers WHERE id = $1 AND server_id = $2 AND customer_id = $3")
        .bind(container)
        .bind(server_id)
        .bind(customer.id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| ApiError::invalid("container", "no container of yours with this uid on this server"))?;
    let taken = sqlx::query("SELECT id FROM portmaps WHERE server_id = $1 AND proto = $2 AND public_port = $3")
        .bind(server_id)
        .bind(&proto)
        .bind(public_port)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    if taken {
        return Err(ApiError::conflict("this public port is already mapped").field("public_port"));
    }
    let id = sqlx::query(
        "INSERT INTO portmaps (server_id, container_id, proto, public_port, private_port) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(server_id)
    .bind(container)
    .bind(&proto)
    .bind(public_port)
    .bind(private_port)
    .fetch_one(&mut **tx)
    .await?
    .i64("id");
    sqlx::query("UPDATE servers SET portmappings_revision = portmappings_revision + 1 WHERE id = $1")
        .bind(server_id)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query("SELECT * FROM portmaps WHERE id = $1").bind(id).fetch_one(&mut **tx).await?;
    state.commit(tx).await?;
    Ok(created(mapping_json(&row)))
}

pub async fn delete(
    State(state): State<AppState>,
    customer: Customer,
    Path(server): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let mut f = Fields::parse(&body)?;
    let id = f.required_int("id", 1, i64::MAX)?;
    f.finish()?;
    let mut tx = state.db.write().await?;
    let server_id = owned_server(&mut tx, customer.id, &server).await?;
    let removed = sqlx::query("DELETE FROM portmaps WHERE id = $1 AND server_id = $2")
        .bind(id)
        .bind(server_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found());
    }
    sqlx::query("UPDATE servers SET portmappings_revision = portmappings_revision + 1 WHERE id = $1")
        .bind(server_id)
        .execute(&mut **tx)
        .await?;
    state.commit(tx).await?;
    Ok(message_ok())
}
