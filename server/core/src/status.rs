//! The public status page (`/status`) and its JSON twin (`/status.json`): per channel, the
//! availability and median latencies of the last 24 hours and 90 days and of each of those days,
//! and the incidents staff post (`incidents`). docs/status.md publishes the definitions and the
//! JSON schema.
//!
//! **Availability** = succeeded ÷ counted requests, from the `status_hourly` rollup (migration
//! `0022_status.sql`, which classifies each usage record): a request counts unless it is the
//! customer's own refusal (a 4xx: their request, key, balance or limits); it failed if the
//! answer was a 5xx (gateway or upstream error, timeout, overload, channel at capacity), a 429
//! because every upstream was rate limited, or an answer that broke off. Counts are exact; the
//! percentage is floored (99.999 % shows as 99.99 %, never 100 %). A day with nothing counted
//! has no availability ("no data"), not 100 %.
//!
//! **Median latency** (whole request) and **median time to first token** (streams) cover the
//! requests answered in full, from 32-bucket histograms in the rollup (the edges of
//! [`insights::HIST_EDGES_MS`]): the value shown is the geometric middle of the bucket that holds
//! the exact median, within ±19 % of it.
//!
//! **Windows**: "24 hours" is the current UTC hour and the 23 before it; days are Asia/Shanghai
//! calendar days (UTC+8), the 90 days ending today, as on the usage pages.
//!
//! Computing the page reads at most 3 × 2160 rollup rows and the incident tables; a
//! [`StatusBoard`] keeps the result for [`CACHE_TTL`], so page views never reach the usage data.

pub mod incidents;

pub use incidents::{Bilingual, Impact, Incident, IncidentStatus, IncidentUpdate};

use crate::insights::{self, hist_percentile, Range, HIST_BUCKETS};
use crate::text_enum::text_enum;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// How long a computed page is served before it is computed again.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a resolved incident stays on the page.
pub const RESOLVED_SHOWN_DAYS: i64 = 14;
const RESOLVED_SHOWN_MAX: i64 = 20;
/// The version of the JSON schema (docs/status.md); raised only by a change that breaks readers.
pub const SCHEMA_VERSION: u32 = 1;

text_enum! {
    /// How a channel, or the service as a whole, is doing now: the worst impact among the open
    /// incidents that concern it.
    pub enum Condition {
        Operational = "operational",
        Degraded = "degraded",
        MajorOutage = "major_outage",
    }
}

impl Condition {
    fn of(impact: Impact) -> Condition {
        match impact {
            Impact::Minor => Condition::Degraded,
            Impact::Major => Condition::MajorOutage,
        }
    }

    fn rank(self) -> u8 {
        match self {
            Condition::Operational => 0,
            Condition::Degraded => 1,
            Condition::MajorOutage => 2,
        }
    }

    /// The worse of the open incidents' conditions (operational when there is none).
    fn worst<'a>(incidents: impl Iterator<Item = &'a Incident>) -> Condition {
        incidents.map(|i| Condition::of(i.impact)).max_by_key(|c| c.rank()).unwrap_or(Condition::Operational)
    }
}

/// A window's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Requests that count toward availability.
    pub requests: i64,
    pub failures: i64,
    /// Floored to 0.001 %; null when nothing was counted.
    pub availability_percent: Option<f64>,
    pub median_latency_ms: Option<i32>,
    pub median_ttft_ms: Option<i32>,
}

impl Figures {
    /// Availability floored to `decimals` places, as text ("99.98"); None when nothing was counted.
    pub fn availability_text(&self, decimals: u32) -> Option<String> {
        let scale = 10i64.pow(decimals);
        floored_percent(self.requests - self.failures, self.requests, decimals).map(|p| match decimals {
            0 => p.to_string(),
            _ => format!("{}.{:0width$}", p / scale, p % scale, width = decimals as usize),
        })
    }
}

/// `part ÷ whole` as a percentage floored to `decimals` places, in units of the last place
/// (99.987 % to 3 places is 99987): integers, so exact for any count a rollup holds.
fn floored_percent(part: i64, whole: i64, decimals: u32) -> Option<i64> {
    (whole > 0).then(|| (part as i128 * 100 * 10i128.pow(decimals) / whole as i128) as i64)
}

