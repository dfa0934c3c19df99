//! Staff alerts: conditions this instance sees, reported without waiting and written to
//! `staff_alerts` by one task per instance, deduplicated there across instances.
//!
//! The request path only calls a [`Reporter`] method, which is a `try_send` on a bounded channel
//! (a full channel drops the signal: the condition is reported again soon, and the task
//! coalesces repeats anyway). The task writes a raise at most once per half settle time per
//! (kind, subject), so a condition seen on every request costs one small write now and then.
//! A raise inserts the open row, or refreshes the open one (`ON CONFLICT` on the partial unique
//! index): only the insert queues an "opened" notice, in the same statement. A clear marks the
//! open row `clear_since`; every instance's task resolves rows clear (or, for conditions that have
//! no "gone" signal, unseen) for the settle time, queuing the "resolved" notice in the same
//! statement, so each alert opens and resolves once whichever instances saw it. A write that
//! fails (the database is away) is kept, one per (kind, subject), and tried again.

use super::AlertKind;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

/// Signals waiting for the task; beyond this they are dropped (and reported again later).
const QUEUE: usize = 1024;
/// A key refused for its limit is reported to the database at most this often.
const KEY_LIMIT_EVERY: Duration = Duration::from_secs(60);
/// Conditions with no "gone" signal: resolved once they have not been seen for the settle time.
const CLEAR_WHEN_UNSEEN: &[AlertKind] = &[AlertKind::ChannelCapacity];

#[derive(Debug)]
enum Signal {
    Raise { kind: AlertKind, subject: String, name: String, detail: String },
    Clear { kind: AlertKind, subject: String },
    KeyLimit(Uuid),
}

/// This instance's way to report conditions. Cheap to clone; every method returns at once.
#[derive(Clone, Debug)]
pub struct Reporter {
    tx: mpsc::Sender<Signal>,
    /// wakes this instance's delivery task when a notice was queued here
    wake: Arc<Notify>,
}

impl Reporter {
    /// Starts the task that writes what is reported; an alert resolves once its condition has
    /// been gone for `settle`. Returns the reporter and the task (aborted at shutdown).
    pub fn start(pool: PgPool, settle: Duration) -> (Reporter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(run(pool, rx, settle, wake.clone()));
        (Reporter { tx, wake }, task)
    }

    fn send(&self, s: Signal) {
        // never waits: a full queue means the task is behind, and the condition recurs
        let _ = self.tx.try_send(s);
    }

    fn raise(&self, kind: AlertKind, subject: String, name: &str, detail: String) {
        self.send(Signal::Raise { kind, subject, name: name.to_string(), detail });
    }

    /// An upstream's circuit opened after failures (`detail`: the last one).
    pub fn upstream_down(&self, id: Uuid, name: &str, detail: &str) {
        self.raise(AlertKind::UpstreamDown, id.to_string(), name, format!("circuit open; last failure: {detail}"));
    }

    /// An upstream's account refused (`reason` as `gateway::refusal` read it).
    pub fn upstream_account(&self, id: Uuid, name: &str, reason: &str) {
        self.raise(AlertKind::UpstreamAccount, id.to_string(), name, reason.to_string());
    }

    /// An upstream answered again: its circuit closed.
    pub fn upstream_recovered(&self, id: Uuid) {
        for kind in [AlertKind::UpstreamDown, AlertKind::UpstreamAccount] {
            self.send(Signal::Clear { kind, subject: id.to_string() });
        }
    }

    /// This instance's usage writer failed to flush (or the database rejected a record).
    pub fn usage_flush_failing(&self, instance: Uuid, error: &str) {
        let detail: String = error.chars().take(300).collect();
        self.raise(AlertKind::UsageFlush, instance.to_string(), &format!("instance {instance}"), detail);
    }

    /// This instance's usage writer flushed again.
    pub fn usage_flush_ok(&self, instance: Uuid) {
        self.send(Signal::Clear { kind: AlertKind::UsageFlush, subject: instance.to_string() });
    }

    /// A request was refused because the channel (or every upstream of it) is at capacity.
    pub fn channel_at_capacity(&self, code: &str, name: &str, detail: &str) {
        self.raise(AlertKind::ChannelCapacity, code.to_string(), name, detail.to_string());
    }

    /// A request was refused for its key's spending limit (the customer is told once per limit).
    pub fn key_limit_refused(&self, key: Uuid) {
        self.send(Signal::KeyLimit(key));
    }

