//! Prometheus metrics: one process-wide recorder (`metrics` + `metrics-exporter-prometheus`,
//! rendered by the server at `GET /metrics`), the names, and the two places that record on the
//! request path and in the usage writer.
//!
//! Where each metric is recorded:
//! - every finished gateway request, once, where its usage record is finalized
//!   (`gateway::meter`, [`request_finished`]): `cloudrouter_requests_total`,
//!   `cloudrouter_request_duration_seconds`, `cloudrouter_time_to_first_token_seconds`,
//!   `cloudrouter_tokens_total`, `cloudrouter_charge_micro_cny_total`;
//! - the usage writer (`usage`): flush durations, batch sizes, failures, records written and lost;
//! - at each scrape, from live state (`Gateway::observe`): upstream circuits, requests in flight,
//!   the usage queue's depth, the database pool.
//!
//! Labels are bounded: channels and models come from the catalogue (a model the catalogue does not
//! know is `unknown`, never the client's text), upstreams are staff-defined, the rest are fixed
//! words. The request path looks its handles up in a small cache keyed by (channel, model), so a
//! request costs a few hash lookups and atomic adds, not a label allocation per metric.
//!
//! Without [`install`] (unit tests, tools) every call records into nothing.

use crate::pricing::TokenUsage;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, RwLock};
use std::time::Duration;

