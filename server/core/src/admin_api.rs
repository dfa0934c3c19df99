//! Staff automation API, JSON, mounted by the server at `/api/admin/v1`.
//! Authentication: `Authorization: Bearer <admin token>`; tokens are issued on the command line
//! (`server admin token --email E [--days N]`, see [`issue_token`]), stored as SHA-256 hashes, and
//! only work until they expire (90 days by default) or are revoked, and while their owner is an
//! active staff member.
//!
//! Errors: the gateway's own type and shape ([`ApiError`]), `{"type": "error", "error": {"type":
//! "...", "message": "..."}, "request_id": "req_..."}` with a `request-id` header and a matching
//! status; malformed paths, queries and bodies (see [`ApiJson`], [`ApiPath`], [`ApiQuery`]),
//! unknown routes and methods included.

use crate::accounts::{self, AccountError};
use crate::billing::adjustments::{self, Adjustment, StaffLimits};
use crate::billing::BillingError;
use crate::crypto::Crypto;
use crate::gateway::{ApiError, Gateway};
use crate::keys::{self, KeyError, NewKey};
use crate::billing::ledger;
use crate::money::MicroCny;
use crate::upstreams::{self, NewUpstream, UpstreamError};
use crate::usage::{self, UsageFilter};
use crate::util::{random_base62, sha256};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone)]
pub struct AdminState {
    pool: PgPool,
    crypto: Crypto,
    gateway: Option<Gateway>,
    limits: StaffLimits,
}

/// The admin API routes (relative: `/users`, `/upstreams`, `/usage`, ...). `gateway` adds live
/// health to `GET /upstreams`; `limits` bound balance adjustments.
pub fn router(pool: PgPool, crypto: Crypto, gateway: Option<Gateway>, limits: StaffLimits) -> Router {
    Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/users/{id}/credit", post(credit))
        .route("/users/{id}/keys", post(create_key).get(list_keys))
        .route("/upstreams", post(create_upstream).get(list_upstreams))
        .route("/usage", get(list_usage))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no staff API call at this path") })
        .method_not_allowed_fallback(|| async { ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this staff API call does not take this method") })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(AdminState { pool, crypto, gateway, limits })
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no user with this email")]
    UnknownUser,
    #[error("only staff members can hold admin tokens")]
    NotStaff,
    #[error("a token lives 1 to 3650 days")]
    InvalidLifetime,
    #[error("no token has this id or prefix")]
    UnknownToken,
    #[error("several tokens have this prefix; give the token's id")]
    AmbiguousToken,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// How long a staff API token lives unless its issuer says otherwise.
pub const DEFAULT_TOKEN_DAYS: i64 = 90;

/// Issues an admin token for a staff member, living `days` ([`DEFAULT_TOKEN_DAYS`] if None). The
/// token (`cra-` + 40 base62) is returned once; only its hash is stored.
pub async fn issue_token(pool: &PgPool, email: &str, days: Option<i64>) -> Result<String, AdminError> {
    let days = days.unwrap_or(DEFAULT_TOKEN_DAYS);
    if !(1..=3650).contains(&days) {
        return Err(AdminError::InvalidLifetime);
    }
    let row: Option<(Uuid, String)> = sqlx::query_as("SELECT id, role FROM users WHERE lower(email) = lower($1)")
        .bind(email.trim())
        .fetch_optional(pool)
        .await?;
    let (id, role) = row.ok_or(AdminError::UnknownUser)?;
    if role != "staff" {
        return Err(AdminError::NotStaff);
    }
    let token = format!("cra-{}", random_base62(40));
    sqlx::query("INSERT INTO admin_tokens (user_id, token_hash, prefix, expires_at) VALUES ($1, $2, $3, now() + make_interval(days => $4))")
        .bind(id)
        .bind(&sha256(token.as_bytes())[..])
        .bind(&token[..10])
        .bind(days as i32)
        .execute(pool)
        .await?;
    Ok(token)
}

/// A staff API token as staff see it: never the token itself.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenSummary {
    pub id: Uuid,
    /// The token's first 10 characters (`cra-` + 6).
    pub prefix: String,
    pub owner_email: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const TOKEN_COLS: &str = "t.id, t.prefix, u.email AS owner_email, t.created_at, t.last_used_at, t.expires_at, t.revoked_at";

/// Every token, newest first.
pub async fn list_tokens(pool: &PgPool) -> Result<Vec<TokenSummary>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {TOKEN_COLS} FROM admin_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.created_at DESC"))
        .fetch_all(pool)
        .await
}

/// Revokes one token, named by its id or its prefix (refused when several share the prefix).
/// `conn`: the caller's transaction when a staff action audits it.
pub async fn revoke_token(conn: &mut sqlx::PgConnection, id_or_prefix: &str) -> Result<TokenSummary, AdminError> {
    let named = id_or_prefix.trim();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM admin_tokens WHERE id::text = lower($1) OR prefix = $1").bind(named).fetch_all(&mut *conn).await?;
    let id = match ids[..] {
        [id] => id,
        [] => return Err(AdminError::UnknownToken),
        _ => return Err(AdminError::AmbiguousToken),
    };
    let t = sqlx::query_as(&format!(
        "UPDATE admin_tokens t SET revoked_at = COALESCE(t.revoked_at, now()) FROM users u WHERE t.id = $1 AND u.id = t.user_id RETURNING {TOKEN_COLS}"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(t)
}

/// Revokes every admin token of a user.
pub async fn revoke_tokens(pool: &PgPool, user_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("UPDATE admin_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(pool)
        .await?
        .rows_affected())
}

/// The largest request body the staff API reads.
const BODY_LIMIT: usize = 1 << 20;

/// An extractor's rejection (a path that is not a UUID, a query or body that does not decode, a
/// body above the limit), said in the API's error shape.
fn rejected(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, format!("the request body exceeds {BODY_LIMIT} bytes"))
    } else {
        bad(text)
    }
}

/// `Json`, with its rejections in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .is_some_and(|m| m == "application/json" || (m.starts_with("application/") && m.ends_with("+json")));
        if !json {
            return Err(bad("send a JSON body with content-type: application/json"));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|r| rejected(r.status(), r.body_text()))?;
        // Postgres cannot store NUL in text: refused here as the caller's mistake
        if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            return Err(bad("text must not contain NUL characters"));
        }
        Json::<T>::from_bytes(&bytes).map(|Json(v)| ApiJson(v)).map_err(|r| rejected(r.status(), r.body_text()))
    }
}

