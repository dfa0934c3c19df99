//! Subscriptions: one active per user, monthly cycles, each with the plan's allowance (micro-USD of
//! list price). The plan is a snapshot taken at purchase; scheduled plan changes take effect at the
//! next cycle boundary.
//!
//! Cycle boundaries (renewals, plan changes, endings) are [`super::renewals`]; this module owns a
//! subscription's own changes (start, next cycle, end, scheduled plan changes).

use super::orders::{self, Closed};
use super::plans::{self, Plan};
use super::{lock_user, pot_entry, BillingError};
use super::ledger::{Amount, EndReason, FundingSource, LedgerKind, Memo};
use crate::money::{MicroCny, MicroUsd};
use chrono::{DateTime, Duration, Months, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Days a subscription stays active after its cycle end while its renewal order is unpaid.
pub const RENEWAL_GRACE_DAYS: i64 = 3;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub user_id: Uuid,
    pub plan_code: String,
    pub plan_name: String,
    /// Snapshot at purchase: what this cycle cost.
    pub price_micros: MicroCny,
    pub allowance_micro_usd: MicroUsd,
    pub allowance_used_micro_usd: MicroUsd,
    pub cycle_start: DateTime<Utc>,
    pub cycle_end: DateTime<Utc>,
    /// active | ended | refunded
    pub status: String,
    /// Plan that takes effect at the next cycle boundary.
    pub pending_plan_code: Option<String>,
    pub started_at: DateTime<Utc>,
    /// The paid order of the current cycle.
    pub order_id: Uuid,
    /// An unpaid renewal order (during the grace period).
    pub renewal_order_id: Option<Uuid>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<EndReason>,
    /// Set up by staff on custom terms: renews on its plan even if that plan is not for sale.
    pub by_contract: bool,
}

impl Subscription {
    pub fn allowance_left_micro_usd(&self) -> MicroUsd {
        self.allowance_micro_usd - self.allowance_used_micro_usd
    }
}

pub(crate) const COLS: &str = "id, user_id, plan_code, plan_name, price_micros, allowance_micro_usd, allowance_used_micro_usd, \
    cycle_start, cycle_end, status, pending_plan_code, started_at, order_id, renewal_order_id, ended_at, end_reason, by_contract";

/// The user's active subscription, if any (also during a renewal's grace period).
pub async fn current(pool: &PgPool, user_id: Uuid, _now: DateTime<Utc>) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as::<_, Subscription>(&format!("SELECT {COLS} FROM subscriptions WHERE user_id = $1 AND status = 'active'"))
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// All of the user's subscriptions, newest first.
pub async fn history(pool: &PgPool, user_id: Uuid) -> Result<Vec<Subscription>, sqlx::Error> {
    sqlx::query_as::<_, Subscription>(&format!("SELECT {COLS} FROM subscriptions WHERE user_id = $1 ORDER BY started_at DESC"))
        .bind(user_id)
        .fetch_all(pool)
        .await
}

pub(crate) async fn active_for_update(tx: &mut PgConnection, user_id: Uuid) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as::<_, Subscription>(&format!(
        "SELECT {COLS} FROM subscriptions WHERE user_id = $1 AND status = 'active' FOR UPDATE"
    ))
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await
}

