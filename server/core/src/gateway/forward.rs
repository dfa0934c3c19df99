//! Forwarding: the original bytes to the candidates in order (`routing`), one attempt at a time,
//! failing over while nothing has reached the client — on connection errors, timeouts, 429, 5xx
//! and 529, and on refusals that concern the upstream's account — then, when the key allows it,
//! on the model's fallbacks; within the attempt and time budgets. Whether to try elsewhere is a
//! property of the failure ([`Failure`]); what the client hears when every attempt failed is too.

use super::affinity::ConvKey;
use super::error::{overloaded, ApiError, SHOULD_RETRY};
use super::leases::SlotGuard;
use super::refusal::{refusal, Refusal};
use super::request::{forward_headers, with_model, ParsedHead};
use super::state::{Shared, Target};
use super::upstream_client;
use crate::catalogue::Model;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a saturated conversation upstream is asked again for a slot.
const AFFINITY_POLL: Duration = Duration::from_millis(25);

/// What to forward, and where it may go.
pub(super) struct ForwardPlan<'a> {
    endpoint_count: bool,
    stream: bool,
    channel: &'a str,
    models: &'a [Arc<Model>],
    body: &'a Bytes,
    model_span: Option<(usize, usize)>,
    /// the client's request headers (filtered per attempt by `forward_headers`)
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    /// the conversation, for cache-aware routing
    conv: Option<ConvKey>,
    /// how long the conversation's own upstream is waited for when it is saturated
    affinity_wait: Duration,
}

impl<'a> ForwardPlan<'a> {
    /// The client's request (`count_tokens` or a message) for `models` on `channel`, with no
    /// conversation (see [`ForwardPlan::conversation`]).
    pub(super) fn new(
        endpoint_count: bool,
        channel: &'a str,
        models: &'a [Arc<Model>],
        body: &'a Bytes,
        head: &ParsedHead,
        parts: &'a http::request::Parts,
    ) -> ForwardPlan<'a> {
        ForwardPlan {
            endpoint_count,
            stream: head.stream && !endpoint_count,
            channel,
            models,
            body,
            model_span: head.model_span,
            headers: &parts.headers,
            query: parts.uri.query(),
            conv: None,
            affinity_wait: Duration::ZERO,
        }
    }

    /// Routes by the conversation, waiting up to `wait` for its own upstream when it is busy.
    pub(super) fn conversation(self, conv: Option<ConvKey>, wait: Duration) -> Self {
        ForwardPlan { conv, affinity_wait: wait, ..self }
    }
}

/// 2xx: a JSON body read in full, or a stream whose first chunk arrived.
pub(super) struct Answer {
    pub(super) resp: http::Response<Incoming>,
    pub(super) target: Arc<Target>,
    pub(super) model: Arc<Model>,
    pub(super) first: Bytes,
    /// the upstream's concurrency slot, if it has a cap
    pub(super) slot: Option<SlotGuard>,
}

/// No answer to pass through.
pub(super) enum Unanswered {
    /// An upstream refusal for the client, in CloudRouter's words (see `refusal`), e.g. 400
    /// "prompt is too long" word for word.
    Refused { error: ApiError, target: Arc<Target>, model: Arc<Model> },
    /// Every attempt failed in a way worth trying elsewhere (or there was nothing to try).
    Exhausted { last: Option<Failure> },
}

/// Why an attempt got no answer. Every failure but [`Failure::Refused`] is tried again on
/// another upstream (failover).
pub(super) enum Failure {
    /// 429, 5xx or 529.
    Status { status: StatusCode, retry_after: Option<u64> },
    Timeout,
    Connect,
    /// The upstream's account refused (see `Refusal::Account`); it is out of rotation.
    Account,
    /// The upstream refused the request itself: the client's answer.
    Refused(ApiError),
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() || s.as_u16() == 529
}

/// A capped upstream with no free slot: skipped.
struct Busy;

