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
//!    5xx and 529 as long as nothing was sent to the client, then — only if the key allows it —
//!    on the model's Claude fallbacks,
//! 7. pass the answer through (streams chunk by chunk) while reading usage from it,
//! 8. settle: price the usage, return the unused hold, and hand the usage record to the batch
//!    writer, which debits the balance through the ledger off the request path.
//!
//! Billing rule shown to customers: a failed request costs nothing; a failed-over request is billed
//! once, for the attempt that answered; a stream that is cut (upstream failure, idle timeout or the
//! client leaving) is billed for the usage the upstream had reported in the events delivered so far
//! (never more than was delivered); a charge never exceeds the hold taken before forwarding.

pub mod health;
mod leases;
pub mod sse;
mod upstream;

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
            max_attempts: 3,
            retry_budget: Duration::from_secs(30),
            grace_period: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(10),
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
            max_attempts: num("CLOUDROUTER_MAX_ATTEMPTS").map(|v| v.clamp(1, 10) as u32).unwrap_or(d.max_attempts),
            retry_budget: ms("CLOUDROUTER_RETRY_BUDGET_MS", d.retry_budget),
            grace_period: ms("CLOUDROUTER_SHUTDOWN_GRACE_MS", d.grace_period),
            breaker_failures: num("CLOUDROUTER_BREAKER_FAILURES").map(|v| v as u32).unwrap_or(d.breaker_failures),
            breaker_open_for: ms("CLOUDROUTER_BREAKER_OPEN_MS", d.breaker_open_for),
            usage_batch_rows: num("CLOUDROUTER_USAGE_BATCH_ROWS").map(|v| v.max(1) as usize).unwrap_or(d.usage_batch_rows),
            usage_flush_interval: ms("CLOUDROUTER_USAGE_FLUSH_MS", d.usage_flush_interval),
        }
    }
}

// Header names written on every request, parsed once (a string name is parsed at each use).
static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");
static SERVED_MODEL: HeaderName = HeaderName::from_static("x-cloudrouter-served-model");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

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

struct Route {
    t: UpstreamTarget,
    breaker: Arc<Breaker>,
    /// parsed once; cloning a `Uri` is much cheaper than parsing one per request
    messages_url: Uri,
    count_url: Uri,
    auth_name: HeaderName,
    auth_value: HeaderValue,
    /// for plain HTTP through a proxy with credentials (`upstream::proxy_authorization`)
    proxy_auth: Option<HeaderValue>,
    slot_scope: String,
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
    breakers: Mutex<HashMap<Uuid, Arc<Breaker>>>,
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
        routes.iter().map(|r| r.breaker.snapshot(r.t.id, &r.t.name)).collect()
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

    /// Waits for in-flight requests (up to the grace period), flushes every usage record and
    /// settlement, and gives this instance's leases back.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.inner.config.grace_period;
        while self.inner.inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.inner.inflight.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(in_flight = left, "shutting down with requests still in flight");
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
    async fn reload_all(&self) {
        self.keys.invalidate_all();
        if let Err(e) = self.reload_catalogue().await {
            tracing::warn!(error = %e, "catalogue reload failed");
        }
        if let Err(e) = self.reload_routes().await {
            tracing::warn!(error = %e, "upstream reload failed");
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
        let mut breakers = self.breakers.lock().unwrap();
        for t in targets {
            let breaker = breakers
                .entry(t.id)
                .or_insert_with(|| Arc::new(Breaker::new(self.config.breaker_failures, self.config.breaker_open_for)))
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
                breaker,
                t,
            }));
        }
        drop(breakers);
        *self.routes.write().unwrap() = Arc::new(routes);
        Ok(())
    }

    /// Candidate upstreams for a channel and model: higher priority first; within a priority,
    /// a weighted random order; open circuits left out.
    fn candidates(&self, channel: &str, model: &Model) -> Vec<Arc<Route>> {
        use rand::Rng;
        let routes = self.routes.read().unwrap().clone();
        let mut rng = rand::thread_rng();
        let mut c: Vec<(i32, f64, Arc<Route>)> = routes
            .iter()
            .filter(|r| {
                r.t.channels.iter().any(|c| c == channel)
                    && (r.t.models.is_empty() || r.t.models.iter().any(|m| *m == model.id || model.aliases.contains(m)))
                    && r.breaker.maybe_available()
            })
            .map(|r| {
                // Efraimidis–Spirakis: u^(1/w), larger first
                let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                (r.t.priority, u.powf(1.0 / r.t.weight.max(1) as f64), r.clone())
            })
            .collect();
        c.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal)));
        c.into_iter().map(|x| x.2).collect()
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
}