/// Schedules a switch to `plan_code` at the next cycle boundary (replacing any pending change).
pub async fn schedule_change(pool: &PgPool, user_id: Uuid, plan_code: &str) -> Result<Subscription, BillingError> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let plan = plans::get_tx(&mut tx, plan_code).await?.ok_or(BillingError::UnknownPlan)?;
    if !plan.purchasable {
        return Err(BillingError::PlanNotPurchasable);
    }
    let sub = active_for_update(&mut tx, user_id).await?.ok_or(BillingError::NoSubscription)?;
    if sub.plan_code == plan.code {
        return Err(BillingError::SamePlan);
    }
    // a renewal already raised for the old plan is withdrawn; the next job run raises it anew
    if let Some(o) = sub.renewal_order_id {
        orders::close_open(&mut tx, o, Closed::Cancelled, Utc::now()).await?;
    }
    let sub = sqlx::query_as::<_, Subscription>(&format!(
        "UPDATE subscriptions SET pending_plan_code = $2, renewal_order_id = NULL WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(sub.id)
    .bind(&plan.code)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(sub)
}

/// Cancels the pending plan change.
pub async fn cancel_change(pool: &PgPool, user_id: Uuid) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let sub = active_for_update(&mut tx, user_id).await?.ok_or(BillingError::NoSubscription)?;
    if sub.pending_plan_code.is_none() {
        return Err(BillingError::NoPendingChange);
    }
    if let Some(o) = sub.renewal_order_id {
        orders::close_open(&mut tx, o, Closed::Cancelled, Utc::now()).await?;
    }
    sqlx::query("UPDATE subscriptions SET pending_plan_code = NULL, renewal_order_id = NULL WHERE id = $1")
        .bind(sub.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn cycle_end_for(start: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    start.checked_add_months(Months::new(months)).unwrap_or(start + Duration::days(30 * i64::from(months)))
}

/// Starts a subscription with a first cycle of `months` months and as many months' allowance
/// (1 for a bought plan; a redeem code may give more). The order is paid; the caller holds the
/// user's money lock.
pub(crate) async fn activate(
    tx: &mut PgConnection,
    user_id: Uuid,
    plan: &Plan,
    order_id: Uuid,
    now: DateTime<Utc>,
    months: u32,
) -> Result<Subscription, BillingError> {
    let sql = format!(
        "INSERT INTO subscriptions (user_id, plan_code, plan_name, plan_snapshot, price_micros, allowance_micro_usd, \
         cycle_start, cycle_end, order_id, started_at, by_contract) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $7, \
         (SELECT offered_by IS NOT NULL FROM orders WHERE id = $9)) RETURNING {COLS}"
    );
    write_cycle(tx, &sql, user_id, plan, order_id, now, months).await
}

/// Writes a cycle of `months` on `plan` from `start`, paid by `order_id`, with `sql` (the INSERT
/// of a new subscription keyed by the user, or the UPDATE of one, as `$1`), ties the order to it
/// and grants the cycle's allowance, `months` times the plan's (ledger `grant`).
async fn write_cycle(
    tx: &mut PgConnection,
    sql: &str,
    key: Uuid,
    plan: &Plan,
    order_id: Uuid,
    start: DateTime<Utc>,
    months: u32,
) -> Result<Subscription, BillingError> {
    let allowance = plan.allowance_micro_usd.checked_mul(i64::from(months)).ok_or(BillingError::InvalidAmount)?;
    let sub = sqlx::query_as::<_, Subscription>(sql)
        .bind(key)
        .bind(&plan.code)
        .bind(&plan.name)
        .bind(serde_json::to_value(plan).unwrap_or_default())
        .bind(plan.price_micros)
        .bind(allowance)
        .bind(start)
        .bind(cycle_end_for(start, months))
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    orders::link_subscription(tx, order_id, sub.id).await?;
    let memo = Memo::AllowanceGranted { plan: plan.name.clone(), cycle_start: start.date_naive() };
    let granted = Amount::Usd(allowance);
    pot_entry(tx, sub.user_id, FundingSource::Allowance, granted, granted, LedgerKind::Grant, &memo, None)
        .await?;
    Ok(sub)
}

/// Removes the unused allowance of the current cycle (ledger `expiry` row).
async fn expire_allowance(tx: &mut PgConnection, sub: &Subscription, why: Memo) -> Result<(), BillingError> {
    let left = sub.allowance_left_micro_usd();
    if left.is_positive() {
        // not a use of the allowance: no "allowance used up" alert (migration 0021)
        sqlx::query("SELECT set_config('cloudrouter.allowance_expiry', 'on', true)").execute(&mut *tx).await?;
        sqlx::query("UPDATE subscriptions SET allowance_used_micro_usd = allowance_micro_usd WHERE id = $1")
            .bind(sub.id)
            .execute(&mut *tx)
            .await?;
        pot_entry(tx, sub.user_id, FundingSource::Allowance, Amount::Usd(-left), Amount::Usd(MicroUsd::ZERO), LedgerKind::Expiry, &why, None).await?;
    }
    Ok(())
}

/// Starts the next cycle on `plan` from `start` (the order is paid; the caller holds the locks).
pub(crate) async fn roll_cycle(
    tx: &mut PgConnection,
    sub: &Subscription,
    plan: &Plan,
    order_id: Uuid,
    start: DateTime<Utc>,
) -> Result<Subscription, BillingError> {
    expire_allowance(tx, sub, Memo::AllowanceLapsed).await?;
    let sql = format!(
        "UPDATE subscriptions SET plan_code = $2, plan_name = $3, plan_snapshot = $4, price_micros = $5, \
         allowance_micro_usd = $6, allowance_used_micro_usd = 0, cycle_start = $7, cycle_end = $8, order_id = $9, \
         pending_plan_code = NULL, renewal_order_id = NULL WHERE id = $1 RETURNING {COLS}"
    );
    write_cycle(tx, &sql, sub.id, plan, order_id, start, 1).await
}

/// Names the renewal order that pays the subscription's next cycle.
pub(crate) async fn set_renewal_order(tx: &mut PgConnection, id: Uuid, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE subscriptions SET renewal_order_id = $2 WHERE id = $1").bind(id).bind(order_id).execute(&mut *tx).await?;
    Ok(())
}

/// Ends a subscription (`ended` or `refunded`): the unused allowance expires and an open renewal
/// order is closed. The caller holds the user's money lock and the subscription row.
pub(crate) async fn end(
    tx: &mut PgConnection,
    sub: &Subscription,
    status: &str,
    reason: EndReason,
    now: DateTime<Utc>,
) -> Result<(), BillingError> {
    expire_allowance(tx, sub, Memo::AllowanceRemoved { reason }).await?;
    if let Some(o) = sub.renewal_order_id {
        orders::close_open(tx, o, Closed::Expired, now).await?;
    }
    sqlx::query("UPDATE subscriptions SET status = $2, ended_at = $3, end_reason = $4, pending_plan_code = NULL, renewal_order_id = NULL WHERE id = $1")
        .bind(sub.id)
        .bind(status)
        .bind(now)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
