//! The model catalogue (staff-editable list prices) and the channels (rates and capacity).

use crate::money::{CnyPerUsd, MicroUsd};
use crate::pricing::{LongContext, ModelPrices, TokenPrices};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct Model {
    pub id: String,
    pub display_name: String,
    pub family: String,
    /// micro-USD per million tokens
    pub input_price: MicroUsd,
    pub output_price: MicroUsd,
    pub cache_write_5m_price: MicroUsd,
    pub cache_write_1h_price: MicroUsd,
    pub cache_read_price: MicroUsd,
    /// Above this many input tokens (of every kind) the whole request is priced at the
    /// `long_context_*` prices; None: no long-context pricing.
    #[serde(default)]
    pub long_context_threshold_tokens: Option<i64>,
    #[serde(default)]
    pub long_context_input_price: MicroUsd,
    #[serde(default)]
    pub long_context_output_price: MicroUsd,
    #[serde(default)]
    pub long_context_cache_write_5m_price: MicroUsd,
    #[serde(default)]
    pub long_context_cache_write_1h_price: MicroUsd,
    #[serde(default)]
    pub long_context_cache_read_price: MicroUsd,
    /// micro-USD per 1,000 server-tool requests
    #[serde(default)]
    pub web_search_price_per_1k: MicroUsd,
    #[serde(default)]
    pub web_fetch_price_per_1k: MicroUsd,
    pub fallbacks: Vec<String>,
    /// Other names the API accepts for this model (e.g. `claude-sonnet-4-5` for
    /// `claude-sonnet-4-5-20250929`). Requests may use them; only `id` is listed, priced and recorded.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub enabled: bool,
    pub released_at: DateTime<Utc>,
    pub deprecated_at: Option<DateTime<Utc>>,
    pub sort: i32,
}

impl Model {
    pub fn prices(&self) -> ModelPrices {
        ModelPrices {
            tokens: TokenPrices {
                input: self.input_price,
                output: self.output_price,
                cache_write_5m: self.cache_write_5m_price,
                cache_write_1h: self.cache_write_1h_price,
                cache_read: self.cache_read_price,
            },
            long_context: self.long_context_threshold_tokens.map(|threshold_tokens| LongContext {
                threshold_tokens,
                prices: TokenPrices {
                    input: self.long_context_input_price,
                    output: self.long_context_output_price,
                    cache_write_5m: self.long_context_cache_write_5m_price,
                    cache_write_1h: self.long_context_cache_write_1h_price,
                    cache_read: self.long_context_cache_read_price,
                },
            }),
            web_search_per_1k: self.web_search_price_per_1k,
            web_fetch_per_1k: self.web_fetch_price_per_1k,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct Channel {
    pub code: String,
    pub name: String,
    pub description: String,
    /// micro-CNY charged per 1 USD of list price
    pub rate_micros_per_usd: CnyPerUsd,
    pub concurrency_capacity: i32,
    pub sort: i32,
    /// How long a request waits for its conversation's saturated upstream before moving to
    /// another (0: availability first, move at once).
    pub affinity_wait_ms: i32,
}

const MODEL_COLS: &str = "id, display_name, family, input_price, output_price, cache_write_5m_price, \
     cache_write_1h_price, cache_read_price, long_context_threshold_tokens, long_context_input_price, \
     long_context_output_price, long_context_cache_write_5m_price, long_context_cache_write_1h_price, \
     long_context_cache_read_price, web_search_price_per_1k, web_fetch_price_per_1k, fallbacks, aliases, enabled, \
     released_at, deprecated_at, sort";

/// Every model, enabled or not, in display order.
pub async fn list_models(pool: &PgPool) -> Result<Vec<Model>, sqlx::Error> {
    sqlx::query_as::<_, Model>(&format!("SELECT {MODEL_COLS} FROM models ORDER BY sort, id"))
        .fetch_all(pool)
        .await
}

pub async fn get_model(pool: &PgPool, id: &str) -> Result<Option<Model>, sqlx::Error> {
    sqlx::query_as::<_, Model>(&format!("SELECT {MODEL_COLS} FROM models WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Inserts or replaces a model (staff). Gateways reload the catalogue at once (NOTIFY trigger).
pub async fn upsert_model(conn: impl sqlx::PgExecutor<'_>, m: &Model) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO models (id, display_name, family, input_price, output_price, cache_write_5m_price, \
         cache_write_1h_price, cache_read_price, fallbacks, enabled, released_at, deprecated_at, sort, aliases, \
         long_context_threshold_tokens, long_context_input_price, long_context_output_price, \
         long_context_cache_write_5m_price, long_context_cache_write_1h_price, long_context_cache_read_price, \
         web_search_price_per_1k, web_fetch_price_per_1k, updated_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22, now()) \
         ON CONFLICT (id) DO UPDATE SET display_name=$2, family=$3, input_price=$4, output_price=$5, \
         cache_write_5m_price=$6, cache_write_1h_price=$7, cache_read_price=$8, fallbacks=$9, enabled=$10, \
         released_at=$11, deprecated_at=$12, sort=$13, aliases=$14, long_context_threshold_tokens=$15, \
         long_context_input_price=$16, long_context_output_price=$17, long_context_cache_write_5m_price=$18, \
         long_context_cache_write_1h_price=$19, long_context_cache_read_price=$20, web_search_price_per_1k=$21, \
         web_fetch_price_per_1k=$22, updated_at=now()",
    )
    .bind(&m.id)
    .bind(&m.display_name)
    .bind(&m.family)
    .bind(m.input_price)
    .bind(m.output_price)
    .bind(m.cache_write_5m_price)
    .bind(m.cache_write_1h_price)
    .bind(m.cache_read_price)
    .bind(&m.fallbacks)
    .bind(m.enabled)
    .bind(m.released_at)
    .bind(m.deprecated_at)
    .bind(m.sort)
    .bind(&m.aliases)
    .bind(m.long_context_threshold_tokens)
    .bind(m.long_context_input_price)
    .bind(m.long_context_output_price)
    .bind(m.long_context_cache_write_5m_price)
    .bind(m.long_context_cache_write_1h_price)
    .bind(m.long_context_cache_read_price)
    .bind(m.web_search_price_per_1k)
    .bind(m.web_fetch_price_per_1k)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn list_channels(pool: &PgPool) -> Result<Vec<Channel>, sqlx::Error> {
    sqlx::query_as::<_, Channel>(
        "SELECT code, name, description, rate_micros_per_usd, concurrency_capacity, sort, affinity_wait_ms FROM channels ORDER BY sort, code",
    )
    .fetch_all(pool)
    .await
}

/// Changes a channel's rate, capacity and affinity wait (staff). Returns false if the channel does
/// not exist.
pub async fn update_channel(
    conn: impl sqlx::PgExecutor<'_>,
    code: &str,
    rate_micros_per_usd: CnyPerUsd,
    concurrency_capacity: i32,
    affinity_wait_ms: i32,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "UPDATE channels SET rate_micros_per_usd = $2, concurrency_capacity = $3, affinity_wait_ms = $4, updated_at = now() \
         WHERE code = $1",
    )
    .bind(code)
    .bind(rate_micros_per_usd)
    .bind(concurrency_capacity)
    .bind(affinity_wait_ms)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
