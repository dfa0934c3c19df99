//! Accounts: creation, password checks (argon2id), roles, and throttling of sign-in and sign-up
//! (see [`crate::throttle`]). Argon2 runs under a bound ([`HashSlots`]): each check takes 19 MiB,
//! so a flood of sign-ins waits for a slot or is turned away instead of exhausting memory.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use crate::crypto::Crypto;
use crate::money::MicroCny;
use crate::throttle::{self, address_key};
use sqlx::PgPool;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
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
    /// Sessions signed in at another epoch are signed out (a password change moves it on).
    pub session_epoch: i64,
    /// Two-factor sign-in (TOTP) is on: signing in takes a code after the password.
    pub two_factor: bool,
    /// The IANA zone chosen in Settings (None: the default for the language and browser).
    pub time_zone: Option<String>,
}

impl User {
    /// Staff reach staff pages and functions only with two-factor sign-in on.
    pub fn acts_as_staff(&self) -> bool {
        self.role == Role::Staff && self.two_factor
    }
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
    /// Too many attempts from this caller: try again in this many seconds.
    #[error("Too many attempts. Try again in {0} seconds.")]
    Throttled(i64),
    /// Every password-hashing slot stayed busy: try again in [`BUSY_RETRY_SECS`].
    #[error("The server is busy. Please try again in a moment.")]
    Busy,
    #[error("This account is suspended. Contact support.")]
    Suspended,
    #[error("No account with this email.")]
    NotFound,
    /// A mailed link that is unknown, used or expired.
    #[error("This link has expired or was already used. Ask for a new one.")]
    LinkInvalid,
    #[error("That code is not right. Check the time on your device and try again.")]
    WrongCode,
    #[error("Two-factor sign-in is already on.")]
    TwoFactorOn,
    #[error("Start the two-factor setup first.")]
    NoTwoFactorSetup,
    /// A stored two-factor secret does not decrypt under this server secret.
    #[error("a two-factor secret cannot be decrypted")]
    Undecryptable,
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// How long a password check waits for a hashing slot before the caller is told to come back.
const HASH_WAIT: Duration = Duration::from_secs(2);
/// The `retry-after` for [`AccountError::Busy`].
pub const BUSY_RETRY_SECS: u64 = 2;

/// The bound on argon2 work in flight in this process (each check holds 19 MiB).
#[derive(Clone, Debug)]
pub struct HashSlots {
    slots: Arc<tokio::sync::Semaphore>,
}

impl HashSlots {
    /// `slots` checks at once (the server gives one per core: argon2 is CPU-bound, so more at
    /// once adds memory, not throughput).
    pub fn new(slots: usize) -> HashSlots {
        HashSlots { slots: Arc::new(tokio::sync::Semaphore::new(slots.max(1))) }
    }

    /// Runs `f` on a blocking thread once a slot is free (waiting at most [`HASH_WAIT`]). The
    /// slot goes with the work, so a caller that hangs up does not free it before the work ends.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, AccountError> {
        let slot = match tokio::time::timeout(HASH_WAIT, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => return Err(AccountError::Busy),
        };
        Ok(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            f()
        })
        .await
        .expect("argon2 does not panic"))
    }

    pub(crate) async fn hash(&self, password: &str) -> Result<String, AccountError> {
        let password = password.to_owned();
        self.run(move || hash_password(&password)).await
    }

    async fn verify(&self, password: &str, hash: &str) -> Result<bool, AccountError> {
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.run(move || verify_password(&password, &hash)).await
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    password_hash: String,
    role: String,
    status: String,
    locale: Option<String>,
    created_at: DateTime<Utc>,
    session_epoch: i64,
    two_factor: bool,
    time_zone: Option<String>,
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
            session_epoch: r.session_epoch,
            two_factor: r.two_factor,
            time_zone: r.time_zone,
        }
    }
}

const USER_COLUMNS: &str = "id, email, password_hash, role, status, locale, created_at, session_epoch, totp_secret_enc IS NOT NULL AS two_factor, time_zone";

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

/// Argon2 is deliberately slow; keep it off the async workers. Unbounded: for the staff API and
/// the command line, not for anything the public reaches.
async fn hash_blocking(password: &str) -> String {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&password)).await.expect("argon2 does not panic")
}

/// Creates a customer account (staff API, tests). The public sign-up is [`crate::email_links`]. `conn`: the
/// pool, or the transaction of a staff action that audits the creation.
pub async fn create_user(conn: impl sqlx::PgExecutor<'_>, email: &str, password: &str) -> Result<User, AccountError> {
    let email = normalize_email(email)?;
    check_password_strength(password, &email)?;
    insert_user(conn, &email, hash_blocking(password).await, None, false).await
}

