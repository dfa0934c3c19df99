//! A simulated Claude that speaks Anthropic's Messages API exactly (JSON and SSE), used as the
//! built-in demo upstream and, with injectable failures ([`FakeBehavior`]), by the tests.

use crate::crypto::Crypto;
use crate::gateway::ApiError;
use crate::upstreams::{self, NewUpstream, UpstreamError};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Exact usage numbers the fake reports (for billing tests).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_5m_tokens: i64,
    pub cache_write_1h_tokens: i64,
    pub cache_read_tokens: i64,
}

/// How the fake upstream behaves. The default is a healthy, realistic Claude.
#[derive(Debug, Clone, Default)]
pub struct FakeBehavior {
    /// Answer with this HTTP status and Anthropic's error JSON ...
    pub fail_status: Option<u16>,
    /// ... for this many requests (None = every request).
    pub fail_times: Option<u64>,
    /// ... with this body instead of the standard one for the status (an upstream's own words).
    pub fail_body: Option<String>,
    /// Send 200 headers, then break the connection before any body byte.
    pub drop_connection: bool,
    /// Wait this long before answering (before the first byte).
    pub first_byte_delay: Duration,
    /// Wait this long between stream events.
    pub event_delay: Duration,
    /// Streams: break the connection after this many events.
    pub cut_after_events: Option<usize>,
    /// Streams: go silent (connection kept open) after this many events.
    pub stall_after_events: Option<usize>,
    /// Streams: after this many events, send this raw SSE text (an upstream's own `error` event)
    /// and end.
    pub stream_error: Option<(usize, String)>,
    /// Streams: send every event in writes of at most this many bytes (events split across chunks).
    pub chunk_bytes: Option<usize>,
    /// Report exactly these token counts.
    pub usage: Option<PinnedUsage>,
    /// Report this many web searches (`usage.server_tool_use`), as a request with the web
    /// search tool would.
    pub web_search_requests: Option<i64>,
    /// Behave like Anthropic's prompt cache (per fake, like one upstream account): every
    /// `cache_control` breakpoint in `messages` writes its prefix, and a request whose prefix up
    /// to a breakpoint was written before reads it (tokens counted as bytes / 4).
    pub prompt_cache: bool,
    /// Answer with a JSON text describing the received request (path, query, headers, body).
    pub echo: bool,
    /// Report this model instead of the requested one.
    pub served_model: Option<String>,
    /// Refuse requests whose credential is not this one.
    pub require_key: Option<String>,
}

/// What the fake saw of a request.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub struct FakeState {
    behavior: RwLock<FakeBehavior>,
    /// Largest request body read; larger ones get 413 `request_too_large`.
    body_limit: usize,
    requests: AtomicU64,
    failures: AtomicU64,
    /// requests inside `first_byte_delay` now, and the most there were at once
    waiting: AtomicU64,
    peak_waiting: AtomicU64,
    last: Mutex<Option<RecordedRequest>>,
    models_seen: Mutex<Vec<String>>,
    /// prefixes written to the prompt cache (`FakeBehavior::prompt_cache`), by hash
    cached: Mutex<std::collections::HashSet<u64>>,
}

impl Default for FakeState {
    fn default() -> Self {
        FakeState {
            behavior: RwLock::default(),
            // as large as the gateway forwards, so tests can send what a real upstream takes
            body_limit: 64 << 20,
            requests: AtomicU64::default(),
            failures: AtomicU64::default(),
            waiting: AtomicU64::default(),
            peak_waiting: AtomicU64::default(),
            last: Mutex::default(),
            models_seen: Mutex::default(),
            cached: Mutex::default(),
        }
    }
}

/// The built-in demo's body limit: it answers a few words, so it reads no more than this.
pub const DEMO_BODY_LIMIT: usize = 1 << 20;

