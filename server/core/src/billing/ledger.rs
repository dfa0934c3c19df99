//! Balances and the append-only ledger. Every balance change is one ledger row written in the same
//! transaction, so a balance always equals the sum of its ledger (`balance_after_micros` is the
//! running balance).
//!
//! Funding sources: each ledger row names the source it moved, and each source has its own running
//! balance (`balance_after_micros`): `wallet` (micro-CNY, = `balances.balance_micros`), `trial`
//! (micro-CNY, the trial credit left) and `allowance` (micro-USD list price, the current plan
//! cycle's allowance left). Usage is drawn trial → allowance → wallet by the settlement path
//! (`usage` writer → trigger `usage_records_draw` + `cr_settle`, see `docs/billing.md`).
//!
//! Gateways hold part of a balance as leases while requests are in flight (see `gateway::leases`):
//! `available = balance − Σ leases`. A staff debit may not take the available amount below zero.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    /// Money in (top-up, payment).
    Credit,
    /// Money out by staff.
    Debit,
    /// Money out for API usage (written by the gateway's settlement).
    Usage,
    /// Money back to the customer.
    Refund,
    /// Correction by staff, either sign.
    Adjustment,
    /// Money out of the wallet for a plan (subscription or renewal).
    Purchase,
    /// Trial credit or a cycle's plan allowance granted (sources `trial`, `allowance`).
    Grant,
    /// Unused trial credit or allowance removed at expiry / the end of a cycle.
    Expiry,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerKind::Credit => "credit",
            LedgerKind::Debit => "debit",
            LedgerKind::Usage => "usage",
            LedgerKind::Refund => "refund",
            LedgerKind::Adjustment => "adjustment",
            LedgerKind::Purchase => "purchase",
            LedgerKind::Grant => "grant",
            LedgerKind::Expiry => "expiry",
        }
    }
}

/// Where the money of a ledger row came from or went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FundingSource {
    /// The pay-as-you-go balance (micro-CNY).
    Wallet,
    /// The current plan cycle's allowance (micro-USD list price).
    Allowance,
    /// Approved trial credit (micro-CNY).
    Trial,
}

