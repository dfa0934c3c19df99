//! Orders: subscription purchases, renewals and top-ups. States: created → paid | cancelled |
//! expired; paid → refunded. Marking an order paid is idempotent (a notification delivered twice
//! credits once), checks the amount, and applies its effects and ledger rows in one transaction:
//!
//! * every payment from outside (Alipay, WeChat Pay, bank transfer, sandbox) is a wallet `credit`
//!   row; a subscription or renewal is then a wallet `purchase` row of the same amount and starts
//!   the subscription / the next cycle (a plan paid from the balance is only the `purchase` row);
//! * a late payment for an order that was cancelled or expired is still taken (the money arrived):
//!   a top-up is credited; a plan that can no longer start (e.g. a subscription is already active)
//!   leaves the money on the balance.

use super::plans::{self, Plan};
use super::{audit, lock_user, subscriptions, wallet_available, wallet_entry, BillingError};
use crate::ledger::LedgerKind;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub const MIN_TOPUP_MICROS: i64 = 1_000_000;
pub const MAX_TOPUP_MICROS: i64 = 100_000 * 1_000_000;
/// How long an online payment order stays payable.
pub const ONLINE_ORDER_TTL_HOURS: i64 = 2;
/// How long a bank-transfer order waits for the transfer.
pub const BANK_ORDER_TTL_DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    /// subscription | renewal | topup
    pub kind: String,
    pub plan_code: Option<String>,
    /// The plan's name as sold (from the order's snapshot).
    pub plan_name: Option<String>,
    pub amount_micros: i64,
    /// created | paid | cancelled | expired | refunded
    pub status: String,
    /// alipay | wechat | bank | sandbox | balance
    pub method: String,
    /// Human reference, e.g. "CR-7K3M9Q" (quote it on a bank transfer).
    pub reference: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub subscription_id: Option<Uuid>,
    pub provider_trade_no: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaidOutcome {
    /// This call marked the order paid and applied it.
    Applied,
    /// The order was already paid (a duplicated notification): nothing changed.
    AlreadyPaid,
}

pub const METHODS: [&str; 5] = ["alipay", "wechat", "bank", "sandbox", "balance"];

pub fn method_label(method: &str) -> &'static str {
    match method {
        "alipay" => "Alipay",
        "wechat" => "WeChat Pay",
        "bank" => "bank transfer",
        "sandbox" => "sandbox payment",
        "balance" => "balance",
        _ => "payment",
    }
}

pub(crate) const COLS: &str = "id, user_id, kind, plan_code, plan_snapshot->>'name' AS plan_name, amount_micros, status, method, reference, created_at, paid_at, \
    expires_at, subscription_id, provider_trade_no";

const REF_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