/// A fake upstream listening on 127.0.0.1 (port chosen by the OS).
pub struct FakeUpstream {
    pub addr: SocketAddr,
    /// "http://127.0.0.1:PORT" (use as an upstream's base URL).
    pub base_url: String,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start(behavior: FakeBehavior) -> std::io::Result<FakeUpstream> {
        let state = Arc::new(FakeState { behavior: RwLock::new(behavior), ..Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = fake_router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(crate::gateway::nodelay(listener), app).await;
        });
        Ok(FakeUpstream { addr, base_url: format!("http://{addr}"), state, task })
    }

    pub fn set(&self, b: FakeBehavior) {
        *self.state.behavior.write().unwrap() = b;
        self.state.failures.store(0, Ordering::SeqCst);
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The most requests that were inside `first_byte_delay` at once since the last call (what a
    /// concurrency limit bounds); resets the count.
    pub fn take_peak_in_flight(&self) -> u64 {
        self.state.peak_waiting.swap(self.state.waiting.load(Ordering::SeqCst), Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.state.last.lock().unwrap().clone()
    }

    /// Models of the requests received, in order.
    pub fn models_seen(&self) -> Vec<String> {
        self.state.models_seen.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The built-in demo upstream (healthy, realistic), mounted by the server under `/_demo`. It
/// answers only while `active()` says demo mode is on (404 `not_found_error` otherwise, checked
/// per request) and reads at most [`DEMO_BODY_LIMIT`] of a body.
pub fn router(active: impl Fn() -> bool + Clone + Send + Sync + 'static) -> Router {
    let state = Arc::new(FakeState { body_limit: DEMO_BODY_LIMIT, ..FakeState::default() });
    fake_router(state).layer(axum::middleware::from_fn(move |req: Request, next: axum::middleware::Next| {
        let active = active.clone();
        async move {
            if active() {
                next.run(req).await
            } else {
                anthropic_error(404, "The demo upstream is off: this server has real upstreams.")
            }
        }
    }))
}

/// A fake upstream with shared, changeable behaviour.
pub fn fake_router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/v1/messages", post(fake_messages))
        .route("/v1/messages/count_tokens", post(fake_count_tokens))
        .route("/v1/models", get(fake_models))
        .with_state(state)
}

/// Registers the demo upstream (serving every channel) when no upstream exists yet, and points an
/// existing one at this instance.
pub async fn ensure_demo_upstream(pool: &PgPool, crypto: &Crypto, base_url: &str) -> Result<(), UpstreamError> {
    // the demo upstream is this process's own `/_demo`: after a restart on another address it
    // must follow, or every demo call would fail over to nothing
    sqlx::query("UPDATE upstreams SET base_url = $1, updated_at = now() WHERE is_demo AND base_url <> $1").bind(base_url).execute(pool).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM upstreams").fetch_one(pool).await?;
    if n > 0 {
        return Ok(());
    }
    let channels: Vec<String> = sqlx::query_scalar("SELECT code FROM channels ORDER BY sort").fetch_all(pool).await?;
    let r = upstreams::create_demo(
        pool,
        crypto,
        NewUpstream {
            name: "Demo (simulated Claude)".into(),
            base_url: base_url.into(),
            api_key: format!("demo-{}", crate::util::random_base62(24)),
            channels,
            priority: 0,
            weight: 1,
            concurrency_cap: None,
            enabled: true,
        },
    )
    .await;
    match r {
        Ok(_) | Err(UpstreamError::Duplicate) => Ok(()),
        Err(e) => Err(e),
    }
}

fn anthropic_error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let e = ApiError::new(status, message);
    if status == 429 { e.retry_after(1) } else { e }.into_response()
}

fn presented(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|s| s.to_string())
}

/// Common checks; returns the parsed body or the error response.
async fn intake(state: &FakeState, req: Request) -> Result<(Value, usize, FakeBehavior, RecordedRequest), Response> {
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(body, state.body_limit).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            anthropic_error(413, "Request body is too large for the demo upstream.")
        } else {
            anthropic_error(400, "unreadable body")
        }
    })?;
    let body = body.to_bytes();
    state.requests.fetch_add(1, Ordering::SeqCst);
    let rec = RecordedRequest {
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    *state.last.lock().unwrap() = Some(rec.clone());
    let b = state.behavior.read().unwrap().clone();
    if !b.first_byte_delay.is_zero() {
        struct Waiting<'a>(&'a AtomicU64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let now = state.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_waiting.fetch_max(now, Ordering::SeqCst);
        // counted out even when the caller hangs up meanwhile
        let _waiting = Waiting(&state.waiting);
        tokio::time::sleep(b.first_byte_delay).await;
    }
    let key = presented(&parts.headers);
    match (&key, &b.require_key) {
        (None, _) => return Err(anthropic_error(401, "x-api-key header is required")),
        (Some(k), Some(want)) if k != want => return Err(anthropic_error(401, "invalid x-api-key")),
        _ => {}
    }
    if let Some(st) = b.fail_status {
        let n = state.failures.fetch_add(1, Ordering::SeqCst);
        if b.fail_times.is_none_or(|t| n < t) {
            let msg = match st {
                529 => "Overloaded",
                429 => "Number of request tokens has exceeded your per-minute rate limit",
                400 => "prompt is too long: 250000 tokens > 200000 maximum",
                _ => "Internal server error",
            };
            return Err(match &b.fail_body {
                Some(body) => {
                    let mut r = (StatusCode::from_u16(st).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body.clone()).into_response();
                    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
                    r
                }
                None => anthropic_error(st, msg),
            });
        }
    }
    let v: Value = serde_json::from_slice(&body).map_err(|_| anthropic_error(400, "There was an error parsing the body as JSON"))?;
    match v.get("model").and_then(Value::as_str) {
        Some(m) => state.models_seen.lock().unwrap().push(m.to_string()),
        None => return Err(anthropic_error(400, "model: Field required")),
    }
    Ok((v, body.len(), b, rec))
}