/// `Path`, with its rejections in the API's error shape.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state).await.map(|Path(v)| ApiPath(v)).map_err(|r| rejected(r.status(), r.body_text()))
    }
}

/// `Query`, with its rejections in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state).await.map(|Query(v)| ApiQuery(v)).map_err(|r| rejected(r.status(), r.body_text()))
    }
}

/// A moment a caller sends (a usage filter, a key's expiry): years 1970–9999, so that Postgres
/// can store it (chrono reads years far beyond what `timestamptz` holds).
fn sane_time(t: Option<DateTime<Utc>>, what: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    use chrono::Datelike;
    match t {
        Some(t) if !(1970..=9999).contains(&t.year()) => Err(bad(format!("{what}: a time between the years 1970 and 9999"))),
        t => Ok(t),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}
fn not_found(what: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
}
fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "admin API error");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// Writes a staff action's audit row in the action's transaction and commits the two.
async fn commit_audited(mut tx: sqlx::Transaction<'_, sqlx::Postgres>, s: &Staff, action: &str, target: &str, details: serde_json::Value) -> Result<(), ApiError> {
    crate::billing::audit::record(&mut tx, s.user_id, action, target, details).await.map_err(internal)?;
    tx.commit().await.map_err(internal)
}

/// The authenticated staff member.
pub struct Staff {
    pub user_id: Uuid,
}

impl FromRequestParts<AdminState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "a valid admin bearer token is required (unexpired, not revoked)");
        let token = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string())
            .ok_or_else(unauthorized)?;
        let id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE admin_tokens t SET last_used_at = now() FROM users u \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND u.id = t.user_id AND u.role = 'staff' AND u.status = 'active' \
             RETURNING t.user_id",
        )
        .bind(&sha256(token.as_bytes())[..])
        .fetch_optional(&state.pool)
        .await
        .map_err(internal)?;
        id.map(|user_id| Staff { user_id }).ok_or_else(unauthorized)
    }
}

#[derive(Deserialize)]
struct CreateUser {
    email: String,
    password: String,
}

