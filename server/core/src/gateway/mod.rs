//! The Anthropic-compatible gateway: `POST /v1/messages` (JSON and SSE), `POST
//! /v1/messages/count_tokens`, `GET /v1/models`, `GET /v1/models/{id}`.
//!
//! Hot path, in order, with no database round trip in the common case:
//! 1. authenticate (key cache keyed by SHA-256 of the presented key, invalidated by NOTIFY),
//! 2. read the body as bytes (size limit) and pull out only `model`, `stream`, `max_tokens`,
//! 3. check the model against the catalogue and the key's allow-list,
//! 4. per-key rate and concurrency, per-channel capacity (leased slices, see `leases`),
//! 5. reserve the worst-case charge (hold) from the key's spend limit and the user's balance,
//! 6. forward the original bytes to an upstream of the key's channel (priority, then weight,
//!    skipping open circuits), retrying on another upstream on connection errors, timeouts, 429,
//!    5xx and 529 as long as nothing was sent to the client, and on refusals that concern the
//!    upstream's account (out of credit, disabled, credential or permission refused), which take
//!    it out of rotation; then — only if the key allows it — on the model's Claude fallbacks; an
//!    upstream's other refusals reach the client in CloudRouter's words (see [`refusal`]),
//! 7. pass the answer through (streams chunk by chunk) while reading usage from it,
//! 8. settle: price the usage, return the unused hold, and hand the usage record to the batch
//!    writer, which debits the balance through the ledger off the request path.
//!
//! Billing rule shown to customers (README, "Money"): a failed request costs nothing; a
//! failed-over request is billed once, for the attempt that answered; every answered request is
//! charged for the whole of Anthropic's usage object, even above the hold. A client that leaves
//! does not end the upstream's work: a JSON request runs to its answer in its own task, and a
//! stream whose client left is read on (not forwarded) to its final usage, for up to the drain
//! timeout. A stream that ends without its final usage (upstream cut, idle timeout, drain timeout,
//! shutdown) is billed for the usage reported so far with its output raised to an estimate of the
//! content read from the upstream (`sse::SseScanner::billable_usage`).

mod affinity;
pub mod health;
mod leases;
pub mod sse;
mod upstream;

pub use affinity::clear as clear_affinity;
pub use health::UpstreamHealth;

use crate::catalogue::{self, Channel, Model};
use crate::crypto::Crypto;
use crate::keys::{self, KeyAuth};
use crate::pricing::{self, ModelPrices, UsageReport};
use crate::upstreams::{self, UpstreamTarget};
use crate::usage::{UsageRecord, UsageWriter, WriterConfig};
use crate::util::{request_id, sha256};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures::Stream;
use affinity::ConvKey;
use health::Breaker;
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::proxy::matcher::Matcher;
use leases::{Budget, Leases, MoneyHold, SlotGuard};
use serde::Deserialize;
use sqlx::PgPool;
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Gateway settings; `from_env` reads `CLOUDROUTER_*` variables, falling back to the defaults.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body (`CLOUDROUTER_BODY_LIMIT_BYTES`, default 32 MiB).
    pub body_limit: usize,
    /// TCP/TLS connect timeout to an upstream (`CLOUDROUTER_CONNECT_TIMEOUT_MS`, 5 s).
    pub connect_timeout: Duration,
    /// Streams: time to response headers and the first event (`CLOUDROUTER_FIRST_BYTE_TIMEOUT_MS`, 60 s).
    pub first_byte_timeout: Duration,
    /// Non-streaming requests: time to the whole answer (`CLOUDROUTER_RESPONSE_TIMEOUT_MS`, 600 s).
    pub response_timeout: Duration,
    /// Streams: longest silence between chunks (`CLOUDROUTER_IDLE_TIMEOUT_MS`, 60 s).
    pub idle_timeout: Duration,
    /// Streams whose client left: how long the gateway keeps reading the upstream for its final
    /// usage (`CLOUDROUTER_DRAIN_TIMEOUT_MS`, 600 s); the idle timeout applies meanwhile too.
    pub drain_timeout: Duration,
    /// `count_tokens` requests per minute per key when the key sets no limit of its own
    /// (`CLOUDROUTER_COUNT_TOKENS_RPM`, 600).
    pub count_tokens_rpm: i32,
    /// Upstream attempts per request, fallbacks included (`CLOUDROUTER_MAX_ATTEMPTS`, 3).
    pub max_attempts: u32,
    /// No new attempt starts after this much time (`CLOUDROUTER_RETRY_BUDGET_MS`, 30 s).
    pub retry_budget: Duration,
    /// Shutdown waits this long for in-flight requests (`CLOUDROUTER_SHUTDOWN_GRACE_MS`, 30 s).
    pub grace_period: Duration,
    /// Consecutive failures that open a circuit (`CLOUDROUTER_BREAKER_FAILURES`, 5).
    pub breaker_failures: u32,
    /// First cool-down of an open circuit (`CLOUDROUTER_BREAKER_OPEN_MS`, 10 s).
    pub breaker_open_for: Duration,
    /// How long an upstream whose account refused (out of credit, disabled, credential or
    /// permission refused) stays out of rotation (`CLOUDROUTER_ACCOUNT_OUT_MS`, 30 min).
    pub account_out_for: Duration,
    /// Usage writer batch size and interval (`CLOUDROUTER_USAGE_BATCH_ROWS`, 500;
    /// `CLOUDROUTER_USAGE_FLUSH_MS`, 50).
    pub usage_batch_rows: usize,
    pub usage_flush_interval: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            body_limit: 32 << 20,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(600),
            count_tokens_rpm: 600,
            max_attempts: 3,
            retry_budget: Duration::from_secs(30),
            grace_period: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(10),
            account_out_for: Duration::from_secs(1800),
            usage_batch_rows: 500,
            usage_flush_interval: Duration::from_millis(50),
        }
    }
}

impl GatewayConfig {
    pub fn from_env() -> Self {
        fn num(name: &str) -> Option<u64> {
            std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
        }
        let ms = |name: &str, d: Duration| num(name).map(Duration::from_millis).unwrap_or(d);
        let d = GatewayConfig::default();
        GatewayConfig {
            body_limit: num("CLOUDROUTER_BODY_LIMIT_BYTES").map(|v| v as usize).unwrap_or(d.body_limit),
            connect_timeout: ms("CLOUDROUTER_CONNECT_TIMEOUT_MS", d.connect_timeout),
            first_byte_timeout: ms("CLOUDROUTER_FIRST_BYTE_TIMEOUT_MS", d.first_byte_timeout),
            response_timeout: ms("CLOUDROUTER_RESPONSE_TIMEOUT_MS", d.response_timeout),
            idle_timeout: ms("CLOUDROUTER_IDLE_TIMEOUT_MS", d.idle_timeout),
            drain_timeout: ms("CLOUDROUTER_DRAIN_TIMEOUT_MS", d.drain_timeout),
            count_tokens_rpm: num("CLOUDROUTER_COUNT_TOKENS_RPM").map(|v| v.clamp(1, i32::MAX as u64) as i32).unwrap_or(d.count_tokens_rpm),
            max_attempts: num("CLOUDROUTER_MAX_ATTEMPTS").map(|v| v.clamp(1, 10) as u32).unwrap_or(d.max_attempts),
            retry_budget: ms("CLOUDROUTER_RETRY_BUDGET_MS", d.retry_budget),
            grace_period: ms("CLOUDROUTER_SHUTDOWN_GRACE_MS", d.grace_period),
            breaker_failures: num("CLOUDROUTER_BREAKER_FAILURES").map(|v| v as u32).unwrap_or(d.breaker_failures),
            breaker_open_for: ms("CLOUDROUTER_BREAKER_OPEN_MS", d.breaker_open_for),
            account_out_for: ms("CLOUDROUTER_ACCOUNT_OUT_MS", d.account_out_for),
            usage_batch_rows: num("CLOUDROUTER_USAGE_BATCH_ROWS").map(|v| v.max(1) as usize).unwrap_or(d.usage_batch_rows),
            usage_flush_interval: ms("CLOUDROUTER_USAGE_FLUSH_MS", d.usage_flush_interval),
        }
    }
}

/// How often a saturated conversation upstream is asked again for a slot.
const AFFINITY_POLL: Duration = Duration::from_millis(25);

/// After shutdown cuts open streams, how long it waits for them to settle.
const CUT_SETTLE_WAIT: Duration = Duration::from_secs(5);

// Header names written on every request, parsed once (a string name is parsed at each use).
static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
static SERVED_MODEL: HeaderName = HeaderName::from_static("x-cloudrouter-served-model");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static CLAUDE_CODE_SESSION: HeaderName = HeaderName::from_static("x-claude-code-session-id");

/// NOTIFY channel on which database triggers announce changes the gateway caches.
pub const NOTIFY_CHANNEL: &str = "cloudrouter_gateway";

struct Catalogue {
    models: HashMap<String, Arc<Model>>,
    /// alias → model (`claude-sonnet-4-5` → `claude-sonnet-4-5-20250929`); ids take precedence
    aliases: HashMap<String, Arc<Model>>,
    /// enabled models, newest first (the order of `GET /v1/models`)
    listed: Vec<Arc<Model>>,
    /// by code, with the scope of the channel's concurrency lease
    channels: HashMap<String, (Channel, String)>,
}

