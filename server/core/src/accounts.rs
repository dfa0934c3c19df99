//! Accounts: sign-up, password checks (argon2id), roles, and throttling of failed logins.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Customer,
    Staff,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff => "staff",
        }
    }
    fn parse(s: &str) -> Role {
        if s == "staff" { Role::Staff } else { Role::Customer }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub suspended: bool,
    pub locale: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("Please enter a valid email address.")]
    InvalidEmail,
    #[error("An account with this email already exists.")]
    EmailTaken,
    #[error("{0}")]
    WeakPassword(&'static str),
    #[error("Wrong email or password.")]
    WrongCredentials,
    #[error("Too many failed sign-in attempts. Try again in {0} minutes.")]
    Throttled(i64),
    #[error("This account is suspended. Contact support.")]
    Suspended,
    #[error("No account with this email.")]
    NotFound,
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// Failed logins allowed per account, and per client address, inside the window.
const MAX_FAILURES_PER_EMAIL: i64 = 5;
const MAX_FAILURES_PER_IP: i64 = 20;
const FAILURE_WINDOW_MINUTES: i64 = 15;

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    password_hash: String,
    role: String,
    status: String,
    locale: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> User {
        User {
            id: r.id,
            email: r.email,
            role: Role::parse(&r.role),
            suspended: r.status == "suspended",
            locale: r.locale,
            created_at: r.created_at,
        }
    }
}

const USER_COLUMNS: &str = "id, email, password_hash, role, status, locale, created_at";

pub fn normalize_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace());
    if valid { Ok(email.to_string()) } else { Err(AccountError::InvalidEmail) }
}

/// A password must be long enough and not trivially guessable; the message says what to fix.
pub fn check_password_strength(password: &str, email: &str) -> Result<(), AccountError> {
    if password.chars().count() < 10 {
        return Err(AccountError::WeakPassword("Use at least 10 characters for your password."));
    }
    if password.len() > 512 {
        return Err(AccountError::WeakPassword("Use at most 512 bytes for your password."));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if (!local.is_empty() && lower.contains(&local)) || password.chars().all(|c| c == password.chars().next().unwrap_or(' ')) {
        return Err(AccountError::WeakPassword("That password is too easy to guess: don't reuse your email or repeat one character."));
    }
    let classes = [
        password.chars().any(|c| c.is_ascii_lowercase()),
        password.chars().any(|c| c.is_ascii_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    if classes.iter().filter(|&&b| b).count() < 2 {
        return Err(AccountError::WeakPassword("Mix at least two of: lowercase, uppercase, digits, symbols."));
    }
    Ok(())
}

fn hasher() -> Argon2<'static> {
    // OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params"))
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    hasher().hash_password(password.as_bytes(), &salt).expect("argon2 hashing").to_string()
}

fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| hasher().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Argon2 is deliberately slow; keep it off the async workers.
async fn hash_blocking(password: &str) -> String {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&password)).await.expect("hash task")
}

async fn verify_blocking(password: &str, hash: &str) -> bool {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await.expect("verify task")
}

/// `conn`: the pool, or the transaction of a staff action that audits the creation.
pub async fn create_user(conn: impl sqlx::PgExecutor<'_>, email: &str, password: &str) -> Result<User, AccountError> {
    let email = normalize_email(email)?;
    check_password_strength(password, &email)?;
    let hash = hash_blocking(password).await;
    let row = sqlx::query_as::<_, UserRow>(&format!(
        "INSERT INTO users (email, password_hash) VALUES ($1, $2)
         ON CONFLICT DO NOTHING RETURNING {USER_COLUMNS}"
    ))
    .bind(&email)
    .bind(hash)
    .fetch_optional(conn)
    .await?;
    row.map(User::from).ok_or(AccountError::EmailTaken)
}

pub async fn find_by_id(pool: &PgPool, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(User::from))
}

async fn find_row_by_email(pool: &PgPool, email: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)"))
        .bind(email.trim())
        .fetch_optional(pool)
        .await
}

pub async fn find_by_email(pool: &PgPool, email: &str) -> Result<Option<User>, sqlx::Error> {
    Ok(find_row_by_email(pool, email).await?.map(User::from))
}

/// Minutes until the oldest failure that keeps the caller over a limit leaves the window, if any.
async fn throttled_for(pool: &PgPool, email: &str, ip: &str) -> Result<Option<i64>, sqlx::Error> {
    let (by_email, by_ip, oldest): (i64, i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE lower(email) = lower($1)),
                count(*) FILTER (WHERE ip = $2),
                min(failed_at)
         FROM login_failures
         WHERE (lower(email) = lower($1) OR ip = $2)
           AND failed_at > now() - make_interval(mins => $3::int)",
    )
    .bind(email.trim())
    .bind(ip)
    .bind(FAILURE_WINDOW_MINUTES as i32)
    .fetch_one(pool)
    .await?;
    if by_email < MAX_FAILURES_PER_EMAIL && by_ip < MAX_FAILURES_PER_IP {
        return Ok(None);
    }
    let wait = oldest
        .map(|t| (t + chrono::Duration::minutes(FAILURE_WINDOW_MINUTES) - Utc::now()).num_minutes() + 1)
        .unwrap_or(FAILURE_WINDOW_MINUTES);
    Ok(Some(wait.max(1)))
}

