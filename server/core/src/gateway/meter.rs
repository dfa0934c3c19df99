//! Metering: the per-request [`Ticket`] (holds, slots, and what goes into the usage record),
//! settled exactly once — priced from Anthropic's usage object, holds returned, the record handed
//! to the batch writer — and the [`MeteredStream`] that passes a stream through chunk by chunk
//! while reading its usage, draining the upstream when the client leaves.

use super::error::{overloaded, upstream_stream_error, ApiError, Dialect};
use super::health::Breaker;
use super::leases::{MoneyHold, SlotGuard};
use super::sse;
use super::state::Shared;
use super::upstream_client;
use crate::catalogue::Model;
use crate::keys::KeyAuth;
use crate::pricing::{self, ModelPrices, UsageReport};
use crate::telemetry;
use crate::money::{CnyPerUsd, MicroCny, MicroUsd};
use crate::usage::{Outcome, UsageRecord};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::Stream;
use hyper::body::Incoming;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The per-request context of a message: filled in by each step, settled by [`Ticket::finish`]
/// (at the latest when dropped).
pub(super) struct Ticket {
    gw: Arc<Shared>,
    pub(super) rid: String,
    pub(super) started: Instant,
    created_at: chrono::DateTime<chrono::Utc>,
    user_id: Uuid,
    key_id: Uuid,
    channel: String,
    pub(super) rate: CnyPerUsd,
    endpoint: &'static str,
    /// the shape of the client's answers
    pub(super) dialect: Dialect,
    pub(super) stream: bool,
    pub(super) requested_model: String,
    pub(super) user_hold: Option<MoneyHold>,
    /// `user_hold` came from the user's off-plan lease
    pub(super) off_plan: bool,
    pub(super) key_hold: Option<MoneyHold>,
    /// the worst case at list price, held from the plan windows' room
    pub(super) window_hold: Option<MoneyHold<MicroUsd>>,
    pub(super) slots: Vec<SlotGuard>,
    /// the tokens-per-minute scopes this request counts in
    pub(super) token_scopes: Vec<String>,
    pub(super) served_model: Option<String>,
    pub(super) priced_model: Option<Arc<Model>>,
    pub(super) upstream_id: Option<Uuid>,
    pub(super) attempts: i32,
    pub(super) status: i32,
    error_type: Option<String>,
    pub(super) outcome: Outcome,
    pub(super) usage: UsageReport,
    pub(super) ttft: Option<Duration>,
    /// answered by the conversation's sticky upstream
    pub(super) affinity: bool,
    done: bool,
}

impl Ticket {
    pub(super) fn new(gw: Arc<Shared>, rid: String, started: Instant, key: &KeyAuth, endpoint: &'static str) -> Ticket {
        gw.inflight.fetch_add(1, Ordering::AcqRel);
        Ticket {
            gw,
            rid,
            started,
            created_at: chrono::Utc::now(),
            user_id: key.user_id,
            key_id: key.key_id,
            channel: key.channel.clone(),
            rate: CnyPerUsd::default(),
            endpoint,
            dialect: Dialect::Anthropic,
            stream: false,
            requested_model: String::new(),
            user_hold: None,
            off_plan: false,
            key_hold: None,
            window_hold: None,
            slots: vec![],
            token_scopes: vec![],
            served_model: None,
            priced_model: None,
            upstream_id: None,
            attempts: 0,
            status: 0,
            error_type: None,
            outcome: Outcome::GatewayError,
            usage: UsageReport::default(),
            ttft: None,
            affinity: false,
            done: false,
        }
    }

    pub(super) fn fail(&mut self, e: ApiError) -> Response {
        self.status = e.status.as_u16() as i32;
        self.error_type = Some(e.kind.to_string());
        e.respond_in(&self.rid, self.dialect)
    }

    /// A JSON answer: its usage, and the model that served it (the upstream's word, else the one
    /// asked), read from the body.
    pub(super) fn read_json_answer(&mut self, body: &[u8], model: &Model) {
        #[derive(Deserialize)]
        struct JsonHead {
            #[serde(default)]
            model: Option<String>,
            #[serde(default)]
            usage: Option<UsageReport>,
        }
        match serde_json::from_slice::<JsonHead>(body) {
            Ok(h) => {
                if let Some(u) = h.usage {
                    self.usage.merge(&u);
                }
                self.served_model = h.model.or_else(|| Some(model.id.clone()));
            }
            Err(_) => self.served_model = Some(model.id.clone()),
        }
        self.outcome = Outcome::Ok;
    }