async fn create_user(s: Staff, State(st): State<AdminState>, ApiJson(b): ApiJson<CreateUser>) -> Result<Response, ApiError> {
    let mut tx = st.pool.begin().await.map_err(internal)?;
    match accounts::create_user(&mut *tx, &b.email, &b.password).await {
        Ok(u) => {
            commit_audited(tx, &s, "user.create", &format!("user:{}", u.id), json!({"email": u.email})).await?;
            Ok((StatusCode::CREATED, Json(json!({"id": u.id}))).into_response())
        }
        Err(AccountError::EmailTaken) => Err(ApiError::new(StatusCode::CONFLICT, AccountError::EmailTaken.to_string()).with_type("conflict_error")),
        Err(AccountError::Db(e)) => Err(internal(e)),
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn user_json(pool: &PgPool, id: Uuid) -> Result<serde_json::Value, ApiError> {
    let u = accounts::find_by_id(pool, id).await.map_err(internal)?.ok_or_else(|| not_found("user"))?;
    let b = ledger::balance_info(pool, id).await.map_err(internal)?;
    Ok(json!({
        "id": u.id,
        "email": u.email,
        "role": u.role.as_str(),
        "status": if u.suspended { "suspended" } else { "active" },
        "created_at": u.created_at,
        "balance": b.balance_micros.decimal(),
        "balance_micros": b.balance_micros,
        "held_micros": b.held_micros,
        "available_micros": b.available_micros,
    }))
}

async fn get_user(_s: Staff, State(st): State<AdminState>, ApiPath(id): ApiPath<Uuid>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(user_json(&st.pool, id).await?))
}

#[derive(Deserialize)]
struct Credit {
    /// Decimal CNY, e.g. "12.50"; negative debits.
    amount: String,
    /// Why, for staff only (required; kept in the audit log).
    #[serde(default)]
    note: String,
    /// What the customer's ledger says (optional).
    #[serde(default)]
    description: String,
    /// Or the `Idempotency-Key` header.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Required for amounts above the confirmation threshold.
    #[serde(default)]
    confirm: bool,
}

/// Applies once per idempotency key (see `billing::adjustments`).
async fn credit(
    s: Staff,
    State(st): State<AdminState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: http::HeaderMap,
    ApiJson(b): ApiJson<Credit>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let unprocessable = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    let header = headers.get("idempotency-key").map(|v| v.to_str().unwrap_or_default().to_string());
    let key = match (header, b.idempotency_key) {
        (Some(h), Some(f)) if h != f => {
            return Err(unprocessable("the Idempotency-Key header and idempotency_key differ".into()));
        }
        (h, f) => h.or(f).unwrap_or_default(),
    };
    let amount = MicroCny::parse(&b.amount).map_err(|e| bad(format!("amount: {e}")))?;
    let adj = Adjustment { user_id: id, amount_micros: amount, description: b.description, staff_note: b.note, idempotency_key: key, confirmed: b.confirm };
    let done = adjustments::apply(&st.pool, &st.limits, s.user_id, &adj).await.map_err(|e| match e {
        BillingError::UnknownUser => not_found("user"),
        BillingError::Db(e) => internal(e),
        e @ BillingError::ConfirmationRequired { .. } => unprocessable(format!("{e} Send it again with \"confirm\": true.")).with_type("confirmation_required"),
        e @ BillingError::IdempotencyKeyReused => ApiError::new(StatusCode::CONFLICT, e.to_string()).with_type("idempotency_conflict"),
        e @ BillingError::InsufficientBalance { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()).with_type("insufficient_balance"),
        e => unprocessable(e.to_string()),
    })?;
    Ok(Json(json!({
        "entry": done.entry,
        "balance": done.entry.balance_after.decimal(),
        "balance_micros": done.entry.balance_after,
        "replayed": done.replayed,
    })))
}

#[derive(Deserialize)]
struct CreateKey {
    name: String,
    channel: String,
    /// Decimal CNY
    #[serde(default)]
    spend_limit: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    allowed_models: Vec<String>,
    #[serde(default)]
    allow_fallback: bool,
    #[serde(default)]
    rpm_limit: Option<i32>,
    #[serde(default)]
    concurrency_limit: Option<i32>,
    /// addresses and CIDR blocks; empty: anywhere
    #[serde(default)]
    ip_allow: Vec<String>,
    #[serde(default)]
    tpm_limit: Option<i32>,
    /// any | claude_code | sdk
    #[serde(default)]
    clients: keys::Clients,
}

async fn create_key(s: Staff, State(st): State<AdminState>, ApiPath(id): ApiPath<Uuid>, ApiJson(b): ApiJson<CreateKey>) -> Result<Response, ApiError> {
    if accounts::find_by_id(&st.pool, id).await.map_err(internal)?.is_none() {
        return Err(not_found("user"));
    }
    let spend_limit_micros = match &b.spend_limit {
        Some(s) => Some(MicroCny::parse(s).map_err(|e| bad(format!("spend_limit: {e}")))?),
        None => None,
    };
    let expires_at = sane_time(b.expires_at, "expires_at")?;
    if expires_at.is_some_and(|t| t <= Utc::now()) {
        return Err(bad("expires_at: must be in the future"));
    }
    let new = NewKey {
        name: b.name,
        channel: b.channel,
        spend_limit_micros,
        expires_at,
        allowed_models: b.allowed_models,
        allow_fallback: b.allow_fallback,
        rpm_limit: b.rpm_limit,
        concurrency_limit: b.concurrency_limit,
        ip_allow: b.ip_allow,
        tpm_limit: b.tpm_limit,
        clients: b.clients,
    };
    let mut tx = st.pool.begin().await.map_err(internal)?;
    match keys::create_in(&mut tx, id, new).await {
        Ok((k, secret)) => {
            commit_audited(tx, &s, "key.create", &format!("key:{}", k.id), json!({"user_id": id, "name": k.name, "prefix": k.prefix, "channel": k.channel, "ip_allow": k.ip_allow, "tpm_limit": k.tpm_limit, "rpm_limit": k.rpm_limit, "concurrency_limit": k.concurrency_limit, "clients": k.clients}))
                .await?;
            Ok((StatusCode::CREATED, Json(json!({"id": k.id, "key": secret, "prefix": k.prefix, "channel": k.channel, "ip_allow": k.ip_allow, "tpm_limit": k.tpm_limit, "rpm_limit": k.rpm_limit, "concurrency_limit": k.concurrency_limit, "clients": k.clients}))).into_response())
        }
        Err(KeyError::Db(e)) => Err(internal(e)),
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn list_keys(_s: Staff, State(st): State<AdminState>, ApiPath(id): ApiPath<Uuid>) -> Result<Json<serde_json::Value>, ApiError> {
    let ks = keys::list(&st.pool, id).await.map_err(internal)?;
    Ok(Json(json!({"data": ks})))
}

async fn create_upstream(s: Staff, State(st): State<AdminState>, ApiJson(b): ApiJson<NewUpstream>) -> Result<Response, ApiError> {
    let name = b.name.trim().to_string();
    let mut tx = st.pool.begin().await.map_err(internal)?;
    match upstreams::create_in(&mut tx, &st.crypto, b).await {
        Ok(id) => {
            commit_audited(tx, &s, "upstream.add", &format!("upstream:{id}"), json!({"name": name})).await?;
            // Other instances follow by NOTIFY; this one leaves demo mode before answering.
            if let Some(g) = &st.gateway {
                g.reload().await;
            }
            Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
        }
        Err(UpstreamError::Duplicate) => Err(ApiError::new(StatusCode::CONFLICT, UpstreamError::Duplicate.to_string()).with_type("conflict_error")),
        Err(UpstreamError::Db(e)) => Err(internal(e)),
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn list_upstreams(_s: Staff, State(st): State<AdminState>) -> Result<Json<serde_json::Value>, ApiError> {
    let list = upstreams::list(&st.pool).await.map_err(internal)?;
    let health = st.gateway.as_ref().map(|g| g.health()).unwrap_or_default();
    let data: Vec<serde_json::Value> = list
        .into_iter()
        .map(|u| {
            let h = health.iter().find(|h| h.id == u.id);
            let mut v = serde_json::to_value(&u).unwrap_or_default();
            v["health"] = serde_json::to_value(h).unwrap_or_default();
            v
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

#[derive(Deserialize)]
struct UsageQuery {
    user_id: Option<Uuid>,
    key_id: Option<Uuid>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

async fn list_usage(_s: Staff, State(st): State<AdminState>, ApiQuery(q): ApiQuery<UsageQuery>) -> Result<Json<serde_json::Value>, ApiError> {
    let (since, until) = (sane_time(q.since, "since")?, sane_time(q.until, "until")?);
    let rows = usage::list(&st.pool, &UsageFilter { user_id: q.user_id, key_id: q.key_id, since, until, limit: q.limit })
        .await
        .map_err(internal)?;
    Ok(Json(json!({"data": rows})))
}
