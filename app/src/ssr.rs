//! Server-side plumbing for server functions: the shared state, the session, and the checks of
//! who is calling. Every server function starts with `require_user` or `require_staff`.

use cloudrouter_core::accounts::{self, Role, User};
use leptos::prelude::*;
use sqlx::PgPool;
use tower_sessions::Session;
use uuid::Uuid;

/// What the console's server functions need, provided as Leptos context by the server binary.
#[derive(Clone)]
pub struct ConsoleState {
    pub pool: PgPool,
    pub crypto: cloudrouter_core::crypto::Crypto,
    /// This instance's gateway, for live upstream health.
    pub gateway: cloudrouter_core::gateway::Gateway,
    /// Payment providers configured for this deployment (the sandbox only where switched on).
    pub payments: std::sync::Arc<cloudrouter_core::billing::payments::Payments>,
    /// Signs the demo's sandbox payment notifications (with the server secret).
    pub sandbox: std::sync::Arc<cloudrouter_core::billing::payments::SandboxProvider>,
    /// The URL customers point their SDKs at, shown in snippets.
    pub public_base_url: String,
    /// Bounds on staff balance adjustments (maximum, confirmation threshold).
    pub staff_limits: cloudrouter_core::billing::adjustments::StaffLimits,
    /// The bound on password hashing (sign-in, sign-up, password changes).
    pub hash_slots: accounts::HashSlots,
    /// Sign-up and password-reset mail leaves through here.
    pub outbox: cloudrouter_core::mail::Outbox,
    /// The public status page, computed at most every 30 s (shared with `/status.json`).
    pub status: cloudrouter_core::status::StatusBoard,
}

/// The client's address, put on each console request by the server (which knows the trusted
/// proxies, if any).
pub use cloudrouter_core::net::ClientAddr;

const USER_ID_KEY: &str = "user_id";
/// The account's session epoch when this session signed in.
const EPOCH_KEY: &str = "session_epoch";

pub fn state() -> Result<ConsoleState, ServerFnError> {
    use_context::<ConsoleState>().ok_or_else(|| internal("server state missing"))
}

pub fn pool() -> Result<PgPool, ServerFnError> {
    Ok(state()?.pool)
}

pub async fn session() -> Result<Session, ServerFnError> {
    leptos_axum::extract::<Session>().await.map_err(|_| internal("session unavailable"))
}

/// The signed-in user, if any. A suspended account is treated as signed out of the console.
pub async fn current_user() -> Result<Option<User>, ServerFnError> {
    session_user(&session().await?, &pool()?).await.map_err(internal)
}

/// The user `session` is signed in as: none when the account is suspended, or when the session
/// was signed in before the account's latest password change (its epoch is behind).
pub async fn session_user(session: &Session, pool: &PgPool) -> Result<Option<User>, Box<dyn std::error::Error + Send + Sync>> {
    let Some(id) = session.get::<Uuid>(USER_ID_KEY).await? else {
        return Ok(None);
    };
    let epoch = session.get::<i64>(EPOCH_KEY).await?;
    let user = accounts::find_by_id(pool, id).await?;
    Ok(user.filter(|u| !u.suspended && Some(u.session_epoch) == epoch))
}

pub async fn require_user() -> Result<User, ServerFnError> {
    match current_user().await? {
        Some(user) => {
            // Every time this request shows is in the caller's zone.
            provide_context(UserZone(zone_for(&user)));
            Ok(user)
        }
        None => {
            set_status(http::StatusCode::UNAUTHORIZED);
            Err(ServerFnError::new(crate::i18n::t("Please sign in to continue.")))
        }
    }
}

/// A staff member who signed in with two-factor sign-in on; anyone else is refused (403).
pub async fn require_staff() -> Result<User, ServerFnError> {
    let user = require_user().await?;
    if user.acts_as_staff() {
        return Ok(user);
    }
    set_status(http::StatusCode::FORBIDDEN);
    Err(ServerFnError::new(crate::i18n::t(if user.role == Role::Staff {
        "Staff accounts need two-factor sign-in: set it up under Settings first."
    } else {
        "This page is for CloudRouter support staff only."
    })))
}

/// Starts a signed-in session under a fresh id, so a session id planted before login is useless.
pub async fn sign_in(user: &User) -> Result<(), ServerFnError> {
    let session = session().await?;
    session.cycle_id().await.map_err(internal)?;
    session.remove_value(PENDING_KEY).await.map_err(internal)?;
    session.insert(USER_ID_KEY, user.id).await.map_err(internal)?;
    session.insert(EPOCH_KEY, user.session_epoch).await.map_err(internal)?;
    Ok(())
}

