//! `POST /v1/messages`, JSON and SSE (and, in OpenAI's shape, `/v1/chat/completions`: see
//! `chat_completions`). Once the body is read, the request's work is `Detachable`: a client that
//! hangs up does not cancel the upstream work it started, which is billed when it answers (a JSON
//! answer is then dropped; a stream is drained, see `MeteredStream`).

use super::super::detach::Detachable;
use super::super::error::{ApiError, Dialect};
use super::super::forward::{Answer, ForwardPlan, Unanswered};
use super::super::meter::{MeteredStream, StreamMeter, Ticket};
use super::super::openai;
use super::super::request::{conversation, read_body, response_headers};
use super::super::sse;
use super::super::state::Shared;
use super::answer;
use crate::keys::KeyAuth;
use crate::util::request_id;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

static SERVED_MODEL: HeaderName = HeaderName::from_static("x-cloudrouter-served-model");

pub(in super::super) async fn messages(State(gw): State<Arc<Shared>>, req: Request) -> Response {
    let started = Instant::now();
    let rid = request_id();
    let (parts, body) = req.into_parts();
    let key = match gw.authenticate(&parts).await {
        Ok(k) => k,
        Err(e) => return e.respond(&rid),
    };
    let mut t = Ticket::new(gw.clone(), rid, started, &key, "messages");
    let body = match read_body(body, gw.config.body_limit).await {
        Ok(b) => b,
        Err(e) => return t.fail(e),
    };
    run(gw, t, key, parts, body).await
}

/// Serves a message (its body read), to its end even if the client hangs up meanwhile.
pub(in super::super) async fn run(gw: Arc<Shared>, t: Ticket, key: Arc<KeyAuth>, parts: http::request::Parts, body: Bytes) -> Response {
    let (rid, dialect) = (t.rid.clone(), t.dialect);
    match Detachable::new(serve(gw, t, key, parts, body)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::error!(request_id = %rid, "request work panicked");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error").respond_in(&rid, dialect)
        }
    }
}

/// Admit → forward → respond.
async fn serve(gw: Arc<Shared>, mut t: Ticket, key: Arc<KeyAuth>, parts: http::request::Parts, body: Bytes) -> Response {
    let cat = gw.catalogue();
    let a = match gw.admit_message(&mut t, &key, &cat, &body).await {
        Ok(a) => a,
        Err(e) => return t.fail(e),
    };
    let conv = conversation(&parts.headers, &a.head, key.key_id);
    let plan = ForwardPlan::new(false, &key.channel, &a.models, &body, &a.head, &parts)
        .conversation(conv, Duration::from_millis(a.channel.affinity_wait_ms.max(0) as u64));
    let got = match gw.forward(plan, &mut t.attempts, t.started).await {
        Ok(got) => got,
        Err(unanswered) => {
            t.outcome = crate::usage::Outcome::UpstreamError;
            if let Unanswered::Refused { target, model, .. } = &unanswered {
                t.upstream_id = Some(target.upstream.id);
                t.served_model = Some(model.id.clone());
            }
            return t.fail(unanswered.into_error(&a.channel.name, &a.head.model));
        }
    };
    t.upstream_id = Some(got.target.upstream.id);
    t.status = got.resp.status().as_u16() as i32;
    t.priced_model = Some(got.model.clone());
    if let Some(conv) = conv {
        let natural = gw.natural_upstream(&key.channel, &a.models[0], conv);
        t.affinity = gw.rebind(conv, key.user_id, natural, got.target.upstream.id, &body);
    }
    if a.head.stream {
        stream(&gw, t, got)
    } else {
        json(t, got)
    }
}

/// A stream: passed through chunk by chunk by a `MeteredStream`, which settles it.
fn stream(gw: &Shared, mut t: Ticket, got: Answer) -> Response {
    let Answer { resp, target, model, first, slot } = got;
    t.slots.extend(slot);
    let mut headers = response_headers(resp.headers(), &t.rid, t.dialect);
    let mut scanner = sse::SseScanner::new();
    scanner.feed(&first);
    if scanner.saw_content {
        t.ttft = Some(t.started.elapsed());
    }
    let served = scanner.model.clone().unwrap_or_else(|| model.id.clone());
    if let Ok(v) = HeaderValue::from_str(&served) {
        headers.insert(SERVED_MODEL.clone(), v);
    }
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !headers.contains_key(http::header::CONTENT_TYPE) {
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    }
    let dialect = t.dialect;
    let stream =
        MeteredStream::new(gw, StreamMeter { body: resp.into_body(), scanner, breaker: target.breakers.messages.clone(), ticket: t }, first);
    let mut out = match dialect {
        Dialect::Anthropic => Response::new(Body::from_stream(stream)),
        Dialect::OpenAi { include_usage } => {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            Response::new(Body::from_stream(openai::ChunkStream::new(stream, &served, include_usage)))
        }
    };
    *out.headers_mut() = headers;
    out
}

/// A JSON answer, read in full: settled before it is returned.
fn json(mut t: Ticket, got: Answer) -> Response {
    let Answer { resp, model, first, slot, .. } = got;
    t.slots.extend(slot);
    let mut headers = response_headers(resp.headers(), &t.rid, t.dialect);
    t.read_json_answer(&first, &model);
    if let Some(Ok(v)) = t.served_model.as_deref().map(HeaderValue::from_str) {
        headers.insert(SERVED_MODEL.clone(), v);
    }
    let (rid, dialect) = (t.rid.clone(), t.dialect);
    t.finish();
    match dialect {
        Dialect::Anthropic => answer(resp.status(), headers, first),
        Dialect::OpenAi { .. } => match openai::completion(&first) {
            Some(c) => answer(resp.status(), headers, Bytes::from(c.to_string())),
            None => ApiError::new(StatusCode::BAD_GATEWAY, "The upstream's answer could not be read").respond_in(&rid, dialect),
        },
    }
}
