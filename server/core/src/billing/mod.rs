//! Billing: plans, subscriptions with a monthly allowance, orders and payments (Alipay, WeChat Pay,
//! bank transfer, sandbox), pro-rated refunds, invoices, trial credit and the staff audit log.
//!
//! Money rules: integer micro-units only (micro-CNY, and micro-USD for allowances); every change of
//! a balance, trial credit or allowance is a ledger row written in the same transaction (see
//! [`crate::billing::ledger`] for the per-source running balances). The funding order of API usage —
//! trial credit → plan allowance → wallet — lives in SQL (`migrations/0004_billing.sql`), because
//! the gateway settles through `cr_lease_balance` / `cr_settle`; see `docs/billing.md`.
//!
//! Lock order used by every writer here (and by the SQL trigger), so they never deadlock:
//! `balances(user)` → `redeem_codes` → `subscriptions` → `trial_applications` → `orders` → `refund_requests` /
//! `invoices`. [`lock_user`] takes the first lock.

pub mod adjustments;
pub mod audit;
pub mod clock;
pub mod enquiries;
pub mod invoices;
pub mod ledger;
pub mod orders;
pub mod payments;
pub mod plans;
pub mod purchases;
pub mod redeem;
pub mod refunds;
pub mod renewals;
pub mod subscriptions;
pub mod trials;
pub mod windows;

use ledger::{Amount, FundingSource, LedgerKind, Memo};
use crate::money::{MicroCny, MicroUsd};
use orders::OrderStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use clock::{Clock, SystemClock, TestClock};

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("This plan does not exist.")]
    UnknownPlan,
    #[error("This plan cannot be bought online. Please contact us.")]
    PlanNotPurchasable,
    #[error("You already have an active subscription. Change your plan instead.")]
    AlreadySubscribed,
    #[error("You have no active subscription.")]
    NoSubscription,
    #[error("You are already on this plan.")]
    SamePlan,
    #[error("There is no pending plan change.")]
    NoPendingChange,
    #[error("Order not found.")]
    OrderNotFound,
    #[error("This order can no longer be changed (it is {0}).")]
    OrderNotOpen(OrderStatus),
    #[error("The paid amount {paid} does not match the order amount {expected}.")]
    AmountMismatch { expected: MicroCny, paid: MicroCny },
    #[error("Top-ups must be between ¥1 and ¥100,000.")]
    TopupOutOfRange,
    #[error("This payment method is not available.")]
    InvalidMethod,
    #[error("Insufficient balance: {needed} needed, {available} available.")]
    InsufficientBalance { needed: MicroCny, available: MicroCny },
    #[error("This subscription is not eligible for a refund: {0}")]
    RefundNotEligible(refunds::Ineligible),
    #[error("A refund request for this subscription is already pending.")]
    RefundPending,
    #[error("Refund request not found.")]
    RefundNotFound,
    #[error("This request has already been decided.")]
    AlreadyDecided,
    #[error("Please set the refund amount (negotiated refund).")]
    AmountRequired,
    #[error("The refund amount must be between ¥0 and the amount paid.")]
    InvalidAmount,
    #[error("Invoice not found.")]
    InvoiceNotFound,
    #[error("This order has already been invoiced or an invoice is being prepared.")]
    AlreadyInvoiced,
    #[error("Only paid orders can be invoiced.")]
    OrderNotInvoiceable,
    /// A rule of a form, as one fixed English sentence (the console looks it up in its table).
    #[error("{0}")]
    Invalid(String),
    #[error("Please enter the {0}.")]
    MissingField(&'static str),
    #[error("The {what} is too long (at most {max} characters).")]
    TooLong { what: &'static str, max: usize },
    #[error("Unknown channel {0}.")]
    UnknownChannel(String),
    #[error("You have already applied for a trial.")]
    TrialAlreadyApplied,
    #[error("Trial application not found.")]
    TrialNotFound,
    #[error("Unknown user.")]
    UnknownUser,
    #[error("The amount must not be zero.")]
    ZeroAmount,
    #[error("A staff adjustment may move at most {0}.")]
    AdjustmentTooLarge(MicroCny),
    #[error("{amount} is above {threshold}: confirm the amount to apply it.")]
    ConfirmationRequired { amount: MicroCny, threshold: MicroCny },
    #[error("Write an internal note saying why the balance changes.")]
    StaffNoteRequired,
    #[error("An idempotency key of 8 to 100 letters, digits, '-' or '_' is required.")]
    IdempotencyKeyRequired,
    #[error("This idempotency key was already used for a different request.")]
    IdempotencyKeyReused,
    #[error("This invoice is not waiting for a reversal.")]
    NoReversalDue,
    #[error("Database error.")]
    Db(#[from] sqlx::Error),
}

/// True for a unique-constraint violation (used to map races onto user-readable errors).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// What a customer can spend right now, for the console overview.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Funds {
    /// Unexpired trial credit.
    pub trial_micros: MicroCny,
    /// The current cycle's allowance left, at list price.
    pub allowance_left_micro_usd: MicroUsd,
    /// Wallet balance.
    pub balance_micros: MicroCny,
}

pub async fn funds(pool: &PgPool, user_id: Uuid, now: DateTime<Utc>) -> Result<Funds, sqlx::Error> {
    let (t, a, b): (MicroCny, MicroUsd, MicroCny) = sqlx::query_as(
        "SELECT COALESCE((SELECT sum(remaining_micros) FROM trial_applications \
                           WHERE user_id = $1 AND status = 'approved' AND expires_at > $2), 0)::BIGINT, \
                COALESCE((SELECT sum(allowance_micro_usd - allowance_used_micro_usd) FROM subscriptions \
                           WHERE user_id = $1 AND status = 'active'), 0)::BIGINT, \
                COALESCE((SELECT balance_micros FROM balances WHERE user_id = $1), 0)",
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(Funds { trial_micros: t, allowance_left_micro_usd: a, balance_micros: b })
}

/// What one run of the periodic jobs did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobsReport {
    pub cycles: renewals::CycleReport,
    pub orders_expired: u64,
    pub trials_expired: u64,
}

/// The periodic jobs (call every minute; safe on several instances at once and idempotent):
/// cycle boundaries (renewals, scheduled plan changes, unpaid renewals ending), expiry of stale
/// orders and of trial credit.
pub async fn run_jobs(pool: &PgPool, now: DateTime<Utc>) -> Result<JobsReport, BillingError> {
    let cycles = renewals::run_cycle_boundaries(pool, now).await?;
    let orders_expired = orders::expire_stale(pool, now).await?;
    let trials_expired = trials::expire(pool, now).await?;
    sqlx::query("DELETE FROM billing_settle_stage WHERE created_at < now() - interval '1 hour'")
        .execute(pool)
        .await?;
    Ok(JobsReport { cycles, orders_expired, trials_expired })
}

/// Checks every money invariant of one user: the wallet equals its ledger, the trial credit and
/// the allowance left equal their ledger rows, and every running balance is consistent.
pub async fn verify(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    if !crate::billing::ledger::verify(pool, user_id).await? {
        return Ok(false);
    }
    let ok: bool = sqlx::query_scalar(
        "SELECT COALESCE((SELECT sum(remaining_micros) FROM trial_applications WHERE user_id = $1 AND status = 'approved'), 0) = \
                COALESCE((SELECT sum(amount_micros) FROM ledger_entries WHERE user_id = $1 AND source = 'trial'), 0) \
            AND COALESCE((SELECT sum(allowance_micro_usd - allowance_used_micro_usd) FROM subscriptions \
                           WHERE user_id = $1 AND status = 'active'), 0) = \
                COALESCE((SELECT sum(amount_micros) FROM ledger_entries WHERE user_id = $1 AND source = 'allowance'), 0)",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(ok)
}

// ---------------------------------------------------------------------------------------------
// Ledger helpers used inside billing transactions.
// ---------------------------------------------------------------------------------------------

/// Takes the user's money lock (the `balances` row, created if missing) and returns the balance.
pub(crate) async fn lock_user(tx: &mut PgConnection, user_id: Uuid) -> Result<MicroCny, BillingError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(BillingError::UnknownUser);
    }
    sqlx::query("INSERT INTO balances (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    Ok(sqlx::query_scalar("SELECT balance_micros FROM balances WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?)
}