/// Adds an account (`ON CONFLICT`: [`AccountError::EmailTaken`]). `verified`: the address was
/// just proven by a mailed link. The public sign-up is [`crate::email_links`].
pub(crate) async fn insert_user(conn: impl sqlx::PgExecutor<'_>, email: &str, hash: String, locale: Option<&str>, verified: bool) -> Result<User, AccountError> {
    let row = sqlx::query_as::<_, UserRow>(&format!(
        "INSERT INTO users (email, password_hash, locale, email_verified_at) VALUES ($1, $2, $3, CASE WHEN $4 THEN now() END)
         ON CONFLICT DO NOTHING RETURNING {USER_COLUMNS}"
    ))
    .bind(email)
    .bind(hash)
    .bind(locale)
    .bind(verified)
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

/// One throttled attempt at a guessable step from an address: counted per (account, address)
/// pair and per address before the check (see [`crate::throttle`]).
struct Attempt {
    pair: String,
    by_addr: String,
}

impl Attempt {
    /// Counts the attempt, or refuses it while the pair or the address is waiting.
    async fn start(pool: &PgPool, pair: &str, addr: &str) -> Result<Attempt, AccountError> {
        let attempt = Attempt { pair: pair.to_string(), by_addr: format!("addr:{addr}") };
        match throttle::take_all(pool, &[(&attempt.by_addr, throttle::SIGN_IN_ADDRESS), (&attempt.pair, throttle::SIGN_IN_PAIR)]).await? {
            Some(wait) => Err(AccountError::Throttled(wait)),
            None => Ok(attempt),
        }
    }

    /// Right: the pair is forgiven and the address gets its attempt back.
    async fn succeeded(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        throttle::forgive(pool, &self.pair).await?;
        throttle::give_back(pool, &self.by_addr).await
    }

    /// Nothing was checked (no hashing slot): the attempt does not count.
    async fn not_checked(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        throttle::give_back(pool, &self.pair).await?;
        throttle::give_back(pool, &self.by_addr).await
    }
}

/// The throttle key of an account's password from an address (sign-in and password changes share it).
fn password_pair(email: &str, addr: &str) -> String {
    format!("pair:{}|{addr}", email.trim().to_lowercase())
}

/// Checks credentials from `addr`, throttled per (email, address) and per address; past a limit
/// the caller is refused without a check until its wait is over.
pub async fn authenticate(pool: &PgPool, slots: &HashSlots, email: &str, password: &str, addr: IpAddr) -> Result<User, AccountError> {
    let addr = address_key(addr);
    let attempt = Attempt::start(pool, &password_pair(email, &addr), &addr).await?;
    let row = find_row_by_email(pool, email).await?;
    // Unknown emails cost the same check, so timing does not reveal which emails exist.
    let checked = slots.verify(password, row.as_ref().map_or(&*DUMMY_HASH, |r| &r.password_hash)).await;
    match (row, checked) {
        (Some(r), Ok(true)) => {
            attempt.succeeded(pool).await?;
            let user = User::from(r);
            if user.suspended { Err(AccountError::Suspended) } else { Ok(user) }
        }
        (_, Err(busy)) => {
            attempt.not_checked(pool).await?;
            Err(busy)
        }
        _ => Err(AccountError::WrongCredentials),
    }
}

/// The second step of signing in with two-factor sign-in on: a TOTP code or a recovery code,
/// throttled as the password is, per (account, address) and per address.
pub async fn authenticate_code(pool: &PgPool, crypto: &Crypto, user_id: Uuid, code: &str, addr: IpAddr) -> Result<(), AccountError> {
    let addr = address_key(addr);
    let attempt = Attempt::start(pool, &format!("code:{user_id}|{addr}"), &addr).await?;
    if crate::totp::check(pool, crypto, user_id, code, Utc::now().timestamp()).await? {
        attempt.succeeded(pool).await?;
        Ok(())
    } else {
        Err(AccountError::WrongCode)
    }
}

/// Whether `password` is the account's (for re-authentication inside a session).
pub async fn check_password(pool: &PgPool, slots: &HashSlots, user_id: Uuid, password: &str) -> Result<bool, AccountError> {
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .ok_or(AccountError::NotFound)?;
    slots.verify(password, &hash).await
}

/// A real hash with the same parameters, checked against when the email is unknown.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash_password("no such account"));

/// Sets a new password and moves the account's session epoch on, which signs out every session
/// (the caller's included; it continues at the returned epoch). The current password is checked
/// under the sign-in throttle: a stolen session is no way to guess it.
pub async fn change_password(pool: &PgPool, slots: &HashSlots, user_id: Uuid, current: &str, new: &str, addr: IpAddr) -> Result<i64, AccountError> {
    let user = find_by_id(pool, user_id).await?.ok_or(AccountError::NotFound)?;
    let addr = address_key(addr);
    let attempt = Attempt::start(pool, &password_pair(&user.email, &addr), &addr).await?;
    match check_password(pool, slots, user_id, current).await {
        Ok(true) => attempt.succeeded(pool).await?,
        Ok(false) => return Err(AccountError::WrongCredentials),
        Err(unchecked) => {
            attempt.not_checked(pool).await?;
            return Err(unchecked);
        }
    }
    check_password_strength(new, &user.email)?;
    let hash = slots.hash(new).await?;
    let epoch = sqlx::query_scalar("UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1, updated_at = now() WHERE id = $1 RETURNING session_epoch")
        .bind(user_id)
        .bind(hash)
        .fetch_one(pool)
        .await?;
    Ok(epoch)
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

/// Signs every session of the account out, on every instance (moves its session epoch on).
pub async fn end_sessions(conn: impl sqlx::PgExecutor<'_>, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET session_epoch = session_epoch + 1, updated_at = now() WHERE id = $1").bind(user_id).execute(conn).await?;
    Ok(())
}

/// Saves the zone `user_id` reads times in (None: back to the default). The caller checks the
/// name with [`crate::zone::parse`].
pub async fn set_time_zone(pool: &PgPool, user_id: Uuid, zone: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET time_zone = $2, updated_at = now() WHERE id = $1").bind(user_id).bind(zone).execute(pool).await?;
    Ok(())
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

/// How the staff list of users is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserSort {
    Joined,
    Balance,
    Plan,
    Spend,
}

impl UserSort {
    pub fn parse(s: &str) -> Option<UserSort> {
        Some(match s {
            "joined" => UserSort::Joined,
            "balance" => UserSort::Balance,
            "plan" => UserSort::Plan,
            "spend" => UserSort::Spend,
            _ => return None,
        })
    }

    fn column(self) -> &'static str {
        match self {
            UserSort::Joined => "u.created_at",
            UserSort::Balance => "balance_micros",
            UserSort::Plan => "plan_name",
            UserSort::Spend => "spend_micros",
        }
    }
}

/// A user as the staff list shows them: the account, its wallet balance, its active plan's name
/// and what its usage was charged since `since`.
#[derive(Debug, Clone)]
pub struct ListedUser {
    pub user: User,
    pub balance_micros: MicroCny,
    pub plan_name: Option<String>,
    pub spend_micros: MicroCny,
}

/// Staff list, optionally filtered by a piece of the email, ordered by `sort` (ties newest
/// first; users without a plan last either way). Spend is read from the daily rollup
/// (`usage_daily_key`), so `since` should be a Shanghai midnight (`insights::Range::bounds`).
pub async fn search(pool: &PgPool, query: &str, sort: UserSort, ascending: bool, since: DateTime<Utc>, limit: i64) -> Result<Vec<ListedUser>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRow,
        balance_micros: MicroCny,
        plan_name: Option<String>,
        spend_micros: MicroCny,
    }
    let pattern = format!("%{}%", query.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
    let columns = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect::<Vec<_>>().join(", ");
    let rows = sqlx::query_as::<_, Row>(&format!(
        "SELECT {columns}, COALESCE(b.balance_micros, 0) AS balance_micros, s.plan_name,
                COALESCE((SELECT sum(d.charge_micros) FROM usage_daily_key d WHERE d.user_id = u.id AND d.day >= $3), 0)::BIGINT AS spend_micros
         FROM users u
         LEFT JOIN balances b ON b.user_id = u.id
         LEFT JOIN subscriptions s ON s.user_id = u.id AND s.status = 'active'
         WHERE lower(u.email) LIKE $1
         ORDER BY {} {} NULLS LAST, u.created_at DESC LIMIT $2",
        sort.column(),
        if ascending { "ASC" } else { "DESC" },
    ))
    .bind(pattern)
    .bind(limit)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ListedUser { user: r.user.into(), balance_micros: r.balance_micros, plan_name: r.plan_name, spend_micros: r.spend_micros })
        .collect())
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
