//! Buying: placing orders for plans and top-ups, paying them (provider notifications, the
//! balance, bank transfers staff confirm) and what a paid order buys ([`fulfil`], the one place
//! a payment takes effect; the automatic renewal of [`super::renewals`] goes through it too).
//!
//! Marking an order paid is idempotent (a notification delivered twice credits once), checks the
//! amount, and applies its effects and ledger rows in one transaction:
//!
//! * every payment from outside (Alipay, WeChat Pay, bank transfer, sandbox) is a wallet `credit`
//!   row; a subscription or renewal is then a wallet `purchase` row of the same amount and starts
//!   the subscription / the next cycle (a plan paid from the balance is only the `purchase` row);
//! * a late payment for an order that was cancelled or expired is still taken (the money arrived):
//!   a top-up is credited; a plan that can no longer start (e.g. a subscription is already active)
//!   leaves the money on the balance.

use super::orders::{self, Order, OrderKind, OrderStatus, PaymentMethod};
use crate::money::MicroCny;
use super::{audit, lock_user, plans, subscriptions, wallet_available, wallet_entry, BillingError};
use super::ledger::{LedgerKind, Memo};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaidOutcome {
    /// This call marked the order paid and applied it.
    Applied,
    /// The order was already paid (a duplicated notification): nothing changed.
    AlreadyPaid,
}

fn ttl(method: PaymentMethod) -> Duration {
    if method == PaymentMethod::Bank {
        Duration::days(orders::BANK_ORDER_TTL_DAYS)
    } else {
        Duration::hours(orders::ONLINE_ORDER_TTL_HOURS)
    }
}

/// A subscription purchase. Refused while a subscription is active (that is a plan change).
pub async fn create_subscription(pool: &PgPool, user_id: Uuid, plan_code: &str, method: PaymentMethod) -> Result<Order, BillingError> {
    // only a redeemed code makes an order of this method
    if method == PaymentMethod::RedeemCode {
        return Err(BillingError::InvalidMethod);
    }
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let plan = plans::get_tx(&mut tx, plan_code).await?.ok_or(BillingError::UnknownPlan)?;
    if !plan.purchasable {
        return Err(BillingError::PlanNotPurchasable);
    }
    if subscriptions::active_for_update(&mut tx, user_id).await?.is_some() {
        return Err(BillingError::AlreadySubscribed);
    }
    let o = orders::insert_order(&mut tx, user_id, OrderKind::Subscription, Some(&plan), None, plan.price_micros, method, Utc::now() + ttl(method)).await?;
    tx.commit().await?;
    Ok(o)
}

/// Staff set up custom terms (an enterprise contract) for a customer: a subscription order on any
/// priced plan, listed or not, paid by bank transfer and confirmed by staff like any other.
/// Its subscription renews on that plan (`by_contract`). Audited.
pub async fn offer_subscription(pool: &PgPool, staff_id: Uuid, user_id: Uuid, plan_code: &str) -> Result<Order, BillingError> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let plan = plans::get_tx(&mut tx, plan_code).await?.ok_or(BillingError::UnknownPlan)?;
    if plan.price_micros.is_zero() {
        return Err(BillingError::Invalid("This plan has no price: set one under Plans & prices first.".into()));
    }
    if subscriptions::active_for_update(&mut tx, user_id).await?.is_some() {
        return Err(BillingError::AlreadySubscribed);
    }
    let o = orders::insert_order(&mut tx, user_id, OrderKind::Subscription, Some(&plan), None, plan.price_micros, PaymentMethod::Bank, Utc::now() + ttl(PaymentMethod::Bank)).await?;
    orders::set_offered_by(&mut tx, o.id, staff_id).await?;
    audit::record(&mut tx, staff_id, "order.offer", &format!("user:{user_id}"), serde_json::json!({"order": o.id, "plan": plan.code, "amount_micros": o.amount_micros}))
        .await?;
    tx.commit().await?;
    Ok(o)
}

