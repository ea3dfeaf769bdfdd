//! `/api/alarms/`: stored alarms, their filters and ranges, and raising new ones with customer
//! credentials or a per-container alarm key.

use super::common::{created, message_ok, ok, owned_container, path_uid, ObjectId, QueryMap, MAX_PAGE};
use crate::auth::{Customer, MaybeCustomer};
use crate::body::{parse_int, RawBody};
use crate::crypto::{sha256_hex, token_matches};
use crate::error::{ApiError, ApiResult};
use crate::specs::{container_id_of, uid_of};
use crate::state::AppState;
use crate::store::{now, RowExt, WriteTx};
use crate::validate;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};
use sqlx::any::AnyRow;

/// Latest representable time we accept (9999-12-31), so every stored `unix` formats as a date.
pub const MAX_UNIX: i64 = 253_402_300_799;
pub const LEVELS: (i64, i64) = (1, 4);

fn alarm_json(row: &AnyRow) -> Value {
    json!({
        "id": row.i64("id"),
        "container": uid_of(row.i64("container_id")),
        "level": row.i64("level"),
        "color": row.str("color"),
        "class": row.opt_str("class"),
        "vassal": row.opt_str("vassal"),
        "line": row.opt_i64("line"),
        "filename": row.opt_str("filename"),
        "func": row.opt_str("func"),
        "unix": row.i64("unix"),
        "msg": row.str("msg"),
    })
}

/// `range=N` (the newest N) or `range=A-B` (positions A..B of the newest-first list; when
/// A > B the same alarms come oldest first). Returns (offset, limit, reversed).
pub fn parse_range(raw: &str) -> ApiResult<(i64, i64, bool)> {
    let bad = || ApiError::range_not_satisfiable("range must be N or A-B with non-negative integers");
    let num = |s: &str| s.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad);
    let (offset, limit, reversed) = match raw.split_once('-') {
        None => (0, num(raw)?, false),
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            (a.min(b), a.max(b) - a.min(b), a > b)
        }
    };
    if limit > MAX_PAGE {
        return Err(ApiError::range_not_satisfiable(format!("at most {MAX_PAGE} alarms per request")));
    }
    Ok((offset, limit, reversed))
}

pub async fn list(State(state): State<AppState>, customer: Customer, query: QueryMap) -> ApiResult<Response> {
    let mut conn = state.db.pool.acquire().await?;
    let mut conds = vec!["a.customer_id = $1".to_string()];
    let mut ints: Vec<i64> = vec![customer.id];
    let mut texts: Vec<String> = Vec::new();
    if let Some(u) = query.get("container") {
        let id = container_id_of(parse_int("container", u, 0, i64::MAX)?).ok_or_else(ApiError::not_found)?;
        owned_container(&mut conn, customer.id, id).await?;
        ints.push(id);
        conds.push(format!("a.container_id = ${}", ints.len()));
    }
    for key in ["level", "line"] {
        if let Some(v) = query.get(key) {
            ints.push(parse_int(key, v, 0, i64::MAX)?);
            conds.push(format!("a.{key} = ${}", ints.len()));
        }
    }
    // Text filters are bound after the integers; their placeholders are numbered once the
    // number of integers is known.
    let mut text_conds = Vec::new();
    for key in ["vassal", "class", "color", "filename", "func"] {
        if let Some(v) = query.get(key) {
            validate::line(key, v, 255)?;
            texts.push(v.to_string());
            text_conds.push(key);
        }
    }
    for (i, key) in text_conds.iter().enumerate() {
        conds.push(format!("a.{key} = ${}", ints.len() + i + 1));
    }
    let (offset, limit, reversed) = match query.get("range") {
        Some(r) => parse_range(r)?,
        None => {
            let page = query.page()?;
            (page.offset, page.limit, false)
        }
    };
    let cond = conds.join(" AND ");
    fn bind<'q>(sql: &'q str, ints: &[i64], texts: &[String]) -> super::common::AnyQuery<'q> {
        let mut q = sqlx::query(sql);
        for i in ints {
            q = q.bind(*i);
        }
        for t in texts {
            q = q.bind(t.clone());
        }
        q
    }
    let list_sql =
        format!("SELECT a.* FROM alarms a WHERE {cond} ORDER BY a.unix DESC, a.id DESC LIMIT {limit} OFFSET {offset}");
    let mut rows = bind(&list_sql, &ints, &texts).fetch_all(&mut *conn).await?;
    if reversed {
        rows.reverse();
    }
    let alarms: Vec<Value> = rows.iter().map(alarm_json).collect();
    if query.has("with_total") {
        let count_sql = format!("SELECT COUNT(*) AS n FROM alarms a WHERE {cond}");
        let total = bind(&count_sql, &ints, &texts).fetch_one(&mut *conn).await?.i64("n");
        return Ok(ok(json!({"total": total, "alarms": alarms})));
    }
    Ok(ok(Value::Array(alarms)))
}

