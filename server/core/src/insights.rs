//! Usage insight: the data behind the usage pages (customer and staff) and the usage log.
//!
//! # Rollups
//! Charts and totals read two hourly rollups of `usage_records` (migration
//! `0005_usage_rollups.sql`): `usage_hourly`, keyed by (UTC hour, user, key, channel, model,
//! upstream), for customer views and staff views of one customer or key, and
//! `usage_hourly_global`, keyed by (hour, channel, model, upstream), for staff views across all
//! customers. Daily charts by key or of one customer or key read a third, `usage_daily_key`
//! (Shanghai day, user, key; migration `0007_usage_daily_key.sql`), kept exact the same way.
//! `model` is `COALESCE(served_model, requested_model)`; an error is `status >= 400`.
//!
//! **Exactness.** Statement-level triggers on `usage_records` maintain both rollups in the same
//! transaction as every INSERT (the usage writer's batch: one `INSERT … SELECT … GROUP BY … ON
//! CONFLICT DO UPDATE` per rollup from the transition table), DELETE (subtracted), UPDATE and
//! TRUNCATE; the migration backfills existing rows under the trigger's table lock. So every
//! committed snapshot has rollup sums equal to the sums of the raw rows, hour by hour — tested in
//! `tests/insights.rs`. `cr_usage_rollup_rebuild()` rebuilds both from scratch if ever needed.
//!
//! **Buckets.** [`Range::Day`] is the last 24 UTC-aligned hours (the current, partial hour is the
//! last bucket). [`Range::Week`], [`Range::Month`] and [`Range::Quarter`] are the last 7, 30 and
//! 90 **Asia/Shanghai calendar days** including today; a daily bucket is reported by its start
//! instant (Shanghai midnight = 16:00 UTC of the previous day). Shanghai has no daylight saving
//! (UTC+8), so every day is exactly 24 whole UTC hours and daily sums of hourly rows are exact.
//!
//! **Percentiles** (latency, time to first token) come from a 32-bucket log-scale histogram
//! (edges [`HIST_EDGES_MS`], factor √2 from 10 ms to 327 680 ms). The bucket found is the one
//! holding the exact nearest-rank percentile; the value reported is its geometric midpoint, so it
//! is within a factor 2^(1/4) (about ±19 %) of the exact value (below 10 ms: 5 ms, ±5 ms; at or
//! above 327 680 ms: 327 680 ms, a lower bound). Latency covers every request, errors included.
//!
//! **Totals** ([`totals`]) are exact for any `since`: whole hours from the rollup, plus the raw
//! rows of the partial first hour.
//!
//! # Usage log
//! [`log_page`] is keyset-paginated on `(created_at, id)`, newest first, with an opaque
//! [`Cursor`]; [`log_stream`] walks the same filter page by page (1000 rows per query) for CSV
//! export, so memory stays bounded and no long transaction is held.

use crate::money;
use crate::usage::UsageRecord;
use base64::Engine;
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveTime, TimeZone, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// Upper edges (exclusive) of histogram buckets 0..=30 in ms; bucket 31 is everything above.
/// Must equal the array in `cr_ms_bucket` (migration 0005).
pub const HIST_EDGES_MS: [i32; 31] = [
    10, 14, 20, 28, 40, 57, 80, 113, 160, 226, 320, 453, 640, 905, 1280, 1810, 2560, 3620, 5120, 7241, 10240, 14482,
    20480, 28963, 40960, 57926, 81920, 115852, 163840, 231705, 327680,
];
pub const HIST_BUCKETS: usize = 32;

const SHANGHAI_OFFSET_SECS: i32 = 8 * 3600;

// ---------------------------------------------------------------------------------------------
// Totals (kept for the console's overview)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, sqlx::FromRow, PartialEq, Eq)]
pub struct UsageTotals {
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// cache writes (5 minutes + 1 hour) + cache reads
    pub cache_tokens: i64,
    pub cost_micro_usd: i64,
    pub charge_micros: i64,
}