    pub(super) fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let tokens = self.usage.tokens();
        let server_tools = self.usage.server_tools();
        // the catalogue's model for the metrics' label (never the client's or upstream's text)
        let label_model: Option<Arc<Model>>;
        let served_prices: Option<ModelPrices> = {
            let cat = self.gw.catalogue();
            match self.served_model.as_deref().and_then(|m| cat.lookup(m)) {
                Some(m) => {
                    // an upstream may answer with an alias: record the canonical id
                    if self.served_model.as_deref() != Some(m.id.as_str()) {
                        self.served_model = Some(m.id.clone());
                    }
                    label_model = Some(m.clone());
                    Some(m.prices())
                }
                None => {
                    label_model = self.priced_model.clone();
                    self.priced_model.as_ref().map(|m| m.prices())
                }
            }
        };
        let (cost, charge) = match served_prices {
            Some(p) if !(tokens.is_zero() && server_tools.is_zero()) => {
                let pr = pricing::price(&tokens, &server_tools, &p, self.rate);
                (pr.cost_micro_usd, pr.charge_micros)
            }
            _ => (MicroUsd::ZERO, MicroCny::ZERO),
        };
        // The whole charge is billed even above the hold (the usage record keeps both): the
        // leases take the excess from this instance's slice, the wallet may go below zero.
        let held = self.user_hold.as_ref().map_or(MicroCny::ZERO, MoneyHold::amount);
        if charge > held {
            tracing::info!(request_id = %self.rid, charge = charge.micros(), held = held.micros(), "charge above the hold");
        }
        if let Some(h) = self.user_hold.take() {
            h.settle(charge);
        }
        if let Some(h) = self.key_hold.take() {
            h.settle(charge);
        }
        if let Some(h) = self.window_hold.take() {
            h.settle(cost);
        }
        self.slots.clear();
        if !self.token_scopes.is_empty() {
            let counted = tokens.input_tokens + tokens.cache_write_5m_tokens + tokens.cache_write_1h_tokens + tokens.output_tokens;
            for scope in &self.token_scopes {
                self.gw.tokens.add(scope, counted);
            }
        }
        let latency = self.started.elapsed();
        let rec = UsageRecord {
            id: std::mem::take(&mut self.rid),
            created_at: self.created_at,
            user_id: self.user_id,
            key_id: Some(self.key_id),
            channel: self.channel.clone(),
            endpoint: self.endpoint.to_string(),
            requested_model: std::mem::take(&mut self.requested_model),
            served_model: self.served_model.take(),
            upstream_id: self.upstream_id,
            stream: self.stream,
            status: self.status,
            error_type: self.error_type.take(),
            outcome: self.outcome,
            attempts: self.attempts,
            tokens,
            server_tools,
            cost_micro_usd: cost,
            charge_micros: charge,
            held_micros: held,
            latency_ms: latency.as_millis().min(i32::MAX as u128) as i32,
            ttft_ms: self.ttft.map(|t| t.as_millis().min(i32::MAX as u128) as i32),
            affinity: self.affinity,
            off_plan: self.off_plan,
        };
        // the access log: one line per request, never a body or a key's secret; the requested
        // model is the client's text, so it is written escaped
        tracing::info!(
            target: "cloudrouter::access",
            request_id = %rec.id, key_id = %self.key_id, channel = %rec.channel, endpoint = %rec.endpoint,
            model = ?rec.requested_model, served = rec.served_model.as_deref().unwrap_or(""),
            upstream_id = rec.upstream_id.map(|u| u.to_string()).unwrap_or_default(), stream = rec.stream,
            status = rec.status, outcome = %rec.outcome, attempts = rec.attempts, latency_ms = rec.latency_ms,
            ttft_ms = rec.ttft_ms.unwrap_or(-1), charge_micros = rec.charge_micros.micros(), "request finished"
        );
        telemetry::request_finished(&telemetry::Finished {
            channel: &rec.channel,
            model: label_model.as_deref().map_or("unknown", |m| m.id.as_str()),
            endpoint: self.endpoint,
            status: rec.status,
            outcome: self.outcome.as_str(),
            latency,
            ttft: self.ttft,
            tokens: &rec.tokens,
            charge_micros: charge,
        });
        self.gw.usage.submit(rec);
        self.gw.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What a stream's metering needs once the answer is handed to the client; it moves to a drain
/// task when the client leaves first.
pub(super) struct StreamMeter {
    pub(super) body: Incoming,
    pub(super) scanner: sse::SseScanner,
    pub(super) breaker: Arc<Breaker>,
    pub(super) ticket: Ticket,
}

impl StreamMeter {
    /// Bills what the scanner read (the final usage, or the estimate of `billable_usage`).
    fn settle(mut self, outcome: Outcome) {
        self.ticket.outcome = outcome;
        if outcome == Outcome::UpstreamError {
            self.ticket.error_type = self.scanner.error_type.clone();
        }
        self.ticket.usage = self.scanner.billable_usage();
        self.ticket.served_model =
            self.scanner.model.take().or_else(|| self.ticket.priced_model.as_ref().map(|m| m.id.clone()));
        self.ticket.finish();
    }

