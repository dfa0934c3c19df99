//! Usage records and their settlement.
//!
//! The gateway never writes to Postgres on the request path. Each finished request hands one
//! [`UsageRecord`] to the [`UsageWriter`], which appends it to this instance's spool file (one
//! `write` of a compact frame, see [`spool`]: a killed process loses no record) and queues it on a bounded channel
//! drained by one task. After the first row the task lets rows gather for `flush_interval` (sooner
//! when `batch_rows` are already queued, when someone waits in `sync`, or at shutdown) without
//! polling the channel, so submitting a row wakes nothing; then it flushes up to `batch_rows` rows
//! at a time. One flush is one call of `cr_write_usage` (migrations 0010, 0013, 0018), one
//! transaction in one round trip:
//!
//! 1. the rows, with one multi-row `INSERT … SELECT FROM UNNEST(…)`; a retry or a replay first
//!    leaves out the request ids stored already (migration 0027: a batch's first attempt holds
//!    only new ids and skips that per-row check, the costliest part of the flush),
//! 2. the charges of the rows stored, summed per user: one balance update and one `usage` ledger
//!    row per user (`cr_settle`), consuming this instance's balance lease,
//! 3. the per-key spend and last use, and the key leases.
//!
//! So writing a record twice (a replayed spool, a retry after a lost commit acknowledgement)
//! stores and charges it once. A failed flush is retried with the same rows (nothing is dequeued
//! destructively); while it is failing the bounded channel fills and applies back-pressure instead
//! of growing memory; after three failures in a row (or a record the database rejects) staff are
//! alerted (`alerts::Reporter`), and told again when it works. Once committed, the records are
//! marked done in the spool. On shutdown
//! everything queued is flushed; what cannot be stays in the spool. At start, before serving,
//! the spools of instances that are gone are replayed ([`UsageWriter::start`]). Records never
//! contain prompts or replies.

pub mod partitions;
mod spool;

use crate::alerts::Reporter;
use crate::pricing::{ServerToolUse, TokenUsage};
use crate::money::{MicroCny, MicroUsd};
use crate::text_enum::text_enum;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use spool::Spool;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

text_enum! {
    /// How a request ended.
    pub enum Outcome {
        Ok = "ok",
        /// The upstream answered an error (or sent an error event mid-stream).
        UpstreamError = "upstream_error",
        /// Refused or failed by the gateway itself (no upstream answered).
        GatewayError = "gateway_error",
        /// The upstream's stream broke off.
        UpstreamCut = "upstream_cut",
        /// The client went away before the end.
        ClientClosed = "client_closed",
        /// The upstream sent nothing for longer than the idle timeout.
        IdleTimeout = "idle_timeout",
        /// The instance shut down with the stream still open.
        Shutdown = "shutdown",
    }
}

/// One request as the gateway writes it and as the console and admin API read it back.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct UsageRecord {
    /// The request id returned to the client (`req_…`).
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub user_id: Uuid,
    pub key_id: Option<Uuid>,
    pub channel: String,
    /// "messages", "chat_completions" (OpenAI's format) or "count_tokens".
    pub endpoint: String,
    pub requested_model: String,
    /// The model that really answered (differs from `requested_model` after a fallback).
    pub served_model: Option<String>,
    pub upstream_id: Option<Uuid>,
    pub stream: bool,
    /// HTTP status returned to the client (200 also for a stream that was cut later).
    pub status: i32,
    pub error_type: Option<String>,
    pub outcome: Outcome,
    pub attempts: i32,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub tokens: TokenUsage,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub server_tools: ServerToolUse,
    pub cost_micro_usd: MicroUsd,
    /// Charged for this request (trial credit, allowance and balance together).
    pub charge_micros: MicroCny,
    /// Reserved before forwarding. A charge above it (input the body did not carry,
    /// server tools) is charged in full all the same: the difference is the request's overage.
    pub held_micros: MicroCny,
    pub latency_ms: i32,
    pub ttft_ms: Option<i32>,
    /// Answered by the conversation's sticky upstream (cache-aware routing).
    pub affinity: bool,
    /// The charge was held from the user's off-plan lease (the key's channel is outside their
    /// plan); not stored, it tells settlement which lease the charge consumes.
    #[sqlx(skip)]
    #[serde(skip)]
    pub off_plan: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageFilter {
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Default 100, at most 1000.
    pub limit: Option<i64>,
}