/// "CR-" and six characters without look-alikes (no 0/O, 1/I/L).
pub fn new_reference() -> String {
    let mut rng = rand::thread_rng();
    let s: String = (0..6).map(|_| REF_ALPHABET[rng.gen_range(0..REF_ALPHABET.len())] as char).collect();
    format!("CR-{s}")
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_order(
    tx: &mut PgConnection,
    user_id: Uuid,
    kind: &str,
    plan: Option<&Plan>,
    subscription_id: Option<Uuid>,
    amount: i64,
    method: &str,
    expires_at: DateTime<Utc>,
) -> Result<Order, BillingError> {
    for _ in 0..8 {
        sqlx::query("SAVEPOINT new_order").execute(&mut *tx).await?;
        let r = sqlx::query_as::<_, Order>(&format!(
            "INSERT INTO orders (user_id, kind, plan_code, plan_snapshot, subscription_id, amount_micros, method, reference, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLS}"
        ))
        .bind(user_id)
        .bind(kind)
        .bind(plan.map(|p| p.code.clone()))
        .bind(plan.map(|p| serde_json::to_value(p).unwrap_or_default()))
        .bind(subscription_id)
        .bind(amount)
        .bind(method)
        .bind(new_reference())
        .bind(expires_at)
        .fetch_one(&mut *tx)
        .await;
        match r {
            Ok(o) => {
                sqlx::query("RELEASE SAVEPOINT new_order").execute(&mut *tx).await?;
                return Ok(o);
            }
            Err(e) if super::is_unique_violation(&e) => {
                sqlx::query("ROLLBACK TO SAVEPOINT new_order").execute(&mut *tx).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(BillingError::Invalid("Could not allocate an order reference; please retry.".into()))
}

fn ttl(method: &str) -> Duration {
    if method == "bank" {
        Duration::days(BANK_ORDER_TTL_DAYS)
    } else {
        Duration::hours(ONLINE_ORDER_TTL_HOURS)
    }
}

/// A subscription purchase. Refused while a subscription is active (that is a plan change).
pub async fn create_subscription(pool: &PgPool, user_id: Uuid, plan_code: &str, method: &str) -> Result<Order, BillingError> {
    if !METHODS.contains(&method) {
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
    let o = insert_order(&mut tx, user_id, "subscription", Some(&plan), None, plan.price_micros, method, Utc::now() + ttl(method)).await?;
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
    if plan.price_micros == 0 {
        return Err(BillingError::Invalid("This plan has no price: set one under Plans & prices first.".into()));
    }
    if subscriptions::active_for_update(&mut tx, user_id).await?.is_some() {
        return Err(BillingError::AlreadySubscribed);
    }
    let o = insert_order(&mut tx, user_id, "subscription", Some(&plan), None, plan.price_micros, "bank", Utc::now() + ttl("bank")).await?;
    sqlx::query("UPDATE orders SET offered_by = $2 WHERE id = $1").bind(o.id).bind(staff_id).execute(&mut *tx).await?;
    audit::record(&mut tx, staff_id, "order.offer", &format!("user:{user_id}"), serde_json::json!({"order": o.id, "plan": plan.code, "amount_micros": o.amount_micros}))
        .await?;
    tx.commit().await?;
    Ok(o)
}

/// A top-up of the balance (¥1 – ¥100,000).
pub async fn create_topup(pool: &PgPool, user_id: Uuid, amount_micros: i64, method: &str) -> Result<Order, BillingError> {
    if !METHODS.contains(&method) || method == "balance" {
        return Err(BillingError::InvalidMethod);
    }
    if !(MIN_TOPUP_MICROS..=MAX_TOPUP_MICROS).contains(&amount_micros) {
        return Err(BillingError::TopupOutOfRange);
    }
    if amount_micros % 10_000 != 0 {
        return Err(BillingError::Invalid("Top-ups are in whole fen (at most two decimal places).".into()));
    }
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let o = insert_order(&mut tx, user_id, "topup", None, None, amount_micros, method, Utc::now() + ttl(method)).await?;
    tx.commit().await?;
    Ok(o)
}

/// The user's orders, newest first.
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!("SELECT {COLS} FROM orders WHERE user_id = $1 ORDER BY created_at DESC"))
        .bind(user_id)
        .fetch_all(pool)
        .await
}

pub async fn get(pool: &PgPool, user_id: Uuid, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!("SELECT {COLS} FROM orders WHERE id = $1 AND user_id = $2"))
        .bind(id)
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// Any order by id (staff and payment notifications).
pub async fn get_any(pool: &PgPool, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!("SELECT {COLS} FROM orders WHERE id = $1")).bind(id).fetch_optional(pool).await
}

/// Cancels an order that is still `created`.
pub async fn cancel(pool: &PgPool, user_id: Uuid, id: Uuid) -> Result<(), BillingError> {
    let r = sqlx::query("UPDATE orders SET status = 'cancelled', closed_at = now() WHERE id = $1 AND user_id = $2 AND status = 'created'")
        .bind(id)
        .bind(user_id)
        .execute(pool)
        .await?;
    if r.rows_affected() == 1 {
        return Ok(());
    }
    match get(pool, user_id, id).await? {
        Some(o) => Err(BillingError::OrderNotOpen(o.status)),
        None => Err(BillingError::OrderNotFound),
    }
}

async fn order_for_update(tx: &mut PgConnection, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!("SELECT {COLS} FROM orders WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
}

async fn order_plan(tx: &mut PgConnection, id: Uuid) -> Result<Option<Plan>, BillingError> {
    let v: Option<serde_json::Value> = sqlx::query_scalar("SELECT plan_snapshot FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// Applies a payment to a locked, unpaid order (the caller holds the user's money lock).
async fn apply_payment(
    tx: &mut PgConnection,
    order: &Order,
    method: &str,
    trade_no: Option<&str>,
    now: DateTime<Utc>,
    actor: Option<Uuid>,
) -> Result<(), BillingError> {
    let label = method_label(method);
    if method != "balance" {
        let note = match order.kind.as_str() {
            "topup" => format!("Top-up {} via {label}", order.reference),
            _ => format!("Payment {} via {label}", order.reference),
        };
        wallet_entry(tx, order.user_id, order.amount_micros, LedgerKind::Credit, &note, actor).await?;
    }
    match order.kind.as_str() {
        "subscription" => {
            let plan = order_plan(tx, order.id).await?;
            let active = subscriptions::active_for_update(tx, order.user_id).await?;
            if let (Some(plan), None) = (plan, active) {
                let note = format!("{} plan subscription (order {})", plan.name, order.reference);
                wallet_entry(tx, order.user_id, -order.amount_micros, LedgerKind::Purchase, &note, actor).await?;
                subscriptions::activate(tx, order.user_id, &plan, order.id, now).await?;
            } else {
                tracing::warn!(order = %order.id, "subscription order paid while another subscription is active; the payment stays on the balance");
            }
        }
        "renewal" => {
            let plan = order_plan(tx, order.id).await?;
            let sub = subscriptions::active_for_update(tx, order.user_id).await?;
            match (plan, sub) {
                (Some(plan), Some(sub)) if sub.renewal_order_id == Some(order.id) => {
                    let note = format!("{} plan renewal (order {})", plan.name, order.reference);
                    wallet_entry(tx, order.user_id, -order.amount_micros, LedgerKind::Purchase, &note, actor).await?;
                    subscriptions::roll_cycle(tx, &sub, &plan, order.id, sub.cycle_end.max(now)).await?;
                }
                _ => tracing::warn!(order = %order.id, "renewal paid after the subscription ended; the payment stays on the balance"),
            }
        }
        _ => {}
    }
    sqlx::query("UPDATE orders SET status = 'paid', method = $2, provider_trade_no = $3, paid_at = $4, closed_at = NULL WHERE id = $1")
        .bind(order.id)
        .bind(method)
        .bind(trade_no)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn mark_paid_inner(
    pool: &PgPool,
    order_id: Uuid,
    method: &str,
    trade_no: &str,
    amount_micros: Option<i64>,
    now: DateTime<Utc>,
    staff: Option<Uuid>,
) -> Result<PaidOutcome, BillingError> {
    if !METHODS.contains(&method) || method == "balance" {
        return Err(BillingError::InvalidMethod);
    }
    let user_id: Uuid = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?
        .ok_or(BillingError::OrderNotFound)?;
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let order = order_for_update(&mut tx, order_id).await?.ok_or(BillingError::OrderNotFound)?;
    // Only the provider the order was created for can pay it: a signed notification from another
    // provider (or the sandbox) naming this order is refused, whatever it says was paid.
    if order.method != method {
        tracing::warn!(order = %order.id, order_method = %order.method, method, "payment refused: the order was created for another method");
        return Err(BillingError::InvalidMethod);
    }
    if order.status == "paid" || order.status == "refunded" {
        if order.provider_trade_no.as_deref() != Some(trade_no) {
            tracing::warn!(order = %order.id, trade_no, "a second payment was notified for an order already paid; refund it at the provider");
        }
        return Ok(PaidOutcome::AlreadyPaid);
    }
    // A provider's late payment is real money and is taken; staff confirm only what is still payable.
    if staff.is_some() && order.status != "created" {
        return Err(BillingError::OrderNotOpen(order.status));
    }
    if let Some(a) = amount_micros {
        if a != order.amount_micros {
            return Err(BillingError::AmountMismatch {
                expected: super::format_cny_short(order.amount_micros),
                paid: super::format_cny_short(a),
            });
        }
    }
    apply_payment(&mut tx, &order, method, Some(trade_no), now, staff).await?;
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
    method: &str,
    provider_trade_no: &str,
    amount_micros: i64,
) -> Result<PaidOutcome, BillingError> {
    mark_paid_inner(pool, order_id, method, provider_trade_no, Some(amount_micros), Utc::now(), None).await
}

/// [`mark_paid`] at a given time (tests drive cycles with a controllable clock).
pub async fn mark_paid_at(
    pool: &PgPool,
    order_id: Uuid,
    method: &str,
    provider_trade_no: &str,
    amount_micros: i64,
    now: DateTime<Utc>,
) -> Result<PaidOutcome, BillingError> {
    mark_paid_inner(pool, order_id, method, provider_trade_no, Some(amount_micros), now, None).await
}

/// Pays a subscription or renewal order from the balance (minus what in-flight requests hold).
pub async fn pay_with_balance(pool: &PgPool, user_id: Uuid, order_id: Uuid) -> Result<PaidOutcome, BillingError> {
    pay_with_balance_at(pool, user_id, order_id, Utc::now()).await
}

pub async fn pay_with_balance_at(pool: &PgPool, user_id: Uuid, order_id: Uuid, now: DateTime<Utc>) -> Result<PaidOutcome, BillingError> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let order = order_for_update(&mut tx, order_id).await?.filter(|o| o.user_id == user_id).ok_or(BillingError::OrderNotFound)?;
    if order.status == "paid" {
        return Ok(PaidOutcome::AlreadyPaid);
    }
    if order.status != "created" {
        return Err(BillingError::OrderNotOpen(order.status));
    }
    if order.kind == "topup" {
        return Err(BillingError::InvalidMethod);
    }
    let available = wallet_available(&mut tx, user_id).await?;
    if available < order.amount_micros {
        return Err(BillingError::InsufficientBalance {
            needed: super::format_cny_short(order.amount_micros),
            available: super::format_cny_short(available.max(0)),
        });
    }
    if order.kind == "subscription" && subscriptions::active_for_update(&mut tx, user_id).await?.is_some() {
        return Err(BillingError::AlreadySubscribed);
    }
    apply_payment(&mut tx, &order, "balance", None, now, None).await?;
    tx.commit().await?;
    Ok(PaidOutcome::Applied)
}

/// Bank-transfer orders waiting for staff to confirm receipt, oldest first.
pub async fn pending_bank_transfers(pool: &PgPool) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!(
        "SELECT {COLS} FROM orders WHERE status = 'created' AND method = 'bank' ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await
}

/// Staff confirm that a bank transfer arrived (audited; idempotent). Only an order created for a
/// bank transfer and still payable (`created`) can be confirmed; a cancelled or expired one is
/// refused (`OrderNotOpen`), another method is refused (`InvalidMethod`).
pub async fn confirm_bank_transfer(pool: &PgPool, staff_id: Uuid, order_id: Uuid) -> Result<PaidOutcome, BillingError> {
    let o = get_any(pool, order_id).await?.ok_or(BillingError::OrderNotFound)?;
    mark_paid_inner(pool, order_id, "bank", &format!("bank:{}", o.reference), None, Utc::now(), Some(staff_id)).await
}

/// Expires unpaid orders past their `expires_at`. Returns how many.
pub async fn expire_stale(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE orders SET status = 'expired', closed_at = $1 WHERE status = 'created' AND expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected())
}
