//! What operators and load balancers call: `GET /healthz` (the process answers), `GET /readyz`
//! (send traffic here: the database answers, the model catalogue is loaded, not draining) and
//! `GET /metrics` (Prometheus text format, only with `Authorization: Bearer
//! <CLOUDROUTER_METRICS_TOKEN>`; 404 when that is not set).
//!
//! Merged beside the console, not inside it: no session, cookie, CSRF or page middleware runs for
//! these, and nothing is logged per call.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use cloudrouter_core::gateway::Gateway;
use metrics_exporter_prometheus::PrometheusHandle;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` waits for the database's answer to `SELECT 1`.
pub const READY_DB_TIMEOUT: Duration = Duration::from_millis(1000);

struct Ops {
    gateway: Gateway,
    metrics: Option<PrometheusHandle>,
    /// SHA-256 of the metrics token; None: `/metrics` is off
    token_hash: Option<[u8; 32]>,
}

pub fn router(gateway: Gateway, metrics: Option<PrometheusHandle>, metrics_token: Option<&str>) -> Router {
    let ops = Ops { gateway, metrics, token_hash: metrics_token.map(|t| Sha256::digest(t.as_bytes()).into()) };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(ops))
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".into())
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.gateway.ready(READY_DB_TIMEOUT).await {
        Ok(()) => text(StatusCode::OK, "ready\n".into()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// Compares the presented bearer token with the configured one in constant time (both hashed,
/// so neither the length nor a common prefix shows in the timing).
fn authorized(expected: &[u8; 32], headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    else {
        return false;
    };
    let given: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
    given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn metrics_text(State(ops): State<Arc<Ops>>, headers: HeaderMap) -> Response {
    let (Some(expected), Some(handle)) = (&ops.token_hash, &ops.metrics) else {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    if !authorized(expected, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer"), (header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "a bearer token is required\n",
        )
            .into_response();
    }
    ops.gateway.observe();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        handle.render(),
    )
        .into_response()
}