struct ParsedHead {
    model: String,
    /// byte span of the model string's contents in the body, when it was not escaped
    model_span: Option<(usize, usize)>,
    stream: bool,
    max_tokens: Option<u64>,
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
    Ok(ParsedHead { model: model.into_owned(), model_span: span, stream: head.stream.unwrap_or(false), max_tokens: head.max_tokens })
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
        let (cost, mut charge) = match served_prices {
            Some(p) if !tokens.is_zero() => {
                let pr = pricing::price(&tokens, &p, self.rate);
                (pr.cost_micro_usd, pr.charge_micros)
            }
            _ => (0, 0),
        };
        let user_hold = self.user_hold.as_ref().map_or(0, MoneyHold::amount);
        let key_hold = self.key_hold.as_ref().map_or(0, MoneyHold::amount);
        let cap = if key_hold > 0 { user_hold.min(key_hold) } else { user_hold };
        if charge > cap {
            tracing::warn!(request_id = %self.rid, charge, hold = cap, "charge above the hold; capped at the hold");
            charge = cap;
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
            cost_micro_usd: cost,
            charge_micros: charge,
            latency_ms: latency.as_millis().min(i32::MAX as u128) as i32,
            ttft_ms: self.ttft.map(|t| t.as_millis().min(i32::MAX as u128) as i32),
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
    /// An upstream answer that is the client's to see (e.g. 400 "prompt is too long").
    Final { status: StatusCode, headers: HeaderMap, body: Bytes, route: Arc<Route>, model: Arc<Model> },
    /// Every attempt failed in a retryable way (or there was nothing to try).
    Exhausted { last: Option<Failure> },
}

enum Failure {
    Status { status: StatusCode, retry_after: Option<u64> },
    Timeout,
    Connect,
}

fn retryable(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() || s == StatusCode::UNAUTHORIZED || s.as_u16() == 529
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
            for route in self.candidates(plan.channel, model) {
                if *attempts as u32 >= self.config.max_attempts || (*attempts > 0 && Instant::now() >= deadline) {
                    return Attempted::Exhausted { last };
                }
                if !route.breaker.try_acquire() {
                    continue;
                }
                let slot = match route.t.concurrency_cap {
                    Some(cap) => match self.leases.acquire_slot(&route.slot_scope, cap).await {
                        Ok(Some(g)) => Some(g),
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "upstream slot lease failed");
                            continue;
                        }
                    },
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
                        route.breaker.failure("timeout");
                        last = Some(Failure::Timeout);
                        continue;
                    }
                    Ok(Err(e)) => {
                        route.breaker.failure(if e.is_connect() { "connect" } else { "transport" });
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
                            route.breaker.success(t0.elapsed());
                            return Attempted::Success { resp, route, model: model.clone(), first, slot };
                        }
                        Err(what) => {
                            route.breaker.failure(what);
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
                    route.breaker.failure(status.as_str());
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
                route.breaker.success(t0.elapsed());
                return Attempted::Final { status, headers: parts.headers, body, route, model: model.clone() };
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
        Some(Failure::Status { status, retry_after }) => {
            let e = match status.as_u16() {
                429 => ApiError::new(status, "rate_limit_error", "Upstream capacity is rate limited; please retry shortly"),
                529 => ApiError::new(status, "overloaded_error", "Overloaded"),
                401 | 403 => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "No upstream accepted the request; please retry shortly"),
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

    // limits: the key's own, then its plan's (account-wide, on the plan's channels)
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
            match gw.leases.take_rate(&format!("rpm:{scope}:{id}"), rpm).await {
                Ok(Ok(())) => {}
                Ok(Err(secs)) => {
                    return t.fail(
                        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", format!("{} limited to {rpm} requests per minute", who()))
                            .retry_after(secs),
                    )
                }
                Err(e) => return t.fail(db_unavailable(e)),
            }
        }
        if let Some(limit) = concurrency {
            match gw.leases.acquire_slot(&format!("{scope}:{id}"), limit).await {
                Ok(Some(g)) => t.slots.push(g),
                Ok(None) => {
                    return t.fail(
                        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", format!("{} limited to {limit} concurrent requests", who()))
                            .retry_after(1),
                    )
                }
                Err(e) => return t.fail(db_unavailable(e)),
            }
        }
    }
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