/// The columns of a [`UsageRecord`], for every query that reads records back.
pub const RECORD_COLUMNS: &str = "id, created_at, user_id, key_id, channel, endpoint, requested_model, served_model, \
     upstream_id, stream, status, error_type, outcome, attempts, input_tokens, output_tokens, cache_write_5m_tokens, \
     cache_write_1h_tokens, cache_read_tokens, web_search_requests, web_fetch_requests, cost_micro_usd, charge_micros, \
     held_micros, latency_ms, ttft_ms, affinity";

/// Newest first.
pub async fn list(pool: &PgPool, f: &UsageFilter) -> Result<Vec<UsageRecord>, sqlx::Error> {
    sqlx::query_as::<_, UsageRecord>(
        &format!(
            "SELECT {RECORD_COLUMNS} FROM usage_records WHERE ($1::uuid IS NULL OR user_id = $1) \
             AND ($2::uuid IS NULL OR key_id = $2) AND ($3::timestamptz IS NULL OR created_at >= $3) \
             AND ($4::timestamptz IS NULL OR created_at < $4) ORDER BY created_at DESC, id LIMIT $5"
        ),
    )
    .bind(f.user_id)
    .bind(f.key_id)
    .bind(f.since)
    .bind(f.until)
    .bind(f.limit.unwrap_or(100).clamp(1, 1000))
    .fetch_all(pool)
    .await
}

/// Where the spool is kept unless configured (`CLOUDROUTER_SPOOL_DIR`), next to the run
/// script's other state.
pub const DEFAULT_SPOOL_DIR: &str = ".cloudrouter/spool";

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub batch_rows: usize,
    /// Also the spool's sync cadence: records reach the disk at most this long after they are written.
    pub flush_interval: Duration,
    pub queue_capacity: usize,
    /// How long shutdown (or a replay at start) keeps retrying a failing flush before giving up;
    /// the records stay in the spool.
    pub shutdown_deadline: Duration,
    /// The spool's directory (its files are named after the database and the instance).
    pub spool_dir: PathBuf,
    /// Told when flushes keep failing and when they work again (a staff alert).
    pub alerts: Option<Reporter>,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            batch_rows: 500,
            flush_interval: Duration::from_millis(50),
            queue_capacity: 50_000,
            shutdown_deadline: Duration::from_secs(30),
            spool_dir: PathBuf::from(DEFAULT_SPOOL_DIR),
            alerts: None,
        }
    }
}

/// What the writer task receives. Records travel by value: boxing them to shrink the enum would
/// cost an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    /// a record, and the spool segment it was written to (None: it is not in the spool)
    Rec(UsageRecord, Option<u64>),
    Barrier(oneshot::Sender<()>),
}

/// The writer task's stop signal and handle (taken once, by `shutdown`).
type Control = Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>;

/// Handle to the batch writer. Cheap to clone.
#[derive(Clone)]
pub struct UsageWriter {
    tx: mpsc::Sender<Msg>,
    spool: Arc<Spool>,
    /// cuts the writer's gathering pause short when someone waits (`sync`)
    hurry: Arc<tokio::sync::Notify>,
    ctl: Arc<Mutex<Control>>,
}

impl UsageWriter {
    /// Opens this instance's spool, writes and settles what gone instances left in the spool
    /// directory (so before anything is served), then starts the writer task. `instance_id`
    /// names this gateway instance's leases and spool. Fails when the spool cannot be opened or
    /// replayed.
    pub async fn start(pool: PgPool, instance_id: Uuid, cfg: WriterConfig) -> anyhow::Result<UsageWriter> {
        let me = spool::Owner { deployment: spool::deployment(&pool).await?, instance: instance_id };
        let spool = Spool::open(cfg.spool_dir.clone(), me).map_err(|e| {
            anyhow::anyhow!("cannot open the usage spool in {}: {e}; set CLOUDROUTER_SPOOL_DIR to a writable directory on a local disk", cfg.spool_dir.display())
        })?;
        replay(&pool, me, &cfg).await?;
        spool.spawn_syncer(cfg.flush_interval);
        let (tx, rx) = mpsc::channel(cfg.queue_capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel();
        let hurry = Arc::new(tokio::sync::Notify::new());
        let handle = tokio::spawn(run(pool, instance_id, cfg, spool.clone(), rx, stop_rx, hurry.clone()));
        Ok(UsageWriter { tx, spool, hurry, ctl: Arc::new(Mutex::new(Some((stop_tx, handle)))) })
    }

    /// Spools a record and queues it without waiting (spawns a waiting send when the queue is full).
    pub fn submit(&self, rec: UsageRecord) {
        let seg = self.spool.append(&rec);
        match self.tx.try_send(Msg::Rec(rec, seg)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(rec)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(rec).await.is_err() {
                        writer_stopped(seg);
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => writer_stopped(seg),
        }
    }

    /// Spools a record and queues it, waiting for room.
    pub async fn send(&self, rec: UsageRecord) {
        let seg = self.spool.append(&rec);
        if self.tx.send(Msg::Rec(rec, seg)).await.is_err() {
            writer_stopped(seg);
        }
    }

    /// Records (and sync barriers) waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Waits until everything queued before this call is written and settled.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier(tx)).await.is_ok() {
            self.hurry.notify_one();
            let _ = rx.await;
        }
    }