impl Catalogue {
    /// A model by its id or one of its aliases.
    fn lookup(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name).or_else(|| self.aliases.get(name))
    }
}

/// An upstream's two circuits: `count_tokens` failures (a flood of it, say) never open the
/// circuit that `/v1/messages` depends on.
#[derive(Clone)]
struct Breakers {
    messages: Arc<Breaker>,
    count_tokens: Arc<Breaker>,
}

struct Route {
    t: UpstreamTarget,
    breakers: Breakers,
    /// parsed once; cloning a `Uri` is much cheaper than parsing one per request
    messages_url: Uri,
    count_url: Uri,
    auth_name: HeaderName,
    auth_value: HeaderValue,
    /// for plain HTTP through a proxy with credentials (`upstream::proxy_authorization`)
    proxy_auth: Option<HeaderValue>,
    slot_scope: String,
}

impl Route {
    fn serves(&self, channel: &str, model: &Model) -> bool {
        self.t.channels.iter().any(|c| c == channel)
            && (self.t.models.is_empty() || self.t.models.iter().any(|m| *m == model.id || model.aliases.contains(m)))
    }

    fn breaker(&self, count_tokens: bool) -> &Arc<Breaker> {
        if count_tokens {
            &self.breakers.count_tokens
        } else {
            &self.breakers.messages
        }
    }
}

struct Inner {
    pool: PgPool,
    config: GatewayConfig,
    crypto: Crypto,
    client: upstream::Client,
    /// the proxies from the environment, also known to `client`
    proxy: Arc<Matcher>,
    keys: moka::future::Cache<[u8; 32], Option<Arc<KeyAuth>>>,
    catalogue: RwLock<Arc<Catalogue>>,
    routes: RwLock<Arc<Vec<Arc<Route>>>>,
    breakers: Mutex<HashMap<Uuid, Breakers>>,
    /// conversations moved away from their rendezvous choice (cache-aware routing)
    overrides: affinity::Overrides,
    /// true once shutdown's grace period is over: open streams and drains end now
    closing: tokio::sync::watch::Sender<bool>,
    leases: Arc<Leases>,
    usage: UsageWriter,
    inflight: AtomicUsize,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The gateway. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl Gateway {
    /// Loads the catalogue and upstreams, registers this instance for leases, starts the usage
    /// writer, the NOTIFY listener and the lease maintenance task.
    pub async fn start(pool: PgPool, crypto: Crypto, config: GatewayConfig) -> anyhow::Result<Gateway> {
        let leases = Leases::register(pool.clone()).await?;
        let usage = UsageWriter::start(
            pool.clone(),
            leases.instance_id,
            WriterConfig {
                batch_rows: config.usage_batch_rows,
                flush_interval: config.usage_flush_interval,
                ..WriterConfig::default()
            },
        );
        let proxy = Arc::new(Matcher::from_env());
        let client = upstream::client(config.connect_timeout, proxy.clone())?;
        let keys = moka::future::Cache::builder()
            .max_capacity(200_000)
            .time_to_live(Duration::from_secs(600))
            .support_invalidation_closures()
            .build();
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            config,
            crypto,
            client,
            proxy,
            keys,
            catalogue: RwLock::new(Arc::new(Catalogue {
                models: HashMap::new(),
                aliases: HashMap::new(),
                listed: vec![],
                channels: HashMap::new(),
            })),
            routes: RwLock::new(Arc::new(vec![])),
            breakers: Mutex::new(HashMap::new()),
            overrides: affinity::Overrides::default(),
            closing: tokio::sync::watch::Sender::new(false),
            leases,
            usage,
            inflight: AtomicUsize::new(0),
            tasks: Mutex::new(vec![]),
        });
        // listen before loading, so that no change between the two is missed
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        inner.reload_catalogue().await?;
        inner.reload_routes().await?;
        affinity::load(&inner.pool, &inner.overrides).await?;