/// A sign-in past its password step, waiting for the two-factor code. Not signed in: nothing but
/// the code step reads it.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingSignIn {
    user_id: Uuid,
    epoch: i64,
    started: chrono::DateTime<chrono::Utc>,
    next: String,
}

const PENDING_KEY: &str = "pending_sign_in";
/// How long the code step waits after the password step.
const PENDING_MINUTES: i64 = 10;

/// Records that `user` passed the password step; the code step then signs them in and goes to `next`.
pub async fn await_code(user: &User, next: String) -> Result<(), ServerFnError> {
    let session = session().await?;
    session.cycle_id().await.map_err(internal)?;
    // Whoever this browser was signed in as before, it is no one until the code.
    session.remove_value(USER_ID_KEY).await.map_err(internal)?;
    let pending = PendingSignIn { user_id: user.id, epoch: user.session_epoch, started: chrono::Utc::now(), next };
    session.insert(PENDING_KEY, pending).await.map_err(internal)
}

/// The user waiting at the code step, and where to go after, if the wait is recent and the
/// account unchanged since.
pub async fn awaiting_code() -> Result<Option<(User, String)>, ServerFnError> {
    let Some(p) = session().await?.get::<PendingSignIn>(PENDING_KEY).await.map_err(internal)? else {
        return Ok(None);
    };
    if chrono::Utc::now() - p.started > chrono::Duration::minutes(PENDING_MINUTES) {
        return Ok(None);
    }
    let user = accounts::find_by_id(&pool()?, p.user_id).await.map_err(internal)?;
    Ok(user.filter(|u| !u.suspended && u.session_epoch == p.epoch).map(|u| (u, p.next)))
}

/// Keeps this session signed in at a new epoch (after a password change), under a fresh id.
pub async fn renew(epoch: i64) -> Result<(), ServerFnError> {
    let session = session().await?;
    session.cycle_id().await.map_err(internal)?;
    session.insert(EPOCH_KEY, epoch).await.map_err(internal)
}

pub async fn sign_out() -> Result<(), ServerFnError> {
    session().await?.flush().await.map_err(internal)
}

/// The client's address (see [`ClientAddr`]).
pub fn client_addr() -> Result<std::net::IpAddr, ServerFnError> {
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<ClientAddr>().map(|a| a.0))
        .ok_or_else(|| internal("the request carries no client address"))
}

/// A QR code of `text` as SVG markup.
pub fn qr_svg(text: &str) -> Result<String, String> {
    qrcode::QrCode::new(text.as_bytes()).map(|qr| qr.render::<qrcode::render::svg::Color>().min_dimensions(220, 220).build()).map_err(|e| e.to_string())
}

/// The transaction of a staff action: the action runs in it, then [`commit_audited`] writes its
/// audit row and commits both, so that neither lands without the other.
pub async fn begin() -> Result<sqlx::Transaction<'static, sqlx::Postgres>, ServerFnError> {
    pool()?.begin().await.map_err(internal)
}

/// Writes a staff action's audit row in the action's transaction and commits the two.
pub async fn commit_audited(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    staff_id: Uuid,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), ServerFnError> {
    cloudrouter_core::billing::audit::record(&mut tx, staff_id, action, target, details).await.map_err(internal)?;
    tx.commit().await.map_err(internal)
}

pub fn set_status(status: http::StatusCode) {
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.set_status(status);
    }
}

/// Marks a server function's answer as our failure (500). The server strips it and answers
/// every other server function error with 400: the rest are the caller's mistakes (a validation
/// message, arguments that do not decode), which server_fn would answer with 500 too.
pub const INTERNAL_ERROR_HEADER: &str = "x-cloudrouter-internal-error";

/// Logs the cause and gives the caller a generic message: internals stay out of the browser.
pub fn internal<E: std::fmt::Display>(e: E) -> ServerFnError {
    tracing::error!(error = %e, "server function failed");
    if let Some(res) = use_context::<leptos_axum::ResponseOptions>() {
        res.insert_header(http::HeaderName::from_static(INTERNAL_ERROR_HEADER), http::HeaderValue::from_static("1"));
    }
    ServerFnError::new(crate::i18n::t("Something went wrong on our side. Please try again."))
}

/// A billing rule the caller broke, in the caller's language (database errors stay generic).
pub fn billing_error(e: cloudrouter_core::billing::BillingError) -> ServerFnError {
    match e {
        cloudrouter_core::billing::BillingError::Db(e) => internal(e),
        other => ServerFnError::new(crate::core_words::billing_error(&other)),
    }
}

