//! `POST /v1/chat/completions`: OpenAI's format, served as a message (see `openai`). The body is
//! translated before admission, so limits, holds, routing, failover, usage and price are those
//! of `/v1/messages`; every refusal is in OpenAI's error shape.

use super::super::error::Dialect;
use super::super::meter::Ticket;
use super::super::openai;
use super::super::request::read_body;
use super::super::state::Shared;
use super::messages::run;
use crate::util::request_id;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// The Messages API version OpenAI clients' requests are sent with (they send none).
const API_VERSION: HeaderValue = HeaderValue::from_static("2023-06-01");

pub(in super::super) async fn chat_completions(State(gw): State<Arc<Shared>>, req: Request) -> Response {
    let started = Instant::now();
    let rid = request_id();
    let (mut parts, body) = req.into_parts();
    let key = match gw.authenticate(&parts).await {
        Ok(k) => k,
        Err(e) => return e.respond_in(&rid, Dialect::OpenAi { include_usage: false }),
    };
    let mut t = Ticket::new(gw.clone(), rid, started, &key, "chat_completions");
    t.dialect = Dialect::OpenAi { include_usage: false };
    let body = match read_body(body, gw.config.body_limit).await {
        Ok(b) => b,
        Err(e) => return t.fail(e),
    };
    let translated = match openai::to_messages(&body) {
        Ok(x) => x,
        Err(e) => return t.fail(e),
    };
    t.dialect = Dialect::OpenAi { include_usage: translated.include_usage };
    parts.headers.entry(ANTHROPIC_VERSION.clone()).or_insert(API_VERSION);
    run(gw, t, key, parts, translated.body).await
}