        let weak = Arc::downgrade(&inner);
        let listen_task = tokio::spawn(async move {
            loop {
                let r = listener.try_recv().await;
                let Some(inner) = weak.upgrade() else { return };
                match r {
                    Ok(Some(n)) => inner.on_notify(n.payload()).await,
                    Ok(None) => {
                        // connection lost: notifications may have been missed
                        tracing::warn!("gateway NOTIFY connection lost; reconnecting and reloading caches");
                        inner.reload_all().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway NOTIFY listener error");
                        drop(inner);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Some(inner) = weak.upgrade() {
                            inner.reload_all().await;
                        }
                    }
                }
            }
        });
        let weak = Arc::downgrade(&inner);
        let maint_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                inner.leases.return_idle(false).await;
                if n.is_multiple_of(5) {
                    if let Err(e) = inner.leases.heartbeat().await {
                        tracing::warn!(error = %e, "gateway heartbeat failed");
                    }
                }
                n += 1;
            }
        });
        inner.tasks.lock().unwrap().extend([listen_task, maint_task]);
        Ok(Gateway { inner })
    }

    /// The Anthropic-compatible routes, state applied.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/models", get(list_models))
            .route("/v1/models/{id}", get(get_model))
            .with_state(self.inner.clone())
    }

    /// Live circuit state, recent success rate and latency of every enabled upstream.
    pub fn health(&self) -> Vec<UpstreamHealth> {
        let routes = self.inner.routes.read().unwrap().clone();
        routes.iter().map(|r| r.breakers.messages.snapshot(r.t.id, &r.t.name)).collect()
    }

    /// Demo mode: the only enabled upstreams are the built-in simulated Claude. Read per request
    /// (the routing table follows upstream changes by NOTIFY), so it ends without a restart.
    pub fn demo_mode(&self) -> bool {
        let routes = self.inner.routes.read().unwrap().clone();
        !routes.is_empty() && routes.iter().all(|r| r.t.is_demo)
    }

    /// Requests in flight on this instance.
    pub fn in_flight(&self) -> usize {
        self.inner.inflight.load(Ordering::Relaxed)
    }

    /// Waits until every finished request's usage record is written and settled.
    pub async fn sync_usage(&self) {
        self.inner.usage.sync().await;
    }

    /// This instance's id (names its leases).
    pub fn instance_id(&self) -> Uuid {
        self.inner.leases.instance_id
    }

    /// Reloads upstreams and the catalogue now (they also reload on NOTIFY).
    pub async fn reload(&self) {
        self.inner.reload_all().await;
    }

    /// Waits for in-flight requests (up to the grace period), then cuts the streams and drains
    /// still open (each settles for what it read, see the module doc), flushes every usage record
    /// and settlement, and gives this instance's leases back.
    pub async fn shutdown(self) {
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

impl Inner {
    /// Waits until no request is in flight, for at most `limit`.
    async fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reload_all(&self) {
        self.keys.invalidate_all();
        if let Err(e) = self.reload_catalogue().await {
            tracing::warn!(error = %e, "catalogue reload failed");
        }
        if let Err(e) = self.reload_routes().await {
            tracing::warn!(error = %e, "upstream reload failed");
        }
        if let Err(e) = affinity::load(&self.pool, &self.overrides).await {
            tracing::warn!(error = %e, "conversation overrides reload failed");
        }
    }

    async fn on_notify(&self, payload: &str) {
        if let Some(hex) = payload.strip_prefix("key:") {
            let mut h = [0u8; 32];
            if hex::decode_to_slice(hex, &mut h).is_ok() {
                self.keys.invalidate(&h).await;
            }
        } else if let Some(id) = payload.strip_prefix("user:") {
            if let Ok(uid) = id.parse::<Uuid>() {
                let _ = self.keys.invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|k| k.user_id == uid));
            }
        } else if let Some(a) = payload.strip_prefix("affinity:") {
            affinity::apply_notify(&self.overrides, a);
        } else if payload == "upstreams" {
            if let Err(e) = self.reload_routes().await {
                tracing::warn!(error = %e, "upstream reload failed");
            }
        } else if payload == "catalogue" {
            if let Err(e) = self.reload_catalogue().await {
                tracing::warn!(error = %e, "catalogue reload failed");
            }
        }
    }

    async fn reload_catalogue(&self) -> Result<(), sqlx::Error> {
        let models = catalogue::list_models(&self.pool).await?;
        let channels = catalogue::list_channels(&self.pool).await?;
        let mut listed: Vec<Arc<Model>> = vec![];
        let mut map = HashMap::new();
        let mut aliases = HashMap::new();
        for m in models {
            let m = Arc::new(m);
            if m.enabled {
                listed.push(m.clone());
            }
            for a in &m.aliases {
                aliases.insert(a.clone(), m.clone());
            }
            map.insert(m.id.clone(), m);
        }
        aliases.retain(|a, _| !map.contains_key(a));
        listed.sort_by(|a, b| b.released_at.cmp(&a.released_at).then(a.sort.cmp(&b.sort)));
        let channels = channels
            .into_iter()
            .map(|c| {
                let scope = format!("channel:{}", c.code);
                (c.code.clone(), (c, scope))
            })
            .collect();
        let cat = Catalogue { models: map, aliases, listed, channels };
        *self.catalogue.write().unwrap() = Arc::new(cat);
        Ok(())
    }

    async fn reload_routes(&self) -> Result<(), sqlx::Error> {
        let targets = upstreams::load_targets(&self.pool, &self.crypto).await?;
        let mut routes = Vec::with_capacity(targets.len());
        let mut known = self.breakers.lock().unwrap();
        for t in targets {
            let new_breaker = || Arc::new(Breaker::new(self.config.breaker_failures, self.config.breaker_open_for));
            let breakers = known
                .entry(t.id)
                .or_insert_with(|| Breakers { messages: new_breaker(), count_tokens: new_breaker() })
                .clone();
            let (auth_name, auth_value) = if t.bearer {
                (http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", t.credential)))
            } else {
                (X_API_KEY.clone(), HeaderValue::from_str(&t.credential))
            };
            let Ok(mut auth_value) = auth_value else {
                tracing::warn!(upstream = %t.name, "upstream credential is not a valid header value; skipped");
                continue;
            };
            auth_value.set_sensitive(true);
            let base = t.base_url.trim_end_matches('/');
            let (Some(messages_url), Some(count_url)) =
                (upstream::parse_uri(&format!("{base}/v1/messages")), upstream::parse_uri(&format!("{base}/v1/messages/count_tokens")))
            else {
                tracing::warn!(upstream = %t.name, "upstream base URL is not a valid URL; skipped");
                continue;
            };
            routes.push(Arc::new(Route {
                proxy_auth: upstream::proxy_authorization(&self.proxy, &messages_url),
                messages_url,
                count_url,
                slot_scope: format!("upstream:{}", t.id),
                auth_name,
                auth_value,
                breakers,
                t,
            }));
        }
        drop(known);
        *self.routes.write().unwrap() = Arc::new(routes);
        Ok(())
    }

    /// Candidate upstreams for a channel and model: higher priority first; within a priority, a
    /// weighted order — the conversation's rendezvous order when there is a conversation (its
    /// override first), else a weighted random one; open circuits (of the endpoint's breaker)
    /// left out.
    fn candidates(&self, channel: &str, model: &Model, count_tokens: bool, conv: Option<ConvKey>) -> Vec<Arc<Route>> {
        use rand::Rng;
        let routes = self.routes.read().unwrap().clone();
        let mut rng = rand::thread_rng();
        let mut c: Vec<(i32, f64, Arc<Route>)> = routes
            .iter()
            .filter(|r| r.serves(channel, model) && r.breaker(count_tokens).maybe_available())
            .map(|r| {
                let order = match conv {
                    Some(k) => k.score(r.t.id, r.t.weight),
                    // Efraimidis–Spirakis: -u^(1/w), smaller first
                    None => -rng.gen_range(f64::EPSILON..1.0f64).powf(1.0 / r.t.weight.max(1) as f64),
                };
                (r.t.priority, order, r.clone())
            })
            .collect();
        c.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal)));
        let mut out: Vec<Arc<Route>> = c.into_iter().map(|x| x.2).collect();
        if let Some(moved) = conv.and_then(|k| self.overrides.get(k)) {
            if let Some(i) = out.iter().position(|r| r.t.id == moved) {
                let r = out.remove(i);
                out.insert(0, r);
            }
        }
        out
    }

    /// The conversation's own upstream: its rendezvous choice among every upstream of the channel
    /// and model at the highest priority, healthy or not.
    fn natural_upstream(&self, channel: &str, model: &Model, conv: ConvKey) -> Option<Uuid> {
        let routes = self.routes.read().unwrap().clone();
        let serving = routes.iter().filter(|r| r.serves(channel, model));
        let top = serving.clone().map(|r| r.t.priority).max()?;
        serving
            .filter(|r| r.t.priority == top)
            .min_by(|a, b| conv.score(a.t.id, a.t.weight).partial_cmp(&conv.score(b.t.id, b.t.weight)).unwrap_or(std::cmp::Ordering::Equal))
            .map(|r| r.t.id)
    }

    /// After an upstream answered a conversation's turn: its cache is there now. Moves away from
    /// the rendezvous choice are bound by an override (shared off the request path); a return to
    /// it drops the override. Returns whether the turn went to the conversation's upstream.
    fn rebind(&self, conv: ConvKey, user: Uuid, natural: Option<Uuid>, answered: Uuid, body: &[u8]) -> bool {
        let bound = self.overrides.get(conv);
        let sticky = bound.or(natural) == Some(answered);
        // only a moved conversation needs its cache's lifetime (a scan of the body)
        let ttl = || if memchr::memmem::find(body, b"\"1h\"").is_some() { affinity::TTL_1H } else { affinity::TTL_5M };
        if natural == Some(answered) {
            if bound.is_some() && self.overrides.remove(conv) {
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    if let Err(e) = affinity::forget(&pool, conv).await {
                        tracing::warn!(error = %e, "could not drop a conversation override");
                    }
                });
            }
        } else if bound == Some(answered) {
            self.overrides.touch(conv, ttl());
        } else {
            let expires = affinity::now_ms() + ttl().as_millis() as i64;
            self.overrides.set(conv, user, answered, expires);
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = affinity::persist(&pool, conv, user, answered, expires).await {
                    tracing::warn!(error = %e, "could not share a conversation override");
                }
            });
        }
        sticky
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<KeyAuth>, ApiError> {
        let presented = presented_key(headers).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "x-api-key header is required")
        })?;
        let hash = sha256(presented.as_bytes());
        let pool = self.pool.clone();
        let found = self
            .keys
            .try_get_with(hash, async move { keys::lookup_by_hash(&pool, &hash).await.map(|k| k.map(Arc::new)) })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "key lookup failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "Temporarily unable to verify the API key")
            })?;
        let key = found.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key"))?;
        if key.revoked_at.is_some() {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "This API key has been revoked"));
        }
        if key.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "This API key has expired"));
        }
        if key.user_status != "active" {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "permission_error", "This account is suspended"));
        }
        Ok(key)
    }
}

fn presented_key(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get(&X_API_KEY).and_then(|v| v.to_str().ok()).map(str::trim) {
        if !v.is_empty() {
            return Some(v);
        }
    }
    let auth = h.get(http::header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = auth.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

// ---------------------------------------------------------------------------------------------
// Errors in Anthropic's shape
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
    should_retry: Option<bool>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into(), retry_after: None, should_retry: None }
    }
    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
    fn should_retry(mut self, v: bool) -> Self {
        self.should_retry = Some(v);
        self
    }
    fn into_response(self, rid: &str) -> Response {
        let body = serde_json::json!({
            "type": "error",
            "error": {"type": self.kind, "message": self.message},
            "request_id": rid,
        });
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        set_request_id(h, rid);
        if let Some(s) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(r) = self.should_retry {
            h.insert(SHOULD_RETRY.clone(), HeaderValue::from_static(if r { "true" } else { "false" }));
        }
        resp
    }
}

fn set_request_id(h: &mut HeaderMap, rid: &str) {
    if let Ok(v) = HeaderValue::from_str(rid) {
        h.insert(REQUEST_ID.clone(), v);
    }
}

fn sse_error_event(kind: &str, message: &str, rid: &str) -> Bytes {
    let data = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": rid});
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

/// A string borrowed from the body when it has no escapes (so its position is known).
struct BodyStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for BodyStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BodyStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BodyStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BodyStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
struct RequestHead<'a> {
    #[serde(borrow, default)]
    model: Option<BodyStr<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    // What names the conversation (cache-aware routing, see `affinity`), read in the same pass.
    // Any shape is accepted: these fields are the upstream's to validate, not the gateway's.
    #[serde(borrow, default)]
    metadata: Lenient<SessionOf<'a>>,
    #[serde(borrow, default)]
    system: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    messages: Lenient<FirstOf<'a>>,
}

/// A value read when it has the expected shape, and skipped (as `Default`) when it has not.
#[derive(Default)]
struct Lenient<T>(T);

impl<'de, T: Default + serde::de::Visitor<'de, Value = T>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(T::default()).map(Lenient)
    }
}

/// `metadata.user_id`'s session id (borrowed from the body when it has no escapes).
#[derive(Default)]
struct SessionOf<'a>(Option<Cow<'a, str>>);

/// The first element of `messages`, as raw JSON.
#[derive(Default)]
struct FirstOf<'a>(Option<&'a serde_json::value::RawValue>);

/// Visitor methods that skip a value of a shape the visitor does not read (to its `Default`).
macro_rules! skip_shapes {
    (scalars) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
        fn visit_unit<E>(self) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
    };
    (str) => {
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> { Ok(Self::Value::default()) }
    };
    (seq) => {
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(Self::Value::default())
        }
    };
    (map) => {
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
            while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
            Ok(Self::Value::default())
        }
    };
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for SessionOf<'a> {
    type Value = SessionOf<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    skip_shapes!(scalars);
    skip_shapes!(str);
    skip_shapes!(seq);
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = a.next_key::<Cow<'de, str>>()? {
            if k == "user_id" {
                if let Some(BodyStr(v)) = a.next_value::<Lenient<MaybeStr<'de>>>()?.0 .0 {
                    found = match v {
                        Cow::Borrowed(s) => affinity::session_of_user_id(s).map(Cow::Borrowed),
                        Cow::Owned(s) => affinity::session_of_user_id(&s).map(|x| Cow::Owned(x.to_string())),
                    };
                }
            } else {
                a.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(SessionOf(found))
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for FirstOf<'a> {
    type Value = FirstOf<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    skip_shapes!(scalars);
    skip_shapes!(str);
    skip_shapes!(map);
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let first = a.next_element::<&'de serde_json::value::RawValue>()?;
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(FirstOf(first))
    }
}