pub async fn get_one(State(state): State<AppState>, customer: Customer, ObjectId(id): ObjectId) -> ApiResult<Response> {
    let row = sqlx::query("SELECT * FROM alarms WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer.id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(alarm_json(&row)))
}

pub async fn delete_one(
    State(state): State<AppState>,
    customer: Customer,
    ObjectId(id): ObjectId,
) -> ApiResult<Response> {
    let mut tx = state.db.write().await?;
    let removed = sqlx::query("DELETE FROM alarms WHERE id = $1 AND customer_id = $2")
        .bind(id)
        .bind(customer.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if removed == 0 {
        return Err(ApiError::not_found());
    }
    tx.commit().await?;
    Ok(message_ok())
}

pub struct NewAlarm {
    pub unix: i64,
    pub level: i64,
    pub color: String,
    pub msg: String,
    pub line: Option<i64>,
    pub func: Option<String>,
    pub filename: Option<String>,
    pub class: Option<String>,
    pub vassal: Option<String>,
}

/// A message body: UTF-8, not empty, no control characters except newlines and tabs (tracebacks
/// are multi-line; a NUL could not even be stored in PostgreSQL).
pub fn alarm_message(body: &[u8]) -> ApiResult<String> {
    let msg = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the alarm message must be UTF-8 text"))?;
    if msg.trim().is_empty() {
        return Err(ApiError::invalid("msg", "the alarm message (the body) is empty"));
    }
    if let Some(c) = msg.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ApiError::invalid("msg", format!("contains the control character U+{:04X}", c as u32)));
    }
    Ok(msg.to_string())
}