impl UsageTotals {
    fn add(&mut self, o: &UsageTotals) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_tokens += o.cache_tokens;
        self.cost_micro_usd += o.cost_micro_usd;
        self.charge_micros += o.charge_micros;
    }
}

fn trunc_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(3600) * 3600;
    Utc.timestamp_opt(secs, 0).single().expect("valid hour")
}

/// Totals of one user's requests since `since` (all users when `user_id` is None), exact:
/// whole hours from the rollup, the partial first hour from raw rows.
pub async fn totals(pool: &PgPool, user_id: Option<Uuid>, since: DateTime<Utc>) -> Result<UsageTotals, sqlx::Error> {
    let first_full = {
        let h = trunc_hour(since);
        if h == since {
            h
        } else {
            h + Duration::hours(1)
        }
    };
    let (table, user_pred) = match user_id {
        Some(_) => ("usage_hourly", "user_id = $2 AND "),
        None => ("usage_hourly_global", ""),
    };
    let sql = format!(
        "SELECT COALESCE(sum(requests), 0)::BIGINT AS requests, COALESCE(sum(errors), 0)::BIGINT AS errors,
                COALESCE(sum(input_tokens), 0)::BIGINT AS input_tokens, COALESCE(sum(output_tokens), 0)::BIGINT AS output_tokens,
                COALESCE(sum(cache_write_tokens + cache_read_tokens), 0)::BIGINT AS cache_tokens,
                COALESCE(sum(cost_micro_usd), 0)::BIGINT AS cost_micro_usd, COALESCE(sum(charge_micros), 0)::BIGINT AS charge_micros
         FROM {table} WHERE {user_pred}hour >= $1"
    );
    let mut q = sqlx::query_as::<_, UsageTotals>(&sql).bind(first_full);
    if let Some(u) = user_id {
        q = q.bind(u);
    }
    let mut t = q.fetch_one(pool).await?;
    if first_full > since {
        let user_pred = if user_id.is_some() { "user_id = $3 AND " } else { "" };
        let sql = format!(
            "SELECT count(*) AS requests,
                    count(*) FILTER (WHERE status >= 400) AS errors,
                    COALESCE(sum(input_tokens), 0)::BIGINT AS input_tokens,
                    COALESCE(sum(output_tokens), 0)::BIGINT AS output_tokens,
                    COALESCE(sum(cache_write_5m_tokens + cache_write_1h_tokens + cache_read_tokens), 0)::BIGINT AS cache_tokens,
                    COALESCE(sum(cost_micro_usd), 0)::BIGINT AS cost_micro_usd,
                    COALESCE(sum(charge_micros), 0)::BIGINT AS charge_micros
             FROM usage_records WHERE {user_pred}created_at >= $1 AND created_at < $2"
        );
        let mut q = sqlx::query_as::<_, UsageTotals>(&sql).bind(since).bind(first_full);
        if let Some(u) = user_id {
            q = q.bind(u);
        }
        t.add(&q.fetch_one(pool).await?);
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Ranges and buckets
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Range {
    /// Last 24 hours, hourly buckets.
    Day,
    /// Last 7 Asia/Shanghai days, daily buckets.
    Week,
    /// Last 30 Asia/Shanghai days, daily buckets.
    Month,
    /// Last 90 Asia/Shanghai days, daily buckets.
    Quarter,
}

impl Range {
    /// "24h", "7d", "30d", "90d".
    pub fn parse(s: &str) -> Option<Range> {
        match s.trim() {
            "24h" => Some(Range::Day),
            "7d" => Some(Range::Week),
            "30d" => Some(Range::Month),
            "90d" => Some(Range::Quarter),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Range::Day => "24h",
            Range::Week => "7d",
            Range::Month => "30d",
            Range::Quarter => "90d",
        }
    }

    pub fn hourly(self) -> bool {
        self == Range::Day
    }

    fn count(self) -> i64 {
        match self {
            Range::Day => 24,
            Range::Week => 7,
            Range::Month => 30,
            Range::Quarter => 90,
        }
    }

    fn step(self) -> Duration {
        if self.hourly() {
            Duration::hours(1)
        } else {
            Duration::days(1)
        }
    }

    /// Start instants of every bucket of the range ending at `now`, oldest first.
    pub fn buckets(self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let last = if self.hourly() { trunc_hour(now) } else { shanghai_day_start(now) };
        (0..self.count()).rev().map(|i| last - self.step() * i as i32).collect()
    }

    /// `[start, end)` covered by the buckets.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let b = self.buckets(now);
        (b[0], *b.last().unwrap() + self.step())
    }
}

/// The instant the Asia/Shanghai calendar day containing `t` starts (UTC+8, no DST).
pub fn shanghai_day_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let tz = FixedOffset::east_opt(SHANGHAI_OFFSET_SECS).unwrap();
    let local = t.with_timezone(&tz);
    tz.from_local_datetime(&local.date_naive().and_time(NaiveTime::MIN))
        .single()
        .expect("fixed offset")
        .with_timezone(&Utc)
}

