//! Summaries of a customer's usage for the console (totals over a time window). The usage log
//! itself is `usage::list`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, sqlx::FromRow, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_tokens: i64,
    pub cost_micro_usd: i64,
    pub charge_micros: i64,
}

/// Totals of one user's requests since `since` (all users when `user_id` is None).
pub async fn totals(pool: &PgPool, user_id: Option<Uuid>, since: DateTime<Utc>) -> Result<UsageTotals, sqlx::Error> {
    sqlx::query_as::<_, UsageTotals>(
        "SELECT count(*) AS requests,
                count(*) FILTER (WHERE status >= 400) AS errors,
                COALESCE(sum(input_tokens), 0)::BIGINT AS input_tokens,
                COALESCE(sum(output_tokens), 0)::BIGINT AS output_tokens,
                COALESCE(sum(cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens), 0)::BIGINT AS cache_tokens,
                COALESCE(sum(cost_micro_usd), 0)::BIGINT AS cost_micro_usd,
                COALESCE(sum(charge_micros), 0)::BIGINT AS charge_micros
         FROM usage_records
         WHERE ($1::uuid IS NULL OR user_id = $1) AND created_at >= $2",
    )
    .bind(user_id)
    .bind(since)
    .fetch_one(pool)
    .await
}