fn estimate_input_tokens(body_len: usize) -> i64 {
    (body_len as i64 / 4).max(8)
}

const DEMO_TEXT: &str = "Hello! This answer comes from CloudRouter's built-in demo upstream, a simulated Claude that \
speaks the Anthropic Messages API exactly, so you can try keys, streaming, usage records and charges before \
connecting a real upstream. Ask staff to add one on the upstreams page; the demo steps aside once real upstreams exist.";

fn reply_text(v: &Value, rec: &RecordedRequest, b: &FakeBehavior) -> String {
    if b.echo {
        let headers: serde_json::Map<String, Value> = rec
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
            .collect();
        return json!({
            "path": rec.path,
            "query": rec.query,
            "headers": headers,
            "body": String::from_utf8_lossy(&rec.body),
        })
        .to_string();
    }
    let max = v.get("max_tokens").and_then(Value::as_u64).unwrap_or(256) as usize;
    if let Some(result) = last_tool_result(v) {
        return format!("The tool answered: {result}");
    }
    // roughly one token per word piece: keep within max_tokens
    DEMO_TEXT.split(' ').take(max.max(1)).collect::<Vec<_>>().join(" ")
}

/// The text of a `tool_result` in the last message, if it has one.
fn last_tool_result(v: &Value) -> Option<String> {
    let last = v.get("messages")?.as_array()?.last()?;
    let block = last.get("content")?.as_array()?.iter().find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))?;
    Some(match block.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(""),
        _ => String::new(),
    })
}

/// The tool Claude would call: with tools offered (and `tool_choice` not `none`), unless the last
/// message brings a tool's result, the named tool or the first one, its input made from its
/// schema's properties (strings "example", numbers 1, booleans true).
fn tool_call(v: &Value) -> Option<(String, Value)> {
    let tools = v.get("tools")?.as_array()?;
    let choice = v.get("tool_choice");
    if choice.and_then(|c| c.get("type")).and_then(Value::as_str) == Some("none") || last_tool_result(v).is_some() {
        return None;
    }
    let named = choice.and_then(|c| c.get("name")).and_then(Value::as_str);
    let tool = tools.iter().find(|t| named.is_none_or(|n| t.get("name").and_then(Value::as_str) == Some(n)))?;
    let props = tool.pointer("/input_schema/properties").and_then(Value::as_object);
    let input: serde_json::Map<String, Value> = props
        .into_iter()
        .flatten()
        .map(|(k, p)| {
            let example = match p.get("type").and_then(Value::as_str) {
                Some("number") | Some("integer") => json!(1),
                Some("boolean") => json!(true),
                _ => json!("example"),
            };
            (k.clone(), example)
        })
        .collect();
    Some((tool.get("name")?.as_str()?.to_string(), Value::Object(input)))
}

