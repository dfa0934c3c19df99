//! Shared test harness: a gateway on 127.0.0.1:0 in front of in-process fake upstreams.
#![allow(dead_code)]

pub mod records;

use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::demo::{FakeBehavior, FakeUpstream};
use cloudrouter_core::gateway::{Gateway, GatewayConfig};
use cloudrouter_core::keys::{self, NewKey};
use cloudrouter_core::billing::ledger::{self, LedgerKind, Memo};
use cloudrouter_core::upstreams::{self, NewUpstream};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

pub const SECRET: &str = "test-server-secret";

pub struct Gw {
    pub gw: Gateway,
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Gw {
    pub async fn start(pool: &PgPool, config: GatewayConfig) -> Gw {
        let gw = Gateway::start(pool.clone(), Crypto::from_secret(SECRET), config).await.expect("gateway starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = gw.router();
        let task = tokio::spawn(async move {
            // with the peer's address, as the server serves it (per-key IP allow-lists read it)
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            axum::serve(cloudrouter_core::gateway::nodelay(listener), app).await.unwrap();
        });
        Gw { gw, base: format!("http://{addr}"), task }
    }

    pub async fn sync(&self) {
        self.gw.sync_usage().await;
    }

    pub async fn stop(self) {
        self.task.abort();
        self.gw.shutdown().await;
    }
}

pub fn fast_config() -> GatewayConfig {
    GatewayConfig {
        connect_timeout: Duration::from_millis(500),
        first_byte_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(3),
        retry_budget: Duration::from_secs(5),
        grace_period: Duration::from_secs(5),
        usage_flush_interval: Duration::from_millis(10),
        ..GatewayConfig::default()
    }
}

pub async fn add_upstream(pool: &PgPool, name: &str, base_url: &str, channels: &[&str], priority: i32) -> Uuid {
    upstreams::create(
        pool,
        &Crypto::from_secret(SECRET),
        NewUpstream {
            name: name.into(),
            base_url: base_url.into(),
            api_key: format!("sk-upstream-{name}-credential"),
            channels: channels.iter().map(|s| s.to_string()).collect(),
            priority,
            weight: 1,
            concurrency_cap: None,
            enabled: true,
        },
    )
    .await
    .unwrap()
}

pub async fn fake(name: &str, pool: &PgPool, b: FakeBehavior, priority: i32) -> (FakeUpstream, Uuid) {
    let f = FakeUpstream::start(b).await.unwrap();
    let id = add_upstream(pool, name, &f.base_url, &["value", "smart", "stable"], priority).await;
    (f, id)
}

static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A customer with the given balance (decimal CNY string).
pub async fn customer(pool: &PgPool, balance: &str) -> Uuid {
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let u = cloudrouter_core::accounts::create_user(pool, &format!("c{n}-{}@example.com", Uuid::new_v4()), "correct horse battery staple 9")
        .await
        .unwrap();
    let amount = MicroCny::parse(balance).unwrap();
    if amount.is_positive() {
        let memo = Memo::Staff { text: Some("test top-up".into()) };
        ledger::adjust(pool, u.id, amount, LedgerKind::Credit, &memo, None).await.unwrap();
    }
    u.id
}

pub async fn key(pool: &PgPool, user: Uuid, channel: &str) -> String {
    key_with(pool, user, NewKey { name: "test".into(), channel: channel.into(), ..Default::default() }).await
}

pub async fn key_with(pool: &PgPool, user: Uuid, k: NewKey) -> String {
    keys::create(pool, user, k).await.unwrap().1
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn body(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "max_tokens": 1000,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello there"}],
    })
}

pub async fn post(base: &str, key: &str, v: &serde_json::Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(v)
        .send()
        .await
        .unwrap()
}

/// `n` requests at once with `body`, spread in turn over the gateway instances; their statuses.
pub async fn post_spread(gws: &[&Gw], key: &str, n: usize, body: &serde_json::Value) -> Vec<u16> {
    let futs = (0..n).map(|i| async move { post(&gws[i % gws.len()].base, key, body).await.status().as_u16() });
    futures::future::join_all(futs).await
}

pub async fn error_of(r: reqwest::Response) -> (u16, String, String, reqwest::header::HeaderMap) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    (status, v["error"]["type"].as_str().unwrap().to_string(), v["error"]["message"].as_str().unwrap().to_string(), headers)
}

/// SSE event names in order.
pub fn event_names(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.strip_prefix("event: ")).map(str::to_string).collect()
}

pub async fn usage_rows(pool: &PgPool, user: Uuid) -> Vec<cloudrouter_core::usage::UsageRecord> {
    cloudrouter_core::usage::list(pool, &cloudrouter_core::usage::UsageFilter { user_id: Some(user), limit: Some(1000), ..Default::default() })
        .await
        .unwrap()
}

/// A throwaway RSA key with its PEMs (private PKCS#8, public SPKI), as payment providers hand
/// them out. Small, for speed: tests check protocol, not key strength.
pub fn rsa_pair() -> (rsa::RsaPrivateKey, String, String) {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let k = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 768).unwrap();
    let sk = k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let pk = k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap();
    (k, sk, pk)
}

// not every test file needs each of these
#[allow(unused_imports)]
pub use cloudrouter_core::billing::orders::PaymentMethod;
#[allow(unused_imports)]
pub use cloudrouter_core::money::{CnyPerUsd, MicroCny, MicroUsd};
#[allow(unused_imports)]
pub use cloudrouter_core::usage::Outcome;

/// Micro-CNY, for amounts written as test literals.
pub fn cny(micros: i64) -> MicroCny {
    MicroCny::from_micros(micros)
}

/// Micro-USD, for amounts written as test literals.
pub fn usd(micros: i64) -> MicroUsd {
    MicroUsd::from_micros(micros)
}

/// A staff ledger row's memo with the given text.
pub fn memo(text: &str) -> Memo {
    Memo::Staff { text: Some(text.into()) }
}