impl Shared {
    /// Tries the candidates of each model in turn until one answers, one refuses the request, or
    /// the attempts (`config.max_attempts`, counted in `attempts`) or the retry budget since
    /// `started` run out.
    pub(super) async fn forward(&self, plan: ForwardPlan<'_>, attempts: &mut i32, started: Instant) -> Result<Answer, Unanswered> {
        let mut last: Option<Failure> = None;
        // a capped upstream was skipped for want of a slot
        let mut busy = false;
        let deadline = started + self.config.retry_budget;
        // a stream and count_tokens answer at once; a JSON message only when it is complete
        let timeout = if plan.stream || plan.endpoint_count { self.config.first_byte_timeout } else { self.config.response_timeout };
        for (i, model) in plan.models.iter().enumerate() {
            // The requested model (perhaps named by an alias) goes out exactly as the client
            // sent it; only a fallback to another model rewrites the body's `model` field.
            let body = if i == 0 { plan.body.clone() } else { with_model(plan.body, plan.model_span, &model.id) };
            for (j, target) in self.candidates(plan.channel, model, plan.endpoint_count, plan.conv).into_iter().enumerate() {
                let sticky = plan.conv.is_some() && i == 0 && j == 0;
                if *attempts as u32 >= self.config.max_attempts || (*attempts > 0 && Instant::now() >= deadline) {
                    return Err(Unanswered::Exhausted { last });
                }
                if !target.breaker(plan.endpoint_count).try_acquire() {
                    continue;
                }
                let Ok(slot) = self.target_slot(&target, if sticky { plan.affinity_wait } else { Duration::ZERO }).await else {
                    busy = true;
                    continue;
                };
                *attempts += 1;
                match self.attempt(&plan, &target, &body, timeout).await {
                    Ok((resp, first)) => return Ok(Answer { resp, target, model: model.clone(), first, slot }),
                    Err(Failure::Refused(error)) => return Err(Unanswered::Refused { error, target, model: model.clone() }),
                    Err(failure) => last = Some(failure),
                }
            }
        }
        if busy && last.is_none() {
            let cat = self.catalogue();
            let name = cat.channels.get(plan.channel).map_or(plan.channel, |(c, _)| c.name.as_str());
            self.alerts.channel_at_capacity(plan.channel, name, "every upstream of the channel is at its concurrency cap");
        }
        Err(Unanswered::Exhausted { last })
    }

    /// A slot of a capped upstream (none needed without a cap). A conversation's own upstream is
    /// worth a short `wait` when it is busy (its cache is there); any other is skipped at once.
    async fn target_slot(&self, target: &Target, wait: Duration) -> Result<Option<SlotGuard>, Busy> {
        let Some(cap) = target.upstream.concurrency_cap else { return Ok(None) };
        let wait_until = Instant::now() + wait;
        loop {
            match self.leases.acquire_slot(&target.slot_scope, cap).await {
                Ok(Some(g)) => return Ok(Some(g)),
                Ok(None) if Instant::now() < wait_until => tokio::time::sleep(AFFINITY_POLL).await,
                Ok(None) => return Err(Busy),
                Err(e) => {
                    tracing::warn!(error = %e, "upstream slot lease failed");
                    return Err(Busy);
                }
            }
        }
    }

