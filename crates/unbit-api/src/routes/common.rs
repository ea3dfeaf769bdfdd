//! Small helpers shared by the resource modules: answers, path ids, query strings, tags,
//! pagination and ownership checks.

use crate::error::{ApiError, ApiResult};
use crate::specs::container_id_of;
use crate::store::{placeholders, RowExt};
use crate::validate;
use axum::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sqlx::AnyConnection;
use std::collections::HashMap;

pub fn ok(v: Value) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

pub fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

pub fn message_ok() -> Response {
    ok(json!({"message": "Ok"}))
}

/// A list answer with its total, so clients can page (`?limit=&offset=`).
pub fn page_of(items: Vec<Value>, total: i64) -> Response {
    let mut response = ok(Value::Array(items));
    if let Ok(v) = HeaderValue::from_str(&total.to_string()) {
        response.headers_mut().insert("x-total-count", v);
    }
    response
}

/// A numeric id from the path; anything that is not a positive i64 is simply not found.
pub fn path_id(s: &str) -> ApiResult<i64> {
    s.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(ApiError::not_found)
}

/// A container id from a uid in the path.
pub fn path_uid(s: &str) -> ApiResult<i64> {
    s.parse::<i64>().ok().and_then(container_id_of).ok_or_else(ApiError::not_found)
}

/// The object id of a `/<kind>/<id>` route. Anything that is not a positive integer is a
/// 404, as an unknown id is: the path names no object.
pub struct ObjectId(pub i64);

#[async_trait]
impl<S: Send + Sync> FromRequestParts<S> for ObjectId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found())?;
        path_id(&raw).map(ObjectId)
    }
}

/// The query string as a map (the last value of a repeated key wins). Never fails.
pub struct QueryMap(pub HashMap<String, String>);

#[async_trait]
impl<S: Send + Sync> FromRequestParts<S> for QueryMap {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let map =
            parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        Ok(QueryMap(map))
    }
}

impl QueryMap {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// `?tags=a,b` as a list of names (empty items dropped); `None` when absent.
    pub fn tags(&self) -> ApiResult<Option<Vec<String>>> {
        let Some(raw) = self.get("tags") else {
            return Ok(None);
        };
        let names: Vec<String> = raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
        if names.len() > 100 {
            return Err(ApiError::invalid("tags", "at most 100 tags in a filter"));
        }
        Ok(Some(names))
    }

    /// `?limit=` (1-1000, default 1000) and `?offset=` (default 0).
    pub fn page(&self) -> ApiResult<Page> {
        let limit = match self.get("limit") {
            Some(s) => crate::body::parse_int("limit", s, 1, MAX_PAGE)?,
            None => MAX_PAGE,
        };
        let offset = match self.get("offset") {
            Some(s) => crate::body::parse_int("offset", s, 0, i64::MAX / 2)?,
            None => 0,
        };
        Ok(Page { limit, offset })
    }
}

pub const MAX_PAGE: i64 = 1000;

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// The container `id` if it exists and belongs to the customer; otherwise 404.
pub async fn owned_container(conn: &mut AnyConnection, customer_id: i64, container_id: i64) -> ApiResult<()> {
    let row =
        sqlx::query("SELECT customer_id FROM containers WHERE id = $1").bind(container_id).fetch_optional(conn).await?;
    match row {
        Some(r) if r.i64("customer_id") == customer_id => Ok(()),
        _ => Err(ApiError::not_found()),
    }
}

/// Tag ids for names of this customer's tags; an unknown name is a 422 naming it.
async fn resolve_tags(
    conn: &mut AnyConnection,
    customer_id: i64,
    names: &[String],
    field: &str,
) -> ApiResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        validate::tag(&format!("{field}[{i}]"), name)?;
        let row = sqlx::query("SELECT id FROM tags WHERE customer_id = $1 AND name = $2")
            .bind(customer_id)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
        match row {
            Some(r) => ids.push(r.i64("id")),
            None => {
                return Err(ApiError::invalid(
                    format!("{field}[{i}]"),
                    format!("no tag named '{name}': create it with POST /api/tags/ first"),
                ))
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Which join table links tags to which kind of object.
#[derive(Clone, Copy)]
pub enum Tagged {
    Container,
    Domain,
    Loopbox,
}

impl Tagged {
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Tagged::Container => ("container_tags", "container_id"),
            Tagged::Domain => ("domain_tags", "domain_id"),
            Tagged::Loopbox => ("loopbox_tags", "loopbox_id"),
        }
    }

    /// SQL fragment `AND <alias>.id IN (...)` selecting objects having any of the tags; binds
    /// start at `$first` with the customer id, then the names.
    pub fn filter_sql(self, alias: &str, first: usize, names: usize) -> String {
        let (table, col) = self.table();
        // `?tags=` with no names matches nothing (and `IN ()` is not valid SQL everywhere).
        let names_match =
            if names == 0 { "1 = 0".to_string() } else { format!("t.name IN ({})", placeholders(first + 1, names)) };
        format!(
            " AND {alias}.id IN (SELECT x.{col} FROM {table} x JOIN tags t ON t.id = x.tag_id \
             WHERE t.customer_id = ${first} AND {names_match})"
        )
    }

    /// Makes the object's tags exactly `names` (the customer's tags; an unknown name is a
    /// validation error on the `tags` field).
    pub async fn set(
        self,
        conn: &mut AnyConnection,
        customer_id: i64,
        object_id: i64,
        names: &[String],
    ) -> ApiResult<()> {
        let tag_ids = resolve_tags(conn, customer_id, names, "tags").await?;
        let (table, col) = self.table();
        sqlx::query(&format!("DELETE FROM {table} WHERE {col} = $1")).bind(object_id).execute(&mut *conn).await?;
        for tag in &tag_ids {
            sqlx::query(&format!("INSERT INTO {table} (tag_id, {col}) VALUES ($1, $2)"))
                .bind(*tag)
                .bind(object_id)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Tag names of each object, sorted.
    pub async fn names_of(
        self,
        conn: &mut AnyConnection,
        ids: &[i64],
    ) -> Result<HashMap<i64, Vec<String>>, sqlx::Error> {
        let (table, col) = self.table();
        let mut out: HashMap<i64, Vec<String>> = HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT x.{col} AS object_id, t.name FROM {table} x JOIN tags t ON t.id = x.tag_id \
                 WHERE x.{col} IN ({}) ORDER BY t.name",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *conn).await? {
                out.entry(row.i64("object_id")).or_default().push(row.str("name"));
            }
        }
        Ok(out)
    }
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds the values of a [`Tagged::filter_sql`] fragment (customer id, then the names).
pub fn bind_tag_filter<'q>(mut q: AnyQuery<'q>, customer_id: i64, tags: &Option<Vec<String>>) -> AnyQuery<'q> {
    if let Some(names) = tags {
        q = q.bind(customer_id);
        for n in names {
            q = q.bind(n.clone());
        }
    }
    q
}
