//! Cycle boundaries, from the periodic jobs ([`run_cycle_boundaries`]).
//!
//! At a cycle boundary:
//! * the next plan is the pending one, else the current plan as currently offered (a price edit
//!   applies from the next renewal, never to a cycle already bought); a plan that is no longer
//!   purchasable ends the subscription;
//! * a subscription with a pending refund request is not renewed: it ends at its cycle end (the
//!   request is decided later and refunds the cycle it was made for);
//! * if the wallet (minus in-flight holds) covers the price, it is charged and a new cycle starts
//!   at the old cycle's end (a paid `renewal` order with method `balance` records it);
//! * otherwise a `renewal` order is raised and the subscription stays active for a grace period of
//!   [`RENEWAL_GRACE_DAYS`] days with what is left of the old allowance (no new allowance). Paying
//!   the order starts a new cycle at the payment time; if it is still unpaid when the grace period
//!   ends, the subscription ends (status `ended`) and the order expires.
//!
//! Each subscription is processed in its own transaction after taking the user's money lock and
//! re-checking that it is still due (`FOR UPDATE SKIP LOCKED`), so the job is idempotent and safe
//! when several server instances run it at once.

use super::ledger::EndReason;
use super::orders::{self, OrderKind, PaymentMethod};
use super::subscriptions::{self, Subscription, RENEWAL_GRACE_DAYS};
use super::{lock_user, plans, purchases, wallet_available, BillingError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// What one run of [`run_cycle_boundaries`] did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CycleReport {
    /// New cycles charged to the wallet.
    pub renewed: u32,
    /// Of those, how many switched to a scheduled plan.
    pub plan_changes: u32,
    /// Renewal orders raised (wallet too low).
    pub renewal_orders: u32,
    /// Subscriptions ended (renewal unpaid after the grace period, or plan withdrawn).
    pub ended: u32,
}

/// Processes every subscription whose cycle has ended (see the module doc). Idempotent.
pub async fn run_cycle_boundaries(pool: &PgPool, now: DateTime<Utc>) -> Result<CycleReport, BillingError> {
    let mut report = CycleReport::default();
    let due: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, user_id FROM subscriptions WHERE status = 'active' AND cycle_end <= $1 ORDER BY cycle_end LIMIT 1000",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    for (id, user_id) in due {
        let mut tx = pool.begin().await?;
        lock_user(&mut tx, user_id).await?;
        let sub = sqlx::query_as::<_, Subscription>(&format!(
            "SELECT {} FROM subscriptions WHERE id = $1 AND status = 'active' AND cycle_end <= $2 FOR UPDATE SKIP LOCKED", subscriptions::COLS
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(sub) = sub else {
            continue;
        };
        if sub.renewal_order_id.is_some() {
            if now >= sub.cycle_end + Duration::days(RENEWAL_GRACE_DAYS) {
                subscriptions::end(&mut tx, &sub, "ended", EndReason::RenewalNotPaid, now).await?;
                report.ended += 1;
            }
            tx.commit().await?;
            continue;
        }
        // a customer waiting for a refund decision is leaving: no renewal
        let refund_pending: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refund_requests WHERE subscription_id = $1 AND status = 'pending')")
                .bind(sub.id)
                .fetch_one(&mut *tx)
                .await?;
        if refund_pending {
            subscriptions::end(&mut tx, &sub, "ended", EndReason::RefundRequested, now).await?;
            report.ended += 1;
            tx.commit().await?;
            continue;
        }
        let code = sub.pending_plan_code.clone().unwrap_or_else(|| sub.plan_code.clone());
        let plan = plans::get_tx(&mut tx, &code).await?.filter(|p| p.purchasable || sub.by_contract);
        let Some(plan) = plan else {
            subscriptions::end(&mut tx, &sub, "ended", EndReason::PlanWithdrawn, now).await?;
            report.ended += 1;
            tx.commit().await?;
            continue;
        };
        let available = wallet_available(&mut tx, user_id).await?;
        if available >= plan.price_micros {
            let order = orders::insert_order(&mut tx, user_id, OrderKind::Renewal, Some(&plan), Some(sub.id), plan.price_micros, PaymentMethod::Balance, now + Duration::hours(1))
                .await?;
            subscriptions::set_renewal_order(&mut tx, sub.id, order.id).await?;
            // paid at the boundary, however late this job runs: the new cycle follows the old
            purchases::fulfil(&mut tx, &order, PaymentMethod::Balance, None, sub.cycle_end, None).await?;
            report.renewed += 1;
            if plan.code != sub.plan_code {
                report.plan_changes += 1;
            }
        } else {
            let order = orders::insert_order(
                &mut tx,
                user_id,
                OrderKind::Renewal,
                Some(&plan),
                Some(sub.id),
                plan.price_micros,
                PaymentMethod::Balance,
                sub.cycle_end + Duration::days(RENEWAL_GRACE_DAYS),
            )
            .await?;
            subscriptions::set_renewal_order(&mut tx, sub.id, order.id).await?;
            report.renewal_orders += 1;
        }
        tx.commit().await?;
    }
    Ok(report)
}