/// A payment method a form names; one this product does not know is "not available".
pub fn payment_method(m: &str) -> Result<cloudrouter_core::billing::orders::PaymentMethod, ServerFnError> {
    m.parse().map_err(|_| billing_error(cloudrouter_core::billing::BillingError::InvalidMethod))
}

/// Yuan as people read it: two decimals, more only when the micro-units need them
/// ("¥12.50", "¥0.000315"); see `MicroCny::short`.
pub fn cny(m: cloudrouter_core::money::MicroCny) -> String {
    m.short()
}

/// A total or balance at a glance: yuan to two decimals ("¥12.35"); the exact amount goes in a
/// tooltip (`cny`'s or `MicroCny::exact`).
pub fn cny2(m: cloudrouter_core::money::MicroCny) -> String {
    m.glance()
}

pub fn usd(m: cloudrouter_core::money::MicroUsd) -> String {
    m.short()
}

/// An id from a form; anything else is answered with `not_found` ("No such order.").
pub fn parse_uuid(id: &str, not_found: &'static str) -> Result<Uuid, ServerFnError> {
    Uuid::parse_str(id.trim()).map_err(|_| ServerFnError::new(crate::i18n::t(not_found)))
}

/// A calendar date typed as `YYYY-MM-DD` with a four-digit year, so that the moments built from
/// it stay inside what chrono and Postgres hold (`-262143-01-01` or `+275760-09-13` do not).
pub fn parse_day(s: &str) -> Option<chrono::NaiveDate> {
    let s = s.trim();
    if s.len() != 10 || !s.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

/// The cookie the page's script keeps the browser's time zone in (an IANA name).
pub const ZONE_COOKIE: &str = "cloudrouter_tz";

/// The zone the signed-in caller reads times in, put in context by [`require_user`].
#[derive(Clone, Copy, Debug)]
pub struct UserZone(pub cloudrouter_core::zone::Tz);

/// The browser's zone, as its script last reported it.
pub fn browser_zone() -> Option<cloudrouter_core::zone::Tz> {
    let parts = use_context::<http::request::Parts>()?;
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(ZONE_COOKIE).and_then(|r| r.strip_prefix('=')))
        .map(|v| v.replace("%2F", "/").replace("%2f", "/"))
        .and_then(|v| cloudrouter_core::zone::parse(&v))
}

/// The zone for someone who chose none: Asia/Shanghai in Chinese, the browser's otherwise (UTC
/// until the browser has said).
pub fn default_zone() -> cloudrouter_core::zone::Tz {
    match crate::i18n::lang() {
        crate::i18n::Lang::Zh => cloudrouter_core::zone::SHANGHAI,
        crate::i18n::Lang::En => browser_zone().unwrap_or(cloudrouter_core::zone::UTC),
    }
}

/// The zone `user` reads times in: their choice in Settings, else the default.
pub fn zone_for(user: &User) -> cloudrouter_core::zone::Tz {
    user.time_zone.as_deref().and_then(cloudrouter_core::zone::parse).unwrap_or_else(default_zone)
}

/// The zone of this request's times (the signed-in caller's, once checked; else the default).
pub fn zone() -> cloudrouter_core::zone::Tz {
    use_context::<UserZone>().map(|z| z.0).unwrap_or_else(default_zone)
}

/// "Asia/Shanghai (UTC+08:00)": the zone as the console labels it, once per page.
pub fn zone_label(tz: cloudrouter_core::zone::Tz) -> String {
    format!("{} ({})", tz.name(), cloudrouter_core::zone::offset_label(chrono::Utc::now(), tz))
}

/// A moment for display in the caller's zone and language, one format per language
/// ("2026-11-25 18:01", "2026年11月25日 18:01"); the zone is labelled once on the page.
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    when_in(t, zone())
}

pub fn when_in(t: chrono::DateTime<chrono::Utc>, tz: cloudrouter_core::zone::Tz) -> String {
    let t = t.with_timezone(&tz);
    match crate::i18n::lang() {
        crate::i18n::Lang::En => t.format("%Y-%m-%d %H:%M").to_string(),
        crate::i18n::Lang::Zh => t.format("%Y年%-m月%-d日 %H:%M").to_string(),
    }
}

/// A calendar day in the console's one date format per language ("2026-11-25", "2026年11月25日").
pub fn day_label(d: chrono::NaiveDate) -> String {
    match crate::i18n::lang() {
        crate::i18n::Lang::En => d.format("%Y-%m-%d").to_string(),
        crate::i18n::Lang::Zh => d.format("%Y年%-m月%-d日").to_string(),
    }
}
