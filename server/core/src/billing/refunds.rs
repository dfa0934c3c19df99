//! Refunds of the current cycle of a subscription.
//!
//! * Window: Starter 7 days, Pro 30 days after the purchase of the current cycle (the paid order's
//!   `paid_at`), exact to the second: refundable while `now < paid_at + window days`. Ultra (and
//!   any plan without a window) is negotiated: the customer may always ask; staff set the amount.
//! * Days are calendar days in Asia/Shanghai (UTC+8). `cycle_days` = days from the start date to
//!   the end date of the cycle; the current day counts as used, so
//!   `used_days = today − start date + 1` and `remaining_days = cycle_days − used_days` (never
//!   negative): a refund asked on the day of purchase returns all days but one.
//! * Amount = paid × remaining_days / cycle_days, rounded half up to the fen (¥0.01).
//! * Approval ends the subscription (status `refunded`, unused allowance expires), marks the order
//!   refunded and credits the amount to the balance through the ledger (`refund` row; paying back
//!   through the original Alipay/WeChat route is done by staff at the provider, out of scope here).

use super::orders::{self, Order};
use super::plans::Plan;
use super::subscriptions::{self, Subscription};
use super::{audit, format_cny_short, lock_user, wallet_entry, BillingError};
use crate::ledger::LedgerKind;
use crate::money::div_round_half_up;
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundQuote {
    pub subscription_id: Uuid,
    pub order_id: Uuid,
    pub plan_name: String,
    pub paid_micros: i64,
    pub cycle_days: i64,
    pub used_days: i64,
    pub remaining_days: i64,
    pub amount_micros: i64,
    pub eligible: bool,
    /// Amount set by staff (Ultra): `amount_micros` is only the pro-rated suggestion.
    pub negotiated: bool,
    /// Why not eligible.
    pub reason: Option<String>,
    /// When the no-questions window closes (None when negotiated).
    pub window_ends_at: Option<DateTime<Utc>>,
    /// "¥399.00 × 23 / 30 remaining days = ¥305.90"
    pub explanation: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct RefundRequest {
    pub id: Uuid,
    pub user_id: Uuid,
    pub subscription_id: Uuid,
    pub order_id: Uuid,
    pub amount_micros: i64,
    /// pending | approved | rejected
    pub status: String,
    pub reason: String,
    pub staff_note: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

const COLS: &str = "id, user_id, subscription_id, order_id, amount_micros, status, reason, staff_note, created_at, decided_at";

fn shanghai() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}

/// The calendar date in Asia/Shanghai.
pub fn local_date(t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&shanghai()).date_naive()
}

/// The pure computation (see the module doc for the rules).
pub fn compute(sub: &Subscription, refund_window_days: Option<i32>, order: &Order, now: DateTime<Utc>) -> RefundQuote {
    let start = local_date(sub.cycle_start);
    let cycle_days = (local_date(sub.cycle_end) - start).num_days().max(1);
    let used_days = ((local_date(now) - start).num_days() + 1).clamp(0, cycle_days);
    let remaining_days = cycle_days - used_days;
    let paid = order.amount_micros;
    let amount = div_round_half_up(paid as i128 * remaining_days as i128, cycle_days as i128 * 10_000) as i64 * 10_000;
    let negotiated = refund_window_days.is_none();
    let paid_at = order.paid_at.unwrap_or(sub.cycle_start);
    let window_ends_at = refund_window_days.map(|d| paid_at + Duration::days(d as i64));
    let mut reason = None;
    if sub.status != "active" {
        reason = Some("the subscription has ended".to_string());
    } else if order.status != "paid" {
        reason = Some("the payment of this cycle is not refundable".to_string());
    } else if let Some(end) = window_ends_at {
        if now >= end {
            reason = Some(format!(
                "the {}-day refund window of the {} plan closed on {}",
                refund_window_days.unwrap_or(0),
                sub.plan_name,
                end.with_timezone(&shanghai()).format("%Y-%m-%d %H:%M")
            ));
        }
    }
    if reason.is_none() && remaining_days == 0 && !negotiated {
        reason = Some("no unused days are left in this cycle".to_string());
    }
    let explanation = format!(
        "{} × {} / {} remaining days = {}{}",
        format_cny_short(paid),
        remaining_days,
        cycle_days,
        format_cny_short(amount),
        if negotiated { " (suggested; the final amount is agreed with our team)" } else { "" }
    );
    RefundQuote {
        subscription_id: sub.id,
        order_id: order.id,
        plan_name: sub.plan_name.clone(),
        paid_micros: paid,
        cycle_days,
        used_days,
        remaining_days,
        amount_micros: amount,
        eligible: reason.is_none(),
        negotiated,
        reason,
        window_ends_at,
        explanation,
    }
}