/// A string, or None for a value of another shape.
#[derive(Default)]
struct MaybeStr<'a>(Option<BodyStr<'a>>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for MaybeStr<'a> {
    type Value = MaybeStr<'a>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(BodyStr(Cow::Borrowed(v)))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(MaybeStr(Some(BodyStr(Cow::Owned(v.to_string())))))
    }
    skip_shapes!(scalars);
    skip_shapes!(seq);
    skip_shapes!(map);
}

struct ParsedHead {
    model: String,
    /// byte span of the model string's contents in the body, when it was not escaped
    model_span: Option<(usize, usize)>,
    stream: bool,
    max_tokens: Option<u64>,
    /// the conversation the body names (a session, else its beginning), when it names one
    conversation: Option<affinity::Conversation>,
}

fn parse_head(body: &Bytes) -> Result<ParsedHead, ApiError> {
    let head: RequestHead = serde_json::from_slice(body).map_err(|e| {
        let msg = if e.is_data() {
            format!("Invalid request body: {e}")
        } else {
            "There was an error parsing the body as JSON".to_string()
        };
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
    })?;
    let Some(model) = head.model else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "model: Field required"));
    };
    let model = model.0;
    let span = match &model {
        Cow::Borrowed(s) => {
            let off = s.as_ptr() as usize - body.as_ptr() as usize;
            Some((off, s.len()))
        }
        Cow::Owned(_) => None,
    };
    fn raw(v: Option<&serde_json::value::RawValue>) -> &[u8] {
        v.map_or(&b""[..], |r| r.get().as_bytes())
    }
    let conversation = match head.metadata.0 .0 {
        Some(session) => Some(affinity::Conversation::session(&session)),
        None if head.system.is_some() || head.tools.is_some() || head.messages.0 .0.is_some() => {
            Some(affinity::Conversation::prefix(raw(head.system), raw(head.tools), raw(head.messages.0 .0)))
        }
        None => None,
    };
    Ok(ParsedHead {
        model: model.into_owned(),
        model_span: span,
        stream: head.stream.unwrap_or(false),
        max_tokens: head.max_tokens,
        conversation,
    })
}

