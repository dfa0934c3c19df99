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
    /// The customer the action concerned, when there is one: the target's user, or the owner of
    /// the target order, refund, trial, invoice or key, or the `user_id` in the details.
    pub customer_id: Option<Uuid>,
    pub customer_email: Option<String>,
    /// What else the target names, for reading: an upstream's name, an enquiry's company.
    pub subject: Option<String>,
}

/// Which rows [`search`] returns; every part is optional. Emails match by a piece of them
/// (case-insensitive), the action exactly, times as `[from, until)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub staff: String,
    pub action: String,
    pub customer: String,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
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
    search(pool, &AuditQuery::default(), limit).await
}

/// The rows matching `q`, newest first, with the customer each concerned.
pub async fn search(pool: &PgPool, q: &AuditQuery, limit: i64) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let piece = |s: &str| {
        let s = s.trim().to_lowercase();
        (!s.is_empty()).then(|| format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")))
    };
    let action = Some(q.action.trim()).filter(|a| !a.is_empty());
    // the target's id (every target is "<kind>:<id>"; not every id is a UUID)
    sqlx::query_as::<_, AuditEntry>(
        "SELECT a.id, a.at, a.staff_id, COALESCE(s.email, '') AS staff_email, a.action, a.target, a.details,
                c.id AS customer_id, c.email AS customer_email,
                CASE t.kind WHEN 'upstream' THEN (SELECT name FROM upstreams WHERE id = t.id)
                            WHEN 'enquiry' THEN (SELECT company FROM enterprise_enquiries WHERE id = t.id) END AS subject
         FROM audit_log a
         LEFT JOIN users s ON s.id = a.staff_id
         CROSS JOIN LATERAL (SELECT split_part(a.target, ':', 1) AS kind,
                CASE WHEN split_part(a.target, ':', 2) ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                     THEN split_part(a.target, ':', 2)::uuid END AS id) t
         LEFT JOIN users c ON c.id = COALESCE(
                CASE t.kind WHEN 'user' THEN t.id
                            WHEN 'order' THEN (SELECT user_id FROM orders WHERE id = t.id)
                            WHEN 'refund' THEN (SELECT user_id FROM refund_requests WHERE id = t.id)
                            WHEN 'trial' THEN (SELECT user_id FROM trial_applications WHERE id = t.id)
                            WHEN 'invoice' THEN (SELECT user_id FROM invoices WHERE id = t.id)
                            WHEN 'key' THEN (SELECT user_id FROM api_keys WHERE id = t.id) END,
                CASE WHEN a.details->>'user_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                     THEN (a.details->>'user_id')::uuid END)
         WHERE ($1::text IS NULL OR lower(COALESCE(s.email, '')) LIKE $1)
           AND ($2::text IS NULL OR a.action = $2)
           AND ($3::text IS NULL OR lower(c.email) LIKE $3)
           AND ($4::timestamptz IS NULL OR a.at >= $4)
           AND ($5::timestamptz IS NULL OR a.at < $5)
         ORDER BY a.id DESC LIMIT $6",
    )
    .bind(piece(&q.staff))
    .bind(action)
    .bind(piece(&q.customer))
    .bind(q.from)
    .bind(q.until)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await
}