pub const REQUESTS: &str = "cloudrouter_requests_total";
pub const REQUEST_DURATION: &str = "cloudrouter_request_duration_seconds";
pub const TTFT: &str = "cloudrouter_time_to_first_token_seconds";
pub const TOKENS: &str = "cloudrouter_tokens_total";
pub const CHARGE: &str = "cloudrouter_charge_micro_cny_total";
pub const UPSTREAM_HEALTHY: &str = "cloudrouter_upstream_healthy";
pub const UPSTREAM_CIRCUIT: &str = "cloudrouter_upstream_circuit_state";
pub const UPSTREAM_ATTEMPTS: &str = "cloudrouter_upstream_attempts_total";
pub const UPSTREAM_FAILURES: &str = "cloudrouter_upstream_failures_total";
pub const UPSTREAM_LATENCY: &str = "cloudrouter_upstream_latency_seconds";
pub const LEASES: &str = "cloudrouter_money_leases";
pub const LEASE_FREE: &str = "cloudrouter_money_leased_unreserved_micro_cny";
pub const HOLDS: &str = "cloudrouter_money_holds";
pub const SLOTS: &str = "cloudrouter_concurrency_slots";
pub const IN_FLIGHT: &str = "cloudrouter_requests_in_flight";
pub const DRAINING: &str = "cloudrouter_draining";
pub const USAGE_QUEUE: &str = "cloudrouter_usage_queue_depth";
pub const USAGE_FLUSH_ROWS: &str = "cloudrouter_usage_flush_rows";
pub const USAGE_FLUSH_DURATION: &str = "cloudrouter_usage_flush_duration_seconds";
pub const USAGE_FLUSH_FAILURES: &str = "cloudrouter_usage_flush_failures_total";
pub const USAGE_WRITTEN: &str = "cloudrouter_usage_records_written_total";
pub const USAGE_LOST: &str = "cloudrouter_usage_records_lost_total";
pub const USAGE_SPOOL_FAILURES: &str = "cloudrouter_usage_spool_write_failures_total";
pub const DB_POOL_SIZE: &str = "cloudrouter_db_pool_connections";
pub const DB_POOL_IDLE: &str = "cloudrouter_db_pool_idle_connections";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that renders the text format
/// (None if another recorder was installed first). Call before the gateway serves: handles the
/// request path caches before it record into nothing.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let secs = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];
            let ttft = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0];
            let flush = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
            let rows = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &secs)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TTFT.into()), &ttft))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(USAGE_FLUSH_DURATION.into()), &flush))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(USAGE_FLUSH_ROWS.into()), &rows))
                .expect("histogram buckets")
                // gauges are set at each scrape: one not set for 10 minutes (a deleted upstream) goes
                .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(600)))
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
                return None;
            }
            describe();
            // histograms keep their samples until drained; drain them even when nobody scrapes
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "Gateway requests finished, by channel, model (catalogue id, or unknown), endpoint, status class and outcome");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Gateway request duration to the last byte, by channel, model and endpoint");
    describe_histogram!(TTFT, Unit::Seconds, "Time to the first content of a stream, by channel and model");
    describe_counter!(TOKENS, "Tokens billed, by channel, model and kind (input, output, cache_read, cache_write_5m, cache_write_1h)");
    describe_counter!(CHARGE, "Micro-CNY charged, by channel and model");
    describe_gauge!(UPSTREAM_HEALTHY, "1 when the upstream's circuit is closed, else 0 (this instance's view)");
    describe_gauge!(UPSTREAM_CIRCUIT, "Upstream circuit: 0 closed, 1 half-open (probing), 2 open");
    describe_counter!(UPSTREAM_ATTEMPTS, "Requests this instance sent to the upstream (each attempt of a failover counts)");
    describe_counter!(UPSTREAM_FAILURES, "Attempts to the upstream that failed: errors, timeouts, refusals of its account");
    describe_gauge!(UPSTREAM_LATENCY, Unit::Seconds, "Upstream time to response headers, exponentially weighted");
    describe_gauge!(LEASES, "Money leases this instance holds (slices of balances and key spending limits)");
    describe_gauge!(LEASE_FREE, "Micro-CNY leased by this instance and not reserved by a request");
    describe_gauge!(HOLDS, "Requests holding money from a lease now");
    describe_gauge!(SLOTS, "Concurrency slots this instance leases, by state (held, in_use)");
    describe_gauge!(IN_FLIGHT, "Gateway requests in flight on this instance");
    describe_gauge!(DRAINING, "1 once this instance is shutting down (readyz answers 503)");
    describe_gauge!(USAGE_QUEUE, "Usage records queued for the batch writer");
    describe_histogram!(USAGE_FLUSH_ROWS, "Rows per successful usage flush");
    describe_histogram!(USAGE_FLUSH_DURATION, Unit::Seconds, "Duration of each usage flush attempt, by result");
    describe_counter!(USAGE_FLUSH_FAILURES, "Usage flush attempts that failed (each is retried)");
    describe_counter!(USAGE_WRITTEN, "Usage records written and settled");
    describe_counter!(USAGE_LOST, "Usage records lost, by reason (rejected by the database, writer stopped)");
    describe_counter!(USAGE_SPOOL_FAILURES, "Usage records that could not be written to the spool (kept in memory only: a killed process loses them)");
    describe_gauge!(DB_POOL_SIZE, "Database connections open in the pool");
    describe_gauge!(DB_POOL_IDLE, "Database connections idle in the pool");
}

/// One finished gateway request, as the metrics see it.
pub struct Finished<'a> {
    pub channel: &'a str,
    /// a catalogue id, or "unknown"
    pub model: &'a str,
    pub endpoint: &'static str,
    pub status: i32,
    pub outcome: &'static str,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub tokens: &'a TokenUsage,
    pub charge_micros: crate::money::MicroCny,
}

/// The gateway's endpoints, as usage records and metrics name them.
const ENDPOINTS: [&str; 3] = ["messages", "count_tokens", "chat_completions"];