/// Sums of rollup rows: counts and the two histograms.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: i64,
    failures: i64,
    latency: Vec<i64>,
    ttft: Vec<i64>,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.failures += o.failures;
        for (hist, more) in [(&mut self.latency, &o.latency), (&mut self.ttft, &o.ttft)] {
            hist.resize(HIST_BUCKETS, 0);
            for (a, b) in hist.iter_mut().zip(more) {
                *a += b;
            }
        }
    }

    fn figures(&self) -> Figures {
        Figures {
            requests: self.requests,
            failures: self.failures,
            // the nearest double to the floored decimal, e.g. 99.987
            availability_percent: floored_percent(self.requests - self.failures, self.requests, 3).map(|p| p as f64 / 1000.0),
            median_latency_ms: hist_percentile(&self.latency, 0.5),
            median_ttft_ms: hist_percentile(&self.ttft, 0.5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Day {
    /// The Asia/Shanghai calendar day.
    pub date: NaiveDate,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub code: String,
    /// The channel's English name (the console translates it).
    pub name: String,
    pub condition: Condition,
    pub last_24_hours: Figures,
    pub last_90_days: Figures,
    /// The 90 days ending today, oldest first.
    pub days: Vec<Day>,
}

/// Everything the status page shows; serialized as is for `/status.json` (docs/status.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub schema_version: u32,
    pub generated_at: DateTime<Utc>,
    /// The UTC offset of the days in `days` (Asia/Shanghai).
    pub day_utc_offset: String,
    pub condition: Condition,
    pub channels: Vec<ChannelStatus>,
    /// Newest first.
    pub open_incidents: Vec<Incident>,
    /// Resolved in the last 14 days, latest resolved first.
    pub resolved_incidents: Vec<Incident>,
}

/// Per channel and bucket (an hour or a Shanghai day) of `range` ending at `now`.
async fn tallies(pool: &PgPool, range: Range, now: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>, Tally)>, sqlx::Error> {
    let (start, end) = range.bounds(now);
    let sql = format!(
        "SELECT channel, {b} AS bucket, sum(requests)::BIGINT, sum(failures)::BIGINT, {lh}, {th}
         FROM status_hourly WHERE hour >= $1 AND hour < $2 GROUP BY 1, 2",
        b = insights::bucket_expr(range, crate::zone::SHANGHAI),
        lh = insights::hist_sum_sql("latency_hist"),
        th = insights::hist_sum_sql("ttft_hist"),
    );
    let rows: Vec<(String, DateTime<Utc>, i64, i64, Vec<i64>, Vec<i64>)> = sqlx::query_as(&sql).bind(start).bind(end).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(c, b, requests, failures, latency, ttft)| (c, b, Tally { requests, failures, latency, ttft })).collect())
}

/// Computes the page as of `now` (uncached; see [`StatusBoard`]).
pub async fn report(pool: &PgPool, now: DateTime<Utc>) -> Result<StatusReport, sqlx::Error> {
    let channels = crate::catalogue::list_channels(pool).await?;
    let mut day_rows: HashMap<(String, DateTime<Utc>), Tally> =
        tallies(pool, Range::Quarter, now).await?.into_iter().map(|(c, b, t)| ((c, b), t)).collect();
    let mut hour_rows: HashMap<String, Tally> = HashMap::new();
    for (c, _, t) in tallies(pool, Range::Day, now).await? {
        hour_rows.entry(c).or_default().add(&t);
    }
    let (open, resolved) = incidents::open_and_resolved(pool, now - Duration::days(RESOLVED_SHOWN_DAYS), RESOLVED_SHOWN_MAX).await?;
    let shanghai = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    let days = Range::Quarter.buckets(now);
    let channels = channels
        .into_iter()
        .map(|ch| {
            let mut quarter = Tally::default();
            let days = days
                .iter()
                .map(|&start| {
                    let t = day_rows.remove(&(ch.code.clone(), start)).unwrap_or_default();
                    quarter.add(&t);
                    Day { date: start.with_timezone(&shanghai).date_naive(), figures: t.figures() }
                })
                .collect();
            ChannelStatus {
                condition: Condition::worst(open.iter().filter(|i| i.channels.contains(&ch.code))),
                last_24_hours: hour_rows.remove(&ch.code).unwrap_or_default().figures(),
                last_90_days: quarter.figures(),
                days,
                code: ch.code,
                name: ch.name,
            }
        })
        .collect();
    Ok(StatusReport {
        schema_version: SCHEMA_VERSION,
        generated_at: now,
        day_utc_offset: "+08:00".into(),
        condition: Condition::worst(open.iter()),
        channels,
        open_incidents: open,
        resolved_incidents: resolved,
    })
}

/// The status page, computed at most once per [`CACHE_TTL`] per instance and shared by the page
/// and `/status.json`. Concurrent readers of an expired page wait for one computation. Cheap to
/// clone.
#[derive(Clone)]
pub struct StatusBoard {
    pool: PgPool,
    ttl: std::time::Duration,
    cached: Arc<tokio::sync::Mutex<Option<(Instant, Arc<StatusReport>)>>>,
}

impl StatusBoard {
    pub fn new(pool: PgPool, ttl: std::time::Duration) -> StatusBoard {
        StatusBoard { pool, ttl, cached: Arc::default() }
    }

    pub async fn current(&self) -> Result<Arc<StatusReport>, sqlx::Error> {
        let mut cached = self.cached.lock().await;
        if let Some((at, report)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(report.clone());
            }
        }
        let fresh = Arc::new(report(&self.pool, Utc::now()).await?);
        *cached = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    /// Drops the cached page (after staff post an incident, so this instance shows it at once;
    /// other instances within [`CACHE_TTL`]).
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_is_floored_so_a_failure_never_shows_as_100() {
        let f = |requests, failures| Tally { requests, failures, ..Tally::default() }.figures();
        assert_eq!(f(1_000_000, 1).availability_text(2).as_deref(), Some("99.99"));
        assert_eq!(f(1_000_000, 1).availability_percent, Some(99.999));
        assert_eq!(f(3, 1).availability_text(2).as_deref(), Some("66.66"));
        assert_eq!(f(8, 0).availability_text(2).as_deref(), Some("100.00"));
        assert_eq!(f(8, 8).availability_text(1).as_deref(), Some("0.0"));
        assert_eq!(f(0, 0).availability_text(2), None);
        assert_eq!(f(0, 0).availability_percent, None);
        assert_eq!(f(7, 1).availability_text(0).as_deref(), Some("85"));
    }
}
