//! Staff balance adjustments (the console's "Adjust balance" and `POST /api/admin/v1/users/{id}/credit`).
//!
//! Staff mistakes must not move money: every adjustment carries an idempotency key (the console
//! renders a fresh one with each form; API callers send `Idempotency-Key`). The first answer to a
//! key is stored with it in the same transaction as the ledger row and the audit row, so a
//! repeated submit or a retried call returns that answer without a second ledger row; a key sent
//! again with another user, amount or staff member is refused. An adjustment moves at most
//! [`StaffLimits::max_adjustment_micros`] either way, and one above
//! [`StaffLimits::confirm_above_micros`] needs an explicit confirmation. The customer's ledger
//! shows the customer-facing description; the staff's internal note (required) goes only to the
//! audit log.

use super::{audit, BillingError};
use super::ledger::{self, LedgerEntry, LedgerError, LedgerKind, Memo};
use crate::money::MicroCny;
use sqlx::PgPool;
use uuid::Uuid;

/// Bounds on staff money actions, from the environment (`CLOUDROUTER_STAFF_ADJUST_MAX_CNY`,
/// default ¥100,000; `CLOUDROUTER_STAFF_CONFIRM_ABOVE_CNY`, default ¥1,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaffLimits {
    /// The most one adjustment may credit or debit.
    pub max_adjustment_micros: MicroCny,
    /// Adjustments moving more than this need an explicit confirmation.
    pub confirm_above_micros: MicroCny,
}

impl Default for StaffLimits {
    fn default() -> Self {
        StaffLimits { max_adjustment_micros: MicroCny::units(100_000), confirm_above_micros: MicroCny::units(1_000) }
    }
}

impl StaffLimits {
    pub fn from_env() -> Result<StaffLimits, String> {
        let d = StaffLimits::default();
        let read = |name: &str, default: MicroCny| -> Result<MicroCny, String> {
            match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => MicroCny::parse(&v).ok().filter(|m| m.is_positive()).ok_or_else(|| format!("{name} must be a positive amount in yuan, e.g. 1000")),
            }
        };
        let limits = StaffLimits {
            max_adjustment_micros: read("CLOUDROUTER_STAFF_ADJUST_MAX_CNY", d.max_adjustment_micros)?,
            confirm_above_micros: read("CLOUDROUTER_STAFF_CONFIRM_ABOVE_CNY", d.confirm_above_micros)?,
        };
        Ok(limits)
    }
}

/// One adjustment as staff asked for it.
#[derive(Debug, Clone)]
pub struct Adjustment {
    pub user_id: Uuid,
    /// Signed: positive credits, negative debits.
    pub amount_micros: MicroCny,
    /// What the customer's ledger says (empty: a standard wording).
    pub description: String,
    /// Why, for staff only (required; kept in the audit log).
    pub staff_note: String,
    pub idempotency_key: String,
    /// Staff confirmed an amount above the threshold.
    pub confirmed: bool,
}

/// The ledger row the key stands for; `replayed` when an earlier submission made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Adjusted {
    pub entry: LedgerEntry,
    pub replayed: bool,
}

const ACTION: &str = "balance.adjust";

fn valid_key(k: &str) -> bool {
    (8..=100).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Applies an adjustment once (see the module doc).
pub async fn apply(pool: &PgPool, limits: &StaffLimits, staff_id: Uuid, a: &Adjustment) -> Result<Adjusted, BillingError> {
    let key = a.idempotency_key.trim();
    if !valid_key(key) {
        return Err(BillingError::IdempotencyKeyRequired);
    }
    let note = a.staff_note.trim();
    if note.is_empty() || note.chars().count() > 1000 {
        return Err(BillingError::StaffNoteRequired);
    }
    // empty: the console's standard wording for a credit or a debit
    let description = match a.description.trim() {
        "" => None,
        d if d.chars().count() > 200 => return Err(BillingError::Invalid("Please keep the description under 200 characters.".into())),
        d => Some(d.to_string()),
    };
    if a.amount_micros.is_zero() {
        return Err(BillingError::ZeroAmount);
    }
    if a.amount_micros.abs() > limits.max_adjustment_micros {
        return Err(BillingError::AdjustmentTooLarge(limits.max_adjustment_micros));
    }
    // what a repeat must ask for to get this answer back
    let request = serde_json::json!({"user_id": a.user_id, "amount_micros": a.amount_micros, "staff_id": staff_id});
    let mut tx = pool.begin().await?;
    // A concurrent submission of the same key waits here for the first to commit, then reads it.
    let fresh: Option<i32> = sqlx::query_scalar(
        "INSERT INTO staff_idempotency (key, staff_id, action, request, response) VALUES ($1, $2, $3, $4, 'null') \
         ON CONFLICT (key) DO NOTHING RETURNING 1",
    )
    .bind(key)
    .bind(staff_id)
    .bind(ACTION)
    .bind(&request)
    .fetch_optional(&mut *tx)
    .await?;
    if fresh.is_none() {
        let (action, asked, answer): (String, serde_json::Value, serde_json::Value) =
            sqlx::query_as("SELECT action, request, response FROM staff_idempotency WHERE key = $1").bind(key).fetch_one(&mut *tx).await?;
        if action != ACTION || asked != request {
            return Err(BillingError::IdempotencyKeyReused);
        }
        // the answer names the ledger row the key made
        let id = answer.get("id").and_then(|v| v.as_i64()).ok_or(BillingError::IdempotencyKeyReused)?;
        let entry = ledger::entry(&mut tx, id).await?;
        return Ok(Adjusted { entry, replayed: true });
    }
    if a.amount_micros.abs() > limits.confirm_above_micros && !a.confirmed {
        // nothing is kept: the key stays free for the confirmed submission
        return Err(BillingError::ConfirmationRequired { amount: a.amount_micros, threshold: limits.confirm_above_micros });
    }
    let kind = if a.amount_micros.is_positive() { LedgerKind::Credit } else { LedgerKind::Debit };
    let memo = Memo::Staff { text: description.clone() };
    let entry = ledger::adjust_in(&mut tx, a.user_id, a.amount_micros, kind, &memo, Some(staff_id)).await.map_err(|e| match e {
        LedgerError::UnknownUser => BillingError::UnknownUser,
        LedgerError::ZeroAmount => BillingError::ZeroAmount,
        LedgerError::Insufficient { available } => {
            BillingError::InsufficientBalance { needed: -a.amount_micros, available: available.max(MicroCny::ZERO) }
        }
        LedgerError::Db(e) => BillingError::Db(e),
    })?;
    audit::record(
        &mut tx,
        staff_id,
        ACTION,
        &format!("user:{}", a.user_id),
        serde_json::json!({
            "amount_micros": a.amount_micros, "description": description, "note": note,
            "idempotency_key": key, "ledger_entry": entry.id, "confirmed": a.confirmed,
        }),
    )
    .await?;
    sqlx::query("UPDATE staff_idempotency SET response = $2 WHERE key = $1")
        .bind(key)
        .bind(serde_json::json!({"id": entry.id}))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Adjusted { entry, replayed: false })
}
