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

use crate::money::{MicroCny, MicroUsd};
use crate::zone::{self, Tz};
use chrono::{DateTime, Duration, FixedOffset, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

mod usage_log;
pub use usage_log::{csv_header, csv_line, log_page, log_stream, Cursor, LogFilter, StatusFilter, LOG_PAGE_MAX};

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
    pub cost_micro_usd: MicroUsd,
    pub charge_micros: MicroCny,
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

    /// Start instants of every bucket of the range ending at `now`, oldest first (Shanghai days).
    pub fn buckets(self, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        self.buckets_in(now, zone::SHANGHAI)
    }

    /// `[start, end)` covered by the buckets (Shanghai days).
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        self.bounds_in(now, zone::SHANGHAI)
    }

    /// Start instants of every bucket of the range ending at `now`, oldest first; daily buckets
    /// are `tz`'s calendar days (23 or 25 hours long across a daylight-saving change).
    pub fn buckets_in(self, now: DateTime<Utc>, tz: Tz) -> Vec<DateTime<Utc>> {
        if self.hourly() {
            let last = trunc_hour(now);
            return (0..self.count()).rev().map(|i| last - self.step() * i as i32).collect();
        }
        let today = zone::date_of(now, tz);
        (0..self.count()).rev().map(|i| zone::day_start(today - chrono::Days::new(i as u64), tz)).collect()
    }

    /// `[start, end)` covered by the buckets in `tz`.
    pub fn bounds_in(self, now: DateTime<Utc>, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let b = self.buckets_in(now, tz);
        let end = if self.hourly() { *b.last().unwrap() + self.step() } else { zone::day_start(zone::date_of(now, tz) + chrono::Days::new(1), tz) };
        (b[0], end)
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

pub(crate) fn bucket_expr(range: Range, tz: Tz) -> String {
    if range.hourly() {
        "hour".into()
    } else if tz == zone::SHANGHAI {
        // Shanghai midnight as an instant (fixed UTC+8: plain arithmetic, ~3x cheaper than
        // date_trunc … AT TIME ZONE 'Asia/Shanghai', which gives the same)
        "date_bin('1 day', hour, TIMESTAMPTZ '2000-01-01 00:00:00+08')".into()
    } else {
        // The zone's midnight as an instant. The name comes from the compiled-in zone list
        // (letters, digits, '/', '_', '+', '-'), never from the caller's text.
        format!("date_trunc('day', hour, '{}')", tz.name())
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
    pub cost_micro_usd: MicroUsd,
    pub charge_micros: MicroCny,
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
    series_in(pool, scope, range, group, now, zone::SHANGHAI).await
}

/// [`series`] with daily buckets on `tz`'s calendar days. Zones other than Shanghai sum the
/// hourly rollup by local day (exact for whole-hour offsets; a zone at a half-hour offset gets
/// the hour that straddles its midnight in the day the hour starts in).
pub async fn series_in(pool: &PgPool, scope: &Scope, range: Range, group: GroupBy, now: DateTime<Utc>, tz: Tz) -> Result<Vec<SeriesPoint>, sqlx::Error> {
    let (start, end) = range.bounds_in(now, tz);
    let group_expr = match group {
        GroupBy::None => "''",
        GroupBy::Model => "model",
        GroupBy::Key => "COALESCE(key_id::text, '')",
        GroupBy::Channel => "channel",
        GroupBy::Upstream => "COALESCE(upstream_id::text, '')",
    };
    let (mut table, preds, binds) = scope_filter(scope, group == GroupBy::Key);
    let (mut time, mut b) = ("hour", bucket_expr(range, tz));
    // Daily charts of keys or of one customer need no channel/model/upstream detail: the daily
    // per-key rollup has one row per key and (Shanghai) day.
    if table == "usage_hourly" && !range.hourly() && tz == zone::SHANGHAI && matches!(group, GroupBy::None | GroupBy::Key) {
        (table, time, b) = ("usage_daily_key", "day", "day".into());
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
        .buckets_in(now, tz)
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
pub(crate) fn hist_sum_sql(col: &str) -> String {
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
    latency_in(pool, scope, range, now, zone::SHANGHAI).await
}

/// [`latency`] with daily buckets on `tz`'s calendar days.
pub async fn latency_in(pool: &PgPool, scope: &Scope, range: Range, now: DateTime<Utc>, tz: Tz) -> Result<Vec<LatencyPoint>, sqlx::Error> {
    let (start, end) = range.bounds_in(now, tz);
    let (table, preds, binds) = scope_filter(scope, false);
    let sql = format!(
        "SELECT {b} AS bucket, {lh} AS lh, {th} AS th FROM {table} WHERE hour >= $1 AND hour < $2{preds} GROUP BY 1",
        b = bucket_expr(range, tz),
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
        .buckets_in(now, tz)
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
    /// Share of the requests in the range that reached an upstream, for display only (0 for
    /// the row without one).
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
    pub held_micros: MicroCny,
    pub charge_micros: MicroCny,
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
    pub balance_micros: MicroCny,
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
    // shares among the requests that reached an upstream: the gateway's own refusals are no
    // upstream's traffic
    let total: i64 = rows.iter().filter(|r| r.0.is_some()).map(|r| r.1).sum();
    Ok(rows
        .into_iter()
        .map(|(upstream_id, requests, errors, h, read, input)| UpstreamStats {
            cache_read_share: cache_read_share(read, input),
            upstream_id,
            requests,
            errors,
            share_percent: if total > 0 && upstream_id.is_some() { requests as f64 * 100.0 / total as f64 } else { 0.0 },
            p50_ms: hist_percentile(&h, 0.50),
            p95_ms: hist_percentile(&h, 0.95),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Business per day (staff)
// ---------------------------------------------------------------------------------------------

/// One calendar day of business: paid top-ups, money received for paid orders (top-ups and
/// plans paid from outside; a plan paid from the balance was counted when that balance was
/// topped up), and accounts created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessDay {
    pub day: chrono::NaiveDate,
    pub topups: i64,
    pub topup_micros: MicroCny,
    pub revenue_micros: MicroCny,
    pub signups: i64,
}

/// Every calendar day of `tz` from `first` through the day of `now`, newest first; a day with
/// nothing shows zeros. Orders count on the day they were paid (refunded ones too: the money
/// came in that day).
pub async fn business_days(pool: &PgPool, first: chrono::NaiveDate, now: DateTime<Utc>, tz: Tz) -> Result<Vec<BusinessDay>, sqlx::Error> {
    let start = zone::day_start(first, tz);
    let orders: Vec<(chrono::NaiveDate, i64, MicroCny, MicroCny)> = sqlx::query_as(
        "SELECT (paid_at AT TIME ZONE $3)::date, count(*) FILTER (WHERE kind = 'topup'),
                COALESCE(sum(amount_micros) FILTER (WHERE kind = 'topup'), 0)::BIGINT,
                COALESCE(sum(amount_micros) FILTER (WHERE method <> 'balance'), 0)::BIGINT
         FROM orders WHERE paid_at >= $1 AND paid_at <= $2 GROUP BY 1",
    )
    .bind(start)
    .bind(now)
    .bind(tz.name())
    .fetch_all(pool)
    .await?;
    let signups: Vec<(chrono::NaiveDate, i64)> =
        sqlx::query_as("SELECT (created_at AT TIME ZONE $3)::date, count(*) FROM users WHERE created_at >= $1 AND created_at <= $2 GROUP BY 1")
            .bind(start)
            .bind(now)
            .bind(tz.name())
            .fetch_all(pool)
            .await?;
    let today = zone::date_of(now, tz);
    let mut days: Vec<BusinessDay> = first
        .iter_days()
        .take_while(|d| *d <= today)
        .map(|day| {
            let o = orders.iter().find(|o| o.0 == day);
            BusinessDay {
                day,
                topups: o.map_or(0, |o| o.1),
                topup_micros: o.map_or(MicroCny::ZERO, |o| o.2),
                revenue_micros: o.map_or(MicroCny::ZERO, |o| o.3),
                signups: signups.iter().find(|s| s.0 == day).map_or(0, |s| s.1),
            }
        })
        .collect();
    days.reverse();
    Ok(days)
}
