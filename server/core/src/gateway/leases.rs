//! Shared budgets without a database round trip per request.
//!
//! Each gateway instance leases a slice of a shared budget in one atomic statement (SQL functions
//! `cr_lease_balance`, `cr_lease_key`, `cr_lease_window`, `cr_lease_slots`, `cr_take_rate`) and
//! serves requests from that slice in memory. The sum of every instance's slices never exceeds the
//! budget, so several instances together never overspend, exceed a concurrency capacity, a rate
//! or a plan window. Unused slices go back after a short idle time; a dead instance's slices are
//! reaped when its heartbeat is stale.
//!
//! Money: a request reserves its worst-case charge (the hold) from the user's lease (and from the
//! key's lease if the key has a spending limit, and its worst-case list price from the plan
//! window's lease when the plan has windows); on completion the actual charge is settled through
//! the usage writer and the rest of the hold returns to the lease; on failure all of it does.

use crate::money::{MicroCny, MicroUsd};
use sqlx::PgPool;
use std::collections::HashMap;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const MONEY_IDLE_RETURN: Duration = Duration::from_secs(3);
const SLOT_LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Budget {
    /// The user's money for requests the plan allowance may pay (all of them without a plan).
    User(Uuid),
    /// The user's money for requests on channels outside their plan (trial credit and wallet).
    UserOffPlan(Uuid),
    Key(Uuid),
}

/// An amount a lease counts: micro-CNY of money, micro-USD of a plan window.
pub(crate) trait Amount:
    Copy + Ord + Default + Add<Output = Self> + Sub<Output = Self> + AddAssign + SubAssign + Send + Sync + 'static
{
}
impl Amount for MicroCny {}
impl Amount for MicroUsd {}

struct MoneyState<M> {
    free: M,
    inflight: u32,
    last_used: Option<Instant>,
}

impl<M: Amount> Default for MoneyState<M> {
    fn default() -> Self {
        MoneyState { free: M::default(), inflight: 0, last_used: None }
    }
}

struct MoneyLease<M> {
    st: Mutex<MoneyState<M>>,
    refill: tokio::sync::Mutex<()>,
}

impl<M: Amount> Default for MoneyLease<M> {
    fn default() -> Self {
        MoneyLease { st: Mutex::default(), refill: tokio::sync::Mutex::default() }
    }
}

#[derive(Default)]
struct SlotState {
    held: i32,
    in_use: i32,
    last_used: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct SlotLease {
    st: Mutex<SlotState>,
    refill: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct RateState {
    window: i64,
    tokens: i32,
}

#[derive(Default)]
struct RateLease {
    st: Mutex<RateState>,
    refill: tokio::sync::Mutex<()>,
}

pub(crate) struct Leases {
    pool: PgPool,
    pub(crate) instance_id: Uuid,
    money: Mutex<HashMap<Budget, Arc<MoneyLease<MicroCny>>>>,
    /// per user: the room in the plan's 5-hour and weekly windows (migration 0026)
    windows: Mutex<HashMap<Uuid, Arc<MoneyLease<MicroUsd>>>>,
    slots: Mutex<HashMap<String, Arc<SlotLease>>>,
    rates: Mutex<HashMap<String, Arc<RateLease>>>,
}

/// The current minute of the per-minute limits (requests here, tokens in `token_rate`): its
/// number, its start, and the seconds to the next one (a `retry-after`).
pub(super) fn minute_window() -> (i64, chrono::DateTime<chrono::Utc>, u64) {
    let now = chrono::Utc::now();
    let minute = now.timestamp().div_euclid(60);
    let retry_after = (60 - now.timestamp().rem_euclid(60)).max(1) as u64;
    (minute, chrono::DateTime::from_timestamp(minute * 60, 0).unwrap_or(now), retry_after)
}

/// A reservation from a local lease (the request's hold): micro-CNY of money, or micro-USD of a
/// plan window. `settle` ends it; dropping it unsettled returns all of it (a failed request costs
/// nothing).
pub(crate) struct MoneyHold<M: Amount = MicroCny> {
    lease: Arc<MoneyLease<M>>,
    amount: M,
    settled: bool,
}

impl<M: Amount> MoneyHold<M> {
    pub(crate) fn amount(&self) -> M {
        self.amount
    }

    /// Ends the reservation: `charged` leaves with the usage record (the writer consumes it from
    /// the database lease); the rest of the hold returns to the local lease at once. A charge
    /// above the hold takes the excess from the lease's free part, which may go below zero: the
    /// local lease never counts more than the database lease still holds.
    pub(crate) fn settle(mut self, charged: M) {
        self.release(charged);
    }

    fn release(&mut self, charged: M) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let mut st = self.lease.st.lock().unwrap();
        st.free += self.amount - charged.max(M::default());
        st.inflight = st.inflight.saturating_sub(1);
        st.last_used = Some(Instant::now());
    }
}

impl<M: Amount> Drop for MoneyHold<M> {
    fn drop(&mut self) {
        self.release(M::default());
    }
}

/// A held concurrency slot; dropping it frees the slot (locally, at once).
pub(crate) struct SlotGuard {
    lease: Arc<SlotLease>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut st = self.lease.st.lock().unwrap();
        st.in_use -= 1;
        st.last_used = Some(Instant::now());
    }
}

