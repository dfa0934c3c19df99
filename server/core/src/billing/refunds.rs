//! Refunds of the current cycle of a subscription.
//!
//! * Window: Starter 7 days, Pro 30 days after the purchase of the current cycle (the paid order's
//!   `paid_at`), exact to the second: refundable while `now < paid_at + window days`. Ultra (and
//!   any plan without a window) is negotiated: the customer may always ask; staff set the amount.
//! * Days are calendar days in Asia/Shanghai (UTC+8). `cycle_days` = days from the start date to
//!   the end date of the cycle; the current day counts as used, so
//!   `used_days = today − start date + 1` and `remaining_days = cycle_days − used_days` (never
//!   negative): a refund asked on the day of purchase returns all days but one.
//! * Days-based amount = paid × remaining_days / cycle_days, rounded half up to the fen (¥0.01).
//! * Allowance used beyond the elapsed days' share is deducted, priced pay-as-you-go on the
//!   channels it was used on. With `A` the cycle's allowance and `U` the allowance used (micro-USD),
//!   `C` what the requests the allowance paid for would have cost pay-as-you-go (micro-CNY, per
//!   channel at its rate, recorded by `cr_usage_draw` in `allowance_use`), `D` = cycle_days and
//!   `E` = used_days: `deduction = round_half_up_to_fen(max(0, U·D − A·E) × C / (U·D))` (0 when
//!   `U` = 0), i.e. the excess `U − A·E/D` USD at the average CNY per USD the allowance was used
//!   at, rounded once. Refund = max(0, days-based amount − deduction); a no-questions refund of ¥0 is not
//!   offered ("nothing is left to refund").
//! * One no-questions refund per customer and plan: once one was approved, a later request for
//!   the same plan is negotiated (staff set the amount), like Ultra's.
//! * The days are fixed when the customer asks; the allowance use is counted again at approval
//!   (what was spent while the request waited is deducted too). The staff queue shows that figure.
//! * Approval ends the subscription (status `refunded`, unused allowance expires), marks the order
//!   refunded, closes or marks for reversal its invoices (see `invoices`) and credits the amount to
//!   the balance through the ledger (`refund` row; paying back through the original Alipay/WeChat
//!   route is done by staff at the provider, out of scope here).

use super::orders::{self, Order, OrderStatus};
use super::plans::Plan;
use super::subscriptions::{self, Subscription};
use super::{audit, invoices, lock_user, wallet_entry, BillingError};
use super::ledger::{EndReason, LedgerKind, Memo};
use crate::money::{div_round_half_up, MicroCny, MicroUsd};
use chrono::{DateTime, Duration, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundQuote {
    pub subscription_id: Uuid,
    pub order_id: Uuid,
    pub plan_name: String,
    pub paid_micros: MicroCny,
    pub cycle_days: i64,
    pub used_days: i64,
    pub remaining_days: i64,
    pub amount_micros: MicroCny,
    pub eligible: bool,
    /// Amount set by staff (Ultra): `amount_micros` is only the pro-rated suggestion.
    pub negotiated: bool,
    /// Why not eligible.
    pub reason: Option<Ineligible>,
    /// When the no-questions window closes (None when negotiated).
    pub window_ends_at: Option<DateTime<Utc>>,
    /// "¥399.00 × 23 / 30 remaining days = ¥305.90"
    pub explanation: String,
    // The deduction for allowance use (defaults: quotes stored before these existed).
    /// paid × remaining / cycle days, to the fen.
    #[serde(default)]
    pub days_amount_micros: MicroCny,
    /// The cycle's allowance.
    #[serde(default)]
    pub allowance_micro_usd: MicroUsd,
    /// What the allowance paid for, per channel.
    #[serde(default)]
    pub allowance_use: Vec<ChannelUse>,
    /// allowance × used days / cycle days, for display (rounded half up).
    #[serde(default)]
    pub elapsed_share_micro_usd: MicroUsd,
    /// Allowance used beyond that share, for display (rounded half up).
    #[serde(default)]
    pub excess_micro_usd: MicroUsd,
    /// Deducted from the days-based amount (whole fen).
    #[serde(default)]
    pub deduction_micros: MicroCny,
    /// The customer already had the no-questions refund of this plan: this one is negotiated.
    #[serde(default)]
    pub repeat: bool,
}

impl RefundQuote {
    /// Allowance used in the cycle.
    pub fn allowance_used_micro_usd(&self) -> MicroUsd {
        self.allowance_use.iter().map(|c| c.used_micro_usd).sum()
    }
}

/// What a cycle's allowance paid for on one channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, sqlx::FromRow)]
pub struct ChannelUse {
    pub channel: String,
    /// Allowance drawn (list price).
    pub used_micro_usd: MicroUsd,
    /// What those requests would have cost pay-as-you-go.
    pub payg_micros: MicroCny,
}

/// Why a subscription cannot be refunded now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Ineligible {
    Ended,
    /// The cycle's payment is not a paid order (refunded already, or not paid).
    NotRefundable,
    WindowClosed { days: i32, plan: String, closed_at: DateTime<Utc> },
    NoDaysLeft,
    /// The allowance used beyond the elapsed days is worth more than the unused days.
    NothingLeft,
    Pending,
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::Ended => f.write_str("the subscription has ended"),
            Ineligible::NotRefundable => f.write_str("the payment of this cycle is not refundable"),
            Ineligible::WindowClosed { days, plan, closed_at } => write!(
                f,
                "the {days}-day refund window of the {plan} plan closed on {}",
                closed_at.with_timezone(&shanghai()).format("%Y-%m-%d %H:%M")
            ),
            Ineligible::NoDaysLeft => f.write_str("no unused days are left in this cycle"),
            Ineligible::NothingLeft => f.write_str(
                "the allowance used beyond the elapsed days is worth more than the unused days: nothing is left to refund",
            ),
            Ineligible::Pending => f.write_str("a refund request is already pending"),
        }
    }
}