async fn quote_tx(tx: &mut PgConnection, sub: &Subscription, now: DateTime<Utc>) -> Result<RefundQuote, BillingError> {
    let snap: serde_json::Value = sqlx::query_scalar("SELECT plan_snapshot FROM subscriptions WHERE id = $1")
        .bind(sub.id)
        .fetch_one(&mut *tx)
        .await?;
    let window = serde_json::from_value::<Plan>(snap).ok().and_then(|p| p.refund_window_days);
    let order = sqlx::query_as::<_, Order>(&format!("SELECT {} FROM orders WHERE id = $1", orders::COLS))
        .bind(sub.order_id)
        .fetch_one(&mut *tx)
        .await?;
    let mut q = compute(sub, window, &order, now);
    let pending: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refund_requests WHERE subscription_id = $1 AND status = 'pending')")
        .bind(sub.id)
        .fetch_one(&mut *tx)
        .await?;
    if pending && q.eligible {
        q.eligible = false;
        q.reason = Some("a refund request is already pending".into());
    }
    Ok(q)
}

/// What a refund of the current subscription would return now (None without a subscription).
pub async fn quote(pool: &PgPool, user_id: Uuid, now: DateTime<Utc>) -> Result<Option<RefundQuote>, BillingError> {
    let mut tx = pool.begin().await?;
    let Some(sub) = subscriptions::current(pool, user_id, now).await? else {
        return Ok(None);
    };
    let q = quote_tx(&mut tx, &sub, now).await?;
    tx.commit().await?;
    Ok(Some(q))
}

/// Asks for a refund of the current cycle (one open request per subscription).
pub async fn request(pool: &PgPool, user_id: Uuid, now: DateTime<Utc>, reason: &str) -> Result<RefundRequest, BillingError> {
    let reason = reason.trim();
    if reason.chars().count() > 1000 {
        return Err(BillingError::Invalid("Please keep the reason under 1000 characters.".into()));
    }
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let sub = subscriptions::active_for_update(&mut tx, user_id).await?.ok_or(BillingError::NoSubscription)?;
    let q = quote_tx(&mut tx, &sub, now).await?;
    if !q.eligible {
        if q.reason.as_deref() == Some("a refund request is already pending") {
            return Err(BillingError::RefundPending);
        }
        return Err(BillingError::RefundNotEligible(q.reason.unwrap_or_default()));
    }
    let r = sqlx::query_as::<_, RefundRequest>(&format!(
        "INSERT INTO refund_requests (user_id, subscription_id, order_id, amount_micros, quote, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLS}"
    ))
    .bind(user_id)
    .bind(sub.id)
    .bind(q.order_id)
    .bind(q.amount_micros)
    .bind(serde_json::to_value(&q).unwrap_or_default())
    .bind(reason)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| if super::is_unique_violation(&e) { BillingError::RefundPending } else { e.into() })?;
    tx.commit().await?;
    Ok(r)
}

pub async fn list_for_user(pool: &PgPool, user_id: Uuid) -> Result<Vec<RefundRequest>, sqlx::Error> {
    sqlx::query_as::<_, RefundRequest>(&format!("SELECT {COLS} FROM refund_requests WHERE user_id = $1 ORDER BY created_at DESC"))
        .bind(user_id)
        .fetch_all(pool)
        .await
}

