//! Usage records for tests: a builder, and the usage writer's batch path to store them.

use chrono::{DateTime, Utc};
use cloudrouter_core::money::{MicroCny, MicroUsd};
use cloudrouter_core::pricing::TokenUsage;
use cloudrouter_core::usage::{Outcome, UsageRecord, UsageWriter, WriterConfig};
use sqlx::PgPool;
use uuid::Uuid;

pub const MODELS: [&str; 3] = ["claude-sonnet-4-6", "claude-opus-4-8", "claude-haiku-4-5-20251001"];

pub async fn user(pool: &PgPool, email: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id")
        .bind(email)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A test usage record: `rec(id, at, user)` is a 200 on the smart channel for `MODELS[0]` with
/// tokens and cost from `n = 1`; the setters change one field each.
pub struct Rec(pub UsageRecord);

pub fn rec(id: impl Into<String>, at: DateTime<Utc>, user: Uuid) -> Rec {
    Rec(UsageRecord {
        id: id.into(),
        created_at: at,
        user_id: user,
        key_id: None,
        channel: "smart".into(),
        endpoint: "messages".into(),
        requested_model: MODELS[0].into(),
        served_model: None,
        upstream_id: None,
        stream: false,
        status: 200,
        error_type: None,
        outcome: Outcome::Ok,
        attempts: 1,
        tokens: TokenUsage::default(),
        server_tools: Default::default(),
        cost_micro_usd: MicroUsd::from_micros(0),
        charge_micros: MicroCny::from_micros(0),
        held_micros: MicroCny::from_micros(0),
        latency_ms: 100,
        ttft_ms: None,
        affinity: false,
        off_plan: false,
    })
    .n(1)
}

impl Rec {
    pub fn key(mut self, key: Option<Uuid>) -> Rec {
        self.0.key_id = key;
        self
    }
    pub fn channel(mut self, channel: &str) -> Rec {
        self.0.channel = channel.into();
        self
    }
    pub fn model(mut self, model: &str) -> Rec {
        self.0.requested_model = model.into();
        self
    }
    pub fn served(mut self, served: Option<&str>) -> Rec {
        self.0.served_model = served.map(Into::into);
        self
    }
    pub fn upstream(mut self, upstream: Option<Uuid>) -> Rec {
        self.0.upstream_id = upstream;
        self
    }
    /// The status, and the outcome and error type that go with it.
    pub fn status(mut self, status: i32) -> Rec {
        self.0.status = status;
        self.0.error_type = (status >= 400).then(|| "api_error".to_string());
        self.0.outcome = if status >= 400 { Outcome::UpstreamError } else { Outcome::Ok };
        self
    }
    /// Tokens and cost that grow with `n` (so sums tell records apart).
    pub fn n(mut self, n: i64) -> Rec {
        self.0.tokens = TokenUsage { input_tokens: 100 + n, output_tokens: 7 * n, cache_write_5m_tokens: n % 5, cache_write_1h_tokens: n % 3, cache_read_tokens: 11 * (n % 4) };
        self.0.cost_micro_usd = MicroUsd::from_micros(1_000 + 13 * n);
        self
    }
    /// The latency, and a time to first token for a stream (None: not a stream).
    pub fn timing(mut self, latency: i32, ttft: Option<i32>) -> Rec {
        self.0.latency_ms = latency;
        self.0.ttft_ms = ttft;
        self.0.stream = ttft.is_some();
        self
    }
    /// The outcome alone (`status` sets the usual one for a status).
    pub fn outcome(mut self, outcome: Outcome) -> Rec {
        self.0.outcome = outcome;
        self
    }
    /// The charge and the hold it was taken against (micro-CNY).
    pub fn charge(mut self, charge: i64, held: i64) -> Rec {
        self.0.charge_micros = MicroCny::from_micros(charge);
        self.0.held_micros = MicroCny::from_micros(held);
        self
    }
    /// Held from the customer's off-plan lease.
    pub fn off_plan(mut self, off_plan: bool) -> Rec {
        self.0.off_plan = off_plan;
        self
    }
    pub fn endpoint(mut self, endpoint: &str) -> Rec {
        self.0.endpoint = endpoint.into();
        self
    }
    pub fn build(self) -> UsageRecord {
        self.0
    }
}

/// Writes records through the usage writer (the gateway's batch path: many rows per INSERT).
pub async fn write(pool: &PgPool, rows: &[UsageRecord], batch: usize) {
    let w = UsageWriter::start(
        pool.clone(),
        Uuid::new_v4(),
        WriterConfig { batch_rows: batch, flush_interval: std::time::Duration::from_millis(5), ..WriterConfig::default() },
    )
    .await
    .unwrap();
    for r in rows {
        w.send(r.clone()).await;
    }
    w.sync().await;
    w.shutdown().await;
}