/// The handles of one (channel, model).
struct Series {
    /// (endpoint, status class, outcome) → counter; a handful per series
    requests: Mutex<Vec<(&'static str, &'static str, &'static str, Counter)>>,
    /// by endpoint, in the order of [`ENDPOINTS`]
    duration: [Histogram; 3],
    ttft: Histogram,
    /// input, output, cache_read, cache_write_5m, cache_write_1h
    tokens: [Counter; 5],
    charge: Counter,
}

impl Series {
    fn new(channel: &str, model: &str) -> Series {
        let (c, m) = (channel.to_string(), model.to_string());
        let duration = |endpoint: &'static str| {
            metrics::histogram!(REQUEST_DURATION, "channel" => c.clone(), "model" => m.clone(), "endpoint" => endpoint)
        };
        let tokens = |kind: &'static str| metrics::counter!(TOKENS, "channel" => c.clone(), "model" => m.clone(), "kind" => kind);
        Series {
            requests: Mutex::new(Vec::new()),
            duration: ENDPOINTS.map(duration),
            ttft: metrics::histogram!(TTFT, "channel" => c.clone(), "model" => m.clone()),
            tokens: [tokens("input"), tokens("output"), tokens("cache_read"), tokens("cache_write_5m"), tokens("cache_write_1h")],
            charge: metrics::counter!(CHARGE, "channel" => c.clone(), "model" => m.clone()),
        }
    }
}

type SeriesMap = HashMap<String, HashMap<String, Arc<Series>>>;
static SERIES: LazyLock<RwLock<SeriesMap>> = LazyLock::new(Default::default);

fn series(channel: &str, model: &str) -> Arc<Series> {
    if let Some(s) = SERIES.read().unwrap().get(channel).and_then(|m| m.get(model)) {
        return s.clone();
    }
    let mut w = SERIES.write().unwrap();
    w.entry(channel.to_string()).or_default().entry(model.to_string()).or_insert_with(|| Arc::new(Series::new(channel, model))).clone()
}

pub fn status_class(status: i32) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Records one finished gateway request (called once per request, where its usage record is made).
pub fn request_finished(f: &Finished<'_>) {
    let s = series(f.channel, f.model);
    let class = status_class(f.status);
    {
        let mut reqs = s.requests.lock().unwrap();
        match reqs.iter().find(|r| r.0 == f.endpoint && r.1 == class && r.2 == f.outcome) {
            Some(r) => r.3.increment(1),
            None => {
                let c = metrics::counter!(REQUESTS, "channel" => f.channel.to_string(), "model" => f.model.to_string(),
                    "endpoint" => f.endpoint, "status_class" => class, "outcome" => f.outcome);
                c.increment(1);
                reqs.push((f.endpoint, class, f.outcome, c));
            }
        }
    }
    s.duration[ENDPOINTS.iter().position(|e| *e == f.endpoint).unwrap_or(0)].record(f.latency.as_secs_f64());
    if let Some(t) = f.ttft {
        s.ttft.record(t.as_secs_f64());
    }
    let t = f.tokens;
    for (c, n) in s.tokens.iter().zip([t.input_tokens, t.output_tokens, t.cache_read_tokens, t.cache_write_5m_tokens, t.cache_write_1h_tokens]) {
        if n > 0 {
            c.increment(n as u64);
        }
    }
    if f.charge_micros.is_positive() {
        s.charge.increment(f.charge_micros.micros() as u64);
    }
}

/// One usage flush attempt: its duration and result, and on success its batch size.
pub fn usage_flush(rows: usize, took: Duration, ok: bool) {
    metrics::histogram!(USAGE_FLUSH_DURATION, "result" => if ok { "ok" } else { "error" }).record(took.as_secs_f64());
    if ok {
        metrics::histogram!(USAGE_FLUSH_ROWS).record(rows as f64);
        metrics::counter!(USAGE_WRITTEN).increment(rows as u64);
    } else {
        metrics::counter!(USAGE_FLUSH_FAILURES).increment(1);
    }
}

/// Usage records lost: `rejected` (by the database), `writer_stopped`.
pub fn usage_lost(reason: &'static str, rows: usize) {
    metrics::counter!(USAGE_LOST, "reason" => reason).increment(rows as u64);
}

/// A usage record that could not be written to the spool.
pub fn usage_spool_failed() {
    metrics::counter!(USAGE_SPOOL_FAILURES).increment(1);
}