    /// One request to one upstream, its circuit told how it went: the response with its first
    /// chunk (a stream) or its whole body (JSON, `count_tokens`), or why there is none.
    async fn attempt(&self, plan: &ForwardPlan<'_>, target: &Target, body: &Bytes, timeout: Duration) -> Result<(http::Response<Incoming>, Bytes), Failure> {
        let breaker = target.breaker(plan.endpoint_count);
        let t0 = Instant::now();
        let url = if plan.endpoint_count { &target.count_url } else { &target.messages_url };
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = match plan.query.filter(|q| !q.is_empty()) {
            Some(q) => upstream_client::with_query(url, q),
            None => url.clone(),
        };
        *req.headers_mut() = forward_headers(plan.headers, &target.auth_name, &target.auth_value);
        if let Some(auth) = &target.proxy_auth {
            req.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        let sent = tokio::time::timeout(timeout.saturating_sub(t0.elapsed()), self.client.request(req)).await;
        let mut resp = match sent {
            Err(_) => {
                breaker.failure("timeout");
                return Err(Failure::Timeout);
            }
            Ok(Err(e)) => {
                breaker.failure(if e.is_connect() { "connect" } else { "transport" });
                tracing::debug!(upstream = %target.upstream.name, error = ?e, "upstream request failed");
                return Err(if upstream_client::is_timeout(&e) { Failure::Timeout } else { Failure::Connect });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status.is_success() {
            // JSON: the whole body; stream: the first chunk. A failure here is still before
            // anything reached the client, so it can be retried.
            let rest = timeout.saturating_sub(t0.elapsed());
            let first = if plan.stream {
                match tokio::time::timeout(rest, std::future::poll_fn(|cx| upstream_client::poll_data(resp.body_mut(), cx))).await {
                    Ok(Some(Ok(c))) => Ok(c),
                    Ok(None) => Err("empty stream"),
                    Ok(Some(Err(_))) => Err("transport"),
                    Err(_) => Err("timeout"),
                }
            } else {
                // the whole body; `to_bytes` does not copy one that came in one chunk (the usual case)
                match tokio::time::timeout(rest, resp.body_mut().collect()).await {
                    Ok(Ok(b)) => Ok(b.to_bytes()),
                    Ok(Err(_)) => Err("transport"),
                    Err(_) => Err("timeout"),
                }
            };
            return match first {
                Ok(first) => {
                    breaker.success(t0.elapsed());
                    Ok((resp, first))
                }
                Err(what) => {
                    breaker.failure(what);
                    Err(if what == "timeout" { Failure::Timeout } else { Failure::Connect })
                }
            };
        }
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if retryable(status) {
            breaker.failure(status.as_str());
            return Err(Failure::Status { status, retry_after });
        }
        let (parts, body) = resp.into_parts();
        let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let should_retry = parts.headers.get(&SHOULD_RETRY).and_then(|v| v.to_str().ok()).map(|v| v == "true");
        match refusal(status, &body, should_retry) {
            Refusal::Account(reason) => {
                tracing::warn!(upstream = %target.upstream.name, %reason, "upstream account refused; out of rotation");
                breaker.out_of_rotation(&reason, self.config.account_out_for);
                Err(Failure::Account)
            }
            Refusal::Client(error) => {
                breaker.success(t0.elapsed());
                Err(Failure::Refused(error))
            }
        }
    }
}

impl Unanswered {
    /// The client's answer; `channel` and `model` name what had no upstream.
    pub(super) fn into_error(self, channel: &str, model: &str) -> ApiError {
        match self {
            Unanswered::Refused { error, .. } => error,
            Unanswered::Exhausted { last: None } => ApiError::new(
                overloaded(),
                format!("No healthy upstream is available for model {model} on the {channel} channel; please retry shortly"),
            )
            .should_retry(true),
            Unanswered::Exhausted { last: Some(f) } => f.into_error(),
        }
    }
}

impl Failure {
    /// The client's answer when this was the last attempt's failure.
    fn into_error(self) -> ApiError {
        match self {
            Failure::Refused(e) => e,
            Failure::Timeout => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "The upstream did not answer in time").should_retry(true),
            Failure::Connect => ApiError::new(overloaded(), "No upstream could be reached; please retry shortly").should_retry(true),
            Failure::Account => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "No upstream can serve this request right now; please retry shortly").should_retry(true)
            }
            Failure::Status { status, retry_after } => {
                let message = match status.as_u16() {
                    429 => "Upstream capacity is rate limited; please retry shortly",
                    529 => "Overloaded",
                    504 => "The upstream timed out",
                    _ => "Internal server error",
                };
                let e = ApiError::new(status, message).should_retry(true);
                match retry_after {
                    Some(s) => e.retry_after(s),
                    None if status.as_u16() == 429 => e.retry_after(5),
                    None => e,
                }
            }
        }
    }
}
