//! A customer's alert settings — the low-balance threshold and the optional webhook — and the
//! spending-limit notice for a key the gateway refused. The crossings themselves are detected by
//! row triggers (migration 0021) when settlement or staff move the money.

use super::Notice;
use crate::crypto::Crypto;
use crate::upstreams::RotateError;
use crate::money::MicroCny;
use rand::RngCore;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the threshold must be above zero")]
    Threshold,
    #[error("the webhook address must be an http:// or https:// URL of at most 2000 characters")]
    WebhookUrl,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the customer has set.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// None: no low-balance alert.
    pub low_balance: Option<MicroCny>,
    /// None: alerts by mail only. (The secret is never read back.)
    pub webhook_url: Option<String>,
}

pub async fn settings(pool: &PgPool, user: Uuid) -> Result<AlertSettings, sqlx::Error> {
    let (low, url): (Option<MicroCny>, Option<String>) = sqlx::query_as(
        "SELECT b.low_balance_micros, u.alert_webhook_url FROM users u LEFT JOIN balances b ON b.user_id = u.id WHERE u.id = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await?;
    Ok(AlertSettings { low_balance: low, webhook_url: url })
}

/// Sets (or, with None, turns off) the low-balance threshold. One set above the balance alerts
/// at once: the balance is below it.
pub async fn set_low_balance(pool: &PgPool, user: Uuid, threshold: Option<MicroCny>) -> Result<(), SettingsError> {
    if threshold.is_some_and(|t| !t.is_positive()) {
        return Err(SettingsError::Threshold);
    }
    sqlx::query(
        "INSERT INTO balances (user_id, low_balance_micros) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET low_balance_micros = EXCLUDED.low_balance_micros",
    )
    .bind(user)
    .bind(threshold)
    .execute(pool)
    .await?;
    Ok(())
}

/// Points the customer's alerts at `url` with a new signing secret, returned to be shown once
/// (only its encryption is stored).
pub async fn set_webhook(pool: &PgPool, crypto: &Crypto, user: Uuid, url: &str) -> Result<String, SettingsError> {
    let url = url.trim();
    let parsed = url.parse::<http::Uri>().map_err(|_| SettingsError::WebhookUrl)?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    if !scheme_ok || parsed.host().is_none_or(str::is_empty) || url.len() > 2000 {
        return Err(SettingsError::WebhookUrl);
    }
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let secret = format!("whsec_{}", hex::encode(raw));
    sqlx::query("UPDATE users SET alert_webhook_url = $2, alert_webhook_secret_enc = $3, updated_at = now() WHERE id = $1")
        .bind(user)
        .bind(url)
        .bind(crypto.encrypt_str(&secret))
        .execute(pool)
        .await?;
    Ok(secret)
}

pub async fn remove_webhook(pool: &PgPool, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET alert_webhook_url = NULL, alert_webhook_secret_enc = NULL, updated_at = now() WHERE id = $1")
        .bind(user)
        .execute(pool)
        .await?;
    Ok(())
}

/// The customer's webhook and its secret, if set (for delivery).
pub(super) async fn webhook(pool: &PgPool, crypto: &Crypto, user: Uuid) -> Result<Option<(String, String)>, String> {
    let row: Option<(Option<String>, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT alert_webhook_url, alert_webhook_secret_enc FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(pool)
            .await
            .map_err(|e| e.to_string())?;
    match row {
        Some((Some(url), Some(enc))) => {
            let secret = crypto.decrypt_str(&enc).map_err(|e| format!("the webhook secret: {e}"))?;
            Ok(Some((url, secret)))
        }
        _ => Ok(None),
    }
}

/// The gateway refused a request for this key's spending limit: queues the notice unless this
/// limit was already notified; true when it was queued.
pub async fn key_limit_refused(pool: &PgPool, key: Uuid) -> Result<bool, sqlx::Error> {
    let queued: Option<bool> = sqlx::query_scalar(
        "WITH k AS (
             UPDATE api_keys SET limit_alerted_at = now()
             WHERE id = $1 AND spend_limit_micros IS NOT NULL AND limit_alerted_at IS NULL AND revoked_at IS NULL
             RETURNING id, user_id, name, spend_limit_micros, spent_micros)
         SELECT true FROM k, LATERAL cr_alert_key_limit(k.id, k.user_id, k.name, k.spend_limit_micros, k.spent_micros)",
    )
    .bind(key)
    .fetch_optional(pool)
    .await?;
    Ok(queued.is_some())
}

/// The customer's latest notices, newest first.
pub async fn recent(pool: &PgPool, user: Uuid, limit: i64) -> Result<Vec<Notice>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, created_at, user_id, kind, status, subject, subject_name, detail, data FROM alert_outbox
         WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit.clamp(1, 100))
    .fetch_all(pool)
    .await
}

/// Re-encrypts every webhook secret from `old` to `new` (part of `server secret rotate`, in its
/// transaction); how many.
pub(crate) async fn reencrypt(conn: &mut PgConnection, old: &Crypto, new: &Crypto) -> Result<usize, RotateError> {
    let rows: Vec<(Uuid, String, Vec<u8>)> =
        sqlx::query_as("SELECT id, email, alert_webhook_secret_enc FROM users WHERE alert_webhook_secret_enc IS NOT NULL ORDER BY id FOR UPDATE")
            .fetch_all(&mut *conn)
            .await?;
    for (id, email, enc) in &rows {
        let plain = old.decrypt(enc).map_err(|_| RotateError::WebhookUndecryptable(email.clone()))?;
        sqlx::query("UPDATE users SET alert_webhook_secret_enc = $2 WHERE id = $1").bind(id).bind(new.encrypt(&plain)).execute(&mut *conn).await?;
    }
    Ok(rows.len())
}