/// Stores an alarm and applies the container's retention (`max_alarms`, oldest first out).
pub async fn insert_alarm(tx: &mut WriteTx<'_>, container_id: i64, alarm: NewAlarm) -> ApiResult<i64> {
    let row = sqlx::query("SELECT customer_id, max_alarms FROM containers WHERE id = $1")
        .bind(container_id)
        .fetch_one(&mut ***tx)
        .await?;
    let id = sqlx::query(
        "INSERT INTO alarms (container_id, customer_id, unix, level, color, msg, line, func, filename, class, vassal) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(container_id)
    .bind(row.i64("customer_id"))
    .bind(alarm.unix)
    .bind(alarm.level)
    .bind(alarm.color)
    .bind(alarm.msg)
    .bind(alarm.line)
    .bind(alarm.func)
    .bind(alarm.filename)
    .bind(alarm.class)
    .bind(alarm.vassal)
    .fetch_one(&mut ***tx)
    .await?
    .i64("id");
    sqlx::query(
        "DELETE FROM alarms WHERE container_id = $1 AND id NOT IN \
         (SELECT id FROM alarms WHERE container_id = $1 ORDER BY unix DESC, id DESC LIMIT $2)",
    )
    .bind(container_id)
    .bind(row.i64("max_alarms"))
    .execute(&mut ***tx)
    .await?;
    Ok(id)
}

pub async fn raise(
    State(state): State<AppState>,
    MaybeCustomer(customer): MaybeCustomer,
    Path(uid): Path<String>,
    query: QueryMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let id = path_uid(&uid)?;
    match &customer {
        Some(c) => {
            let mut conn = state.db.pool.acquire().await?;
            owned_container(&mut conn, c.id, id).await?;
        }
        None => {
            let key = query.get("key").ok_or_else(ApiError::unauthorized)?;
            let stored = sqlx::query("SELECT alarm_key_sha256 FROM containers WHERE id = $1")
                .bind(id)
                .fetch_optional(&state.db.pool)
                .await?
                .and_then(|r| r.opt_str("alarm_key_sha256"));
            if !stored.is_some_and(|digest| token_matches(key, &digest)) {
                return Err(ApiError::unauthorized());
            }
        }
    }
    let msg = alarm_message(&body)?;
    let text = |key: &str| -> ApiResult<Option<String>> {
        match query.get(key) {
            None => Ok(None),
            Some(v) => {
                validate::line(key, v, 255)?;
                Ok(Some(v.to_string()))
            }
        }
    };
    let color = match query.get("color") {
        None => "#ffffff".to_string(),
        Some(c) => {
            let c = if c.starts_with('#') { c.to_string() } else { format!("#{c}") };
            validate::color("color", &c)?;
            c
        }
    };
    let level = match query.get("level") {
        None => 1,
        Some(l) => {
            let level = parse_int("level", l, 0, i64::MAX)?;
            if level == 0 {
                return Err(ApiError::invalid("level", "level 0 is reserved for the platform's own alarms"));
            }
            parse_int("level", l, LEVELS.0, LEVELS.1)?
        }
    };
    let line = query.get("line").map(|l| parse_int("line", l, 0, i32::MAX as i64)).transpose()?;
    let unix = query.get("unix").map(|u| parse_int("unix", u, 0, MAX_UNIX)).transpose()?.unwrap_or_else(now);
    let alarm = NewAlarm {
        unix,
        level,
        color,
        msg,
        line,
        func: text("func")?,
        filename: text("filename")?,
        class: text("class")?,
        vassal: text("vassal")?,
    };
    let mut tx = state.db.write().await?;
    let alarm_id = insert_alarm(&mut tx, id, alarm).await?;
    let row = sqlx::query("SELECT * FROM alarms WHERE id = $1").bind(alarm_id).fetch_optional(&mut **tx).await?;
    tx.commit().await?;
    // Retention may have dropped an alarm raised with a very old `unix` at once.
    let mut body = row.map(|r| alarm_json(&r)).unwrap_or_else(|| json!({"id": alarm_id}));
    body["message"] = "Created".into();
    Ok(created(body))
}

/// A new alarm key for the container; the previous one stops working. Only its digest is kept.
pub async fn new_alarm_key(
    State(state): State<AppState>,
    customer: Customer,
    Path(uid): Path<String>,
) -> ApiResult<Response> {
    let id = path_uid(&uid)?;
    let key = uuid::Uuid::new_v4().to_string();
    let mut tx = state.db.write().await?;
    owned_container(&mut tx, customer.id, id).await?;
    sqlx::query("UPDATE containers SET alarm_key_sha256 = $1 WHERE id = $2")
        .bind(sha256_hex(key.as_bytes()))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    tx.commit().await?;
    Ok(ok(json!({"message": "Ok", "alarm_key": key})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_compare_numbers_not_strings() {
        assert_eq!(parse_range("9-10").unwrap(), (9, 1, false));
        assert_eq!(parse_range("6-3").unwrap(), (3, 3, true));
        assert_eq!(parse_range("5").unwrap(), (0, 5, false));
        for bad in ["", "a", "1-", "-1", "1-b", "99999999999999999999"] {
            assert_eq!(parse_range(bad).unwrap_err().status.as_u16(), 416, "{bad}");
        }
    }
}