/// The same body with another model, changing nothing else.
fn with_model(body: &Bytes, span: Option<(usize, usize)>, model: &str) -> Bytes {
    let quoted = serde_json::to_string(model).unwrap_or_default();
    let inner = &quoted[1..quoted.len().saturating_sub(1)];
    match span {
        Some((off, len)) => {
            let mut v = Vec::with_capacity(body.len() + inner.len());
            v.extend_from_slice(&body[..off]);
            v.extend_from_slice(inner.as_bytes());
            v.extend_from_slice(&body[off + len..]);
            Bytes::from(v)
        }
        None => {
            let mut v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            v["model"] = serde_json::Value::String(model.to_string());
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
    }
}

/// Client headers that reach the upstream: everything but hop-by-hop headers, the client's own
/// credentials, cookies, forwarding headers and Accept-Encoding (usage must be readable); plus
/// the upstream's credential.
fn forward_headers(src: &HeaderMap, auth_name: &HeaderName, auth_value: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(src.len() + 2);
    for (name, value) in src {
        let n = name.as_str();
        let skip = matches!(
            n,
            "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "proxy-authorization"
                | "proxy-connection" | "te" | "trailer" | "upgrade" | "x-api-key" | "authorization" | "cookie"
                | "accept-encoding" | "forwarded" | "x-real-ip" | "via"
        ) || n.starts_with("x-forwarded-");
        if !skip {
            h.append(name.clone(), value.clone());
        }
    }
    if !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    h.insert(auth_name.clone(), auth_value.clone());
    h
}

/// Upstream response headers that reach the client (never the upstream's identity, its rate
/// limits or its request id).
fn response_headers(src: &HeaderMap, rid: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for name in [http::header::CONTENT_TYPE, http::header::RETRY_AFTER] {
        if let Some(v) = src.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if let Some(v) = src.get(&SHOULD_RETRY) {
        h.insert(SHOULD_RETRY.clone(), v.clone());
    }
    set_request_id(&mut h, rid);
    h
}

// ---------------------------------------------------------------------------------------------
// The per-request ticket: holds, slots, and what goes into the usage record
// ---------------------------------------------------------------------------------------------

struct Ticket {
    gw: Arc<Inner>,
    rid: String,
    started: Instant,
    created_at: chrono::DateTime<chrono::Utc>,
    user_id: Uuid,
    key_id: Uuid,
    channel: String,
    rate: i64,
    endpoint: &'static str,
    stream: bool,
    requested_model: String,
    user_hold: Option<MoneyHold>,
    /// `user_hold` came from the user's off-plan lease
    off_plan: bool,
    key_hold: Option<MoneyHold>,
    slots: Vec<SlotGuard>,
    served_model: Option<String>,
    priced_model: Option<Arc<Model>>,
    upstream_id: Option<Uuid>,
    attempts: i32,
    status: i32,
    error_type: Option<String>,
    outcome: &'static str,
    usage: UsageReport,
    ttft: Option<Duration>,
    /// answered by the conversation's sticky upstream
    affinity: bool,
    done: bool,
}

impl Ticket {
    fn new(gw: Arc<Inner>, rid: String, started: Instant, key: &KeyAuth, endpoint: &'static str) -> Ticket {
        gw.inflight.fetch_add(1, Ordering::AcqRel);
        Ticket {
            gw,
            rid,
            started,
            created_at: chrono::Utc::now(),
            user_id: key.user_id,
            key_id: key.key_id,
            channel: key.channel.clone(),
            rate: 0,
            endpoint,
            stream: false,
            requested_model: String::new(),
            user_hold: None,
            off_plan: false,
            key_hold: None,
            slots: vec![],
            served_model: None,
            priced_model: None,
            upstream_id: None,
            attempts: 0,
            status: 0,
            error_type: None,
            outcome: "gateway_error",
            usage: UsageReport::default(),
            ttft: None,
            affinity: false,
            done: false,
        }
    }

    fn fail(&mut self, e: ApiError) -> Response {
        self.status = e.status.as_u16() as i32;
        self.error_type = Some(e.kind.to_string());
        e.into_response(&self.rid)
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let tokens = self.usage.tokens();
        let server_tools = self.usage.server_tools();
        let served_prices: Option<ModelPrices> = {
            let cat = self.gw.catalogue.read().unwrap().clone();
            match self.served_model.as_deref().and_then(|m| cat.lookup(m)) {
                Some(m) => {
                    // an upstream may answer with an alias: record the canonical id
                    if self.served_model.as_deref() != Some(m.id.as_str()) {
                        self.served_model = Some(m.id.clone());
                    }
                    Some(m.prices())
                }
                None => self.priced_model.as_ref().map(|m| m.prices()),
            }
        };
        let (cost, charge) = match served_prices {
            Some(p) if !(tokens.is_zero() && server_tools.is_zero()) => {
                let pr = pricing::price(&tokens, &server_tools, &p, self.rate);
                (pr.cost_micro_usd, pr.charge_micros)
            }
            _ => (0, 0),
        };
        // The whole charge is billed even above the hold (the usage record keeps both): the
        // leases take the excess from this instance's slice, the wallet may go below zero.
        let held = self.user_hold.as_ref().map_or(0, MoneyHold::amount);
        if charge > held {
            tracing::info!(request_id = %self.rid, charge, held, "charge above the hold");
        }
        if let Some(h) = self.user_hold.take() {
            h.settle(charge);
        }
        if let Some(h) = self.key_hold.take() {
            h.settle(charge);
        }
        self.slots.clear();
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
            outcome: self.outcome.to_string(),
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
        tracing::debug!(
            request_id = %rec.id, key_id = %self.key_id, model = %rec.requested_model,
            served = rec.served_model.as_deref().unwrap_or(""), status = rec.status, outcome = %rec.outcome,
            latency_ms = rec.latency_ms, charge_micros = rec.charge_micros, "request finished"
        );
        self.gw.usage.submit(rec);
        self.gw.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarding with retries, failover and fallback
// ---------------------------------------------------------------------------------------------

enum Attempted {
    /// 2xx: a JSON body read in full, or a stream whose first chunk arrived.
    Success { resp: http::Response<Incoming>, route: Arc<Route>, model: Arc<Model>, first: Bytes, slot: Option<SlotGuard> },
    /// An upstream refusal for the client, in CloudRouter's words (see [`refusal`]), e.g. 400
    /// "prompt is too long" word for word.
    Final { error: ApiError, route: Arc<Route>, model: Arc<Model> },
    /// Every attempt failed in a retryable way (or there was nothing to try).
    Exhausted { last: Option<Failure> },
}

enum Failure {
    Status { status: StatusCode, retry_after: Option<u64> },
    Timeout,
    Connect,
    /// The upstream's account refused (see [`Refusal::Account`]).
    Account,
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() || s.as_u16() == 529
}

/// What an upstream's non-retryable answer (4xx) means. The rule (docs/gateway.md, "Errors"):
/// * its account cannot serve — 401 (our credential), 402, a `billing_error`, its credit balance,
///   or its organisation, workspace or account disabled, suspended, banned or deactivated: out of
///   rotation, and the request fails over. Only what no request can cause counts: a customer must
///   not be able to take the pool out with a crafted request (a 403 about a feature is theirs);
/// * about the request itself — `invalid_request_error` (400), `not_found_error` (404),
///   `request_too_large` (413) whose message names nothing of the upstream's account: the message
///   word for word (Claude Code compacts on "prompt is too long");
/// * anything else: its status, in CloudRouter's words.
///
/// The upstream's `request_id` and headers never reach the client.
enum Refusal {
    /// The reason, for staff (the Upstreams page).
    Account(String),
    Request { kind: &'static str, message: String },
    Other,
}

/// Words that tie a message to the upstream's account (or carry its identifiers).
const ACCOUNT_WORDS: &[&str] = &[
    "credit", "billing", "balance", "organization", "organisation", "org-", "org_", "workspace", "wrk_", "account", "api key",
    "api_key", "x-api-key", "req_", "spend limit",
];

fn refusal(status: StatusCode, body: &[u8]) -> Refusal {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        message: String,
    }
    let (kind, message) = serde_json::from_slice::<Body>(body).map(|b| (b.error.kind, b.error.message)).unwrap_or_default();
    let lower = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let about_account = has(&["credit balance", "out of credit"])
        || (has(&["organization", "organisation", "workspace", "account"]) && has(&["disabled", "suspended", "banned", "deactivated"]));
    if matches!(status.as_u16(), 401 | 402) || kind == "billing_error" || about_account {
        let short: String = message.chars().take(300).collect();
        return Refusal::Account(format!("upstream {} {kind}: {short}", status.as_u16()));
    }
    let request_kind = match (status.as_u16(), kind.as_str()) {
        (400, "invalid_request_error") => Some("invalid_request_error"),
        (404, "not_found_error") => Some("not_found_error"),
        (413, "request_too_large") => Some("request_too_large"),
        _ => None,
    };
    match request_kind {
        Some(kind) if !message.is_empty() && !ACCOUNT_WORDS.iter().any(|w| lower.contains(w)) => Refusal::Request { kind, message },
        _ => Refusal::Other,
    }
}

/// The client's answer to an upstream refusal that is not about the upstream's account.
fn refusal_error(status: StatusCode, refusal: Refusal, should_retry: Option<bool>) -> ApiError {
    let e = match refusal {
        Refusal::Request { kind, message } => ApiError::new(status, kind, message),
        _ => ApiError::new(status, error_type(status), format!("The upstream refused the request (HTTP {}).", status.as_u16())),
    };
    match should_retry {
        Some(r) => e.should_retry(r),
        None => e,
    }
}

/// Anthropic's error type for a status (also the demo upstream's).
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

struct ForwardPlan<'a> {
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

impl Inner {
    async fn forward(&self, plan: ForwardPlan<'_>, attempts: &mut i32, started: Instant) -> Attempted {
        let mut last: Option<Failure> = None;
        let deadline = started + self.config.retry_budget;
        // a stream and count_tokens answer at once; a JSON message only when it is complete
        let timeout = if plan.stream || plan.endpoint_count { self.config.first_byte_timeout } else { self.config.response_timeout };
        for (i, model) in plan.models.iter().enumerate() {
            // The requested model (perhaps named by an alias) goes out exactly as the client
            // sent it; only a fallback to another model rewrites the body's `model` field.
            let body = if i == 0 { plan.body.clone() } else { with_model(plan.body, plan.model_span, &model.id) };
            for (j, route) in self.candidates(plan.channel, model, plan.endpoint_count, plan.conv).into_iter().enumerate() {
                let sticky = plan.conv.is_some() && i == 0 && j == 0;
                let breaker = route.breaker(plan.endpoint_count).clone();
                if *attempts as u32 >= self.config.max_attempts || (*attempts > 0 && Instant::now() >= deadline) {
                    return Attempted::Exhausted { last };
                }
                if !breaker.try_acquire() {
                    continue;
                }
                let slot = match route.t.concurrency_cap {
                    Some(cap) => {
                        // a conversation's own upstream is worth a short wait when it is busy
                        // (its cache is there); any other is skipped at once
                        let wait_until = Instant::now() + if sticky { plan.affinity_wait } else { Duration::ZERO };
                        let got = loop {
                            match self.leases.acquire_slot(&route.slot_scope, cap).await {
                                Ok(Some(g)) => break Some(g),
                                Ok(None) if Instant::now() < wait_until => tokio::time::sleep(AFFINITY_POLL).await,
                                Ok(None) => break None,
                                Err(e) => {
                                    tracing::warn!(error = %e, "upstream slot lease failed");
                                    break None;
                                }
                            }
                        };
                        match got {
                            Some(g) => Some(g),
                            None => continue,
                        }
                    }
                    None => None,
                };
                *attempts += 1;
                let t0 = Instant::now();
                let url = if plan.endpoint_count { &route.count_url } else { &route.messages_url };
                let mut req = http::Request::new(Full::new(body.clone()));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = match plan.query.filter(|q| !q.is_empty()) {
                    Some(q) => upstream::with_query(url, q),
                    None => url.clone(),
                };
                *req.headers_mut() = forward_headers(plan.headers, &route.auth_name, &route.auth_value);
                if let Some(auth) = &route.proxy_auth {
                    req.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth.clone());
                }
                let sent = tokio::time::timeout(timeout.saturating_sub(t0.elapsed()), self.client.request(req)).await;
                let resp = match sent {
                    Err(_) => {
                        breaker.failure("timeout");
                        last = Some(Failure::Timeout);
                        continue;
                    }
                    Ok(Err(e)) => {
                        breaker.failure(if e.is_connect() { "connect" } else { "transport" });
                        tracing::debug!(upstream = %route.t.name, error = ?e, "upstream request failed");
                        last = Some(if upstream::is_timeout(&e) { Failure::Timeout } else { Failure::Connect });
                        continue;
                    }
                    Ok(Ok(r)) => r,
                };
                let status = resp.status();
                if status.is_success() {
                    // JSON: the whole body; stream: the first chunk. A failure here is still
                    // before anything reached the client, so it can be retried.
                    let rest = timeout.saturating_sub(t0.elapsed());
                    let mut resp = resp;
                    let first = if plan.stream && !plan.endpoint_count {
                        match tokio::time::timeout(rest, std::future::poll_fn(|cx| upstream::poll_data(resp.body_mut(), cx))).await {
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
                    match first {
                        Ok(first) => {
                            breaker.success(t0.elapsed());
                            return Attempted::Success { resp, route, model: model.clone(), first, slot };
                        }
                        Err(what) => {
                            breaker.failure(what);
                            last = Some(if what == "timeout" { Failure::Timeout } else { Failure::Connect });
                            continue;
                        }
                    }
                }
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if retryable(status) {
                    breaker.failure(status.as_str());
                    last = Some(Failure::Status { status, retry_after });
                    continue;
                }
                let (parts, body) = resp.into_parts();
                let body = tokio::time::timeout(Duration::from_secs(30), body.collect())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                match refusal(status, &body) {
                    Refusal::Account(reason) => {
                        tracing::warn!(upstream = %route.t.name, %reason, "upstream account refused; out of rotation");
                        breaker.out_of_rotation(&reason, self.config.account_out_for);
                        last = Some(Failure::Account);
                        continue;
                    }
                    verdict => {
                        breaker.success(t0.elapsed());
                        let should_retry = parts.headers.get(&SHOULD_RETRY).and_then(|v| v.to_str().ok()).map(|v| v == "true");
                        return Attempted::Final { error: refusal_error(status, verdict, should_retry), route, model: model.clone() };
                    }
                }
            }
        }
        Attempted::Exhausted { last }
    }
}

fn exhausted_error(last: Option<Failure>, channel: &str, model: &str) -> ApiError {
    match last {
        None => ApiError::new(
            StatusCode::from_u16(529).unwrap(),
            "overloaded_error",
            format!("No healthy upstream is available for model {model} on the {channel} channel; please retry shortly"),
        )
        .should_retry(true),
        Some(Failure::Timeout) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "The upstream did not answer in time").should_retry(true)
        }
        Some(Failure::Connect) => ApiError::new(
            StatusCode::from_u16(529).unwrap(),
            "overloaded_error",
            "No upstream could be reached; please retry shortly",
        )
        .should_retry(true),
        Some(Failure::Account) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "No upstream can serve this request right now; please retry shortly")
                .should_retry(true)
        }
        Some(Failure::Status { status, retry_after }) => {
            let e = match status.as_u16() {
                429 => ApiError::new(status, "rate_limit_error", "Upstream capacity is rate limited; please retry shortly"),
                529 => ApiError::new(status, "overloaded_error", "Overloaded"),
                504 => ApiError::new(status, "timeout_error", "The upstream timed out"),
                _ => ApiError::new(status, "api_error", "Internal server error"),
            };
            let e = e.should_retry(true);
            match retry_after {
                Some(s) => e.retry_after(s),
                None if status.as_u16() == 429 => e.retry_after(5),
                None => e,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut too_large = false;
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(x) = src {
            if x.to_string().contains("length limit exceeded") {
                too_large = true;
                break;
            }
            src = x.source();
        }
        if too_large {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", format!("Request exceeds the maximum size of {limit} bytes"))
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "Could not read the request body")
        }
    })
}

impl Inner {
    /// The key's own request rate and concurrency limits, then its plan's (account-wide, on the
    /// plan's channels); concurrency slots go into `slots`.
    async fn admit(&self, key: &KeyAuth, slots: &mut Vec<SlotGuard>) -> Result<(), ApiError> {
        let on_plan = key.on_plan();
        let limits = [
            (key.rpm_limit, key.concurrency_limit, "key", key.key_id, None),
            (
                key.plan_rpm_limit.filter(|_| on_plan),
                key.plan_concurrency_limit.filter(|_| on_plan),
                "user",
                key.user_id,
                key.plan_name.as_deref(),
            ),
        ];
        for (rpm, concurrency, scope, id, plan) in limits {
            let who = || plan.map_or_else(|| "This API key is".to_string(), |p| format!("Your {p} plan is"));
            if let Some(rpm) = rpm {
                self.take_rate(&format!("rpm:{scope}:{id}"), rpm, &format!("{} limited to {rpm} requests per minute", who())).await?;
            }
            if let Some(limit) = concurrency {
                match self.leases.acquire_slot(&format!("{scope}:{id}"), limit).await {
                    Ok(Some(g)) => slots.push(g),
                    Ok(None) => {
                        return Err(ApiError::new(
                            StatusCode::TOO_MANY_REQUESTS,
                            "rate_limit_error",
                            format!("{} limited to {limit} concurrent requests", who()),
                        )
                        .retry_after(1))
                    }
                    Err(e) => return Err(db_unavailable(e)),
                }
            }
        }
        Ok(())
    }

    /// One request of a per-minute rate; 429 with `retry-after` beyond it.
    async fn take_rate(&self, scope: &str, rpm: i32, message: &str) -> Result<(), ApiError> {
        match self.leases.take_rate(scope, rpm).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(secs)) => Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message).retry_after(secs)),
            Err(e) => Err(db_unavailable(e)),
        }
    }
}