fn bucket_expr(range: Range) -> &'static str {
    if range.hourly() {
        "hour"
    } else {
        // Shanghai midnight as an instant (fixed UTC+8: plain arithmetic, ~3x cheaper than
        // date_trunc … AT TIME ZONE 'Asia/Shanghai', which gives the same)
        "date_bin('1 day', hour, TIMESTAMPTZ '2000-01-01 00:00:00+08')"
    }
}

// ---------------------------------------------------------------------------------------------
// Series
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GroupBy {
    None,
    Model,
    Key,
    Channel,
    Upstream,
}

/// Whose usage: one customer (`user_id`), optionally one key; `user_id: None` = all customers
/// (staff).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SeriesPoint {
    /// Start of the bucket (an hour, or Shanghai midnight).
    pub bucket: DateTime<Utc>,
    /// Model id, key id, channel code, upstream id ("" = none recorded), or "" for GroupBy::None.
    pub group: String,
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_micro_usd: i64,
    pub charge_micros: i64,
}

/// The rollup to read, the WHERE clause (after the time bounds $1, $2) and the values to bind.
fn scope_filter(scope: &Scope, need_user_table: bool) -> (&'static str, String, Vec<Uuid>) {
    let mut preds = String::new();
    let mut binds = Vec::new();
    if let Some(u) = scope.user_id {
        binds.push(u);
        preds.push_str(&format!(" AND user_id = ${}", binds.len() + 2));
    }
    if let Some(k) = scope.key_id {
        binds.push(k);
        preds.push_str(&format!(" AND key_id = ${}", binds.len() + 2));
    }
    let table = if need_user_table || !binds.is_empty() { "usage_hourly" } else { "usage_hourly_global" };
    (table, preds, binds)
}