/// A top-up of the balance (¥1 – ¥100,000).
pub async fn create_topup(pool: &PgPool, user_id: Uuid, amount: MicroCny, method: PaymentMethod) -> Result<Order, BillingError> {
    if matches!(method, PaymentMethod::Balance | PaymentMethod::RedeemCode) {
        return Err(BillingError::InvalidMethod);
    }
    if !(orders::MIN_TOPUP..=orders::MAX_TOPUP).contains(&amount) {
        return Err(BillingError::TopupOutOfRange);
    }
    if amount.two_places().is_none() {
        return Err(BillingError::Invalid("Top-ups are in whole fen (at most two decimal places).".into()));
    }
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let o = orders::insert_order(&mut tx, user_id, OrderKind::Topup, None, None, amount, method, Utc::now() + ttl(method)).await?;
    tx.commit().await?;
    Ok(o)
}

/// Records a payment of a locked, unpaid order and applies what it buys (the caller holds the
/// user's money lock): the one place a paid order takes effect, for payment notifications,
/// staff-confirmed transfers, payments from the balance and automatic renewals.
pub(crate) async fn fulfil(
    tx: &mut PgConnection,
    order: &Order,
    method: PaymentMethod,
    trade_no: Option<&str>,
    now: DateTime<Utc>,
    actor: Option<Uuid>,
) -> Result<(), BillingError> {
    if method != PaymentMethod::Balance {
        let order_ref = order.reference.clone();
        let memo = match order.kind {
            OrderKind::Topup => Memo::Topup { order: order_ref, method },
            _ => Memo::Payment { order: order_ref, method },
        };
        wallet_entry(tx, order.user_id, order.amount_micros, LedgerKind::Credit, &memo, actor).await?;
    }
    match order.kind {
        OrderKind::Subscription => {
            let plan = orders::order_plan(tx, order.id).await?;
            let active = subscriptions::active_for_update(tx, order.user_id).await?;
            if let (Some(plan), None) = (plan, active) {
                let memo = Memo::Subscription { plan: plan.name.clone(), order: order.reference.clone() };
                wallet_entry(tx, order.user_id, -order.amount_micros, LedgerKind::Purchase, &memo, actor).await?;
                subscriptions::activate(tx, order.user_id, &plan, order.id, now, 1).await?;
            } else {
                tracing::warn!(order = %order.id, "subscription order paid while another subscription is active; the payment stays on the balance");
            }
        }
        OrderKind::Renewal => {
            let plan = orders::order_plan(tx, order.id).await?;
            let sub = subscriptions::active_for_update(tx, order.user_id).await?;
            match (plan, sub) {
                (Some(plan), Some(sub)) if sub.renewal_order_id == Some(order.id) => {
                    let memo = Memo::Renewal { plan: plan.name.clone(), order: order.reference.clone() };
                    wallet_entry(tx, order.user_id, -order.amount_micros, LedgerKind::Purchase, &memo, actor).await?;
                    subscriptions::roll_cycle(tx, &sub, &plan, order.id, sub.cycle_end.max(now)).await?;
                }
                _ => tracing::warn!(order = %order.id, "renewal paid after the subscription ended; the payment stays on the balance"),
            }
        }
        OrderKind::Topup => {}
    }
    orders::record_payment(tx, order.id, method, trade_no, now).await?;
    Ok(())
}

