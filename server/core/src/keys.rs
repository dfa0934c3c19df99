//! Customer API keys. The secret (`cr-` + 40 base62 characters) is shown once at creation; only
//! its SHA-256 is stored. Every change fires a NOTIFY (trigger in the migration) so that every
//! gateway instance drops its cached copy at once.

use crate::money::MicroCny;
use crate::net::IpNet;
use crate::text_enum::text_enum;
use crate::util::{random_base62, sha256};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

pub const SECRET_PREFIX: &str = "cr-";

text_enum! {
    /// Which clients may use a key, judged from the request's headers as relays that offer it do:
    /// a convenience against a key pasted into the wrong tool, not a security boundary (any
    /// client can send any header).
    pub enum Clients {
        Any = "any",
        /// Claude Code: `user-agent: claude-cli/…`.
        ClaudeCode = "claude_code",
        /// Anthropic's and OpenAI's official SDKs (and Claude Code, built on one): they send
        /// `x-stainless-lang`.
        Sdk = "sdk",
    }
}

impl Default for Clients {
    fn default() -> Self {
        Clients::Any
    }
}

impl Clients {
    /// Whether a request with these headers comes from an allowed client.
    pub fn admits(self, headers: &http::HeaderMap) -> bool {
        let claude_code = || headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).is_some_and(|ua| ua.starts_with("claude-cli/"));
        match self {
            Clients::Any => true,
            Clients::ClaudeCode => claude_code(),
            Clients::Sdk => claude_code() || headers.contains_key("x-stainless-lang"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct NewKey {
    pub name: String,
    pub channel: String,
    pub spend_limit_micros: Option<MicroCny>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Empty = every enabled model.
    pub allowed_models: Vec<String>,
    pub allow_fallback: bool,
    pub rpm_limit: Option<i32>,
    pub concurrency_limit: Option<i32>,
    /// Addresses and CIDR blocks the key may be used from; empty: anywhere.
    #[serde(default)]
    pub ip_allow: Vec<String>,
    /// Tokens per minute (input, cache writes and output).
    #[serde(default)]
    pub tpm_limit: Option<i32>,
    #[serde(default)]
    pub clients: Clients,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, PartialEq)]
pub struct KeySummary {
    pub id: Uuid,
    pub name: String,
    /// First characters of the secret, for recognising a key ("cr-AbC1…").
    pub prefix: String,
    pub channel: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub spent_micros: MicroCny,
    pub spend_limit_micros: Option<MicroCny>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub allowed_models: Vec<String>,
    pub allow_fallback: bool,
    pub rpm_limit: Option<i32>,
    pub concurrency_limit: Option<i32>,
    pub ip_allow: Vec<String>,
    pub tpm_limit: Option<i32>,
    pub clients: Clients,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("name must be 1 to 100 characters")]
    InvalidName,
    #[error("unknown channel")]
    UnknownChannel,
    #[error("unknown model: {0}")]
    UnknownModel(String),
    #[error("limits must be positive")]
    InvalidLimit,
    #[error("IP allow-list: {0}")]
    InvalidAddress(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What the gateway needs to know about a presented key (cached in memory).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyAuth {
    pub key_id: Uuid,
    pub user_id: Uuid,
    pub channel: String,
    pub spend_limit_micros: Option<MicroCny>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub allowed_models: Vec<String>,
    pub allow_fallback: bool,
    pub rpm_limit: Option<i32>,
    pub concurrency_limit: Option<i32>,
    pub tpm_limit: Option<i32>,
    /// parsed from the stored allow-list
    #[sqlx(try_from = "Vec<String>")]
    pub ip_allow: IpAllow,
    pub clients: Clients,
    pub user_status: String,
    /// The active subscription's plan name, if any.
    pub plan_name: Option<String>,
    /// The plan's channels (empty: every channel); its limits apply to requests on them.
    pub plan_channels: Option<Vec<String>>,
    pub plan_rpm_limit: Option<i32>,
    pub plan_concurrency_limit: Option<i32>,
    pub plan_tpm_limit: Option<i32>,
    /// The plan caps what its allowance pays per 5-hour or weekly window (migration 0026).
    pub plan_windows: bool,
    /// The user opted in to pay-as-you-go for plan requests beyond a window's cap.
    pub plan_overflow_payg: bool,
}

/// A key's IP allow-list; empty: any address.
#[derive(Debug, Clone, Default)]
pub struct IpAllow(pub Vec<IpNet>);

impl TryFrom<Vec<String>> for IpAllow {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        v.iter().map(|s| IpNet::parse(s)).collect::<Result<_, _>>().map(IpAllow)
    }
}

impl IpAllow {
    pub fn admits(&self, ip: Option<std::net::IpAddr>) -> bool {
        self.0.is_empty() || ip.is_some_and(|ip| self.0.iter().any(|n| n.contains(ip)))
    }
}

impl KeyAuth {
    /// The active plan covers this key's channel: its allowance pays and its limits apply.
    pub fn on_plan(&self) -> bool {
        self.plan_channels.as_ref().is_some_and(|c| c.is_empty() || c.contains(&self.channel))
    }
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    sha256(secret.as_bytes())
}

fn prefix_of(secret: &str) -> String {
    secret.chars().take(SECRET_PREFIX.len() + 6).collect()
}

const SUMMARY_COLS: &str = "id, name, prefix, channel, created_at, last_used_at, spent_micros, spend_limit_micros, \
     expires_at, revoked_at, allowed_models, allow_fallback, rpm_limit, concurrency_limit, ip_allow, tpm_limit, clients";

/// Creates a key and returns its summary and the secret (to be shown exactly once).
pub async fn create(pool: &PgPool, user_id: Uuid, new: NewKey) -> Result<(KeySummary, String), KeyError> {
    create_in(&mut *pool.acquire().await?, user_id, new).await
}

/// [`create`] on a connection: the transaction of a staff action that audits the creation.
pub async fn create_in(conn: &mut sqlx::PgConnection, user_id: Uuid, new: NewKey) -> Result<(KeySummary, String), KeyError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(KeyError::InvalidName);
    }
    if new.spend_limit_micros.is_some_and(MicroCny::is_negative)
        || new.rpm_limit.is_some_and(|v| v <= 0)
        || new.concurrency_limit.is_some_and(|v| v <= 0)
        || new.tpm_limit.is_some_and(|v| v <= 0)
    {
        return Err(KeyError::InvalidLimit);
    }
    // stored canonical ("10.0.0.0/8", "2001:db8::1"), each once
    let mut ip_allow: Vec<String> = vec![];
    for item in new.ip_allow.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let net = IpNet::parse(item).map_err(KeyError::InvalidAddress)?.to_string();
        if !ip_allow.contains(&net) {
            ip_allow.push(net);
        }
    }
    let channel_ok: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM channels WHERE code = $1)")
        .bind(&new.channel)
        .fetch_one(&mut *conn)
        .await?;
    if !channel_ok {
        return Err(KeyError::UnknownChannel);
    }
    // Allow-lists hold canonical model ids: an alias (`claude-sonnet-4-5`) is stored as its model.
    let mut allowed_models: Vec<String> = Vec::with_capacity(new.allowed_models.len());
    if !new.allowed_models.is_empty() {
        let known: Vec<(String, String)> = sqlx::query_as(
            "SELECT n, m.id FROM unnest($1::text[]) AS n JOIN models m ON m.id = n OR n = ANY(m.aliases)",
        )
        .bind(&new.allowed_models)
        .fetch_all(&mut *conn)
        .await?;
        for name in &new.allowed_models {
            let Some((_, id)) = known.iter().find(|(n, _)| n == name) else {
                return Err(KeyError::UnknownModel(name.clone()));
            };
            if !allowed_models.contains(id) {
                allowed_models.push(id.clone());
            }
        }
    }
    let secret = format!("{SECRET_PREFIX}{}", random_base62(40));
    let hash = hash_secret(&secret);
    let summary = sqlx::query_as::<_, KeySummary>(&format!(
        "INSERT INTO api_keys (user_id, name, prefix, secret_hash, channel, spend_limit_micros, expires_at, \
         allowed_models, allow_fallback, rpm_limit, concurrency_limit, ip_allow, tpm_limit, clients) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) RETURNING {SUMMARY_COLS}"
    ))
    .bind(user_id)
    .bind(name)
    .bind(prefix_of(&secret))
    .bind(&hash[..])
    .bind(&new.channel)
    .bind(new.spend_limit_micros)
    .bind(new.expires_at)
    .bind(&allowed_models)
    .bind(new.allow_fallback)
    .bind(new.rpm_limit)
    .bind(new.concurrency_limit)
    .bind(&ip_allow)
    .bind(new.tpm_limit)
    .bind(new.clients)
    .fetch_one(&mut *conn)
    .await?;
    Ok((summary, secret))
}