impl FakeState {
    /// Usage as Anthropic's prompt cache would report it for this request, and the prefixes it
    /// writes: each breakpoint writes the prefix up to it; a read is the longest prefix written
    /// before that ends at a message boundary up to 20 messages before the last breakpoint. The
    /// `cache_control` markers themselves are not part of what is cached.
    fn prompt_cache_usage(&self, v: &Value, body_len: usize, text: &str) -> PinnedUsage {
        fn strip(v: &Value) -> Value {
            match v {
                Value::Object(m) => Value::Object(m.iter().filter(|(k, _)| *k != "cache_control").map(|(k, v)| (k.clone(), strip(v))).collect()),
                Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
                other => other.clone(),
            }
        }
        let messages = v.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let head = strip(&json!([v.get("system"), v.get("tools")])).to_string();
        let stripped: Vec<Value> = messages.iter().map(strip).collect();
        let prefix = |i: usize| {
            let p = format!("{head}{}", Value::Array(stripped[..=i].to_vec()));
            (xxhash_rust::xxh3::xxh3_64(p.as_bytes()), p.len() as i64 / 4)
        };
        let breakpoints: Vec<usize> =
            (0..messages.len()).filter(|&i| messages[i].to_string().contains("\"cache_control\"")).collect();
        let Some(&last) = breakpoints.last() else {
            return PinnedUsage { input_tokens: estimate_input_tokens(body_len), output_tokens: (text.len() as i64 / 4).max(1), ..Default::default() };
        };
        let mut cached = self.cached.lock().unwrap();
        let read = (last.saturating_sub(20)..=last).map(prefix).filter(|(h, _)| cached.contains(h)).map(|p| p.1).max().unwrap_or(0);
        let written = prefix(last).1;
        cached.extend(breakpoints.into_iter().map(|i| prefix(i).0));
        let total = estimate_input_tokens(body_len).max(written);
        PinnedUsage {
            input_tokens: total - written,
            output_tokens: (text.len() as i64 / 4).max(1),
            cache_write_5m_tokens: written - read,
            cache_write_1h_tokens: 0,
            cache_read_tokens: read,
        }
    }
}

fn usage_for(b: &FakeBehavior, body_len: usize, text: &str) -> PinnedUsage {
    b.usage.unwrap_or(PinnedUsage {
        input_tokens: estimate_input_tokens(body_len),
        output_tokens: (text.len() as i64 / 4).max(1),
        ..Default::default()
    })
}

fn usage_json(u: &PinnedUsage, b: &FakeBehavior) -> Value {
    let mut v = json!({
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_5m_tokens + u.cache_write_1h_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m_tokens,
            "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
        },
        "output_tokens": u.output_tokens,
        "service_tier": "standard",
    });
    if let Some(n) = b.web_search_requests {
        v["server_tool_use"] = json!({"web_search_requests": n, "web_fetch_requests": 0});
    }
    v
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