    /// What the delivery task waits on.
    pub(super) fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Signal>, settle: Duration, wake: Arc<Notify>) {
    let refresh = settle / 2;
    // when this instance last wrote each raise; a repeat within `refresh` is only counted
    let mut raised: HashMap<(AlertKind, String), Instant> = HashMap::new();
    let mut keys: HashMap<Uuid, Instant> = HashMap::new();
    // writes that failed, tried again at each tick (the latest per condition)
    let mut retry: HashMap<(AlertKind, String), Signal> = HashMap::new();
    let mut tick = tokio::time::interval((settle / 2).clamp(Duration::from_millis(50), Duration::from_secs(15)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            s = rx.recv() => {
                let Some(s) = s else { return };
                let now = Instant::now();
                match &s {
                    Signal::Raise { kind, subject, .. } => {
                        let key = (*kind, subject.clone());
                        if raised.get(&key).is_some_and(|t| now.duration_since(*t) < refresh) {
                            continue;
                        }
                        raised.insert(key, now);
                    }
                    Signal::Clear { kind, subject } => {
                        raised.remove(&(*kind, subject.clone()));
                    }
                    Signal::KeyLimit(key) => {
                        if keys.get(key).is_some_and(|t| now.duration_since(*t) < KEY_LIMIT_EVERY) {
                            continue;
                        }
                        keys.insert(*key, now);
                    }
                }
                write(&pool, s, &mut retry, &wake).await;
            }
            _ = tick.tick() => {
                for (_, s) in std::mem::take(&mut retry) {
                    write(&pool, s, &mut retry, &wake).await;
                }
                match resolve_settled(&pool, settle).await {
                    Ok(0) => {}
                    Ok(_) => wake.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "resolving staff alerts failed"),
                }
                keys.retain(|_, t| t.elapsed() < KEY_LIMIT_EVERY);
            }
        }
    }
}

/// Writes one signal; a failure keeps it in `retry`.
async fn write(pool: &PgPool, s: Signal, retry: &mut HashMap<(AlertKind, String), Signal>, wake: &Notify) {
    let r = match &s {
        Signal::Raise { kind, subject, name, detail } => raise(pool, *kind, subject, name, detail).await,
        Signal::Clear { kind, subject } => clear(pool, *kind, subject).await.map(|()| false),
        Signal::KeyLimit(key) => super::customer::key_limit_refused(pool, *key).await,
    };
    match r {
        Ok(true) => wake.notify_one(),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "writing an alert failed; trying again");
            let key = match &s {
                Signal::Raise { kind, subject, .. } | Signal::Clear { kind, subject } => (*kind, subject.clone()),
                Signal::KeyLimit(key) => (AlertKind::KeyLimit, key.to_string()),
            };
            retry.insert(key, s);
        }
    }
}

/// Opens the alert, or refreshes the open one; true when it opened (its notice is queued).
pub async fn raise(pool: &PgPool, kind: AlertKind, subject: &str, name: &str, detail: &str) -> Result<bool, sqlx::Error> {
    let opened: Option<bool> = sqlx::query_scalar(
        "WITH up AS (
             INSERT INTO staff_alerts (kind, subject, subject_name, detail) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, subject) WHERE resolved_at IS NULL
             DO UPDATE SET last_seen_at = now(), clear_since = NULL, detail = EXCLUDED.detail
             RETURNING id, kind, subject, subject_name, detail, xmax = 0 AS inserted),
         queued AS (
             INSERT INTO alert_outbox (alert_id, kind, status, subject, subject_name, detail)
             SELECT id, kind, 'opened', subject, subject_name, detail FROM up WHERE inserted)
         SELECT inserted FROM up",
    )
    .bind(kind)
    .bind(subject)
    .bind(name)
    .bind(detail)
    .fetch_optional(pool)
    .await?;
    Ok(opened.unwrap_or(false))
}

/// The condition was seen gone: the open alert resolves if it stays gone for the settle time.
pub async fn clear(pool: &PgPool, kind: AlertKind, subject: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE staff_alerts SET clear_since = now() WHERE kind = $1 AND subject = $2 AND resolved_at IS NULL AND clear_since IS NULL")
        .bind(kind)
        .bind(subject)
        .execute(pool)
        .await?;
    Ok(())
}

/// Resolves the open alerts gone (or unseen) for `settle`, queuing their notices; how many.
pub async fn resolve_settled(pool: &PgPool, settle: Duration) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "WITH done AS (
             UPDATE staff_alerts SET resolved_at = now()
             WHERE resolved_at IS NULL
               AND (clear_since <= now() - make_interval(secs => $1)
                    OR (kind = ANY($2) AND last_seen_at <= now() - make_interval(secs => $1)))
             RETURNING id, kind, subject, subject_name, detail),
         queued AS (
             INSERT INTO alert_outbox (alert_id, kind, status, subject, subject_name, detail)
             SELECT id, kind, 'resolved', subject, subject_name, detail FROM done)
         SELECT count(*) FROM done",
    )
    .bind(settle.as_secs_f64())
    .bind(CLEAR_WHEN_UNSEEN)
    .fetch_one(pool)
    .await?;
    Ok(n as u64)
}

/// A staff alert as the Operations page lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaffAlert {
    pub id: i64,
    pub kind: AlertKind,
    pub subject: String,
    pub subject_name: String,
    pub detail: String,
    pub opened_at: chrono::DateTime<chrono::Utc>,
    pub last_seen_at: chrono::DateTime<chrono::Utc>,
    pub resolved_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The open alerts, then the latest resolved ones; at most `limit` in all.
pub async fn history(pool: &PgPool, limit: i64) -> Result<Vec<StaffAlert>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, subject, subject_name, detail, opened_at, last_seen_at, resolved_at FROM staff_alerts
         ORDER BY resolved_at IS NOT NULL, opened_at DESC, id DESC LIMIT $1",
    )
    .bind(limit.clamp(1, 500))
    .fetch_all(pool)
    .await
}
