//! Orders: subscription purchases, renewals and top-ups, and the one owner of an order's state:
//! created → paid | cancelled | expired; cancelled | expired → paid (a late payment is still
//! taken); paid → refunded. Every change of `orders.status` is a named transition here
//! ([`cancel`], [`close_open`], [`record_payment`], [`record_refund`], [`expire_stale`]); placing
//! and paying orders, and what a paid order buys, is [`super::purchases`].

use super::plans::Plan;
use super::BillingError;
use crate::money::MicroCny;
use crate::text_enum::text_enum;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub const MIN_TOPUP: MicroCny = MicroCny::units(1);
pub const MAX_TOPUP: MicroCny = MicroCny::units(100_000);
/// How long an online payment order stays payable.
pub const ONLINE_ORDER_TTL_HOURS: i64 = 2;
/// How long a bank-transfer order waits for the transfer.
pub const BANK_ORDER_TTL_DAYS: i64 = 7;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: OrderKind,
    pub plan_code: Option<String>,
    /// The plan's name as sold (from the order's snapshot).
    pub plan_name: Option<String>,
    pub amount_micros: MicroCny,
    pub status: OrderStatus,
    pub method: PaymentMethod,
    /// Human reference, e.g. "CR-7K3M9Q" (quote it on a bank transfer).
    pub reference: String,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub subscription_id: Option<Uuid>,
    pub provider_trade_no: Option<String>,
}

text_enum! {
    pub enum OrderKind {
        Subscription = "subscription",
        Renewal = "renewal",
        Topup = "topup",
    }
}

text_enum! {
    /// See the module doc for the transitions.
    pub enum OrderStatus {
        Created = "created",
        Paid = "paid",
        Cancelled = "cancelled",
        Expired = "expired",
        Refunded = "refunded",
    }
}

text_enum! {
    /// How an order is (to be) paid.
    pub enum PaymentMethod {
        Alipay = "alipay",
        Wechat = "wechat",
        Bank = "bank",
        /// Test money, demo mode only.
        Sandbox = "sandbox",
        /// From the customer's wallet.
        Balance = "balance",
        /// A redeem code (a plan code's ¥0 order; see [`super::redeem`]).
        RedeemCode = "redeem_code",
    }
}

pub(crate) const COLS: &str = "id, user_id, kind, plan_code, plan_snapshot->>'name' AS plan_name, amount_micros, status, method, reference, created_at, paid_at, \
    expires_at, subscription_id, provider_trade_no";

pub(crate) const REF_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

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
    kind: OrderKind,
    plan: Option<&Plan>,
    subscription_id: Option<Uuid>,
    amount: MicroCny,
    method: PaymentMethod,
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

/// The customer cancels their order that is still `created`.
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

pub(crate) async fn order_for_update(tx: &mut PgConnection, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!("SELECT {COLS} FROM orders WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
}

/// The plan an order sold, as it was sold.
pub(crate) async fn order_plan(tx: &mut PgConnection, id: Uuid) -> Result<Option<Plan>, BillingError> {
    let v: Option<serde_json::Value> = sqlx::query_scalar("SELECT plan_snapshot FROM orders WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// Bank-transfer orders waiting for staff to confirm receipt, oldest first.
pub async fn pending_bank_transfers(pool: &PgPool) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query_as::<_, Order>(&format!(
        "SELECT {COLS} FROM orders WHERE status = 'created' AND method = 'bank' ORDER BY created_at"
    ))
    .fetch_all(pool)
    .await
}

/// An open order that will not be paid: `created` → `cancelled` (withdrawn) or `expired` (its
/// time ran out). An order no longer open is left as it is.
pub(crate) async fn close_open(tx: &mut PgConnection, id: Uuid, to: Closed, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET status = $2, closed_at = $3 WHERE id = $1 AND status = 'created'")
        .bind(id)
        .bind(to.status())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Closed {
    Cancelled,
    Expired,
}

impl Closed {
    fn status(self) -> OrderStatus {
        match self {
            Closed::Cancelled => OrderStatus::Cancelled,
            Closed::Expired => OrderStatus::Expired,
        }
    }
}

/// The money arrived: `created` (or a late `cancelled`/`expired`) → `paid`. What it buys is
/// applied by [`super::purchases`], in the same transaction.
pub(crate) async fn record_payment(tx: &mut PgConnection, id: Uuid, method: PaymentMethod, trade_no: Option<&str>, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET status = 'paid', method = $2, provider_trade_no = $3, paid_at = $4, closed_at = NULL WHERE id = $1")
        .bind(id)
        .bind(method)
        .bind(trade_no)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// `paid` → `refunded` (the refund is booked by [`super::refunds`] in the same transaction).
pub(crate) async fn record_refund(tx: &mut PgConnection, id: Uuid, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET status = 'refunded', closed_at = $2 WHERE id = $1 AND status = 'paid'").bind(id).bind(now).execute(&mut *tx).await?;
    Ok(())
}

/// Marks an order as custom terms staff set up (its subscription renews on that plan).
pub(crate) async fn set_offered_by(tx: &mut PgConnection, id: Uuid, staff_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET offered_by = $2 WHERE id = $1").bind(id).bind(staff_id).execute(&mut *tx).await?;
    Ok(())
}

/// Ties a paid plan order to the subscription (cycle) it paid for.
pub(crate) async fn link_subscription(tx: &mut PgConnection, id: Uuid, subscription_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE orders SET subscription_id = $2 WHERE id = $1").bind(id).bind(subscription_id).execute(&mut *tx).await?;
    Ok(())
}

/// Expires unpaid orders past their `expires_at`. Returns how many.
pub async fn expire_stale(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE orders SET status = 'expired', closed_at = $1 WHERE status = 'created' AND expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected())
}