    /// The client left: read the upstream on (forwarding nothing) until its final usage, an
    /// upstream failure or silence, the drain timeout, or shutdown; then settle.
    async fn drain(mut self, timeout: Duration, idle: Duration, mut closing: tokio::sync::watch::Receiver<bool>) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !(self.scanner.saw_stop || self.scanner.saw_error) {
            let next = tokio::time::timeout(idle, std::future::poll_fn(|cx| upstream_client::poll_data(&mut self.body, cx)));
            tokio::select! {
                r = next => match r {
                    Ok(Some(Ok(c))) => self.scanner.feed(&c),
                    _ => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        self.settle(Outcome::ClientClosed);
    }
}

/// Passes a stream through chunk by chunk, reading usage, and settles when it ends: completed,
/// cut by the upstream, silent past the idle timeout, cut at shutdown, or — when the client goes
/// away, which drops it — after draining the upstream to its final usage.
pub(super) struct MeteredStream {
    /// None once settled (or handed to a drain)
    meter: Option<StreamMeter>,
    first: Option<Bytes>,
    /// The start of what may be the upstream's `error` event, held back until it ends (it is then
    /// replaced, see [`upstream_stream_error`]).
    held: Vec<u8>,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    drain_timeout: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
    /// resolves when shutdown cuts open streams
    cut_now: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl MeteredStream {
    pub(super) fn new(gw: &Shared, meter: StreamMeter, first: Bytes) -> MeteredStream {
        let closing = gw.closing.subscribe();
        let mut waiter = closing.clone();
        MeteredStream {
            meter: Some(meter),
            first: Some(first),
            held: Vec::new(),
            idle_timeout: gw.config.idle_timeout,
            idle: Box::pin(tokio::time::sleep(gw.config.idle_timeout)),
            drain_timeout: gw.config.drain_timeout,
            closing,
            cut_now: Box::pin(async move {
                let _ = waiter.wait_for(|c| *c).await;
            }),
        }
    }

    /// Ends the stream early: settles, and tells the client with an error event unless the
    /// upstream already ended the stream its own way.
    fn cut(&mut self, outcome: Outcome, error: ApiError) -> Option<Bytes> {
        let mut m = self.meter.take()?;
        if outcome != Outcome::Shutdown {
            m.breaker.failure(outcome.as_str());
        }
        let event = (!(m.scanner.saw_error || m.scanner.saw_stop)).then(|| {
            m.ticket.error_type = Some(error.kind.to_string());
            error.sse_event(&m.ticket.rid)
        });
        m.settle(outcome);
        event
    }
}

impl Stream for MeteredStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(c) = this.first.take() {
            this.idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
            return Poll::Ready(Some(Ok(c)));
        }
        let Some(m) = this.meter.as_mut() else {
            return Poll::Ready(None);
        };
        if this.cut_now.as_mut().poll(cx).is_ready() {
            return Poll::Ready(
                this.cut(Outcome::Shutdown, ApiError::new(overloaded(), "The server is restarting; the stream was cut. Please retry.")).map(Ok),
            );
        }
        match upstream_client::poll_data(&mut m.body, cx) {
            Poll::Ready(Some(Ok(c))) => {
                this.idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
                let erred = m.scanner.saw_error;
                m.scanner.feed(&c);
                if m.ticket.ttft.is_none() && m.scanner.saw_content {
                    m.ticket.ttft = Some(m.ticket.started.elapsed());
                }
                if !erred && m.scanner.saw_error {
                    // the upstream's own error event ended in this chunk: its words may carry
                    // its request id or account state, so the client gets ours, with its kind
                    let mut out = std::mem::take(&mut this.held);
                    out.extend_from_slice(&c);
                    if let Some(at) = sse::error_event_start(&out) {
                        out.truncate(at);
                    }
                    out.extend_from_slice(&upstream_stream_error(m.scanner.error_type.as_deref()).sse_event(&m.ticket.rid));
                    return Poll::Ready(Some(Ok(out.into())));
                }
                match m.scanner.error_tail() {
                    None if this.held.is_empty() => Poll::Ready(Some(Ok(c))),
                    tail => {
                        let mut out = std::mem::take(&mut this.held);
                        out.extend_from_slice(&c);
                        this.held = out.split_off(out.len() - tail.unwrap_or(0).min(out.len()));
                        Poll::Ready(Some(Ok(out.into())))
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                Poll::Ready(this.cut(Outcome::UpstreamCut, ApiError::new(StatusCode::BAD_GATEWAY, "The upstream connection was interrupted")).map(Ok))
            }
            Poll::Ready(None) => {
                if m.scanner.saw_stop || m.scanner.saw_error {
                    let outcome = if m.scanner.saw_error { Outcome::UpstreamError } else { Outcome::Ok };
                    if let Some(m) = this.meter.take() {
                        m.settle(outcome);
                    }
                    Poll::Ready(None)
                } else {
                    Poll::Ready(this.cut(Outcome::UpstreamCut, ApiError::new(StatusCode::BAD_GATEWAY, "The upstream stream ended early")).map(Ok))
                }
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(this.cut(Outcome::IdleTimeout, ApiError::new(StatusCode::GATEWAY_TIMEOUT, "The upstream stream stalled")).map(Ok)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        let Some(m) = self.meter.take() else { return };
        // The client left before the end. The upstream goes on generating (and billing) the
        // answer: read it on to its final usage, unless the gateway is shutting down.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !*self.closing.borrow() => {
                rt.spawn(m.drain(self.drain_timeout, self.idle_timeout, self.closing.clone()));
            }
            _ => m.settle(Outcome::ClientClosed),
        }
    }
}