async fn fake_messages(State(state): State<Arc<FakeState>>, req: Request) -> Response {
    let (v, body_len, b, rec) = match intake(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if v.get("max_tokens").and_then(Value::as_u64).is_none() {
        return anthropic_error(400, "max_tokens: Field required");
    }
    if !v.get("messages").is_some_and(Value::is_array) {
        return anthropic_error(400, "messages: Field required");
    }
    let model = b.served_model.clone().unwrap_or_else(|| v["model"].as_str().unwrap_or("claude").to_string());
    let tool = tool_call(&v);
    let text = match &tool {
        Some((_, input)) => input.to_string(),
        None => reply_text(&v, &rec, &b),
    };
    let (block, stop_reason) = match &tool {
        Some((name, _)) => (json!({"type": "tool_use", "id": format!("toolu_{}", crate::util::random_base62(20)), "name": name, "input": {}}), "tool_use"),
        None => (json!({"type": "text", "text": ""}), "end_turn"),
    };
    let usage = if b.prompt_cache { state.prompt_cache_usage(&v, body_len, &text) } else { usage_for(&b, body_len, &text) };
    let id = crate::util::message_id();
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);

    if b.drop_connection {
        let s = futures::stream::once(async { Err::<Bytes, std::io::Error>(std::io::Error::other("dropped")) });
        let mut r = Response::new(Body::from_stream(s));
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static(if stream { "text/event-stream; charset=utf-8" } else { "application/json" }),
        );
        return r;
    }

    if !stream {
        let content = match &tool {
            Some((_, input)) => {
                let mut b = block.clone();
                b["input"] = input.clone();
                b
            }
            None => json!({"type": "text", "text": text}),
        };
        let body = json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [content],
            "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage_json(&usage, &b),
        });
        let mut r = (StatusCode::OK, body.to_string()).into_response();
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        r.headers_mut().insert("request-id", HeaderValue::from_str(&crate::util::request_id()).unwrap());
        r.headers_mut().insert("anthropic-ratelimit-requests-remaining", HeaderValue::from_static("999"));
        return r;
    }

    let mut events: Vec<Bytes> = Vec::new();
    let mut start_usage = usage_json(&usage, &b);
    start_usage["output_tokens"] = json!(1);
    if start_usage.get("server_tool_use").is_some() {
        // searches happen while the answer is generated: counted in message_delta
        start_usage["server_tool_use"] = json!({"web_search_requests": 0, "web_fetch_requests": 0});
    }
    events.push(sse(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    ));
    events.push(sse(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": block}),
    ));
    events.push(Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"));
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(24) {
        let s: String = piece.iter().collect();
        let delta = match tool {
            Some(_) => json!({"type": "input_json_delta", "partial_json": s}),
            None => json!({"type": "text_delta", "text": s}),
        };
        events.push(sse("content_block_delta", &json!({"type": "content_block_delta", "index": 0, "delta": delta})));
    }
    events.push(sse("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    events.push(sse(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": usage_json(&usage, &b)}),
    ));
    events.push(sse("message_stop", &json!({"type": "message_stop"})));
    if let Some((after, error)) = &b.stream_error {
        events.truncate(*after);
        events.push(Bytes::from(error.clone()));
    }
    if let Some(n) = b.chunk_bytes {
        events = events.iter().flat_map(|e| e.chunks(n.max(1)).map(Bytes::copy_from_slice).collect::<Vec<_>>()).collect();
    }

    let cut = b.cut_after_events;
    let stall = b.stall_after_events;
    let delay = b.event_delay;
    let s = futures::stream::unfold((events.into_iter().enumerate(), false), move |(mut it, stop)| async move {
        if stop {
            return None;
        }
        match it.next() {
            Some((i, ev)) => {
                if cut == Some(i) {
                    return Some((Err(std::io::Error::other("cut")), (it, true)));
                }
                if stall == Some(i) {
                    futures::future::pending::<()>().await;
                }
                if !delay.is_zero() && i > 0 {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok::<Bytes, std::io::Error>(ev), (it, false)))
            }
            None => None,
        }
    });
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream; charset=utf-8"));
    r.headers_mut().insert("cache-control", HeaderValue::from_static("no-cache"));
    r.headers_mut().insert("request-id", HeaderValue::from_str(&crate::util::request_id()).unwrap());
    r
}

async fn fake_count_tokens(State(state): State<Arc<FakeState>>, req: Request) -> Response {
    let (_v, body_len, b, _) = match intake(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let n = b.usage.map(|u| u.input_tokens).unwrap_or_else(|| estimate_input_tokens(body_len));
    let mut r = (StatusCode::OK, json!({"input_tokens": n}).to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

async fn fake_models() -> Response {
    let mut r = (StatusCode::OK, json!({"data": [], "has_more": false, "first_id": null, "last_id": null}).to_string()).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}
