//! Trial credit: a new customer applies once with a short reason; staff approve with an amount
//! (micro-CNY) and an expiry, or decline. Approved credit is drawn before any other funds (see
//! `docs/billing.md`) and whatever is unused at expiry is removed with a ledger `expiry` row.

use super::{audit, lock_user, pot_entry, BillingError};
use super::ledger::{Amount, FundingSource, LedgerKind, Memo};
use crate::money::MicroCny;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

pub const MIN_REASON_CHARS: usize = 10;
pub const MAX_REASON_CHARS: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct TrialApplication {
    pub id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub reason: String,
    /// pending | approved | declined | expired
    pub status: String,
    pub amount_micros: Option<MicroCny>,
    pub expires_at: Option<DateTime<Utc>>,
    pub remaining_micros: MicroCny,
    pub staff_note: String,
    pub created_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
}

const COLS: &str = "id, user_id, email, reason, status, amount_micros, expires_at, remaining_micros, staff_note, created_at, decided_at";

/// Applies for a trial (one application per user, ever; reason 10–500 characters).
pub async fn apply(pool: &PgPool, user_id: Uuid, reason: &str) -> Result<TrialApplication, BillingError> {
    let reason = reason.trim();
    let n = reason.chars().count();
    if !(MIN_REASON_CHARS..=MAX_REASON_CHARS).contains(&n) {
        return Err(BillingError::Invalid(format!(
            "Please tell us in {MIN_REASON_CHARS} to {MAX_REASON_CHARS} characters what you would like to try."
        )));
    }
    let email: String = sqlx::query_scalar("SELECT email FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .ok_or(BillingError::UnknownUser)?;
    sqlx::query_as::<_, TrialApplication>(&format!(
        "INSERT INTO trial_applications (user_id, email, reason) VALUES ($1, $2, $3) RETURNING {COLS}"
    ))
    .bind(user_id)
    .bind(email)
    .bind(reason)
    .fetch_one(pool)
    .await
    .map_err(|e| if super::is_unique_violation(&e) { BillingError::TrialAlreadyApplied } else { e.into() })
}

pub async fn mine(pool: &PgPool, user_id: Uuid) -> Result<Option<TrialApplication>, sqlx::Error> {
    sqlx::query_as::<_, TrialApplication>(&format!("SELECT {COLS} FROM trial_applications WHERE user_id = $1"))
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// Applications waiting for staff, oldest first.
pub async fn pending(pool: &PgPool) -> Result<Vec<TrialApplication>, sqlx::Error> {
    sqlx::query_as::<_, TrialApplication>(&format!("SELECT {COLS} FROM trial_applications WHERE status = 'pending' ORDER BY created_at"))
        .fetch_all(pool)
        .await
}

async fn user_of(pool: &PgPool, id: Uuid) -> Result<Uuid, BillingError> {
    sqlx::query_scalar("SELECT user_id FROM trial_applications WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(BillingError::TrialNotFound)
}

/// Approves with credit `amount_micros` (¥0.01 – ¥10,000) usable until `expires_at` (staff).
pub async fn approve(pool: &PgPool, staff_id: Uuid, id: Uuid, amount_micros: MicroCny, expires_at: DateTime<Utc>) -> Result<(), BillingError> {
    if !(MicroCny::from_micros(10_000)..=MicroCny::units(10_000)).contains(&amount_micros) {
        return Err(BillingError::Invalid("The trial credit must be between ¥0.01 and ¥10,000.".into()));
    }
    if expires_at <= Utc::now() {
        return Err(BillingError::Invalid("The expiry must be in the future.".into()));
    }
    let user_id = user_of(pool, id).await?;
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    let status: String = sqlx::query_scalar("SELECT status FROM trial_applications WHERE id = $1 FOR UPDATE").bind(id).fetch_one(&mut *tx).await?;
    if status != "pending" {
        return Err(BillingError::AlreadyDecided);
    }
    grant_pending(&mut tx, id, user_id, amount_micros, expires_at, Some(staff_id), None).await?;
    audit::record(
        &mut tx,
        staff_id,
        "trial.approve",
        &format!("trial:{id}"),
        serde_json::json!({"user_id": user_id, "amount_micros": amount_micros, "expires_at": expires_at}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Approves the pending application `id` (locked by the caller) with its credit and grants the
/// credit through the ledger: the one way a trial becomes approved, for staff (`decided_by`) and
/// for trial redeem codes (with a `note` naming the code).
pub(crate) async fn grant_pending(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    user_id: Uuid,
    amount: MicroCny,
    until: DateTime<Utc>,
    decided_by: Option<Uuid>,
    note: Option<&str>,
) -> Result<(), BillingError> {
    sqlx::query(
        "UPDATE trial_applications SET status = 'approved', amount_micros = $2, remaining_micros = $2, expires_at = $3, \
         decided_by = $4, staff_note = COALESCE($5, staff_note), decided_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(amount)
    .bind(until)
    .bind(decided_by)
    .bind(note)
    .execute(&mut *tx)
    .await?;
    let granted = Amount::Cny(amount);
    pot_entry(tx, user_id, FundingSource::Trial, granted, granted, LedgerKind::Grant, &Memo::TrialGranted { until }, decided_by).await
}

/// Declines with a note (staff).
pub async fn decline(pool: &PgPool, staff_id: Uuid, id: Uuid, note: &str) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    let status: String = sqlx::query_scalar("SELECT status FROM trial_applications WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BillingError::TrialNotFound)?;
    if status != "pending" {
        return Err(BillingError::AlreadyDecided);
    }
    sqlx::query("UPDATE trial_applications SET status = 'declined', staff_note = $2, decided_by = $3, decided_at = now() WHERE id = $1")
        .bind(id)
        .bind(note.trim())
        .bind(staff_id)
        .execute(&mut *tx)
        .await?;
    audit::record(&mut tx, staff_id, "trial.decline", &format!("trial:{id}"), serde_json::json!({"note": note.trim()})).await?;
    tx.commit().await?;
    Ok(())
}

/// Expires approved trials whose `expires_at` has passed: the unused credit leaves through a
/// ledger `expiry` row. Returns how many expired. Idempotent.
pub async fn expire(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, BillingError> {
    let due: Vec<(Uuid, Uuid)> = sqlx::query_as("SELECT id, user_id FROM trial_applications WHERE status = 'approved' AND expires_at <= $1")
        .bind(now)
        .fetch_all(pool)
        .await?;
    let mut n = 0;
    for (id, user_id) in due {
        let mut tx = pool.begin().await?;
        lock_user(&mut tx, user_id).await?;
        let left: Option<MicroCny> = sqlx::query_scalar(
            "SELECT remaining_micros FROM trial_applications WHERE id = $1 AND status = 'approved' AND expires_at <= $2 FOR UPDATE",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(left) = left else { continue };
        sqlx::query("UPDATE trial_applications SET status = 'expired', remaining_micros = 0 WHERE id = $1").bind(id).execute(&mut *tx).await?;
        pot_entry(&mut tx, user_id, FundingSource::Trial, Amount::Cny(-left), Amount::Cny(MicroCny::ZERO), LedgerKind::Expiry, &Memo::TrialExpired, None).await?;
        tx.commit().await?;
        n += 1;
    }
    Ok(n)
}