impl FundingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            FundingSource::Wallet => "wallet",
            FundingSource::Allowance => "allowance",
            FundingSource::Trial => "trial",
        }
    }

    /// "CNY" or "USD": the unit of `amount_micros` / `balance_after_micros` of rows of this source.
    pub fn unit(self) -> &'static str {
        match self {
            FundingSource::Allowance => "USD",
            _ => "CNY",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct LedgerEntry {
    pub id: i64,
    pub user_id: Uuid,
    /// Signed: positive credits, negative debits.
    pub amount_micros: i64,
    /// Running balance after this row.
    pub balance_after_micros: i64,
    pub kind: String,
    pub source: String,
    pub note: String,
    pub actor_id: Option<Uuid>,
    /// For usage rows: how many requests this settlement covers.
    pub request_count: i32,
    pub created_at: DateTime<Utc>,
}

impl LedgerEntry {
    /// "CNY" or "USD" (allowance rows are in micro-USD of list price).
    pub fn unit(&self) -> &'static str {
        if self.source == "allowance" { "USD" } else { "CNY" }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("amount must not be zero")]
    ZeroAmount,
    #[error("insufficient balance: available {}", crate::money::format_cny(*available))]
    Insufficient { available: i64 },
    #[error("unknown user")]
    UnknownUser,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Balance and the part of it held by in-flight requests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BalanceInfo {
    pub balance_micros: i64,
    pub held_micros: i64,
    pub available_micros: i64,
}

const ENTRY_COLS: &str =
    "id, user_id, amount_micros, balance_after_micros, kind, source, note, actor_id, request_count, created_at";

/// The user's balance in micro-CNY (0 if never funded).
pub async fn balance(pool: &PgPool, user_id: Uuid) -> Result<i64, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, i64>("SELECT balance_micros FROM balances WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .unwrap_or(0))
}

/// Holds are backed by trial credit and plan allowance first, so `held_micros` is only the part
/// of the gateways' holds that may fall on the wallet (`cr_wallet_held`).
pub async fn balance_info(pool: &PgPool, user_id: Uuid) -> Result<BalanceInfo, sqlx::Error> {
    let (b, on_wallet): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE((SELECT balance_micros FROM balances WHERE user_id = $1), 0), cr_wallet_held($1)",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(BalanceInfo { balance_micros: b, held_micros: on_wallet, available_micros: b - on_wallet })
}

/// Changes a balance by `amount_micros` (negative = debit) and appends the ledger row, in one
/// transaction. A debit that would take the available balance below zero is refused.
pub async fn adjust(
    pool: &PgPool,
    user_id: Uuid,
    amount_micros: i64,
    kind: LedgerKind,
    note: &str,
    actor_id: Option<Uuid>,
) -> Result<LedgerEntry, LedgerError> {
    let mut tx = pool.begin().await?;
    let entry = adjust_in(&mut tx, user_id, amount_micros, kind, note, actor_id).await?;
    tx.commit().await?;
    Ok(entry)
}

/// [`adjust`] inside the caller's transaction (which may then record more in the same one).
pub async fn adjust_in(
    tx: &mut PgConnection,
    user_id: Uuid,
    amount_micros: i64,
    kind: LedgerKind,
    note: &str,
    actor_id: Option<Uuid>,
) -> Result<LedgerEntry, LedgerError> {
    if amount_micros == 0 {
        return Err(LedgerError::ZeroAmount);
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(LedgerError::UnknownUser);
    }
    sqlx::query("INSERT INTO balances (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let bal: i64 = sqlx::query_scalar("SELECT balance_micros FROM balances WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    let new_balance = bal.checked_add(amount_micros).ok_or(LedgerError::Insufficient { available: bal })?;
    if amount_micros < 0 {
        // holds are backed by trial credit and plan allowance first, then the wallet
        let held: i64 = sqlx::query_scalar("SELECT cr_wallet_held($1)")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        if new_balance < held {
            return Err(LedgerError::Insufficient { available: bal - held });
        }
    }
    sqlx::query("UPDATE balances SET balance_micros = $2, updated_at = now() WHERE user_id = $1")
        .bind(user_id)
        .bind(new_balance)
        .execute(&mut *tx)
        .await?;
    Ok(sqlx::query_as::<_, LedgerEntry>(&format!(
        "INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, note, actor_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENTRY_COLS}"
    ))
    .bind(user_id)
    .bind(amount_micros)
    .bind(new_balance)
    .bind(kind.as_str())
    .bind(FundingSource::Wallet.as_str())
    .bind(note)
    .bind(actor_id)
    .fetch_one(&mut *tx)
    .await?)
}

/// The user's most recent ledger rows, newest first, each with its running balance.
pub async fn entries(pool: &PgPool, user_id: Uuid, limit: i64) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    sqlx::query_as::<_, LedgerEntry>(&format!(
        "SELECT {ENTRY_COLS} FROM ledger_entries WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(user_id)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await
}

/// Checks the invariant for one user: balance = Σ wallet ledger rows and every running balance (of
/// every source) is consistent. `billing::verify` also checks the trial and allowance pots.
pub async fn verify(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let ok: bool = sqlx::query_scalar(
        "SELECT COALESCE((SELECT balance_micros FROM balances WHERE user_id = $1), 0) = \
                COALESCE((SELECT sum(amount_micros) FROM ledger_entries WHERE user_id = $1 AND source = 'wallet'), 0) \
            AND NOT EXISTS (SELECT 1 FROM (SELECT balance_after_micros, \
                   sum(amount_micros) OVER (PARTITION BY source ORDER BY id) AS running FROM ledger_entries WHERE user_id = $1) r \
                WHERE r.balance_after_micros <> r.running)",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(ok)
}
