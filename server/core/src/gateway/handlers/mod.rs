//! One file per endpoint, each a short function reading as admit → forward → respond.

pub(super) mod chat_completions;
pub(super) mod count_tokens;
pub(super) mod messages;
pub(super) mod models;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// An answer read in full (a JSON message, a token count, a model list) with its headers.
fn answer(status: StatusCode, headers: HeaderMap, body: Bytes) -> Response {
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}