    let plan = ForwardPlan {
        endpoint_count: false,
        stream: head.stream,
        channel: &key.channel,
        models: &models,
        body: &body,
        model_span: head.model_span,
        headers: &parts.headers,
        query: parts.uri.query(),
    };
    let mut attempts = 0;
    let result = gw.forward(plan, &mut attempts, started).await;
    t.attempts = attempts;
    match result {
        Attempted::Exhausted { last } => {
            t.outcome = "upstream_error";
            t.fail(exhausted_error(last, &channel.name, &head.model))
        }
        Attempted::Final { status, headers, body, route, model } => {
            t.outcome = "upstream_error";
            t.status = status.as_u16() as i32;
            t.upstream_id = Some(route.t.id);
            t.served_model = Some(model.id.clone());
            t.error_type = serde_json::from_slice::<ErrorJson>(&body).ok().map(|e| e.error.kind);
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status;
            *resp.headers_mut() = response_headers(&headers, &t.rid);
            resp
        }
        Attempted::Success { resp, route, model, first, slot } => {
            t.upstream_id = Some(route.t.id);
            t.status = resp.status().as_u16() as i32;
            t.priced_model = Some(model.clone());
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
                let idle = gw.config.idle_timeout;
                let stream = MeteredStream {
                    body: resp.into_body(),
                    first: Some(first),
                    scanner,
                    idle_timeout: idle,
                    idle: Box::pin(tokio::time::sleep(idle)),
                    breaker: route.breaker.clone(),
                    ticket: t,
                    finished: false,
                    completed: false,
                };
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

#[derive(Deserialize)]
struct ErrorJson {
    error: ErrorJsonInner,
}
#[derive(Deserialize)]
struct ErrorJsonInner {
    #[serde(rename = "type")]
    kind: String,
}

fn db_unavailable(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "database unavailable for a lease");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "api_error", "Temporarily unavailable; please retry shortly").should_retry(true)
}

/// Passes a stream through chunk by chunk, reading usage, and settles when it ends (including
/// when the client goes away, which drops it).
struct MeteredStream {
    body: Incoming,
    first: Option<Bytes>,
    scanner: sse::SseScanner,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    breaker: Arc<Breaker>,
    ticket: Ticket,
    finished: bool,
    completed: bool,
}

impl MeteredStream {
    fn cut(&mut self, outcome: &'static str, message: &str) -> Option<Bytes> {
        self.finished = true;
        self.ticket.outcome = outcome;
        self.breaker.failure(outcome);
        if self.scanner.saw_error || self.scanner.saw_stop {
            return None;
        }
        let kind = if outcome == "idle_timeout" { "timeout_error" } else { "api_error" };
        self.ticket.error_type = Some(kind.to_string());
        Some(sse_error_event(kind, message, &self.ticket.rid))
    }

    fn on_chunk(&mut self, c: &Bytes) {
        self.scanner.feed(c);
        if self.ticket.ttft.is_none() && self.scanner.saw_content {
            self.ticket.ttft = Some(self.ticket.started.elapsed());
        }
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
        if this.finished {
            return Poll::Ready(None);
        }
        match upstream::poll_data(&mut this.body, cx) {
            Poll::Ready(Some(Ok(c))) => {
                this.idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
                this.on_chunk(&c);
                Poll::Ready(Some(Ok(c)))
            }
            Poll::Ready(Some(Err(_))) => {
                Poll::Ready(this.cut("upstream_cut", "The upstream connection was interrupted").map(Ok))
            }
            Poll::Ready(None) => {
                if this.scanner.saw_stop || this.scanner.saw_error {
                    this.finished = true;
                    this.completed = true;
                    if this.scanner.saw_error {
                        this.ticket.outcome = "upstream_error";
                        this.ticket.error_type = this.scanner.error_type.clone();
                    } else {
                        this.ticket.outcome = "ok";
                    }
                    Poll::Ready(None)
                } else {
                    Poll::Ready(this.cut("upstream_cut", "The upstream stream ended early").map(Ok))
                }
            }
            Poll::Pending => match this.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(this.cut("idle_timeout", "The upstream stream stalled").map(Ok)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for MeteredStream {
    fn drop(&mut self) {
        if !self.finished {
            self.ticket.outcome = "client_closed";
        }
        self.ticket.usage = self.scanner.usage;
        self.ticket.served_model = self.scanner.model.take().or_else(|| self.ticket.priced_model.as_ref().map(|m| m.id.clone()));
        self.ticket.finish();
    }
}

async fn count_tokens(State(gw): State<Arc<Inner>>, req: Request) -> Response {
    let started = Instant::now();
    let rid = request_id();
    let (parts, body) = req.into_parts();
    let key = match gw.authenticate(&parts.headers).await {
        Ok(k) => k,
        Err(e) => return e.into_response(&rid),
    };
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
    };
    let mut attempts = 0;
    match gw.forward(plan, &mut attempts, started).await {
        Attempted::Exhausted { last } => exhausted_error(last, &key.channel, &head.model).into_response(&rid),
        Attempted::Final { status, headers, body, .. } => {
            let mut resp = Response::new(Body::from(body));
            *resp.status_mut() = status;
            *resp.headers_mut() = response_headers(&headers, &rid);
            resp
        }
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
}
