//! `GET /status.json`: the public status page as JSON (schema in docs/status.md), for status
//! widgets and monitors. Served from the same cached report as the page, so a poll costs no
//! query within the cache's 30 s; browsers and proxies may keep it as long (`max-age`). Merged
//! beside the console like the operations routes: no session, cookie or CSRF middleware.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cloudrouter_core::status::{StatusBoard, CACHE_TTL};

pub fn router(board: StatusBoard) -> Router {
    Router::new().route("/status.json", get(status_json)).with_state(board)
}

async fn status_json(State(board): State<StatusBoard>) -> Response {
    let report = match board.current().await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(error = %e, "status.json: computing the status failed");
            let body = axum::Json(serde_json::json!({"error": "the status is unavailable right now"}));
            return (StatusCode::SERVICE_UNAVAILABLE, [(header::CACHE_CONTROL, "no-store")], body).into_response();
        }
    };
    let cache = format!("public, max-age={}", CACHE_TTL.as_secs());
    ([(header::CACHE_CONTROL, cache), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*".into())], axum::Json(&*report)).into_response()
}
