//! `/api/news/`: the supplier's announcements; anonymous callers see only the public ones.

use super::common::ok;
use crate::auth::MaybeCustomer;
use crate::error::ApiResult;
use crate::state::AppState;
use crate::store::RowExt;
use axum::extract::State;
use axum::response::Response;
use serde_json::json;

pub async fn list(State(state): State<AppState>, MaybeCustomer(customer): MaybeCustomer) -> ApiResult<Response> {
    let sql = if customer.is_some() {
        "SELECT content, ctime FROM news ORDER BY ctime DESC, id DESC LIMIT 10"
    } else {
        "SELECT content, ctime FROM news WHERE public = 1 ORDER BY ctime DESC, id DESC LIMIT 10"
    };
    let rows = sqlx::query(sql).fetch_all(&state.db.pool).await?;
    Ok(ok(rows.iter().map(|r| json!({"content": r.str("content"), "date": r.i64("ctime")})).collect()))
}