    /// Flushes everything queued and stops the task.
    pub async fn shutdown(&self) {
        let ctl = self.ctl.lock().await.take();
        if let Some((stop, handle)) = ctl {
            let _ = stop.send(());
            let _ = handle.await;
        }
    }
}

/// A record came after the writer stopped: it is lost unless it is in the spool (`seg`), whose
/// files then stay for the next start.
fn writer_stopped(seg: Option<u64>) {
    if seg.is_some() {
        tracing::warn!("usage writer stopped; a usage record stays in the spool for the next start");
    } else {
        crate::telemetry::usage_lost("writer_stopped", 1);
        tracing::error!("usage writer stopped; a usage record was lost");
    }
}

/// Writes and settles the records that gone instances left in the spool directory, each under
/// its own instance's id (settlement consumes that instance's leases if they are not reaped yet),
/// and deletes their files.
async fn replay(pool: &PgPool, me: spool::Owner, cfg: &WriterConfig) -> anyhow::Result<()> {
    let dir = &cfg.spool_dir;
    let orphans = spool::orphans(dir, me).map_err(|e| anyhow::anyhow!("cannot read the usage spool in {}: {e}", dir.display()))?;
    for orphan in orphans {
        let mut read = 0;
        for path in &orphan.segments {
            let (mut records, torn) = spool::read_segment(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            if torn > 0 {
                tracing::warn!(path = %path.display(), bytes = torn, "skipped the unreadable end of a usage spool (a torn last record: its process died mid-write)");
            }
            read += records.len();
            while !records.is_empty() {
                let mut batch: Vec<UsageRecord> = records.drain(..records.len().min(cfg.batch_rows)).collect();
                if !flush_with_retry(pool, orphan.instance, &mut batch, Replayed, Some(cfg.shutdown_deadline), cfg.alerts.as_ref()).await {
                    anyhow::bail!("cannot write the usage records spooled in {}; they stay there for the next start", path.display());
                }
            }
        }
        tracing::warn!(instance = %orphan.instance, records = read, "replayed the usage spool of an instance that stopped without flushing it");
        orphan.finish();
    }
    Ok(())
}

/// Counts records per spool segment (consecutive records mostly share one).
fn count_segment(done: &mut Vec<(u64, u64)>, seg: u64) {
    match done.last_mut() {
        Some((n, count)) if *n == seg => *count += 1,
        _ => done.push((seg, 1)),
    }
}

async fn run(
    pool: PgPool,
    instance: Uuid,
    cfg: WriterConfig,
    spool: Arc<Spool>,
    mut rx: mpsc::Receiver<Msg>,
    mut stop: oneshot::Receiver<()>,
    hurry: Arc<tokio::sync::Notify>,
) {
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(cfg.batch_rows);
    // the batch's records per spool segment, marked committed after the flush
    let mut segments: Vec<(u64, u64)> = Vec::new();
    let mut barriers: Vec<oneshot::Sender<()>> = Vec::new();
    let mut stopping = false;
    let take = |m: Msg, batch: &mut Vec<UsageRecord>, segments: &mut Vec<(u64, u64)>, barriers: &mut Vec<oneshot::Sender<()>>| match m {
        Msg::Rec(r, seg) => {
            batch.push(r);
            if let Some(seg) = seg {
                count_segment(segments, seg);
            }
        }
        Msg::Barrier(b) => barriers.push(b),
    };
    loop {
        if !stopping && batch.is_empty() && barriers.is_empty() {
            // Wait for the first row (or stop), then let rows gather for up to flush_interval
            // without looking at them: nobody polls the channel meanwhile, so submitting a row
            // wakes no task (one wake per batch instead of one per request). A full batch
            // already queued, a waiting `sync` or a stop ends the pause at once.
            tokio::select! {
                r = rx.recv() => match r { Some(m) => take(m, &mut batch, &mut segments, &mut barriers), None => stopping = true },
                _ = &mut stop => stopping = true,
            }
            if !stopping && barriers.is_empty() && rx.len() + batch.len() < cfg.batch_rows {
                tokio::select! {
                    _ = tokio::time::sleep(cfg.flush_interval) => {}
                    _ = hurry.notified() => {}
                    _ = &mut stop => stopping = true,
                }
            }
        }
        while batch.len() < cfg.batch_rows {
            match rx.try_recv() {
                Ok(m) => take(m, &mut batch, &mut segments, &mut barriers),
                Err(_) => break,
            }
        }
        if !batch.is_empty() && flush_with_retry(&pool, instance, &mut batch, Fresh, stopping.then_some(cfg.shutdown_deadline), cfg.alerts.as_ref()).await {
            spool.committed(&segments);
        }
        segments.clear();
        for b in barriers.drain(..) {
            let _ = b.send(());
        }
        if stopping && rx.is_empty() && batch.is_empty() {
            break;
        }
    }
    let left = spool.close();
    if left > 0 {
        tracing::error!(records = left, "usage records not written at shutdown stay in the spool for the next start");
    }
}

/// Consecutive failed flushes of one batch that raise the staff alert (a single failure is often a
/// blip the retry absorbs).
const ALERT_AFTER_FAILURES: u32 = 3;

/// Whether some records of a batch may be stored already.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Batch {
    /// Records never sent to the database before (the live writer's first attempt): written
    /// without the per-row check for a stored request id.
    Fresh,
    /// A retry (the failed attempt may have committed) or a replayed spool: records stored
    /// already are left out.
    Replayed,
}
use Batch::{Fresh, Replayed};

