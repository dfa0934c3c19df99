//! Sign-up confirmation and password reset by one-time links mailed to the address.
//!
//! Neither answers whether an address has an account. A sign-up is only a request: the account
//! is created when the link mailed to the address is opened (so nobody claims an address they do
//! not read), and a sign-up for an address that already has an account mails its owner instead.
//! A reset request for an unknown address mails nobody. Either way the caller sees the same
//! answer after the same work (the password is hashed in both sign-up cases), and the mail leaves
//! through the outbox, after the answer.
//!
//! Links carry 256 random bits; only their SHA-256 is stored. A link works once, for a day
//! (sign-up) or an hour (reset); using one ends every other link of its kind for the address.
//! A reset moves the session epoch on (every session ends) and leaves two-factor sign-in as it
//! was: the new password still needs the code.

use crate::accounts::{check_password_strength, insert_user, normalize_email, AccountError, HashSlots, User};
use crate::throttle::{self, address_key};
use crate::util::{random_base62, sha256};
use sqlx::PgPool;
use std::net::IpAddr;
use uuid::Uuid;

/// How long a link works.
pub const SIGN_UP_HOURS: i64 = 24;
pub const RESET_HOURS: i64 = 1;

/// The mail a sign-up request sends.
#[derive(Debug, PartialEq, Eq)]
pub enum SignUpMail {
    /// A new address: the link that creates the account.
    Confirm { token: String },
    /// The address has an account: tell its owner (who may have forgotten), with no link.
    AlreadyRegistered,
}

/// The mail to send to `email` (normalized), if any.
#[derive(Debug)]
pub struct ToSend<T> {
    pub email: String,
    pub mail: T,
}

/// The condition on `email_links` of a link that still works.
const WORKS: &str = "used_at IS NULL AND expires_at > now()";

fn token_hash(token: &str) -> String {
    hex::encode(sha256(token.trim().as_bytes()))
}

/// At most [`throttle::MAIL_PER_ADDRESS`] mails to one address: a form cannot be used to flood
/// someone's inbox. Counted the same whether or not the address has an account.
async fn may_mail(pool: &PgPool, email: &str) -> Result<bool, sqlx::Error> {
    Ok(throttle::take_all(pool, &[(&format!("mail:{}", email.to_lowercase()), throttle::MAIL_PER_ADDRESS)]).await?.is_none())
}

/// A sign-up: throttled per client address; a bad email or weak password is said at once (that
/// reveals nothing). `None`: the address was mailed too often lately, nothing to send.
pub async fn request_sign_up(pool: &PgPool, slots: &HashSlots, email: &str, password: &str, locale: &str, addr: IpAddr) -> Result<Option<ToSend<SignUpMail>>, AccountError> {
    if let Some(wait) = throttle::take_all(pool, &[(&format!("signup:{}", address_key(addr)), throttle::SIGN_UP_ADDRESS)]).await? {
        return Err(AccountError::Throttled(wait));
    }
    let email = normalize_email(email)?;
    check_password_strength(password, &email)?;
    // hashed whether or not the address is taken, so both answers take as long
    let hash = slots.hash(password).await?;
    if !may_mail(pool, &email).await? {
        return Ok(None);
    }
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))").bind(&email).fetch_one(pool).await?;
    if taken {
        return Ok(Some(ToSend { email, mail: SignUpMail::AlreadyRegistered }));
    }
    let token = random_base62(43);
    sqlx::query(
        "INSERT INTO email_links (token_hash, purpose, email, password_hash, locale, expires_at)
         VALUES ($1, 'signup', $2, $3, $4, now() + make_interval(hours => $5))",
    )
    .bind(token_hash(&token))
    .bind(&email)
    .bind(hash)
    .bind(locale)
    .bind(SIGN_UP_HOURS as i32)
    .execute(pool)
    .await?;
    Ok(Some(ToSend { email, mail: SignUpMail::Confirm { token } }))
}

#[derive(sqlx::FromRow)]
struct Link {
    email: String,
    user_id: Option<Uuid>,
    password_hash: Option<String>,
    locale: Option<String>,
}