/// What this instance holds of the shared budgets right now (for `/metrics`).
pub(crate) struct LeaseSummary {
    /// money leases (per user, off-plan user and key) and the unreserved money in them
    pub money_leases: usize,
    pub money_free: MicroCny,
    /// requests holding money from a lease now
    pub holds: u64,
    /// concurrency slots leased, and of those in use
    pub slots_held: i64,
    pub slots_in_use: i64,
}

impl Leases {
    pub(crate) fn summary(&self) -> LeaseSummary {
        let money: Vec<Arc<MoneyLease<MicroCny>>> = self.money.lock().unwrap().values().cloned().collect();
        let slots: Vec<Arc<SlotLease>> = self.slots.lock().unwrap().values().cloned().collect();
        let mut s = LeaseSummary { money_leases: money.len(), money_free: MicroCny::ZERO, holds: 0, slots_held: 0, slots_in_use: 0 };
        for m in money {
            let st = m.st.lock().unwrap();
            s.money_free = s.money_free.checked_add(st.free).unwrap_or(s.money_free);
            s.holds += u64::from(st.inflight);
        }
        for l in slots {
            let st = l.st.lock().unwrap();
            s.slots_held += i64::from(st.held);
            s.slots_in_use += i64::from(st.in_use);
        }
        s
    }

    pub(crate) async fn register(pool: PgPool) -> Result<Arc<Leases>, sqlx::Error> {
        let instance_id = Uuid::new_v4();
        sqlx::query("INSERT INTO gateway_instances (id) VALUES ($1)").bind(instance_id).execute(&pool).await?;
        Ok(Arc::new(Leases {
            pool,
            instance_id,
            money: Mutex::default(),
            windows: Mutex::default(),
            slots: Mutex::default(),
            rates: Mutex::default(),
        }))
    }

    /// Reserves `amount` micro-CNY of a budget. None when the budget cannot cover it.
    pub(crate) async fn reserve(&self, b: Budget, amount: MicroCny) -> Result<Option<MoneyHold>, sqlx::Error> {
        let lease = self.money.lock().unwrap().entry(b).or_default().clone();
        // take a few requests' worth at once (at least ¥1), never less than needed
        let want = MicroCny::from_micros(amount.micros().saturating_mul(8)).max(MicroCny::units(1));
        reserve_from(lease, amount, want, |need, want| async move {
            match b {
                Budget::User(u) | Budget::UserOffPlan(u) => sqlx::query_scalar("SELECT cr_lease_balance($1, $2, $3, $4, $5)")
                    .bind(self.instance_id)
                    .bind(u)
                    .bind(need)
                    .bind(want)
                    .bind(matches!(b, Budget::UserOffPlan(_)))
                    .fetch_one(&self.pool)
                    .await,
                Budget::Key(k) => sqlx::query_scalar("SELECT cr_lease_key($1, $2, $3, $4)")
                    .bind(self.instance_id)
                    .bind(k)
                    .bind(need)
                    .bind(want)
                    .fetch_one(&self.pool)
                    .await,
            }
        })
        .await
    }

    /// Reserves `amount` micro-USD of list price from the room in the user's plan windows. None
    /// when the windows have no such room (or the plan none). Only what is needed is leased: a
    /// window's room is small, and a slice idle in another instance would refuse requests here.
    pub(crate) async fn reserve_window(&self, user: Uuid, amount: MicroUsd) -> Result<Option<MoneyHold<MicroUsd>>, sqlx::Error> {
        let lease = self.windows.lock().unwrap().entry(user).or_default().clone();
        reserve_from(lease, amount, amount, |need, want| async move {
            sqlx::query_scalar("SELECT cr_lease_window($1, $2, $3, $4)")
                .bind(self.instance_id)
                .bind(user)
                .bind(need)
                .bind(want)
                .fetch_one(&self.pool)
                .await
        })
        .await
    }