/// The allowance-use deduction (see the module doc): (elapsed share, excess, deduction).
fn deduction(allowance: MicroUsd, uses: &[ChannelUse], cycle_days: i64, used_days: i64) -> (MicroUsd, MicroUsd, MicroCny) {
    let used: i128 = uses.iter().map(|c| c.used_micro_usd.micros() as i128).sum();
    let payg: i128 = uses.iter().map(|c| c.payg_micros.micros() as i128).sum();
    let allowance = allowance.micros() as i128;
    let (d, e) = (cycle_days as i128, used_days as i128);
    let share = MicroUsd::from_micros(div_round_half_up(allowance * e, d) as i64);
    let excess_d = (used * d - allowance * e).max(0);
    if used == 0 || excess_d == 0 {
        return (share, MicroUsd::ZERO, MicroCny::ZERO);
    }
    let excess = MicroUsd::from_micros(div_round_half_up(excess_d, d) as i64);
    let fen = div_round_half_up(excess_d * payg, used * d * 10_000);
    (share, excess, MicroCny::from_micros(i64::try_from(fen * 10_000).unwrap_or(i64::MAX)))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct RefundRequest {
    pub id: Uuid,
    pub user_id: Uuid,
    pub subscription_id: Uuid,
    pub order_id: Uuid,
    pub amount_micros: MicroCny,
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

/// The pure computation (see the module doc for the rules). `uses` is what the cycle's allowance
/// paid for; `repeat` is true when the customer already had this plan's no-questions refund.
pub fn compute(
    sub: &Subscription,
    refund_window_days: Option<i32>,
    order: &Order,
    uses: &[ChannelUse],
    repeat: bool,
    now: DateTime<Utc>,
) -> RefundQuote {
    let start = local_date(sub.cycle_start);
    let cycle_days = (local_date(sub.cycle_end) - start).num_days().max(1);
    let used_days = ((local_date(now) - start).num_days() + 1).clamp(0, cycle_days);
    let remaining_days = cycle_days - used_days;
    let paid = order.amount_micros;
    let days_amount =
        MicroCny::from_micros(div_round_half_up(paid.micros() as i128 * remaining_days as i128, cycle_days as i128 * 10_000) as i64 * 10_000);
    let (share, excess, deduction) = deduction(sub.allowance_micro_usd, uses, cycle_days, used_days);
    let amount = (days_amount - deduction).max(MicroCny::ZERO);
    let negotiated = refund_window_days.is_none() || repeat;
    let paid_at = order.paid_at.unwrap_or(sub.cycle_start);
    let window_ends_at = if negotiated { None } else { refund_window_days.map(|d| paid_at + Duration::days(d as i64)) };
    let mut reason = None;
    if sub.status != "active" {
        reason = Some(Ineligible::Ended);
    } else if order.status != OrderStatus::Paid {
        reason = Some(Ineligible::NotRefundable);
    } else if let Some(end) = window_ends_at {
        if now >= end {
            reason = Some(Ineligible::WindowClosed { days: refund_window_days.unwrap_or(0), plan: sub.plan_name.clone(), closed_at: end });
        }
    }
    if reason.is_none() && !negotiated {
        if remaining_days == 0 {
            reason = Some(Ineligible::NoDaysLeft);
        } else if amount.is_zero() {
            reason = Some(Ineligible::NothingLeft);
        }
    }
    let days_part = format!("{} × {} / {} remaining days = {}", paid.short(), remaining_days, cycle_days, days_amount.short());
    let explanation = format!(
        "{days_part}{}{}",
        if deduction.is_positive() {
            format!(
                ", less {} for {} of allowance used beyond the elapsed days' share ({} of {}) = {}",
                deduction.short(),
                excess.short(),
                share.short(),
                sub.allowance_micro_usd.short(),
                amount.short()
            )
        } else {
            String::new()
        },
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
        days_amount_micros: days_amount,
        allowance_micro_usd: sub.allowance_micro_usd,
        allowance_use: uses.to_vec(),
        elapsed_share_micro_usd: share,
        excess_micro_usd: excess,
        deduction_micros: deduction,
        repeat,
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
    let uses = sqlx::query_as::<_, ChannelUse>(
        "SELECT channel, used_micro_usd, payg_micros FROM allowance_use WHERE order_id = $1 ORDER BY channel",
    )
    .bind(sub.order_id)
    .fetch_all(&mut *tx)
    .await?;
    // the no-questions refund of this plan was had already (a negotiated one does not count)
    let repeat: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM refund_requests r JOIN subscriptions s ON s.id = r.subscription_id \
          WHERE r.user_id = $1 AND s.plan_code = $2 AND r.status = 'approved' \
            AND NOT COALESCE((r.quote->>'negotiated')::boolean, false))",
    )
    .bind(sub.user_id)
    .bind(&sub.plan_code)
    .fetch_one(&mut *tx)
    .await?;
    let mut q = compute(sub, window, &order, &uses, repeat, now);
    let pending: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refund_requests WHERE subscription_id = $1 AND status = 'pending')")
        .bind(sub.id)
        .fetch_one(&mut *tx)
        .await?;
    if pending && q.eligible {
        q.eligible = false;
        q.reason = Some(Ineligible::Pending);
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
        if q.reason == Some(Ineligible::Pending) {
            return Err(BillingError::RefundPending);
        }
        return Err(BillingError::RefundNotEligible(q.reason.unwrap_or(Ineligible::NotRefundable)));
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

/// Pending requests, oldest first (staff), each with the quote approval would pay now: the days
/// as of the request, the allowance use as of now.
pub async fn list_pending(pool: &PgPool) -> Result<Vec<(RefundRequest, RefundQuote)>, BillingError> {
    let requests = sqlx::query_as::<_, RefundRequest>(&format!("SELECT {COLS} FROM refund_requests WHERE status = 'pending' ORDER BY created_at"))
        .fetch_all(pool)
        .await?;
    let mut conn = pool.acquire().await?;
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let sub = sqlx::query_as::<_, Subscription>(&format!("SELECT {} FROM subscriptions WHERE id = $1", subscriptions::COLS))
            .bind(r.subscription_id)
            .fetch_one(&mut *conn)
            .await?;
        let q = quote_tx(&mut conn, &sub, r.created_at).await?;
        out.push((r, q));
    }
    Ok(out)
}

/// The quote shown to the customer when the request was made.
pub async fn request_quote(pool: &PgPool, id: Uuid) -> Result<Option<RefundQuote>, sqlx::Error> {
    let v: Option<serde_json::Value> = sqlx::query_scalar("SELECT quote FROM refund_requests WHERE id = $1").bind(id).fetch_optional(pool).await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// Approves a pending request (staff): `amount_micros` overrides the amount and is required for
/// negotiated refunds; otherwise the quote is made again with the days as of the request and the
/// allowance use as of now. Ends the subscription, credits the balance, closes or marks for
/// reversal the order's invoices, and stores the final quote on the request. Answers the request
/// as decided (for telling the customer).
pub async fn approve(pool: &PgPool, staff_id: Uuid, id: Uuid, amount_micros: Option<MicroCny>, note: &str) -> Result<RefundRequest, BillingError> {
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
    let (status, quoted, quote, requested_at): (String, MicroCny, serde_json::Value, DateTime<Utc>) =
        sqlx::query_as("SELECT status, amount_micros, quote, created_at FROM refund_requests WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if status != "pending" {
        return Err(BillingError::AlreadyDecided);
    }
    // what the customer was told decides whether staff must set the amount
    let negotiated = quote["negotiated"].as_bool().unwrap_or(false);
    let mut fin = quote_tx(&mut tx, &sub, requested_at).await?;
    fin.negotiated = negotiated;
    let amount = match (amount_micros, negotiated) {
        (Some(a), _) => a,
        (None, true) => return Err(BillingError::AmountRequired),
        (None, false) => fin.amount_micros,
    };
    if amount.is_negative() || amount > order.amount_micros {
        return Err(BillingError::InvalidAmount);
    }
    if order.status != OrderStatus::Paid {
        return Err(BillingError::OrderNotOpen(order.status));
    }
    if sub.status == "active" {
        subscriptions::end(&mut tx, &sub, "refunded", EndReason::Refunded, now).await?;
    }
    orders::record_refund(&mut tx, order.id, now).await?;
    let inv = invoices::on_order_refunded(&mut tx, order.id, amount, now).await?;
    let memo = Memo::Refund { order: order.reference.clone(), plan: sub.plan_name.clone() };
    wallet_entry(&mut tx, user_id, amount, LedgerKind::Refund, &memo, Some(staff_id)).await?;
    let decided = sqlx::query_as::<_, RefundRequest>(&format!(
        "UPDATE refund_requests SET status = 'approved', amount_micros = $2, staff_note = $3, decided_by = $4, decided_at = $5, quote = $6 \
         WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(amount)
    .bind(note)
    .bind(staff_id)
    .bind(now)
    .bind(serde_json::to_value(&fin).unwrap_or(quote))
    .fetch_one(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        staff_id,
        "refund.approve",
        &format!("refund:{id}"),
        serde_json::json!({
            "user_id": user_id, "order": order.reference, "amount_micros": amount, "quoted_micros": quoted,
            "days_amount_micros": fin.days_amount_micros, "deduction_micros": fin.deduction_micros,
            "allowance_used_micro_usd": fin.allowance_used_micro_usd(), "negotiated": negotiated,
            "invoices_closed": inv.closed, "invoices_due_reversal": inv.due_reversal, "route": "balance", "note": note,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(decided)
}

/// Rejects a pending request with a note (staff); answers the request as decided.
pub async fn reject(pool: &PgPool, staff_id: Uuid, id: Uuid, note: &str) -> Result<RefundRequest, BillingError> {
    let mut tx = pool.begin().await?;
    let status: String = sqlx::query_scalar("SELECT status FROM refund_requests WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BillingError::RefundNotFound)?;
    if status != "pending" {
        return Err(BillingError::AlreadyDecided);
    }
    let decided = sqlx::query_as::<_, RefundRequest>(&format!(
        "UPDATE refund_requests SET status = 'rejected', staff_note = $2, decided_by = $3, decided_at = now() WHERE id = $1 RETURNING {COLS}"
    ))
    .bind(id)
    .bind(note)
    .bind(staff_id)
    .fetch_one(&mut *tx)
    .await?;
    audit::record(&mut tx, staff_id, "refund.reject", &format!("refund:{id}"), serde_json::json!({"note": note})).await?;
    tx.commit().await?;
    Ok(decided)
}
