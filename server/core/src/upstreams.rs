//! Upstreams (staff-managed): where requests are forwarded. The credential is encrypted at rest
//! (see [`crate::crypto`]) and never leaves this module in clear except to the gateway's forwarder.
//! Base URLs are only ever set by staff; clients cannot choose an outbound address.

use crate::crypto::Crypto;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUpstream {
    pub name: String,
    /// e.g. "https://api.anthropic.com" (the gateway appends "/v1/messages").
    pub base_url: String,
    pub api_key: String,
    pub channels: Vec<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default = "one")]
    pub weight: i32,
    #[serde(default)]
    pub concurrency_cap: Option<i32>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn one() -> i32 {
    1
}
fn yes() -> bool {
    true
}

/// What pages and APIs may show: never the credential, only its last characters.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct UpstreamSummary {
    pub id: Uuid,
    pub name: String,
    pub base_url: String,
    pub credential_hint: String,
    pub auth_scheme: String,
    pub channels: Vec<String>,
    pub models: Vec<String>,
    pub priority: i32,
    pub weight: i32,
    pub concurrency_cap: Option<i32>,
    pub enabled: bool,
    pub is_demo: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("name must be 1 to 100 characters")]
    InvalidName,
    #[error("base_url must be an http(s) URL without query or fragment")]
    InvalidUrl,
    #[error("api_key must not be empty")]
    EmptyCredential,
    #[error("unknown channel: {0}")]
    UnknownChannel(String),
    #[error("weight must be positive and concurrency_cap positive if set")]
    InvalidNumbers,
    #[error("an upstream with this name exists")]
    Duplicate,
    #[error(transparent)]
    Db(sqlx::Error),
}

impl From<sqlx::Error> for UpstreamError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.code().as_deref() == Some("23505") {
                return UpstreamError::Duplicate;
            }
        }
        UpstreamError::Db(e)
    }
}

/// A routable upstream with its decrypted credential (gateway only; never serialised).
#[derive(Clone)]
pub struct UpstreamTarget {
    pub id: Uuid,
    pub name: String,
    pub base_url: String,
    pub credential: String,
    pub bearer: bool,
    pub channels: Vec<String>,
    pub models: Vec<String>,
    pub priority: i32,
    pub weight: i32,
    pub concurrency_cap: Option<i32>,
    /// The built-in simulated Claude (demo mode while it is the only one enabled).
    pub is_demo: bool,
}

impl std::fmt::Debug for UpstreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTarget").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

fn hint(key: &str) -> String {
    let n = key.chars().count();
    let tail: String = key.chars().skip(n.saturating_sub(4)).collect();
    if n <= 8 {
        "…".to_string()
    } else {
        format!("…{tail}")
    }
}

pub fn validate_base_url(url: &str) -> Result<String, UpstreamError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| UpstreamError::InvalidUrl)?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
    {
        return Err(UpstreamError::InvalidUrl);
    }
    Ok(url.trim_end_matches('/').to_string())
}

async fn check_channels(conn: impl sqlx::PgExecutor<'_>, channels: &[String]) -> Result<(), UpstreamError> {
    let known: Vec<String> = sqlx::query_scalar("SELECT code FROM channels").fetch_all(conn).await?;
    if let Some(c) = channels.iter().find(|c| !known.contains(c)) {
        return Err(UpstreamError::UnknownChannel(c.clone()));
    }
    Ok(())
}

async fn insert(conn: &mut sqlx::PgConnection, crypto: &Crypto, u: NewUpstream, is_demo: bool) -> Result<Uuid, UpstreamError> {
    let name = u.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(UpstreamError::InvalidName);
    }
    let base_url = validate_base_url(u.base_url.trim())?;
    if u.api_key.trim().is_empty() {
        return Err(UpstreamError::EmptyCredential);
    }
    if u.weight <= 0 || u.concurrency_cap.is_some_and(|c| c <= 0) {
        return Err(UpstreamError::InvalidNumbers);
    }
    check_channels(&mut *conn, &u.channels).await?;
    let key = u.api_key.trim();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO upstreams (name, base_url, credential_enc, credential_hint, channels, priority, weight, \
         concurrency_cap, enabled, is_demo) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id",
    )
    .bind(name)
    .bind(&base_url)
    .bind(crypto.encrypt_str(key))
    .bind(hint(key))
    .bind(&u.channels)
    .bind(u.priority)
    .bind(u.weight)
    .bind(u.concurrency_cap)
    .bind(u.enabled)
    .bind(is_demo)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Adds an upstream. Every gateway instance picks it up at once (NOTIFY trigger). The first real
/// upstream ends demo mode: the simulated Claude is disabled in the same transaction, whoever
/// adds it (console or staff API), so it never takes traffic beside a real one.
pub async fn create(pool: &PgPool, crypto: &Crypto, u: NewUpstream) -> Result<Uuid, UpstreamError> {
    let mut tx = pool.begin().await?;
    let id = create_in(&mut tx, crypto, u).await?;
    tx.commit().await?;
    Ok(id)
}

/// [`create`] inside the caller's transaction (a staff action that audits the creation).
pub async fn create_in(tx: &mut sqlx::PgConnection, crypto: &Crypto, u: NewUpstream) -> Result<Uuid, UpstreamError> {
    let id = insert(&mut *tx, crypto, u, false).await?;
    sqlx::query("UPDATE upstreams SET enabled = false, updated_at = now() WHERE is_demo AND enabled").execute(&mut *tx).await?;
    Ok(id)
}

pub(crate) async fn create_demo(pool: &PgPool, crypto: &Crypto, u: NewUpstream) -> Result<Uuid, UpstreamError> {
    insert(&mut *pool.acquire().await?, crypto, u, true).await
}