    /// Acquires one concurrency slot of `scope` with the given capacity.
    pub(crate) async fn acquire_slot(&self, scope: &str, capacity: i32) -> Result<Option<SlotGuard>, sqlx::Error> {
        let lease = {
            let mut m = self.slots.lock().unwrap();
            match m.get(scope) {
                Some(l) => l.clone(),
                None => m.entry(scope.to_string()).or_default().clone(),
            }
        };
        let chunk = (capacity / 16).max(1);
        for _ in 0..3 {
            {
                let mut st = lease.st.lock().unwrap();
                if st.in_use < st.held {
                    st.in_use += 1;
                    st.last_used = Some(Instant::now());
                    return Ok(Some(SlotGuard { lease: lease.clone() }));
                }
            }
            let _g = lease.refill.lock().await;
            {
                let st = lease.st.lock().unwrap();
                if st.in_use < st.held {
                    continue;
                }
            }
            let granted: i32 = sqlx::query_scalar("SELECT cr_lease_slots($1, $2, $3, 1, $4)")
                .bind(self.instance_id)
                .bind(scope)
                .bind(capacity)
                .bind(chunk)
                .fetch_one(&self.pool)
                .await?;
            if !granted.is_positive() {
                return Ok(None);
            }
            lease.st.lock().unwrap().held += granted;
        }
        Ok(None)
    }

    /// Takes one request of a per-minute rate. `Err(seconds)` until the next window when exhausted.
    pub(crate) async fn take_rate(&self, scope: &str, limit: i32) -> Result<Result<(), u64>, sqlx::Error> {
        let lease = {
            let mut m = self.rates.lock().unwrap();
            match m.get(scope) {
                Some(l) => l.clone(),
                None => m.entry(scope.to_string()).or_default().clone(),
            }
        };
        let (window, start, retry_after) = minute_window();
        {
            let mut st = lease.st.lock().unwrap();
            if st.window != window {
                st.window = window;
                st.tokens = 0;
            }
            if st.tokens > 0 {
                st.tokens -= 1;
                return Ok(Ok(()));
            }
        }
        let _g = lease.refill.lock().await;
        {
            let mut st = lease.st.lock().unwrap();
            if st.window == window && st.tokens > 0 {
                st.tokens -= 1;
                return Ok(Ok(()));
            }
        }
        let chunk = (limit / 20).max(1);
        let granted: i32 = sqlx::query_scalar("SELECT cr_take_rate($1, $2, $3, $4)")
            .bind(scope)
            .bind(start)
            .bind(limit)
            .bind(chunk)
            .fetch_one(&self.pool)
            .await?;
        if granted <= 0 {
            return Ok(Err(retry_after));
        }
        let mut st = lease.st.lock().unwrap();
        st.window = window;
        st.tokens = granted - 1;
        Ok(Ok(()))
    }

    /// Returns idle slices to the database. Called periodically and at shutdown (`all`).
    pub(crate) async fn return_idle(&self, all: bool) {
        let now = Instant::now();
        let money: Vec<(Budget, Arc<MoneyLease<MicroCny>>)> =
            self.money.lock().unwrap().iter().map(|(b, l)| (*b, l.clone())).collect();
        for (b, lease) in money {
            let give = take_idle(&lease, now, all);
            if give.is_positive() {
                let q = match b {
                    Budget::User(_) => "UPDATE balance_leases SET amount_micros = GREATEST(amount_micros - $3, 0), updated_at = now() WHERE instance_id = $1 AND user_id = $2 AND NOT off_plan",
                    Budget::UserOffPlan(_) => "UPDATE balance_leases SET amount_micros = GREATEST(amount_micros - $3, 0), updated_at = now() WHERE instance_id = $1 AND user_id = $2 AND off_plan",
                    Budget::Key(_) => "UPDATE key_leases SET amount_micros = GREATEST(amount_micros - $3, 0), updated_at = now() WHERE instance_id = $1 AND key_id = $2",
                };
                let id = match b {
                    Budget::User(u) | Budget::UserOffPlan(u) | Budget::Key(u) => u,
                };
                if let Err(e) = sqlx::query(q).bind(self.instance_id).bind(id).bind(give).execute(&self.pool).await {
                    tracing::warn!(error = %e, "could not return an idle lease; it returns when this instance stops");
                }
            }
        }
        let windows: Vec<(Uuid, Arc<MoneyLease<MicroUsd>>)> =
            self.windows.lock().unwrap().iter().map(|(u, l)| (*u, l.clone())).collect();
        for (user, lease) in windows {
            let give = take_idle(&lease, now, all);
            if give.is_positive() {
                if let Err(e) = sqlx::query(
                    "UPDATE window_leases SET amount_micro_usd = GREATEST(amount_micro_usd - $3, 0), updated_at = now() WHERE instance_id = $1 AND user_id = $2",
                )
                .bind(self.instance_id)
                .bind(user)
                .bind(give)
                .execute(&self.pool)
                .await
                {
                    tracing::warn!(error = %e, "could not return an idle window lease; it returns when this instance stops");
                }
            }
        }
        let slots: Vec<(String, Arc<SlotLease>)> =
            self.slots.lock().unwrap().iter().map(|(s, l)| (s.clone(), l.clone())).collect();
        for (scope, lease) in slots {
            let give = {
                let mut st = lease.st.lock().unwrap();
                let recent = st.last_used.is_some_and(|t| now.duration_since(t) < SLOT_LINGER);
                // keep what is in use, plus one spare while recently active
                let keep = st.in_use + if recent && !all { 1 } else { 0 };
                let give = (st.held - keep).max(0);
                st.held -= give;
                give
            };
            if give > 0 {
                if let Err(e) = sqlx::query(
                    "UPDATE slot_leases SET slots = GREATEST(slots - $3, 0) WHERE instance_id = $1 AND scope = $2",
                )
                .bind(self.instance_id)
                .bind(&scope)
                .bind(give)
                .execute(&self.pool)
                .await
                {
                    tracing::warn!(error = %e, "could not return idle slots");
                }
            }
        }
    }