/// Sums per bucket (and group) over the range. For `GroupBy::None` every bucket of the range is
/// present (zero-filled); grouped series hold only the (bucket, group) pairs with requests.
/// Ordered by bucket, then group.
pub async fn series(pool: &PgPool, scope: &Scope, range: Range, group: GroupBy, now: DateTime<Utc>) -> Result<Vec<SeriesPoint>, sqlx::Error> {
    let (start, end) = range.bounds(now);
    let group_expr = match group {
        GroupBy::None => "''",
        GroupBy::Model => "model",
        GroupBy::Key => "COALESCE(key_id::text, '')",
        GroupBy::Channel => "channel",
        GroupBy::Upstream => "COALESCE(upstream_id::text, '')",
    };
    let (mut table, preds, binds) = scope_filter(scope, group == GroupBy::Key);
    let (mut time, mut b) = ("hour", bucket_expr(range));
    // Daily charts of keys or of one customer need no channel/model/upstream detail: the daily
    // per-key rollup has one row per key and day.
    if table == "usage_hourly" && !range.hourly() && matches!(group, GroupBy::None | GroupBy::Key) {
        (table, time, b) = ("usage_daily_key", "day", "day");
    }
    let sql = format!(
        "SELECT {b} AS bucket, {group_expr} AS \"group\",
                sum(requests)::BIGINT AS requests, sum(errors)::BIGINT AS errors,
                sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens,
                sum(cache_write_tokens)::BIGINT AS cache_write_tokens, sum(cache_read_tokens)::BIGINT AS cache_read_tokens,
                sum(cost_micro_usd)::BIGINT AS cost_micro_usd, sum(charge_micros)::BIGINT AS charge_micros
         FROM {table} WHERE {time} >= $1 AND {time} < $2{preds}
         GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let mut q = sqlx::query_as::<_, SeriesPoint>(&sql).bind(start).bind(end);
    for v in binds {
        q = q.bind(v);
    }
    let rows = q.fetch_all(pool).await?;
    if group != GroupBy::None {
        return Ok(rows);
    }
    let mut by_bucket: HashMap<DateTime<Utc>, SeriesPoint> = rows.into_iter().map(|p| (p.bucket, p)).collect();
    Ok(range
        .buckets(now)
        .into_iter()
        .map(|b| by_bucket.remove(&b).unwrap_or(SeriesPoint { bucket: b, ..Default::default() }))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Latency
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyPoint {
    pub bucket: DateTime<Utc>,
    pub p50_ms: Option<i32>,
    pub p95_ms: Option<i32>,
    pub ttft_p50_ms: Option<i32>,
    pub ttft_p95_ms: Option<i32>,
}

/// `ARRAY[sum(col[1]), …, sum(col[32])]::int8[]`
fn hist_sum_sql(col: &str) -> String {
    let parts: Vec<String> = (1..=HIST_BUCKETS).map(|i| format!("COALESCE(sum({col}[{i}]), 0)")).collect();
    format!("ARRAY[{}]::int8[]", parts.join(", "))
}

/// Histogram bucket (0..32) of a duration in ms, as in SQL `cr_ms_bucket`.
pub fn hist_bucket(ms: i32) -> usize {
    HIST_EDGES_MS.partition_point(|&e| e <= ms)
}

/// The value reported for histogram bucket `b`: its geometric midpoint (see the module docs).
pub fn hist_bucket_value(b: usize) -> i32 {
    match b {
        0 => HIST_EDGES_MS[0] / 2,
        b if b >= HIST_BUCKETS - 1 => HIST_EDGES_MS[HIST_BUCKETS - 2],
        b => ((HIST_EDGES_MS[b - 1] as f64) * (HIST_EDGES_MS[b] as f64)).sqrt().round() as i32,
    }
}

/// Nearest-rank percentile `q` (0 < q ≤ 1) of a histogram; None when empty.
pub fn hist_percentile(hist: &[i64], q: f64) -> Option<i32> {
    let n: i64 = hist.iter().sum();
    if n <= 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
    let mut cum = 0;
    for (b, c) in hist.iter().enumerate() {
        cum += c;
        if cum >= rank {
            return Some(hist_bucket_value(b));
        }
    }
    Some(hist_bucket_value(hist.len() - 1))
}

/// p50/p95 of latency and time to first token per bucket; every bucket present (None = no
/// requests, or no streamed first token for TTFT).
pub async fn latency(pool: &PgPool, scope: &Scope, range: Range, now: DateTime<Utc>) -> Result<Vec<LatencyPoint>, sqlx::Error> {
    let (start, end) = range.bounds(now);
    let (table, preds, binds) = scope_filter(scope, false);
    let sql = format!(
        "SELECT {b} AS bucket, {lh} AS lh, {th} AS th FROM {table} WHERE hour >= $1 AND hour < $2{preds} GROUP BY 1",
        b = bucket_expr(range),
        lh = hist_sum_sql("latency_hist"),
        th = hist_sum_sql("ttft_hist"),
    );
    let mut q = sqlx::query_as::<_, (DateTime<Utc>, Vec<i64>, Vec<i64>)>(&sql).bind(start).bind(end);
    for v in binds {
        q = q.bind(v);
    }
    let mut by_bucket: HashMap<DateTime<Utc>, (Vec<i64>, Vec<i64>)> =
        q.fetch_all(pool).await?.into_iter().map(|(b, l, t)| (b, (l, t))).collect();
    Ok(range
        .buckets(now)
        .into_iter()
        .map(|b| match by_bucket.remove(&b) {
            Some((l, t)) => LatencyPoint {
                bucket: b,
                p50_ms: hist_percentile(&l, 0.50),
                p95_ms: hist_percentile(&l, 0.95),
                ttft_p50_ms: hist_percentile(&t, 0.50),
                ttft_p95_ms: hist_percentile(&t, 0.95),
            },
            None => LatencyPoint { bucket: b, p50_ms: None, p95_ms: None, ttft_p50_ms: None, ttft_p95_ms: None },
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Upstreams (staff)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamStats {
    /// None: requests answered without an upstream (refused by the gateway itself).
    pub upstream_id: Option<Uuid>,
    pub requests: i64,
    pub errors: i64,
    /// Share of all requests in the range, for display only.
    pub share_percent: f64,
    pub p50_ms: Option<i32>,
    pub p95_ms: Option<i32>,
    /// Cache read tokens ÷ input tokens of every kind (None without input).
    pub cache_read_share: Option<f64>,
}

/// A request charged more than was held for it (input the body did not carry, server tools).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Overage {
    pub request_id: String,
    pub created_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub email: String,
    pub served_model: Option<String>,
    pub held_micros: i64,
    pub charge_micros: i64,
}

/// The most recent requests charged above their hold (staff), newest first.
pub async fn recent_overages(pool: &PgPool, limit: i64) -> Result<Vec<Overage>, sqlx::Error> {
    sqlx::query_as::<_, Overage>(
        "SELECT r.id AS request_id, r.created_at, r.user_id, u.email, r.served_model, r.held_micros, r.charge_micros \
         FROM usage_records r JOIN users u ON u.id = r.user_id \
         WHERE r.charge_micros > r.held_micros ORDER BY r.created_at DESC LIMIT $1",
    )
    .bind(limit.clamp(1, 1000))
    .fetch_all(pool)
    .await
}

/// A customer whose balance is below zero (only usage above the holds can do that).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Debt {
    pub user_id: Uuid,
    pub email: String,
    pub balance_micros: i64,
}

/// Every balance below zero (staff), largest debt first.
pub async fn debts(pool: &PgPool) -> Result<Vec<Debt>, sqlx::Error> {
    sqlx::query_as::<_, Debt>(
        "SELECT b.user_id, u.email, b.balance_micros FROM balances b JOIN users u ON u.id = b.user_id \
         WHERE b.balance_micros < 0 ORDER BY b.balance_micros, u.email",
    )
    .fetch_all(pool)
    .await
}

/// Cache read tokens ÷ input tokens of every kind: how much of the input the prompt cache served.
pub fn cache_read_share(cache_read_tokens: i64, all_input_tokens: i64) -> Option<f64> {
    (all_input_tokens > 0).then(|| cache_read_tokens as f64 / all_input_tokens as f64)
}

/// Per upstream over the range, across all customers; most requests first.
pub async fn upstream_stats(pool: &PgPool, range: Range, now: DateTime<Utc>) -> Result<Vec<UpstreamStats>, sqlx::Error> {
    let (start, end) = range.bounds(now);
    let sql = format!(
        "SELECT upstream_id, sum(requests)::BIGINT, sum(errors)::BIGINT, {lh}, sum(cache_read_tokens)::BIGINT,
                sum(input_tokens + cache_write_tokens + cache_read_tokens)::BIGINT
         FROM usage_hourly_global WHERE hour >= $1 AND hour < $2
         GROUP BY upstream_id ORDER BY 2 DESC, upstream_id NULLS LAST",
        lh = hist_sum_sql("latency_hist")
    );
    let rows = sqlx::query_as::<_, (Option<Uuid>, i64, i64, Vec<i64>, i64, i64)>(&sql).bind(start).bind(end).fetch_all(pool).await?;
    let total: i64 = rows.iter().map(|r| r.1).sum();
    Ok(rows
        .into_iter()
        .map(|(upstream_id, requests, errors, h, read, input)| UpstreamStats {
            cache_read_share: cache_read_share(read, input),
            upstream_id,
            requests,
            errors,
            share_percent: if total > 0 { requests as f64 * 100.0 / total as f64 } else { 0.0 },
            p50_ms: hist_percentile(&h, 0.50),
            p95_ms: hist_percentile(&h, 0.95),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Usage log
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusFilter {
    /// status < 400
    Ok,
    /// status >= 400
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    /// None = all customers (staff only).
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    /// Matches `COALESCE(served_model, requested_model)`, as the charts do.
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
    /// created_at >= since
    pub since: Option<DateTime<Utc>>,
    /// created_at < until
    pub until: Option<DateTime<Utc>>,
}

/// Opaque position in the usage log: the (created_at, id) of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor(String);

impl Cursor {
    pub fn new(created_at: DateTime<Utc>, id: &str) -> Cursor {
        let raw = format!("{}:{}", created_at.timestamp_micros(), id);
        Cursor(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// Accepts only what [`Cursor::as_str`] produced.
    pub fn parse(s: &str) -> Option<Cursor> {
        let c = Cursor(s.to_string());
        c.decode().map(|_| c)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn decode(&self) -> Option<(DateTime<Utc>, String)> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(self.0.as_bytes()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ts, id) = raw.split_once(':')?;
        // a forged cursor may name any moment chrono holds; Postgres holds fewer
        let at = DateTime::<Utc>::from_timestamp_micros(ts.parse().ok()?).filter(|t| (1970..=9999).contains(&t.year()))?;
        Some((at, id.to_string()))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}


/// Most rows per page.
pub const LOG_PAGE_MAX: i64 = 1000;

/// One page of the usage log, newest first (ties on created_at by id, descending), and the cursor
/// of the next page (None on the last page). `limit` is clamped to 1..=1000. A cursor that does
/// not decode is treated as the start.
pub async fn log_page(pool: &PgPool, f: &LogFilter, cursor: Option<&Cursor>, limit: i64) -> Result<(Vec<UsageRecord>, Option<Cursor>), sqlx::Error> {
    let limit = limit.clamp(1, LOG_PAGE_MAX);
    let after = cursor.and_then(|c| c.decode());
    let mut sql = format!("SELECT {} FROM usage_records WHERE true", crate::usage::RECORD_COLUMNS);
    let mut n = 0;
    let mut p = |sql: &mut String, cond: &str| -> usize {
        n += 1;
        sql.push_str(&cond.replace('?', &format!("${n}")));
        n
    };
    if f.user_id.is_some() {
        p(&mut sql, " AND user_id = ?");
    }
    if f.key_id.is_some() {
        p(&mut sql, " AND key_id = ?");
    }
    if f.model.is_some() {
        p(&mut sql, " AND COALESCE(served_model, requested_model) = ?");
    }
    if f.since.is_some() {
        p(&mut sql, " AND created_at >= ?");
    }
    if f.until.is_some() {
        p(&mut sql, " AND created_at < ?");
    }
    if after.is_some() {
        // (created_at, id) < (c_at, c_id), written so the created_at index bounds the scan
        let at = p(&mut sql, " AND created_at <= ?");
        p(&mut sql, &format!(" AND (created_at < ${at} OR id < ?)"));
    }
    match f.status {
        Some(StatusFilter::Ok) => sql.push_str(" AND status < 400"),
        Some(StatusFilter::Error) => sql.push_str(" AND status >= 400"),
        None => {}
    }
    p(&mut sql, " ORDER BY created_at DESC, id DESC LIMIT ?");
    let mut q = sqlx::query_as::<_, UsageRecord>(&sql);
    if let Some(u) = f.user_id {
        q = q.bind(u);
    }
    if let Some(k) = f.key_id {
        q = q.bind(k);
    }
    if let Some(m) = &f.model {
        q = q.bind(m.clone());
    }
    if let Some(s) = f.since {
        q = q.bind(s);
    }
    if let Some(u) = f.until {
        q = q.bind(u);
    }
    if let Some((at, id)) = &after {
        q = q.bind(*at).bind(id.clone());
    }
    let mut rows = q.bind(limit + 1).fetch_all(pool).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor::new(r.created_at, &r.id))
    } else {
        None
    };
    Ok((rows, next))
}

/// Every row of the filter, newest first, fetched a page (1000 rows) at a time: for CSV export.
pub fn log_stream<'a>(pool: &'a PgPool, f: &'a LogFilter) -> impl Stream<Item = Result<UsageRecord, sqlx::Error>> + 'a {
    use futures::StreamExt;
    // state: Some(cursor) to fetch from (None inside = start), None = done
    futures::stream::unfold(Some(None::<Cursor>), move |state| async move {
        let cursor = state?;
        match log_page(pool, f, cursor.as_ref(), LOG_PAGE_MAX).await {
            Ok((rows, next)) => {
                let next_state = next.map(Some);
                Some((futures::stream::iter(rows.into_iter().map(Ok)).left_stream(), next_state))
            }
            Err(e) => Some((futures::stream::iter(vec![Err(e)]).right_stream(), None)),
        }
    })
    .flatten()
}

// ---------------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------------

/// The CSV header line (with CRLF). Columns match [`csv_line`].
pub fn csv_header() -> &'static str {
    "request_id,created_at,key_id,key_name,channel,endpoint,requested_model,served_model,stream,status,outcome,\
error_type,attempts,input_tokens,output_tokens,cache_write_5m_tokens,cache_write_1h_tokens,cache_read_tokens,\
web_search_requests,web_fetch_requests,cost_usd,charge_cny,latency_ms,ttft_ms\r\n"
}

/// An RFC 4180 field: quoted when it holds a comma, quote, CR or LF (quotes doubled). Text that
/// a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading apostrophe.
fn csv_text(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One CSV line (with CRLF) for a usage row. Amounts are decimal strings (USD cost, CNY charge);
/// times are UTC RFC 3339. Never contains request or reply text (records hold none).
pub fn csv_line(row: &UsageRecord, key_name: &str) -> String {
    let opt = |v: Option<i32>| v.map(|x| x.to_string()).unwrap_or_default();
    let fields: Vec<String> = vec![
        csv_text(&row.id),
        row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        row.key_id.map(|k| k.to_string()).unwrap_or_default(),
        csv_text(key_name),
        csv_text(&row.channel),
        csv_text(&row.endpoint),
        csv_text(&row.requested_model),
        csv_text(row.served_model.as_deref().unwrap_or("")),
        row.stream.to_string(),
        row.status.to_string(),
        csv_text(&row.outcome),
        csv_text(row.error_type.as_deref().unwrap_or("")),
        row.attempts.to_string(),
        row.tokens.input_tokens.to_string(),
        row.tokens.output_tokens.to_string(),
        row.tokens.cache_write_5m_tokens.to_string(),
        row.tokens.cache_write_1h_tokens.to_string(),
        row.tokens.cache_read_tokens.to_string(),
        row.server_tools.web_search_requests.to_string(),
        row.server_tools.web_fetch_requests.to_string(),
        money::to_decimal_string(row.cost_micro_usd),
        money::to_decimal_string(row.charge_micros),
        row.latency_ms.to_string(),
        opt(row.ttft_ms),
    ];
    let mut line = fields.join(",");
    line.push_str("\r\n");
    line
}
