//! The Anthropic-compatible gateway: `POST /v1/messages` (JSON and SSE), `POST
//! /v1/messages/count_tokens`, `GET /v1/models`, `GET /v1/models/{id}`; and OpenAI's `POST
//! /v1/chat/completions`, translated to and from a message (`openai`).
//!
//! A message's path, in order, with no database round trip in the common case; each step is a
//! file:
//! 1. authenticate: the key cache keyed by SHA-256 of the presented key, invalidated by NOTIFY
//!    (`admit`; the caches and their reloads are `state`),
//! 2. read the body as bytes (size limit) and pull out only `model`, `stream`, `max_tokens` and
//!    what names the conversation (`request`),
//! 3. check the model against the catalogue and the key's allow-list (`admit`),
//! 4. per-key rate and concurrency, per-channel capacity (leased slices, see `leases`) (`admit`),
//! 5. reserve the worst-case charge (hold) from the key's spend limit and the user's balance
//!    (`admit`),
//! 6. forward the original bytes to an upstream of the key's channel (priority, then weight,
//!    skipping open circuits; `routing`), retrying on another upstream on connection errors,
//!    timeouts, 429, 5xx and 529 as long as nothing was sent to the client, and on refusals that
//!    concern the upstream's account (out of credit, disabled, credential or permission refused),
//!    which take it out of rotation; then — only if the key allows it — on the model's Claude
//!    fallbacks (`forward`); an upstream's other refusals reach the client in CloudRouter's words
//!    (`refusal`),
//! 7. pass the answer through (streams chunk by chunk) while reading usage from it (`meter`),
//! 8. settle: price the usage, return the unused hold, and hand the usage record to the batch
//!    writer, which debits the balance through the ledger off the request path (`meter`).
//!
//! Each endpoint is one file in `handlers` that calls these steps in this order; every refusal is
//! an [`ApiError`] (`error`), the shape the staff API answers in too. `upstream_client` is the
//! HTTP client to upstreams (the table of upstreams is `crate::upstreams`).
//!
//! Billing rule shown to customers (README, "Money"): a failed request costs nothing; a
//! failed-over request is billed once, for the attempt that answered; every answered request is
//! charged for the whole of Anthropic's usage object, even above the hold. A client that leaves
//! does not end the upstream's work: a JSON request runs to its answer (`detach`), and a
//! stream whose client left is read on (not forwarded) to its final usage, for up to the drain
//! timeout. A stream that ends without its final usage (upstream cut, idle timeout, drain timeout,
//! shutdown) is billed for the usage reported so far with its output raised to an estimate of the
//! content read from the upstream (`sse::SseScanner::billable_usage`).

mod admit;
mod affinity;
mod config;
mod detach;
mod error;
mod forward;
mod handlers;
pub mod health;
mod leases;
mod meter;
mod openai;
mod refusal;
mod request;
mod routing;
pub mod sse;
mod state;
mod token_rate;
mod upstream_client;

pub use affinity::clear as clear_affinity;
pub use config::GatewayConfig;
pub use error::ApiError;
pub use health::UpstreamHealth;
pub use state::NOTIFY_CHANNEL;

use crate::crypto::Crypto;
use axum::routing::{get, post};
use axum::Router;
use handlers::{chat_completions::chat_completions, count_tokens::count_tokens, messages::messages, models};
use sqlx::PgPool;
use state::Shared;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// After shutdown cuts open streams, how long it waits for them to settle.
const CUT_SETTLE_WAIT: Duration = Duration::from_secs(5);

/// The gateway. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Shared>,
}

impl Gateway {
    /// Loads the catalogue and upstreams, registers this instance for leases, starts the usage
    /// writer, the NOTIFY listener and the lease maintenance task.
    pub async fn start(pool: PgPool, crypto: Crypto, config: GatewayConfig) -> anyhow::Result<Gateway> {
        Ok(Gateway { inner: Shared::start(pool, crypto, config).await? })
    }

