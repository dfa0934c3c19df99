//! The staff audit log: every staff action of billing (and anything else that calls [`record`])
//! is one append-only row, written in the same transaction as the action.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub staff_id: Option<Uuid>,
    /// The staff member's email (empty if the account was deleted).
    pub staff_email: String,
    /// e.g. "refund.approve", "invoice.issue", "trial.approve", "order.confirm_bank_transfer"
    pub action: String,
    /// What was acted on, e.g. "refund:<uuid>".
    pub target: String,
    pub details: serde_json::Value,
}

/// Appends one audit row (inside the caller's transaction).
pub async fn record(
    tx: &mut PgConnection,
    staff_id: Uuid,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (staff_id, action, target, details) VALUES ($1, $2, $3, $4)")
        .bind(staff_id)
        .bind(action)
        .bind(target)
        .bind(details)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Newest first.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as::<_, AuditEntry>(
        "SELECT a.id, a.at, a.staff_id, COALESCE(u.email, '') AS staff_email, a.action, a.target, a.details \
         FROM audit_log a LEFT JOIN users u ON u.id = a.staff_id ORDER BY a.id DESC LIMIT $1",
    )
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await
}