/// Checks credentials. Failures are recorded per email and per address; past the limits the
/// caller is refused (without checking the password) until the window moves on.
pub async fn authenticate(pool: &PgPool, email: &str, password: &str, ip: &str) -> Result<User, AccountError> {
    if let Some(minutes) = throttled_for(pool, email, ip).await? {
        return Err(AccountError::Throttled(minutes));
    }
    let row = find_row_by_email(pool, email).await?;
    let ok = match &row {
        Some(r) => verify_blocking(password, &r.password_hash).await,
        None => {
            // Same cost as a real check, so timing does not reveal which emails exist.
            let _ = verify_blocking(password, &DUMMY_HASH).await;
            false
        }
    };
    match row {
        Some(r) if ok => {
            sqlx::query("DELETE FROM login_failures WHERE lower(email) = lower($1)").bind(&r.email).execute(pool).await?;
            let user = User::from(r);
            if user.suspended { Err(AccountError::Suspended) } else { Ok(user) }
        }
        _ => {
            sqlx::query("INSERT INTO login_failures (email, ip) VALUES ($1, $2)").bind(email.trim()).bind(ip).execute(pool).await?;
            Err(AccountError::WrongCredentials)
        }
    }
}

/// A real hash with the same parameters, checked against when the email is unknown.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash_password("no such account"));

/// Forgets failed logins that have left the throttling window.
pub async fn prune_login_failures(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM login_failures WHERE failed_at < now() - make_interval(mins => $1::int)")
        .bind(FAILURE_WINDOW_MINUTES as i32)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

pub async fn change_password(pool: &PgPool, user_id: Uuid, current: &str, new: &str) -> Result<(), AccountError> {
    let row = sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AccountError::NotFound)?;
    if !verify_blocking(current, &row.password_hash).await {
        return Err(AccountError::WrongCredentials);
    }
    check_password_strength(new, &row.email)?;
    let hash = hash_blocking(new).await;
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(user_id)
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// `server admin create`: creates a staff account, or promotes an existing one (and sets its
/// password), so running it twice is harmless.
pub async fn ensure_staff(pool: &PgPool, email: &str, password: &str) -> Result<User, AccountError> {
    let email = normalize_email(email)?;
    check_password_strength(password, &email)?;
    let hash = hash_blocking(password).await;
    let row = sqlx::query_as::<_, UserRow>(&format!(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'staff')
         ON CONFLICT (lower(email)) DO UPDATE SET role = 'staff', password_hash = EXCLUDED.password_hash, updated_at = now()
         RETURNING {USER_COLUMNS}"
    ))
    .bind(&email)
    .bind(hash)
    .fetch_one(pool)
    .await?;
    Ok(row.into())
}

pub async fn set_locale(pool: &PgPool, user_id: Uuid, locale: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET locale = $2, updated_at = now() WHERE id = $1").bind(user_id).bind(locale).execute(pool).await?;
    Ok(())
}

pub async fn set_suspended(conn: impl sqlx::PgExecutor<'_>, user_id: Uuid, suspended: bool) -> Result<bool, sqlx::Error> {
    let status = if suspended { "suspended" } else { "active" };
    let r = sqlx::query("UPDATE users SET status = $2, updated_at = now() WHERE id = $1").bind(user_id).bind(status).execute(conn).await?;
    Ok(r.rows_affected() == 1)
}

/// Staff list: newest first, optionally filtered by a piece of the email.
pub async fn search(pool: &PgPool, query: &str, limit: i64) -> Result<Vec<User>, sqlx::Error> {
    let pattern = format!("%{}%", query.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let rows = sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(email) LIKE $1 ORDER BY created_at DESC LIMIT $2"
    ))
    .bind(pattern)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(User::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        assert!(matches!(check_password_strength("short1A", "a@b.co"), Err(AccountError::WeakPassword(_))));
        assert!(matches!(check_password_strength("alllowercaseletters", "a@b.co"), Err(AccountError::WeakPassword(_))));
        assert!(matches!(check_password_strength("alice-secret-123", "alice@b.co"), Err(AccountError::WeakPassword(_))));
        assert!(check_password_strength("correct horse 42", "alice@b.co").is_ok());
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_password("correct horse 42");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse 42", &h));
        assert!(!verify_password("correct horse 43", &h));
    }

    #[test]
    fn emails_are_validated() {
        assert!(normalize_email(" a@b.co ").is_ok());
        assert!(normalize_email("ab.co").is_err());
        assert!(normalize_email("a@b").is_err());
        assert!(normalize_email("a b@c.co").is_err());
    }
}