/// Wallet balance minus what gateways hold in leases (call after [`lock_user`]).
pub(crate) async fn wallet_available(tx: &mut PgConnection, user_id: Uuid) -> Result<MicroCny, BillingError> {
    let (b, h): (MicroCny, MicroCny) = sqlx::query_as(
        "SELECT COALESCE((SELECT balance_micros FROM balances WHERE user_id = $1), 0), \
                COALESCE((SELECT sum(amount_micros) FROM balance_leases WHERE user_id = $1), 0)::BIGINT",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(b - h)
}

/// Moves the wallet by `amount` (negative = out) with its ledger row. The caller holds
/// [`lock_user`] and has checked that a debit is covered. Returns the new balance.
pub(crate) async fn wallet_entry(
    tx: &mut PgConnection,
    user_id: Uuid,
    amount: MicroCny,
    kind: LedgerKind,
    memo: &Memo,
    actor: Option<Uuid>,
) -> Result<MicroCny, BillingError> {
    if amount.is_zero() {
        return Ok(sqlx::query_scalar("SELECT balance_micros FROM balances WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?);
    }
    let after: MicroCny = sqlx::query_scalar(
        "UPDATE balances SET balance_micros = balance_micros + $2, updated_at = now() WHERE user_id = $1 RETURNING balance_micros",
    )
    .bind(user_id)
    .bind(amount)
    .fetch_one(&mut *tx)
    .await?;
    pot_entry(tx, user_id, FundingSource::Wallet, Amount::Cny(amount), Amount::Cny(after), kind, memo, actor).await?;
    Ok(after)
}

/// Appends a ledger row of any source with its running balance `after`, both in the source's unit
/// (micro-USD for the allowance, micro-CNY otherwise; see [`FundingSource::amount`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pot_entry(
    tx: &mut PgConnection,
    user_id: Uuid,
    source: FundingSource,
    amount: Amount,
    after: Amount,
    kind: LedgerKind,
    memo: &Memo,
    actor: Option<Uuid>,
) -> Result<(), BillingError> {
    debug_assert_eq!(std::mem::discriminant(&source.amount(0)), std::mem::discriminant(&amount), "a row keeps its source's unit");
    if amount.micros() == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, memo, note, actor_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(user_id)
    .bind(amount.micros())
    .bind(after.micros())
    .bind(kind)
    .bind(source)
    .bind(sqlx::types::Json(memo))
    .bind(memo.english(amount.micros() > 0))
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