async fn mark_paid_inner(
    pool: &PgPool,
    order_id: Uuid,
    method: PaymentMethod,
    trade_no: &str,
    amount: Option<MicroCny>,
    now: DateTime<Utc>,
    staff: Option<Uuid>,
) -> Result<PaidOutcome, BillingError> {
    if method == PaymentMethod::Balance {
        return Err(BillingError::InvalidMethod);
    }
    let user_id: Uuid = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?
        .ok_or(BillingError::OrderNotFound)?;
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let order = orders::order_for_update(&mut tx, order_id).await?.ok_or(BillingError::OrderNotFound)?;
    // Only the provider the order was created for can pay it: a signed notification from another
    // provider (or the sandbox) naming this order is refused, whatever it says was paid.
    if order.method != method {
        tracing::warn!(order = %order.id, order_method = %order.method, %method, "payment refused: the order was created for another method");
        return Err(BillingError::InvalidMethod);
    }
    if matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded) {
        if order.provider_trade_no.as_deref() != Some(trade_no) {
            tracing::warn!(order = %order.id, trade_no, "a second payment was notified for an order already paid; refund it at the provider");
        }
        return Ok(PaidOutcome::AlreadyPaid);
    }
    // A provider's late payment is real money and is taken; staff confirm only what is still payable.
    if staff.is_some() && order.status != OrderStatus::Created {
        return Err(BillingError::OrderNotOpen(order.status));
    }
    if let Some(paid) = amount {
        if paid != order.amount_micros {
            return Err(BillingError::AmountMismatch { expected: order.amount_micros, paid });
        }
    }
    fulfil(&mut tx, &order, method, Some(trade_no), now, staff).await?;
    if let Some(s) = staff {
        audit::record(
            &mut tx,
            s,
            "order.confirm_bank_transfer",
            &format!("order:{}", order.id),
            serde_json::json!({"reference": order.reference, "amount_micros": order.amount_micros, "user_id": order.user_id}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(PaidOutcome::Applied)
}

/// Marks an order paid from a verified provider notification (idempotent; the amount must match).
pub async fn mark_paid(
    pool: &PgPool,
    order_id: Uuid,
    method: PaymentMethod,
    provider_trade_no: &str,
    amount: MicroCny,
) -> Result<PaidOutcome, BillingError> {
    mark_paid_inner(pool, order_id, method, provider_trade_no, Some(amount), Utc::now(), None).await
}

/// [`mark_paid`] at a given time (tests drive cycles with a controllable clock).
pub async fn mark_paid_at(
    pool: &PgPool,
    order_id: Uuid,
    method: PaymentMethod,
    provider_trade_no: &str,
    amount: MicroCny,
    now: DateTime<Utc>,
) -> Result<PaidOutcome, BillingError> {
    mark_paid_inner(pool, order_id, method, provider_trade_no, Some(amount), now, None).await
}

/// Pays a subscription or renewal order from the balance (minus what in-flight requests hold).
pub async fn pay_with_balance(pool: &PgPool, user_id: Uuid, order_id: Uuid) -> Result<PaidOutcome, BillingError> {
    pay_with_balance_at(pool, user_id, order_id, Utc::now()).await
}

pub async fn pay_with_balance_at(pool: &PgPool, user_id: Uuid, order_id: Uuid, now: DateTime<Utc>) -> Result<PaidOutcome, BillingError> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let order = orders::order_for_update(&mut tx, order_id).await?.filter(|o| o.user_id == user_id).ok_or(BillingError::OrderNotFound)?;
    if order.status == OrderStatus::Paid {
        return Ok(PaidOutcome::AlreadyPaid);
    }
    if order.status != OrderStatus::Created {
        return Err(BillingError::OrderNotOpen(order.status));
    }
    if order.kind == OrderKind::Topup {
        return Err(BillingError::InvalidMethod);
    }
    let available = wallet_available(&mut tx, user_id).await?;
    if available < order.amount_micros {
        return Err(BillingError::InsufficientBalance { needed: order.amount_micros, available: available.max(MicroCny::ZERO) });
    }
    if order.kind == OrderKind::Subscription && subscriptions::active_for_update(&mut tx, user_id).await?.is_some() {
        return Err(BillingError::AlreadySubscribed);
    }
    fulfil(&mut tx, &order, PaymentMethod::Balance, None, now, None).await?;
    tx.commit().await?;
    Ok(PaidOutcome::Applied)
}

/// Staff confirm that a bank transfer arrived (audited; idempotent). Only an order created for a
/// bank transfer and still payable (`created`) can be confirmed; a cancelled or expired one is
/// refused (`OrderNotOpen`), another method is refused (`InvalidMethod`).
pub async fn confirm_bank_transfer(pool: &PgPool, staff_id: Uuid, order_id: Uuid) -> Result<PaidOutcome, BillingError> {
    let o = orders::get_any(pool, order_id).await?.ok_or(BillingError::OrderNotFound)?;
    mark_paid_inner(pool, order_id, PaymentMethod::Bank, &format!("bank:{}", o.reference), None, Utc::now(), Some(staff_id)).await
}