fn resolve_models(cat: &Catalogue, key: &KeyAuth, model: &str) -> Result<Vec<Arc<Model>>, ApiError> {
    let allowed = |id: &str| key.allowed_models.is_empty() || key.allowed_models.iter().any(|m| m == id);
    let primary = cat
        .lookup(model)
        .filter(|m| m.enabled)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found_error", format!("model: {model}")))?;
    if !allowed(&primary.id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("This API key is not allowed to use model {model}"),
        ));
    }
    let mut out = vec![primary.clone()];
    if key.allow_fallback {
        for f in &primary.fallbacks {
            if let Some(m) = cat.lookup(f) {
                if m.enabled && allowed(&m.id) && !out.iter().any(|o| o.id == m.id) {
                    out.push(m.clone());
                }
            }
        }
    }
    Ok(out)
}

/// `POST /v1/messages`. Once the body is read, the request runs in a task of its own: a client
/// that hangs up does not cancel the upstream work it started, which is billed when it answers
/// (a JSON answer is then dropped; a stream is drained, see [`MeteredStream`]).
async fn messages(State(gw): State<Arc<Inner>>, req: Request) -> Response {
    let started = Instant::now();
    let rid = request_id();
    let (parts, body) = req.into_parts();
    let key = match gw.authenticate(&parts.headers).await {
        Ok(k) => k,
        Err(e) => return e.into_response(&rid),
    };
    let mut t = Ticket::new(gw.clone(), rid, started, &key, "messages");
    let body = match read_body(body, gw.config.body_limit).await {
        Ok(b) => b,
        Err(e) => return t.fail(e),
    };
    let rid = t.rid.clone();
    match tokio::spawn(serve_messages(gw, t, key, parts, body)).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::error!(request_id = %rid, error = %e, "request task failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "Internal server error").into_response(&rid)
        }
    }
}

async fn serve_messages(gw: Arc<Inner>, mut t: Ticket, key: Arc<KeyAuth>, parts: http::request::Parts, body: Bytes) -> Response {
    let started = t.started;
    let head = match parse_head(&body) {
        Ok(h) => h,
        Err(e) => return t.fail(e),
    };
    // Only catalogue ids are recorded: the model field is client text and could carry anything.
    t.requested_model = "(unknown)".to_string();
    t.stream = head.stream;
    let Some(max_tokens) = head.max_tokens else {
        return t.fail(ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "max_tokens: Field required"));
    };
    let cat = gw.catalogue.read().unwrap().clone();
    let Some((channel, channel_scope)) = cat.channels.get(&key.channel) else {
        return t.fail(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "api_error", "The key's channel is not configured"));
    };
    t.rate = channel.rate_micros_per_usd;
    let models = match resolve_models(&cat, &key, &head.model) {
        Ok(m) => m,
        Err(e) => return t.fail(e),
    };
    t.priced_model = Some(models[0].clone());
    t.requested_model = models[0].id.clone();

    if let Err(e) = gw.admit(&key, &mut t.slots).await {
        return t.fail(e);
    }
    let on_plan = key.on_plan();
    match gw.leases.acquire_slot(channel_scope, channel.concurrency_capacity).await {
        Ok(Some(g)) => t.slots.push(g),
        Ok(None) => {
            return t.fail(
                ApiError::new(StatusCode::from_u16(529).unwrap(), "overloaded_error", format!("The {} channel is at capacity; please retry shortly", channel.name))
                    .should_retry(true),
            )
        }
        Err(e) => return t.fail(db_unavailable(e)),
    }

    // money: reserve the worst case before forwarding
    let prices = models.iter().map(|m| m.prices()).reduce(ModelPrices::max).unwrap_or_default();
    let hold = pricing::estimate_hold(body.len(), max_tokens, &prices, channel.rate_micros_per_usd);
    if key.spend_limit_micros.is_some() {
        match gw.leases.reserve(Budget::Key(key.key_id), hold).await {
            Ok(Some(h)) => t.key_hold = Some(h),
            Ok(None) => {
                return t.fail(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "billing_error",
                    format!("This API key's spending limit is reached (this request needs up to {})", crate::money::format_cny(hold)),
                ))
            }
            Err(e) => return t.fail(db_unavailable(e)),
        }
    }
    // a subscriber's request on a channel outside the plan is pay-as-you-go: its own lease
    t.off_plan = key.plan_channels.is_some() && !on_plan;
    let budget = if t.off_plan { Budget::UserOffPlan(key.user_id) } else { Budget::User(key.user_id) };
    match gw.leases.reserve(budget, hold).await {
        Ok(Some(h)) => t.user_hold = Some(h),
        Ok(None) => {
            return t.fail(ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "billing_error",
                match key.plan_name.as_deref().filter(|_| t.off_plan) {
                    Some(plan) => format!(
                        "Insufficient balance: your {plan} plan does not cover the {} channel, so this request is paid from your trial credit and balance, which cannot cover it (it holds up to {} while it runs). Top up, or use a key on one of your plan's channels.",
                        channel.name,
                        crate::money::format_cny(hold)
                    ),
                    None => format!(
                        "Insufficient balance: your trial credit, plan allowance and balance cannot cover this request (it holds up to {} while it runs). Top up or choose a plan in the console.",
                        crate::money::format_cny(hold)
                    ),
                },
            ))
        }
        Err(e) => return t.fail(db_unavailable(e)),
    }

    // the conversation: the session Claude Code names in a header, else what the body names
    let conv = parts
        .headers
        .get(&CLAUDE_CODE_SESSION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(affinity::Conversation::session)
        .or(head.conversation)
        .map(|c| c.of_key(key.key_id));
    let plan = ForwardPlan {
        endpoint_count: false,
        stream: head.stream,
        channel: &key.channel,
        models: &models,
        body: &body,
        model_span: head.model_span,
        headers: &parts.headers,
        query: parts.uri.query(),
        conv,
        affinity_wait: Duration::from_millis(channel.affinity_wait_ms.max(0) as u64),
    };
    let mut attempts = 0;
    let result = gw.forward(plan, &mut attempts, started).await;
    t.attempts = attempts;
    match result {
        Attempted::Exhausted { last } => {
            t.outcome = "upstream_error";
            t.fail(exhausted_error(last, &channel.name, &head.model))
        }
        Attempted::Final { error, route, model } => {
            t.outcome = "upstream_error";
            t.upstream_id = Some(route.t.id);
            t.served_model = Some(model.id.clone());
            t.fail(error)
        }
        Attempted::Success { resp, route, model, first, slot } => {
            t.upstream_id = Some(route.t.id);
            t.status = resp.status().as_u16() as i32;
            t.priced_model = Some(model.clone());
            if let Some(conv) = conv {
                let natural = gw.natural_upstream(&key.channel, &models[0], conv);
                t.affinity = gw.rebind(conv, key.user_id, natural, route.t.id, &body);
            }
            if let Some(s) = slot {
                t.slots.push(s);
            }
            let mut headers = response_headers(resp.headers(), &t.rid);
            if head.stream {
                let mut scanner = sse::SseScanner::new();
                scanner.feed(&first);
                if scanner.saw_content {
                    t.ttft = Some(started.elapsed());
                }
                let served = scanner.model.clone().unwrap_or_else(|| model.id.clone());
                if let Ok(v) = HeaderValue::from_str(&served) {
                    headers.insert(SERVED_MODEL.clone(), v);
                }
                headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                if !headers.contains_key(http::header::CONTENT_TYPE) {
                    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                }
                let stream = MeteredStream::new(
                    &gw,
                    StreamMeter { body: resp.into_body(), scanner, breaker: route.breakers.messages.clone(), ticket: t },
                    first,
                );
                let mut out = Response::new(Body::from_stream(stream));
                *out.headers_mut() = headers;
                out
            } else {
                #[derive(Deserialize)]
                struct JsonHead {
                    #[serde(default)]
                    model: Option<String>,
                    #[serde(default)]
                    usage: Option<UsageReport>,
                }
                let status = resp.status();
                match serde_json::from_slice::<JsonHead>(&first) {
                    Ok(h) => {
                        if let Some(u) = h.usage {
                            t.usage.merge(&u);
                        }
                        t.served_model = h.model.or_else(|| Some(model.id.clone()));
                    }
                    Err(_) => t.served_model = Some(model.id.clone()),
                }
                t.outcome = "ok";
                if let Some(Ok(v)) = t.served_model.as_deref().map(HeaderValue::from_str) {
                    headers.insert(SERVED_MODEL.clone(), v);
                }
                t.finish();
                let mut out = Response::new(Body::from(first));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                out
            }
        }
    }
}

