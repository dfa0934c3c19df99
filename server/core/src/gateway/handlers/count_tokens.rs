//! `POST /v1/messages/count_tokens`: free, but under the key's and plan's limits like a message
//! (a key without a rate of its own gets `count_tokens_rpm`), and with circuits of its own. No
//! ticket: nothing is held, charged or recorded.

use super::super::error::{ApiError, Dialect};
use super::super::forward::ForwardPlan;
use super::super::request::{parse_head, read_body, response_headers};
use super::super::state::Shared;
use super::answer;
use crate::util::request_id;
use axum::extract::{Request, State};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

pub(in super::super) async fn count_tokens(State(gw): State<Arc<Shared>>, req: Request) -> Response {
    let started = Instant::now();
    let rid = request_id();
    match count(&gw, req, started, &rid).await {
        Ok(resp) => resp,
        Err(e) => e.respond(&rid),
    }
}

/// Admit → forward → respond.
async fn count(gw: &Shared, req: Request, started: Instant, rid: &str) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let key = gw.authenticate(&parts).await?;
    // held until the answer is built
    let mut slots = Vec::new();
    gw.admit_count(&key, &mut slots).await?;
    let body = read_body(body, gw.config.body_limit).await?;
    let head = parse_head(&body)?;
    let models = gw.catalogue().models_for(&key, &head.model)?;
    // only the model asked for, and no conversation: counting tokens reads no cache
    let plan = ForwardPlan::new(true, &key.channel, &models[..1], &body, &head, &parts);
    let mut attempts = 0;
    let got = gw.forward(plan, &mut attempts, started).await.map_err(|u| u.into_error(&key.channel, &head.model))?;
    Ok(answer(got.resp.status(), response_headers(got.resp.headers(), rid, Dialect::Anthropic), got.first))
}