/// The user's keys, newest first (revoked ones included, marked by `revoked_at`).
pub async fn list(pool: &PgPool, user_id: Uuid) -> Result<Vec<KeySummary>, sqlx::Error> {
    sqlx::query_as::<_, KeySummary>(&format!(
        "SELECT {SUMMARY_COLS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// One key of the user (None if it is someone else's).
pub async fn get(pool: &PgPool, user_id: Uuid, key_id: Uuid) -> Result<Option<KeySummary>, sqlx::Error> {
    sqlx::query_as::<_, KeySummary>(&format!("SELECT {SUMMARY_COLS} FROM api_keys WHERE id = $1 AND user_id = $2"))
        .bind(key_id)
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// Revokes one of the user's own keys. Returns false if it is not theirs or already revoked.
/// Every gateway instance stops accepting it as soon as the NOTIFY arrives (milliseconds).
pub async fn revoke(pool: &PgPool, user_id: Uuid, key_id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(key_id)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Looks a presented secret's hash up (the gateway caches the answer).
pub async fn lookup_by_hash(pool: &PgPool, hash: &[u8; 32]) -> Result<Option<KeyAuth>, sqlx::Error> {
    sqlx::query_as::<_, KeyAuth>(
        "SELECT k.id AS key_id, k.user_id, k.channel, k.spend_limit_micros, k.expires_at, k.revoked_at, \
         k.allowed_models, k.allow_fallback, k.rpm_limit, k.concurrency_limit, k.tpm_limit, k.ip_allow, k.clients, \
         u.status AS user_status, \
         s.plan_name, CASE WHEN s.id IS NOT NULL THEN cr_plan_channels(s.plan_snapshot) END AS plan_channels, \
         (s.plan_snapshot->>'rpm_limit')::int AS plan_rpm_limit, \
         (s.plan_snapshot->>'concurrency_limit')::int AS plan_concurrency_limit, \
         (s.plan_snapshot->>'tpm_limit')::int AS plan_tpm_limit, \
         COALESCE(w.cap_5h IS NOT NULL OR w.cap_week IS NOT NULL, false) AS plan_windows, u.plan_overflow_payg \
         FROM api_keys k JOIN users u ON u.id = k.user_id \
         LEFT JOIN subscriptions s ON s.user_id = k.user_id AND s.status = 'active' \
         LEFT JOIN LATERAL cr_window_caps(s.plan_snapshot) w ON true WHERE k.secret_hash = $1",
    )
    .bind(&hash[..])
    .fetch_optional(pool)
    .await
}