const SUMMARY_COLS: &str = "id, name, base_url, credential_hint, auth_scheme, channels, models, priority, weight, \
     concurrency_cap, enabled, is_demo, created_at";

pub async fn list(pool: &PgPool) -> Result<Vec<UpstreamSummary>, sqlx::Error> {
    sqlx::query_as::<_, UpstreamSummary>(&format!(
        "SELECT {SUMMARY_COLS} FROM upstreams ORDER BY priority DESC, name"
    ))
    .fetch_all(pool)
    .await
}

pub async fn set_enabled(conn: impl sqlx::PgExecutor<'_>, id: Uuid, enabled: bool) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE upstreams SET enabled = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(enabled)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Staff edit of routing fields (not the credential). `models` empty = all models.
pub async fn update_routing(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    channels: &[String],
    models: &[String],
    priority: i32,
    weight: i32,
    concurrency_cap: Option<i32>,
) -> Result<bool, UpstreamError> {
    if weight <= 0 || concurrency_cap.is_some_and(|c| c <= 0) {
        return Err(UpstreamError::InvalidNumbers);
    }
    check_channels(&mut *conn, channels).await?;
    let r = sqlx::query(
        "UPDATE upstreams SET channels=$2, models=$3, priority=$4, weight=$5, concurrency_cap=$6, updated_at=now() WHERE id=$1",
    )
    .bind(id)
    .bind(channels)
    .bind(models)
    .bind(priority)
    .bind(weight)
    .bind(concurrency_cap)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Replaces the credential.
pub async fn set_credential(conn: impl sqlx::PgExecutor<'_>, crypto: &Crypto, id: Uuid, api_key: &str) -> Result<bool, UpstreamError> {
    if api_key.trim().is_empty() {
        return Err(UpstreamError::EmptyCredential);
    }
    let r = sqlx::query("UPDATE upstreams SET credential_enc=$2, credential_hint=$3, updated_at=now() WHERE id=$1")
        .bind(id)
        .bind(crypto.encrypt_str(api_key.trim()))
        .bind(hint(api_key.trim()))
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("DELETE FROM upstreams WHERE id = $1").bind(id).execute(pool).await?;
    Ok(r.rows_affected() == 1)
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the credential of upstream \"{0}\" cannot be decrypted with the current secret; nothing was changed")]
    Undecryptable(String),
    #[error("the credential of upstream \"{0}\" did not read back under the new secret; nothing was changed")]
    Unverified(String),
    #[error("the two-factor secret of {0} cannot be decrypted with the current secret; nothing was changed")]
    TwoFactorUndecryptable(String),
    #[error("the alert webhook secret of {0} cannot be decrypted with the current secret; nothing was changed")]
    WebhookUndecryptable(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How many secrets of each sort a rotation re-encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reencrypted {
    pub credentials: usize,
    pub two_factor: usize,
    pub webhooks: usize,
}

/// Re-encrypts every upstream credential, and every account's two-factor secret and alert
/// webhook secret, from the `old` server secret to the `new` one, in one transaction with the rows
/// locked: all or nothing, each credential read back under `new` before the commit.
pub async fn reencrypt_credentials(pool: &PgPool, old: &Crypto, new: &Crypto) -> Result<Reencrypted, RotateError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<(Uuid, String, Vec<u8>)> = sqlx::query_as("SELECT id, name, credential_enc FROM upstreams ORDER BY id FOR UPDATE")
        .fetch_all(&mut *tx)
        .await?;
    for (id, name, stored) in &rows {
        let plain = old.decrypt(stored).map_err(|_| RotateError::Undecryptable(name.clone()))?;
        let again = new.encrypt(&plain);
        if new.decrypt(&again).ok().as_deref() != Some(plain.as_slice()) {
            return Err(RotateError::Unverified(name.clone()));
        }
        sqlx::query("UPDATE upstreams SET credential_enc = $2, updated_at = now() WHERE id = $1").bind(id).bind(&again).execute(&mut *tx).await?;
    }
    let two_factor = crate::totp::reencrypt(&mut tx, old, new).await?;
    let webhooks = crate::alerts::customer::reencrypt(&mut tx, old, new).await?;
    tx.commit().await?;
    Ok(Reencrypted { credentials: rows.len(), two_factor, webhooks })
}

/// Enabled upstreams with decrypted credentials, for the gateway's routing table. An upstream
/// whose credential cannot be decrypted (wrong server secret) is skipped with a warning.
pub async fn load_targets(pool: &PgPool, crypto: &Crypto) -> Result<Vec<UpstreamTarget>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        name: String,
        base_url: String,
        credential_enc: Vec<u8>,
        auth_scheme: String,
        channels: Vec<String>,
        models: Vec<String>,
        priority: i32,
        weight: i32,
        concurrency_cap: Option<i32>,
        is_demo: bool,
    }
    let rows = sqlx::query_as::<_, Row>(
        "SELECT id, name, base_url, credential_enc, auth_scheme, channels, models, priority, weight, concurrency_cap, is_demo \
         FROM upstreams WHERE enabled ORDER BY priority DESC, name",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        match crypto.decrypt_str(&r.credential_enc) {
            Ok(credential) => out.push(UpstreamTarget {
                id: r.id,
                name: r.name,
                base_url: r.base_url,
                credential,
                bearer: r.auth_scheme == "bearer",
                channels: r.channels,
                models: r.models,
                priority: r.priority,
                weight: r.weight,
                concurrency_cap: r.concurrency_cap,
                is_demo: r.is_demo,
            }),
            Err(_) => tracing::warn!(upstream = %r.name, "upstream credential cannot be decrypted with this server secret; skipped"),
        }
    }
    Ok(out)
}