/// Pending requests, oldest first (staff).
pub async fn list_pending(pool: &PgPool) -> Result<Vec<RefundRequest>, sqlx::Error> {
    sqlx::query_as::<_, RefundRequest>(&format!("SELECT {COLS} FROM refund_requests WHERE status = 'pending' ORDER BY created_at"))
        .fetch_all(pool)
        .await
}

/// The quote shown to the customer when the request was made.
pub async fn request_quote(pool: &PgPool, id: Uuid) -> Result<Option<RefundQuote>, sqlx::Error> {
    let v: Option<serde_json::Value> = sqlx::query_scalar("SELECT quote FROM refund_requests WHERE id = $1").bind(id).fetch_optional(pool).await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// Approves a pending request (staff): `amount_micros` overrides the quoted amount and is
/// required for negotiated refunds. Ends the subscription and credits the balance.
pub async fn approve(pool: &PgPool, staff_id: Uuid, id: Uuid, amount_micros: Option<i64>, note: &str) -> Result<(), BillingError> {
    let (user_id, sub_id, order_id): (Uuid, Uuid, Uuid) =
        sqlx::query_as("SELECT user_id, subscription_id, order_id FROM refund_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?
            .ok_or(BillingError::RefundNotFound)?;
    let now = Utc::now();
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let sub = sqlx::query_as::<_, Subscription>(&format!("SELECT {} FROM subscriptions WHERE id = $1 FOR UPDATE", subscriptions::COLS))
        .bind(sub_id)
        .fetch_one(&mut *tx)
        .await?;
    let order = sqlx::query_as::<_, Order>(&format!("SELECT {} FROM orders WHERE id = $1 FOR UPDATE", orders::COLS))
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    let (status, quoted, quote): (String, i64, serde_json::Value) =
        sqlx::query_as("SELECT status, amount_micros, quote FROM refund_requests WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if status != "pending" {
        return Err(BillingError::AlreadyDecided);
    }
    let negotiated = quote["negotiated"].as_bool().unwrap_or(false);
    let amount = match (amount_micros, negotiated) {
        (Some(a), _) => a,
        (None, true) => return Err(BillingError::AmountRequired),
        (None, false) => quoted,
    };
    if amount < 0 || amount > order.amount_micros {
        return Err(BillingError::InvalidAmount);
    }
    if order.status != "paid" {
        return Err(BillingError::OrderNotOpen(order.status));
    }
    if sub.status == "active" {
        subscriptions::end(&mut tx, &sub, "refunded", "refunded", now).await?;
    }
    sqlx::query("UPDATE orders SET status = 'refunded', closed_at = $2 WHERE id = $1").bind(order.id).bind(now).execute(&mut *tx).await?;
    let ledger_note = format!("Refund of order {} ({} plan) to balance", order.reference, sub.plan_name);
    wallet_entry(&mut tx, user_id, amount, LedgerKind::Refund, &ledger_note, Some(staff_id)).await?;
    sqlx::query(
        "UPDATE refund_requests SET status = 'approved', amount_micros = $2, staff_note = $3, decided_by = $4, decided_at = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(amount)
    .bind(note)
    .bind(staff_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        staff_id,
        "refund.approve",
        &format!("refund:{id}"),
        serde_json::json!({"user_id": user_id, "order": order.reference, "amount_micros": amount, "quoted_micros": quoted, "route": "balance", "note": note}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Rejects a pending request with a note (staff).
pub async fn reject(pool: &PgPool, staff_id: Uuid, id: Uuid, note: &str) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    let status: String = sqlx::query_scalar("SELECT status FROM refund_requests WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BillingError::RefundNotFound)?;
    if status != "pending" {
        return Err(BillingError::AlreadyDecided);
    }
    sqlx::query("UPDATE refund_requests SET status = 'rejected', staff_note = $2, decided_by = $3, decided_at = now() WHERE id = $1")
        .bind(id)
        .bind(note)
        .bind(staff_id)
        .execute(&mut *tx)
        .await?;
    audit::record(&mut tx, staff_id, "refund.reject", &format!("refund:{id}"), serde_json::json!({"note": note})).await?;
    tx.commit().await?;
    Ok(())
}