/// Takes a link of `purpose` that works (unused, unexpired) in `tx`, locking it.
async fn take_link(tx: &mut sqlx::PgConnection, token: &str, purpose: &str) -> Result<Link, AccountError> {
    sqlx::query_as::<_, Link>(&format!(
        "SELECT email, user_id, password_hash, locale FROM email_links WHERE token_hash = $1 AND purpose = $2 AND {WORKS} FOR UPDATE"
    ))
    .bind(token_hash(token))
    .bind(purpose)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(AccountError::LinkInvalid)
}

/// Whether a link would still work (the page says so before asking for anything).
pub async fn link_works(pool: &PgPool, token: &str, reset: bool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM email_links WHERE token_hash = $1 AND purpose = $2 AND {WORKS})"))
        .bind(token_hash(token))
        .bind(if reset { "reset" } else { "signup" })
        .fetch_one(pool)
        .await
}

/// Opens a sign-up link: creates the account, its address confirmed, and ends every other
/// sign-up waiting for that address. An address that got an account meanwhile is
/// [`AccountError::EmailTaken`] (the caller reads that mailbox, so saying it reveals nothing).
pub async fn confirm_sign_up(pool: &PgPool, token: &str) -> Result<User, AccountError> {
    let mut tx = pool.begin().await?;
    let link = take_link(&mut tx, token, "signup").await?;
    sqlx::query("UPDATE email_links SET used_at = now() WHERE purpose = 'signup' AND lower(email) = lower($1) AND used_at IS NULL")
        .bind(&link.email)
        .execute(&mut *tx)
        .await?;
    let user = insert_user(&mut *tx, &link.email, link.password_hash.unwrap_or_default(), link.locale.as_deref(), true).await?;
    tx.commit().await?;
    Ok(user)
}

/// A reset request: throttled per client address. `None`: nothing to send (no such account, a
/// suspended one, or the address was mailed too often lately); the caller answers the same.
pub async fn request_password_reset(pool: &PgPool, email: &str, addr: IpAddr) -> Result<Option<ToSend<String>>, AccountError> {
    if let Some(wait) = throttle::take_all(pool, &[(&format!("reset:{}", address_key(addr)), throttle::RESET_ADDRESS)]).await? {
        return Err(AccountError::Throttled(wait));
    }
    let email = normalize_email(email)?;
    if !may_mail(pool, &email).await? {
        return Ok(None);
    }
    let user: Option<(Uuid, String)> = sqlx::query_as("SELECT id, email FROM users WHERE lower(email) = lower($1) AND status = 'active'")
        .bind(&email)
        .fetch_optional(pool)
        .await?;
    let Some((user_id, email)) = user else { return Ok(None) };
    let token = random_base62(43);
    sqlx::query(
        "INSERT INTO email_links (token_hash, purpose, email, user_id, expires_at)
         VALUES ($1, 'reset', $2, $3, now() + make_interval(hours => $4))",
    )
    .bind(token_hash(&token))
    .bind(&email)
    .bind(user_id)
    .bind(RESET_HOURS as i32)
    .execute(pool)
    .await?;
    Ok(Some(ToSend { email, mail: token }))
}

/// Opens a reset link: sets the new password, ends every session and every other reset link of
/// the account, and marks the address confirmed. The caller signs in again (with the second
/// factor, if the account has one).
pub async fn reset_password(pool: &PgPool, slots: &HashSlots, token: &str, new: &str) -> Result<(), AccountError> {
    let email: String = sqlx::query_scalar(&format!("SELECT email FROM email_links WHERE token_hash = $1 AND purpose = 'reset' AND {WORKS}"))
        .bind(token_hash(token))
        .fetch_optional(pool)
        .await?
        .ok_or(AccountError::LinkInvalid)?;
    check_password_strength(new, &email)?;
    let hash = slots.hash(new).await?;
    let mut tx = pool.begin().await?;
    // taken again under a lock: of two resets racing on one link, one wins
    let link = take_link(&mut tx, token, "reset").await?;
    let user_id = link.user_id.ok_or(AccountError::LinkInvalid)?;
    sqlx::query("UPDATE email_links SET used_at = now() WHERE purpose = 'reset' AND user_id = $1 AND used_at IS NULL")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1,
             email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
         WHERE id = $1",
    )
    .bind(user_id)
    .bind(hash)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Forgets links that ended a week ago (housekeeping; every instance may run it).
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM email_links WHERE expires_at < now() - interval '7 days'").execute(pool).await?;
    Ok(r.rows_affected())
}