    /// The Anthropic-compatible routes, state applied.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models::list_models))
            .route("/v1/models/{id}", get(models::get_model))
            .with_state(self.inner.clone())
    }

    /// Live circuit state, recent success rate and latency of every enabled upstream.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        self.inner.targets().iter().map(|t| t.breakers.messages.snapshot(t.upstream.id, &t.upstream.name)).collect()
    }

    /// Demo mode: the only enabled upstreams are the built-in simulated Claude. Read per request
    /// (the routing table follows upstream changes by NOTIFY), so it ends without a restart.
    pub fn demo_mode(&self) -> bool {
        let targets = self.inner.targets();
        !targets.is_empty() && targets.iter().all(|t| t.upstream.is_demo)
    }


    /// Requests in flight on this instance.
    pub fn in_flight(&self) -> usize {
        self.inner.inflight.load(Ordering::Relaxed)
    }

    /// Waits until every finished request's usage record is written and settled.
    pub async fn sync_usage(&self) {
        self.inner.usage.sync().await;
    }

    /// This instance's alert reporter (its task also wakes the alert delivery).
    pub fn alerts(&self) -> crate::alerts::Reporter {
        self.inner.alerts.clone()
    }

    /// This instance's id (names its leases).
    pub fn instance_id(&self) -> Uuid {
        self.inner.leases.instance_id
    }

    /// Reloads upstreams and the catalogue now (they also reload on NOTIFY).
    pub async fn reload(&self) {
        self.inner.reload_all().await;
    }

    /// Marks this instance as going away: from now on [`Gateway::ready`] answers "draining" (so a
    /// load balancer stops sending new requests) while everything else keeps serving. `shutdown`
    /// does it too; the server calls it first and waits a moment before refusing connections.
    pub fn start_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }

    /// Whether this instance should be sent traffic: not draining, the model catalogue loaded,
    /// and the database answering a trivial query within `db_timeout`. The error is a short reason.
    pub async fn ready(&self, db_timeout: Duration) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        if self.inner.catalogue().listed.is_empty() {
            return Err("model catalogue not loaded");
        }
        match tokio::time::timeout(db_timeout, sqlx::query("SELECT 1").execute(&self.inner.pool)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "readiness: database query failed");
                Err("database unreachable")
            }
            Err(_) => Err("database unreachable (timeout)"),
        }
    }

    /// Sets the gauges read from live state (upstream circuits, requests in flight, draining, the
    /// usage queue, the database pool); the metrics endpoint calls it before rendering.
    pub fn observe(&self) {
        use crate::telemetry as t;
        for h in self.health() {
            let (healthy, state) = match h.circuit.as_str() {
                "closed" => (1.0, 0.0),
                "half_open" => (0.0, 1.0),
                _ => (0.0, 2.0),
            };
            let id = h.id.to_string();
            let labels = [("upstream", h.name), ("upstream_id", id)];
            metrics::gauge!(t::UPSTREAM_HEALTHY, &labels).set(healthy);
            metrics::gauge!(t::UPSTREAM_CIRCUIT, &labels).set(state);
            metrics::counter!(t::UPSTREAM_ATTEMPTS, &labels).absolute(h.total_attempts);
            metrics::counter!(t::UPSTREAM_FAILURES, &labels).absolute(h.total_failures);
            if let Some(ms) = h.latency_ms {
                metrics::gauge!(t::UPSTREAM_LATENCY, &labels).set(ms / 1000.0);
            }
        }
        let leases = self.inner.leases.summary();
        metrics::gauge!(t::LEASES).set(leases.money_leases as f64);
        metrics::gauge!(t::LEASE_FREE).set(leases.money_free.micros() as f64);
        metrics::gauge!(t::HOLDS).set(leases.holds as f64);
        metrics::gauge!(t::SLOTS, "state" => "held").set(leases.slots_held as f64);
        metrics::gauge!(t::SLOTS, "state" => "in_use").set(leases.slots_in_use as f64);
        metrics::gauge!(t::IN_FLIGHT).set(self.in_flight() as f64);
        metrics::gauge!(t::DRAINING).set(if self.is_draining() { 1.0 } else { 0.0 });
        metrics::gauge!(t::USAGE_QUEUE).set(self.inner.usage.queued() as f64);
        let pool = &self.inner.pool;
        metrics::gauge!(t::DB_POOL_SIZE).set(pool.size() as f64);
        metrics::gauge!(t::DB_POOL_IDLE).set(pool.num_idle() as f64);
    }

    /// Waits for in-flight requests (up to the grace period), then cuts the streams and drains
    /// still open (each settles for what it read, see the module doc), flushes every usage record
    /// and settlement, and gives this instance's leases back.
    pub async fn shutdown(self) {
        self.start_draining();
        self.inner.wait_idle(self.inner.config.grace_period).await;
        if self.inner.inflight.load(Ordering::Acquire) > 0 {
            self.inner.closing.send_replace(true);
            // a cut stream settles at its next poll; a JSON request still waiting keeps its task
            self.inner.wait_idle(CUT_SETTLE_WAIT).await;
        }
        let left = self.inner.inflight.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(in_flight = left, "shutting down with requests still in flight; their usage is not recorded");
        }
        for t in self.inner.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.inner.usage.shutdown().await;
        self.inner.leases.unregister().await;
    }
}

/// Sets TCP_NODELAY on every accepted connection (axum 0.8's `serve` no longer does). Use as
/// `axum::serve(gateway::nodelay(listener), app)`. The concrete type keeps
/// `ConnectInfo<SocketAddr>` available to handlers.
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
        let _ = tcp.set_nodelay(true);
    }
    listener.tap_io(set_nodelay as fn(&mut tokio::net::TcpStream))
}
