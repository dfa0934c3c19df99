//! Enterprise enquiries: the custom-terms form (company, contact, needs). Staff follow up and move
//! an enquiry from `new` to `contacted` or `closed` (audited).

use super::{audit, BillingError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EnquiryForm {
    pub company: String,
    pub contact_name: String,
    pub email: String,
    pub phone: String,
    /// Expected volume, deployment needs, contract and invoicing requirements…
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Enquiry {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub company: String,
    pub contact_name: String,
    pub email: String,
    pub phone: String,
    pub message: String,
    /// new | contacted | closed
    pub status: String,
    pub staff_note: String,
    pub created_at: DateTime<Utc>,
    pub handled_at: Option<DateTime<Utc>>,
}

const COLS: &str = "id, user_id, company, contact_name, email, phone, message, status, staff_note, created_at, handled_at";

impl EnquiryForm {
    pub fn validate(&self) -> Result<(), String> {
        let len = |s: &str| s.trim().chars().count();
        if len(&self.company) == 0 || len(&self.company) > 200 {
            return Err("Please enter your company name.".into());
        }
        if len(&self.contact_name) == 0 || len(&self.contact_name) > 100 {
            return Err("Please enter a contact name.".into());
        }
        let e = self.email.trim();
        if !matches!(e.split_once('@'), Some((a, d)) if !a.is_empty() && d.contains('.') && !e.contains(' ')) {
            return Err("Please enter a valid email address.".into());
        }
        if len(&self.phone) > 30 {
            return Err("The phone number is too long.".into());
        }
        if !(10..=4000).contains(&len(&self.message)) {
            return Err("Please tell us about your needs in 10 to 4000 characters.".into());
        }
        Ok(())
    }
}

/// Records an enquiry (signed-in or not).
pub async fn submit(pool: &PgPool, user_id: Option<Uuid>, form: &EnquiryForm) -> Result<Enquiry, BillingError> {
    form.validate().map_err(BillingError::Invalid)?;
    Ok(sqlx::query_as::<_, Enquiry>(&format!(
        "INSERT INTO enterprise_enquiries (user_id, company, contact_name, email, phone, message) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLS}"
    ))
    .bind(user_id)
    .bind(form.company.trim())
    .bind(form.contact_name.trim())
    .bind(form.email.trim())
    .bind(form.phone.trim())
    .bind(form.message.trim())
    .fetch_one(pool)
    .await?)
}

/// Staff: open enquiries (`all` = include closed), newest first.
pub async fn list(pool: &PgPool, all: bool) -> Result<Vec<Enquiry>, sqlx::Error> {
    sqlx::query_as::<_, Enquiry>(&format!(
        "SELECT {COLS} FROM enterprise_enquiries WHERE $1 OR status <> 'closed' ORDER BY created_at DESC LIMIT 500"
    ))
    .bind(all)
    .fetch_all(pool)
    .await
}

/// Staff: sets the status (`contacted` | `closed`) with a note.
pub async fn set_status(pool: &PgPool, staff_id: Uuid, id: Uuid, status: &str, note: &str) -> Result<(), BillingError> {
    if !["new", "contacted", "closed"].contains(&status) {
        return Err(BillingError::Invalid("Unknown status.".into()));
    }
    let mut tx = pool.begin().await?;
    let r = sqlx::query("UPDATE enterprise_enquiries SET status = $2, staff_note = $3, handled_by = $4, handled_at = now() WHERE id = $1")
        .bind(id)
        .bind(status)
        .bind(note.trim())
        .bind(staff_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        return Err(BillingError::Invalid("Enquiry not found.".into()));
    }
    audit::record(&mut tx, staff_id, "enquiry.status", &format!("enquiry:{id}"), serde_json::json!({"status": status, "note": note.trim()})).await?;
    tx.commit().await?;
    Ok(())
}