    /// Heartbeat; also reaps instances that stopped beating and old rate windows.
    pub(crate) async fn heartbeat(&self) -> Result<(), sqlx::Error> {
        let r = sqlx::query("UPDATE gateway_instances SET heartbeat_at = now() WHERE id = $1")
            .bind(self.instance_id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            // We were presumed dead and our leases reaped: start from nothing again.
            tracing::error!("gateway instance lease registration was reaped; re-registering");
            sqlx::query("INSERT INTO gateway_instances (id) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(self.instance_id)
                .execute(&self.pool)
                .await?;
            for l in self.money.lock().unwrap().values() {
                l.st.lock().unwrap().free = MicroCny::ZERO;
            }
            for l in self.windows.lock().unwrap().values() {
                l.st.lock().unwrap().free = MicroUsd::ZERO;
            }
            for l in self.slots.lock().unwrap().values() {
                let mut st = l.st.lock().unwrap();
                st.held = st.in_use;
            }
            let held: Vec<(String, i32)> = self
                .slots
                .lock()
                .unwrap()
                .iter()
                .map(|(s, l)| (s.clone(), l.st.lock().unwrap().held))
                .filter(|(_, h)| *h > 0)
                .collect();
            for (scope, h) in held {
                sqlx::query("INSERT INTO slot_leases (instance_id, scope, slots) VALUES ($1, $2, $3) ON CONFLICT (instance_id, scope) DO UPDATE SET slots = EXCLUDED.slots")
                    .bind(self.instance_id)
                    .bind(scope)
                    .bind(h)
                    .execute(&self.pool)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM gateway_instances WHERE heartbeat_at < now() - interval '60 seconds'")
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM rate_windows WHERE window_start < now() - interval '5 minutes'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives every lease back (after the usage writer has flushed).
    pub(crate) async fn unregister(&self) {
        if let Err(e) = sqlx::query("DELETE FROM gateway_instances WHERE id = $1")
            .bind(self.instance_id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "could not unregister the gateway instance; its leases expire in 60 s");
        }
    }
}

/// Serves `amount` from the local lease, refilling it from the database with `grant(need, want)`
/// (which returns what it granted, 0 for nothing) while another request is not already doing so.
async fn reserve_from<M, F, Fut>(lease: Arc<MoneyLease<M>>, amount: M, want: M, grant: F) -> Result<Option<MoneyHold<M>>, sqlx::Error>
where
    M: Amount,
    F: Fn(M, M) -> Fut,
    Fut: std::future::Future<Output = Result<M, sqlx::Error>>,
{
    for _ in 0..4 {
        {
            let mut st = lease.st.lock().unwrap();
            if st.free >= amount {
                st.free -= amount;
                st.inflight += 1;
                st.last_used = Some(Instant::now());
                drop(st);
                return Ok(Some(MoneyHold { lease, amount, settled: false }));
            }
        }
        let _g = lease.refill.lock().await;
        let need = {
            let st = lease.st.lock().unwrap();
            amount - st.free
        };
        if need <= M::default() {
            continue;
        }
        let granted = grant(need, want.max(need)).await?;
        if granted <= M::default() {
            return Ok(None);
        }
        lease.st.lock().unwrap().free += granted;
    }
    Ok(None)
}

/// The free part of a lease to give back: all of it at shutdown, else once it has been idle.
fn take_idle<M: Amount>(lease: &MoneyLease<M>, now: Instant, all: bool) -> M {
    let mut st = lease.st.lock().unwrap();
    let idle = st.last_used.is_none_or(|t| now.duration_since(t) >= MONEY_IDLE_RETURN);
    if st.free > M::default() && (all || (st.inflight == 0 && idle)) {
        std::mem::take(&mut st.free)
    } else {
        M::default()
    }
}