fn db_unavailable(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "database unavailable for a lease");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "Temporarily unavailable; please retry shortly").should_retry(true)
}

/// What a stream's metering needs once the answer is handed to the client; it moves to a drain
/// task when the client leaves first.
struct StreamMeter {
    body: Incoming,
    scanner: sse::SseScanner,
    breaker: Arc<Breaker>,
    ticket: Ticket,
}

impl StreamMeter {
    /// Bills what the scanner read (the final usage, or the estimate of `billable_usage`).
    fn settle(mut self, outcome: &'static str) {
        self.ticket.outcome = outcome;
        if outcome == "upstream_error" {
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
            let next = tokio::time::timeout(idle, std::future::poll_fn(|cx| upstream::poll_data(&mut self.body, cx)));
            tokio::select! {
                r = next => match r {
                    Ok(Some(Ok(c))) => self.scanner.feed(&c),
                    _ => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        self.settle("client_closed");
    }
}

/// Passes a stream through chunk by chunk, reading usage, and settles when it ends: completed,
/// cut by the upstream, silent past the idle timeout, cut at shutdown, or — when the client goes
/// away, which drops it — after draining the upstream to its final usage.
struct MeteredStream {
    /// None once settled (or handed to a drain)
    meter: Option<StreamMeter>,
    first: Option<Bytes>,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    drain_timeout: Duration,
    closing: tokio::sync::watch::Receiver<bool>,
    /// resolves when shutdown cuts open streams
    cut_now: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl MeteredStream {
    fn new(gw: &Inner, meter: StreamMeter, first: Bytes) -> MeteredStream {
        let closing = gw.closing.subscribe();
        let mut waiter = closing.clone();
        MeteredStream {
            meter: Some(meter),
            first: Some(first),
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
    fn cut(&mut self, outcome: &'static str, kind: &'static str, message: &str) -> Option<Bytes> {
        let mut m = self.meter.take()?;
        if outcome != "shutdown" {
            m.breaker.failure(outcome);
        }
        let event = (!(m.scanner.saw_error || m.scanner.saw_stop)).then(|| {
            m.ticket.error_type = Some(kind.to_string());
            sse_error_event(kind, message, &m.ticket.rid)
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
                this.cut("shutdown", "overloaded_error", "The server is restarting; the stream was cut. Please retry.").map(Ok),
            );
        }
        match upstream::poll_data(&mut m.body, cx) {
            Poll::Ready(Some(Ok(c))) => {
                this.idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
                m.scanner.feed(&c);
                if m.ticket.ttft.is_none() && m.scanner.saw_content {
                    m.ticket.ttft = Some(m.ticket.started.elapsed());
                }
                Poll::Ready(Some(Ok(c)))
            }
            Poll::Ready(Some(Err(_))) => {
                Poll::Ready(this.cut("upstream_cut", "api_error", "The upstream connection was interrupted").map(Ok))
            }
            Poll::Ready(None) => {
                if m.scanner.saw_stop || m.scanner.saw_error {
                    let outcome = if m.scanner.saw_error { "upstream_error" } else { "ok" };
                    if let Some(m) = this.meter.take() {
                        m.settle(outcome);
                    }
                    Poll::Ready(None)
                } else {
                    Poll::Ready(this.cut("upstream_cut", "api_error", "The upstream stream ended early").map(Ok))
                }
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(this.cut("idle_timeout", "timeout_error", "The upstream stream stalled").map(Ok)),
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
            _ => m.settle("client_closed"),
        }
    }
}

/// `POST /v1/messages/count_tokens`: free, but under the key's and plan's limits like a message
/// (a key without a rate of its own gets `count_tokens_rpm`), and with circuits of its own.
async fn count_tokens(State(gw): State<Arc<Inner>>, req: Request) -> Response {
    let started = Instant::now();
    let rid = request_id();
    let (parts, body) = req.into_parts();
    let key = match gw.authenticate(&parts.headers).await {
        Ok(k) => k,
        Err(e) => return e.into_response(&rid),
    };
    // held until the answer is built
    let mut slots = Vec::new();
    if let Err(e) = gw.admit(&key, &mut slots).await {
        return e.into_response(&rid);
    }
    if key.rpm_limit.is_none() {
        let rpm = gw.config.count_tokens_rpm;
        let msg = format!("This API key is limited to {rpm} token-counting requests per minute");
        if let Err(e) = gw.take_rate(&format!("count_tokens:key:{}", key.key_id), rpm, &msg).await {
            return e.into_response(&rid);
        }
    }
    let body = match read_body(body, gw.config.body_limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(&rid),
    };
    let head = match parse_head(&body) {
        Ok(h) => h,
        Err(e) => return e.into_response(&rid),
    };
    let cat = gw.catalogue.read().unwrap().clone();
    let models = match resolve_models(&cat, &key, &head.model) {
        Ok(m) => m,
        Err(e) => return e.into_response(&rid),
    };
    let plan = ForwardPlan {
        endpoint_count: true,
        stream: false,
        channel: &key.channel,
        models: &models[..1],
        body: &body,
        model_span: head.model_span,
        headers: &parts.headers,
        query: parts.uri.query(),
        // counting tokens reads no cache
        conv: None,
        affinity_wait: Duration::ZERO,
    };
    let mut attempts = 0;
    match gw.forward(plan, &mut attempts, started).await {
        Attempted::Exhausted { last } => exhausted_error(last, &key.channel, &head.model).into_response(&rid),
        Attempted::Final { error, .. } => error.into_response(&rid),
        Attempted::Success { resp, first, .. } => {
            let mut out = Response::new(Body::from(first));
            *out.status_mut() = resp.status();
            *out.headers_mut() = response_headers(resp.headers(), &rid);
            out
        }
    }
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    after_id: Option<String>,
    before_id: Option<String>,
}

fn model_json(m: &Model) -> serde_json::Value {
    serde_json::json!({
        "type": "model",
        "id": m.id,
        "display_name": m.display_name,
        "created_at": m.released_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

fn json_response(rid: &str, v: serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(resp.headers_mut(), rid);
    resp
}

async fn list_models(State(gw): State<Arc<Inner>>, headers: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    let rid = request_id();
    let key = match gw.authenticate(&headers).await {
        Ok(k) => k,
        Err(e) => return e.into_response(&rid),
    };
    let cat = gw.catalogue.read().unwrap().clone();
    let visible: Vec<&Arc<Model>> = cat
        .listed
        .iter()
        .filter(|m| key.allowed_models.is_empty() || key.allowed_models.iter().any(|a| *a == m.id))
        .collect();
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let (start, end) = if let Some(before) = &q.before_id {
        let end = visible.iter().position(|m| &m.id == before).unwrap_or(0);
        (end.saturating_sub(limit), end)
    } else {
        let start = q.after_id.as_ref().and_then(|a| visible.iter().position(|m| &m.id == a)).map(|i| i + 1).unwrap_or(0);
        (start, (start + limit).min(visible.len()))
    };
    let page = &visible[start.min(end)..end];
    let has_more = if q.before_id.is_some() { start > 0 } else { end < visible.len() };
    json_response(
        &rid,
        serde_json::json!({
            "data": page.iter().map(|m| model_json(m)).collect::<Vec<_>>(),
            "has_more": has_more,
            "first_id": page.first().map(|m| m.id.clone()),
            "last_id": page.last().map(|m| m.id.clone()),
        }),
    )
}

async fn get_model(State(gw): State<Arc<Inner>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let rid = request_id();
    let key = match gw.authenticate(&headers).await {
        Ok(k) => k,
        Err(e) => return e.into_response(&rid),
    };
    let cat = gw.catalogue.read().unwrap().clone();
    match cat.lookup(&id).filter(|m| m.enabled && (key.allowed_models.is_empty() || key.allowed_models.contains(&m.id))) {
        Some(m) => json_response(&rid, model_json(m)),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found_error", format!("model: {id}")).into_response(&rid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_rewrite_keeps_everything_else() {
        let body = Bytes::from_static(br#"{"max_tokens":5,"model":"claude-a","messages":[{"role":"user","content":"model"}],"x":{"model":"keep"}}"#);
        let h = parse_head(&body).unwrap();
        assert_eq!(h.model, "claude-a");
        let out = with_model(&body, h.model_span, "claude-bbb");
        assert_eq!(
            &out[..],
            br#"{"max_tokens":5,"model":"claude-bbb","messages":[{"role":"user","content":"model"}],"x":{"model":"keep"}}"#
        );
        let esc = Bytes::from_static(br#"{"model":"claude\u002da","max_tokens":1}"#);
        let h = parse_head(&esc).unwrap();
        assert_eq!(h.model, "claude-a");
        assert!(h.model_span.is_none());
        let v: serde_json::Value = serde_json::from_slice(&with_model(&esc, None, "claude-b")).unwrap();
        assert_eq!(v["model"], "claude-b");
    }

    #[test]
    fn key_extraction() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer cr-abc"));
        assert_eq!(presented_key(&h), Some("cr-abc"));
        h.insert("x-api-key", HeaderValue::from_static("cr-xyz"));
        assert_eq!(presented_key(&h), Some("cr-xyz"));
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), None);
    }

    #[test]
    fn forwarded_headers_drop_credentials() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("cr-secret"));
        h.insert("authorization", HeaderValue::from_static("Bearer cr-secret"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h.insert("anthropic-beta", HeaderValue::from_static("a,b"));
        h.insert("accept-encoding", HeaderValue::from_static("gzip"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        let f = forward_headers(&h, &http::header::AUTHORIZATION, &HeaderValue::from_static("Bearer sk-up"));
        assert_eq!(f.get("authorization").unwrap(), "Bearer sk-up");
        assert!(f.get("x-api-key").is_none() && f.get_all("authorization").iter().count() == 1);
        assert!(f.get("accept-encoding").is_none() && f.get("x-forwarded-for").is_none());
        assert_eq!(f.get("anthropic-beta").unwrap(), "a,b");
        assert_eq!(f.get("content-type").unwrap(), "application/json");
    }

    /// A Claude Code-shaped body of about `kb` KB: a long system prompt, tools with JSON schemas, a
    /// conversation with tool results, `cache_control` on the last message, `model` late.
    fn claude_code_body(kb: usize, session: bool) -> Bytes {
        let tools: Vec<serde_json::Value> = (0..40)
            .map(|i| serde_json::json!({"name": format!("tool_{i}"), "description": "Runs a thing. ".repeat(20),
                "input_schema": {"type": "object", "properties": {"path": {"type": "string", "description": "A path"}, "limit": {"type": "integer"}}, "required": ["path"]}}))
            .collect();
        let mut messages = vec![];
        let mut size = 0;
        let mut i = 0;
        while size < kb * 1024 {
            let result = "line of a file with some code in it; ".repeat(60);
            size += result.len() + 200;
            messages.push(serde_json::json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": result}]}));
            messages.push(serde_json::json!({"role": "assistant", "content": [{"type": "tool_use", "id": format!("toolu_{}", i + 1), "name": "tool_1", "input": {"path": "src/main.rs"}}]}));
            i += 2;
        }
        messages.push(serde_json::json!({"role": "user", "content": [{"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}}]}));
        let mut v = serde_json::json!({
            "max_tokens": 32000, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code. ".repeat(600), "cache_control": {"type": "ephemeral"}}],
            "tools": tools, "messages": messages,
            "thinking": {"type": "enabled", "budget_tokens": 31999},
        });
        if session {
            v["metadata"] = serde_json::json!({"user_id": "user_1a2b_account_3c4d_session_7f0e5c1a-0b1c-4d2e-9f3a-5b6c7d8e9f01"});
        }
        v["model"] = serde_json::json!("claude-sonnet-4-6");
        Bytes::from(serde_json::to_vec(&v).unwrap())
    }

    /// The request head's cost on Claude Code-sized bodies: `parse_head` (model, stream,
    /// max_tokens and the conversation key, one pass) against the floor of any parse (a validating
    /// skip of the whole body, `IgnoredAny`) and a full `serde_json::Value` parse. Run with
    /// `bash bench/request_head.sh`; results in bench/RESULTS.md.
    #[test]
    #[ignore]
    fn bench_request_head() {
        fn per_op(runs: u32, f: &dyn Fn()) -> f64 {
            f();
            let t = std::time::Instant::now();
            for _ in 0..runs {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / runs as f64
        }
        println!("| body | conversation from | parse_head µs | skip-only floor µs | ratio | full Value parse µs |");
        println!("|---|---|---|---|---|---|");
        for kb in [30, 120, 300] {
            for session in [true, false] {
                let body = claude_code_body(kb, session);
                let head = parse_head(&body).unwrap();
                assert!(head.conversation.is_some());
                let runs = (30_000 / kb as u32).max(50);
                let ours = per_op(runs, &|| {
                    std::hint::black_box(parse_head(std::hint::black_box(&body)).unwrap());
                });
                let floor = per_op(runs, &|| {
                    std::hint::black_box(serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body)).unwrap());
                });
                let full = per_op(runs, &|| {
                    std::hint::black_box(serde_json::from_slice::<serde_json::Value>(std::hint::black_box(&body)).unwrap());
                });
                println!(
                    "| {} KB | {} | {ours:.1} | {floor:.1} | {:.2} | {full:.1} |",
                    body.len() / 1024,
                    if session { "session (metadata.user_id)" } else { "prefix hash" },
                    ours / floor
                );
            }
        }
    }

    mod properties {
        use super::super::parse_head;
        use bytes::Bytes;
        use proptest::prelude::*;
        use serde_json::Value;

        /// Any JSON value, nested, with `model`, `stream` and `max_tokens` keys appearing inside.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "[a-z\"\\\\é\u{1F600} ]{0,12}".prop_map(Value::String),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec((prop_oneof![Just("model".to_string()), Just("stream".to_string()), "[a-z]{1,6}"], inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        /// A JSON string literal of `s`, each character escaped as `\uXXXX` or not at random.
        fn quoted(s: &str, escape: &[bool]) -> String {
            let mut out = String::from("\"");
            for (i, c) in s.chars().enumerate() {
                if escape.get(i).copied().unwrap_or(false) && (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    let one = serde_json::to_string(&c.to_string()).unwrap();
                    out.push_str(&one[1..one.len() - 1]);
                }
            }
            out.push('"');
            out
        }

        /// A top-level object: the other members in order, with `model` inserted at `at`
        /// (`copies` times in a row), in the spacing chosen.
        fn object(others: &[(String, Value)], model: &str, escape: &[bool], at: usize, copies: usize, spaced: bool) -> String {
            let sep = if spaced { " , \n\t" } else { "," };
            let colon = if spaced { " : " } else { ":" };
            let mut members: Vec<String> =
                others.iter().map(|(k, v)| format!("{}{colon}{}", serde_json::to_string(k).unwrap(), v)).collect();
            let m = format!("\"model\"{colon}{}", quoted(model, escape));
            for _ in 0..copies {
                members.insert(at.min(members.len()), m.clone());
            }
            format!("{{{}}}", members.join(sep))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_head(&Bytes::from(b));
            }

            #[test]
            fn the_checked_model_is_the_one_a_json_parser_reads(
                others in prop::collection::vec(("[a-z_]{1,8}".prop_filter("not model", |k| k != "model"), json_value()), 0..6),
                model in "[a-z0-9.\\-]{1,24}|claude-[a-zé\u{1F600}\"\\\\]{1,8}",
                escape in prop::collection::vec(any::<bool>(), 0..32),
                at in 0usize..8,
                spaced in any::<bool>(),
            ) {
                // keys of `others` may repeat: keep the last, as the object is built
                let mut seen = std::collections::HashSet::new();
                let mut uniq: Vec<(String, Value)> = others.into_iter().rev().filter(|(k, _)| seen.insert(k.clone())).collect();
                uniq.reverse();
                let body = object(&uniq, &model, &escape, at, 1, spaced);
                let full: Value = serde_json::from_str(&body).unwrap();
                let head = parse_head(&Bytes::from(body.clone()));
                let stream_ok = full.get("stream").is_none_or(|v| v.is_boolean() || v.is_null());
                let max_ok = full.get("max_tokens").is_none_or(|v| v.is_u64() || v.is_null());
                if stream_ok && max_ok {
                    let head = head.unwrap_or_else(|e| panic!("{body}: {}", e.message));
                    prop_assert_eq!(Some(head.model.as_str()), full["model"].as_str());
                    // the span, when there is one, points at the model's bytes in the body
                    if let Some((off, len)) = head.model_span {
                        prop_assert_eq!(&body.as_bytes()[off..off + len], head.model.as_bytes());
                    }
                } else {
                    prop_assert!(head.is_err());
                }
            }

            #[test]
            fn a_duplicated_model_key_is_refused(
                first in "[a-z0-9\\-]{1,16}",
                second in "[a-z0-9\\-]{1,16}",
                gap in prop::collection::vec(("[a-z]{1,6}".prop_filter("not model", |k| k != "model"), json_value()), 0..3),
            ) {
                // a parser that keeps the first copy and one that keeps the last would disagree on
                // the model: the gateway refuses the body instead of guessing which one is served
                let mut members: Vec<String> = vec![format!("\"model\":{}", serde_json::to_string(&first).unwrap())];
                members.extend(gap.iter().map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v)));
                members.push(format!("\"model\":{}", serde_json::to_string(&second).unwrap()));
                let body = format!("{{{}}}", members.join(","));
                prop_assert!(parse_head(&Bytes::from(body)).is_err());
            }
        }
    }
}
