//! The HTTP surface. Customer paths keep the original's names under `/api/` (each accepted with
//! and without the trailing slash); node paths live under `/api/node/v1/`.

pub mod alarms;
pub mod common;
pub mod containers;
pub mod distros;
pub mod domains;
pub mod loopboxes;
pub mod me;
pub mod metrics;
pub mod news;
pub mod node;
pub mod node_metrics;
pub mod portmappings;
pub mod tags;

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

/// Registers `path` with and without its trailing slash.
fn both(router: Router<AppState>, path: &str, route: MethodRouter<AppState>) -> Router<AppState> {
    let trimmed = path.trim_end_matches('/');
    router.route(trimmed, route.clone()).route(&format!("{trimmed}/"), route)
}

pub fn router(state: AppState) -> Router {
    let mut r = Router::new();
    r = both(r, "/api/me", get(me::get_me).post(me::post_me));
    r = both(r, "/api/me/containers", get(containers::list).post(containers::create));
    r = both(r, "/api/containers", get(containers::list).post(containers::create));
    r = both(r, "/api/containers/:uid", get(containers::get_one).post(containers::update));
    r = both(r, "/api/distros", get(distros::list_distros));
    r = both(r, "/api/custom_distros", get(distros::list_custom_distros));
    r = both(r, "/api/custom_distros/:uid", get(distros::usable_custom_distros).post(distros::create_custom_distro));
    r = both(
        r,
        "/api/custom_distro/:id",
        get(distros::get_custom_distro).post(distros::update_custom_distro).delete(distros::delete_custom_distro),
    );
    r = both(r, "/api/domains", get(domains::list).post(domains::create).delete(domains::delete_by_name));
    r = both(r, "/api/domains/:id", get(domains::get_one).post(domains::update).delete(domains::delete_one));
    r = both(r, "/api/tags", get(tags::list).post(tags::create));
    r = both(r, "/api/tags/:id", get(tags::get_one).post(tags::update).delete(tags::delete_one));
    r = both(r, "/api/loopboxes", get(loopboxes::list).post(loopboxes::create));
    r = both(r, "/api/loopboxes/:id", get(loopboxes::get_one).post(loopboxes::update).delete(loopboxes::delete_one));
    r = both(r, "/api/alarms", get(alarms::list));
    r = both(r, "/api/alarms/:id", get(alarms::get_one).delete(alarms::delete_one));
    r = both(r, "/api/alarms/raise/:uid", axum::routing::post(alarms::raise));
    r = both(r, "/api/alarms/trigger/:uid", axum::routing::post(alarms::raise));
    r = both(r, "/api/alarm_key/:uid", get(alarms::new_alarm_key).post(alarms::new_alarm_key));
    r = both(r, "/api/metrics/:metric/:id", get(metrics::get_metric));
    r = both(r, "/api/news", get(news::list));
    r = both(
        r,
        "/api/portmappings/:server",
        get(portmappings::list).post(portmappings::create).delete(portmappings::delete),
    );
    r = both(r, "/api/openapi.json", get(crate::openapi::serve));
    r = both(r, "/api/node/v1/containers", get(node::containers));
    r = both(r, "/api/node/v1/loopboxes", get(node::loopboxes));
    r = both(r, "/api/node/v1/domains", get(node::domains));
    r = both(r, "/api/node/v1/alarms/:uid", axum::routing::post(node::alarm));
    r = both(r, "/api/node/v1/metrics", axum::routing::post(node_metrics::batch));
    r = both(r, "/api/node/v1/metrics/:metric/:uid", axum::routing::post(node::metric));
    r = both(r, "/api/node/v1/portmappings", get(node::portmappings));
    r = both(r, "/api/node/v1/legion/members", get(node::legion_members));
    r = both(r, "/api/node/v1/links/members", get(node::links_members));
    r.fallback(|| async { ApiError::not_found() }).with_state(state).layer(middleware::from_fn(http_conventions))
}

/// The original's HTTP conventions in one place: unauthenticated CORS preflight, `*` origin on
/// every answer, JSON bodies for the router's own 405s, and a trailing newline for curl users.
async fn http_conventions(req: Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        let mut response = StatusCode::OK.into_response();
        let h = response.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert("access-control-allow-methods", HeaderValue::from_static("GET,POST,DELETE,OPTIONS"));
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("X-uwsgi-it-username,X-uwsgi-it-password,Authorization,Content-Type"),
        );
        return response;
    }
    let curl =
        req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).is_some_and(|ua| ua.contains("curl/"));
    let mut response = next.run(req).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED && response.headers().get(header::CONTENT_TYPE).is_none() {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = ApiError::method_not_allowed().into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    response.headers_mut().insert("access-control-allow-origin", HeaderValue::from_static("*"));
    // Browsers may read the list total for paging.
    response.headers_mut().insert("access-control-expose-headers", HeaderValue::from_static("X-Total-Count"));
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if curl && is_json {
        let (mut parts, body) = response.into_parts();
        let Ok(mut bytes) = axum::body::to_bytes(body, usize::MAX).await.map(Vec::from) else {
            return ApiError::internal().into_response();
        };
        bytes.push(b'\n');
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(bytes));
    }
    response
}