/// Flushes `batch` until it is written (true), retrying failures; with `give_up_after`, stops
/// retrying after that long (false; the records stay in the spool). Staff are alerted
/// (`alerts`) while it keeps failing or when the database rejects a record, and told when it
/// works again.
async fn flush_with_retry(pool: &PgPool, instance: Uuid, batch: &mut Vec<UsageRecord>, mut kind: Batch, give_up_after: Option<Duration>, alerts: Option<&Reporter>) -> bool {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut failures = 0u32;
    let mut alerted = false;
    let mut alert = |error: &str| {
        if let Some(a) = alerts {
            a.usage_flush_failing(instance, error);
            alerted = true;
        }
    };
    let written = loop {
        let attempt = std::time::Instant::now();
        let r = flush(pool, instance, batch, kind).await;
        crate::telemetry::usage_flush(batch.len(), attempt.elapsed(), r.is_ok());
        match r {
            Ok(()) => {
                batch.clear();
                break true;
            }
            // a "fresh" batch met a stored request id (its spool was replayed meanwhile): at once
            // as a replay, which leaves that record out; not a failure
            Err(sqlx::Error::Database(e)) if kind == Fresh && e.is_unique_violation() => kind = Replayed,
            Err(e) => {
                kind = Replayed;
                failures += 1;
                tracing::warn!(rows = batch.len(), attempt = failures, error = %e, "usage flush failed; retrying");
                if failures >= ALERT_AFTER_FAILURES {
                    alert(&format!("usage flush failing ({failures} attempts): {e}"));
                }
                // A row the database rejects for itself (not a connection problem) must not block the
                // others forever: after a few tries, flush one row at a time and set aside bad rows.
                if failures >= 3 && matches!(e, sqlx::Error::Database(_)) {
                    let rows = std::mem::take(batch);
                    for r in rows {
                        let one = vec![r];
                        let attempt = std::time::Instant::now();
                        let r = flush(pool, instance, &one, Replayed).await;
                        crate::telemetry::usage_flush(1, attempt.elapsed(), r.is_ok());
                        if let Err(e) = r {
                            if matches!(e, sqlx::Error::Database(_)) {
                                crate::telemetry::usage_lost("rejected", 1);
                                tracing::error!(request_id = %one[0].id, error = %e, "usage record rejected by the database");
                                alert(&format!("a usage record was rejected by the database and set aside: {e}"));
                            } else {
                                batch.extend(one);
                            }
                        }
                    }
                    if batch.is_empty() {
                        break true;
                    }
                }
                if give_up_after.is_some_and(|d| started.elapsed() > d) {
                    tracing::error!(rows = batch.len(), "usage flush still failing; giving up");
                    batch.clear();
                    break false;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    if written && alerted {
        if let Some(a) = alerts {
            a.usage_flush_ok(instance);
        }
    }
    written
}

/// Writes a batch and settles the charges of the records not stored before, in one transaction
/// (one statement).
pub(crate) async fn flush(pool: &PgPool, instance: Uuid, rows: &[UsageRecord], kind: Batch) -> Result<(), sqlx::Error> {
    let n = rows.len();
    // strings are bound by reference: the batch is kept as it is for a retry
    let mut ids: Vec<&str> = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut keys: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut channels: Vec<&str> = Vec::with_capacity(n);
    let mut endpoints: Vec<&str> = Vec::with_capacity(n);
    let mut req_models: Vec<&str> = Vec::with_capacity(n);
    let mut served: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut ups: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut errs: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut tin = Vec::with_capacity(n);
    let mut tout = Vec::with_capacity(n);
    let mut t5 = Vec::with_capacity(n);
    let mut t1 = Vec::with_capacity(n);
    let mut tr = Vec::with_capacity(n);
    let mut searches = Vec::with_capacity(n);
    let mut fetches = Vec::with_capacity(n);
    let mut cost = Vec::with_capacity(n);
    let mut charge = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    let mut lat = Vec::with_capacity(n);
    let mut ttft: Vec<Option<i32>> = Vec::with_capacity(n);
    let mut affinity = Vec::with_capacity(n);
    let mut off_plan = Vec::with_capacity(n);
    for r in rows {
        ids.push(&r.id);
        created.push(r.created_at);
        users.push(r.user_id);
        keys.push(r.key_id);
        channels.push(&r.channel);
        endpoints.push(&r.endpoint);
        req_models.push(&r.requested_model);
        served.push(r.served_model.as_deref());
        ups.push(r.upstream_id);
        streams.push(r.stream);
        statuses.push(r.status);
        errs.push(r.error_type.as_deref());
        outcomes.push(r.outcome);
        attempts.push(r.attempts);
        tin.push(r.tokens.input_tokens);
        tout.push(r.tokens.output_tokens);
        t5.push(r.tokens.cache_write_5m_tokens);
        t1.push(r.tokens.cache_write_1h_tokens);
        tr.push(r.tokens.cache_read_tokens);
        searches.push(r.server_tools.web_search_requests);
        fetches.push(r.server_tools.web_fetch_requests);
        cost.push(r.cost_micro_usd);
        charge.push(r.charge_micros);
        held.push(r.held_micros);
        lat.push(r.latency_ms);
        ttft.push(r.ttft_ms);
        affinity.push(r.affinity);
        off_plan.push(r.off_plan);
    }
    // the per-user and per-key sums are taken in SQL over the rows stored (migration 0018)
    sqlx::query(
        "SELECT cr_write_usage($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, \
         $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)",
    )
    .bind(instance)
    .bind(kind == Fresh)
    .bind(&ids)
    .bind(&created)
    .bind(&users)
    .bind(&keys)
    .bind(&channels)
    .bind(&endpoints)
    .bind(&req_models)
    .bind(&served)
    .bind(&ups)
    .bind(&streams)
    .bind(&statuses)
    .bind(&errs)
    .bind(&outcomes)
    .bind(&attempts)
    .bind(&tin)
    .bind(&tout)
    .bind(&t5)
    .bind(&t1)
    .bind(&tr)
    .bind(&searches)
    .bind(&fetches)
    .bind(&cost)
    .bind(&charge)
    .bind(&held)
    .bind(&lat)
    .bind(&ttft)
    .bind(&affinity)
    .bind(&off_plan)
    .execute(pool)
    .await?;
    Ok(())
}
