//! Two-factor sign-in: TOTP (RFC 6238 — HMAC-SHA1, 30-second steps, 6 digits; the previous and
//! next step are accepted for clock drift) and one-time recovery codes.
//!
//! Secrets are kept encrypted under the server secret ([`Crypto`]); a secret being set up waits
//! in its own column until a code from the app confirms it. A code is accepted once: its step
//! must be later than the last one accepted, checked and recorded in one statement. Recovery
//! codes are random (50 bits) and stored as SHA-256; each is used once.

use crate::accounts::AccountError;
use crate::crypto::Crypto;
use crate::upstreams::RotateError;
use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub const STEP_SECS: i64 = 30;
const SECRET_BYTES: usize = 20;
const RECOVERY_CODES: usize = 10;

/// A new random secret (160 bits, as RFC 4226 recommends).
fn new_secret() -> Vec<u8> {
    let mut s = vec![0u8; SECRET_BYTES];
    rand::thread_rng().fill_bytes(&mut s);
    s
}

/// The secret as people type it into an authenticator app (RFC 4648 base32).
pub fn secret_text(secret: &[u8]) -> String {
    BASE32_NOPAD.encode(secret)
}

/// The `otpauth://` URI authenticator apps read (from a QR code or a link).
pub fn otpauth_uri(secret: &[u8], email: &str) -> String {
    let label: String = format!("CloudRouter:{email}")
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    format!("otpauth://totp/{label}?secret={}&issuer=CloudRouter&algorithm=SHA1&digits=6&period=30", secret_text(secret))
}

/// The 6-digit code of time step `step` (RFC 4226 dynamic truncation): what the authenticator
/// app shows (the tests play the app with it).
pub fn code_at(secret: &[u8], step: i64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let at = (h[19] & 0x0f) as usize;
    let n = u32::from_be_bytes([h[at] & 0x7f, h[at + 1], h[at + 2], h[at + 3]]) % 1_000_000;
    format!("{n:06}")
}

/// The step (within one of `unix_secs`'s) whose code `code` is, compared in constant time.
fn matching_step(secret: &[u8], code: &str, unix_secs: i64) -> Option<i64> {
    let now = unix_secs.div_euclid(STEP_SECS);
    let mut found = None;
    for step in [now - 1, now, now + 1] {
        let expected = code_at(secret, step);
        let diff = expected.bytes().zip(code.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff == 0 && code.len() == expected.len() && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// What the user typed, without spaces and dashes, lowercased.
fn normalized(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

fn recovery_hash(code: &str) -> String {
    hex::encode(Sha256::digest(normalized(code).as_bytes()))
}

/// Ten fresh recovery codes, "xxxxx-xxxxx" (ten base32 characters, 50 bits each).
fn new_recovery_codes() -> Vec<String> {
    use rand::Rng;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::thread_rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let s: String = (0..10).map(|_| ALPHABET[rng.gen_range(0..32)] as char).collect();
            format!("{}-{}", &s[..5], &s[5..])
        })
        .collect()
}

/// An account's two-factor state, for its settings page.
#[derive(Debug)]
pub struct Status {
    pub enabled: bool,
    /// The secret being set up, if any (to show as text, URI and QR code).
    pub pending: Option<Vec<u8>>,
    pub recovery_codes_left: i64,
}

pub async fn status(pool: &PgPool, crypto: &Crypto, user_id: Uuid) -> Result<Status, AccountError> {
    let (enabled, pending, left): (bool, Option<Vec<u8>>, i64) = sqlx::query_as(
        "SELECT totp_secret_enc IS NOT NULL, totp_pending_enc,
                (SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL)
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?
    .ok_or(AccountError::NotFound)?;
    let pending = pending.map(|p| crypto.decrypt(&p).map_err(|_| AccountError::Undecryptable)).transpose()?;
    Ok(Status { enabled, pending, recovery_codes_left: left })
}

/// Starts (or restarts) the setup with a new secret, unless two-factor sign-in is on already.
pub async fn begin(pool: &PgPool, crypto: &Crypto, user_id: Uuid) -> Result<(), AccountError> {
    let r = sqlx::query("UPDATE users SET totp_pending_enc = $2, updated_at = now() WHERE id = $1 AND totp_secret_enc IS NULL")
        .bind(user_id)
        .bind(crypto.encrypt(&new_secret()))
        .execute(pool)
        .await?;
    if r.rows_affected() == 1 { Ok(()) } else { Err(AccountError::TwoFactorOn) }
}

/// Turns two-factor sign-in on once a code of the secret being set up is right. Returns the
/// recovery codes (shown once) and the account's new session epoch: every other session, signed
/// in with the password alone, is signed out.
pub async fn confirm(pool: &PgPool, crypto: &Crypto, user_id: Uuid, code: &str, unix_secs: i64) -> Result<(Vec<String>, i64), AccountError> {
    let mut tx = pool.begin().await?;
    let pending: Option<Vec<u8>> = sqlx::query_scalar("SELECT totp_pending_enc FROM users WHERE id = $1 AND totp_secret_enc IS NULL FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
    let stored = pending.ok_or(AccountError::NoTwoFactorSetup)?;
    let secret = crypto.decrypt(&stored).map_err(|_| AccountError::Undecryptable)?;
    let step = matching_step(&secret, &normalized(code), unix_secs).ok_or(AccountError::WrongCode)?;
    let epoch: i64 = sqlx::query_scalar(
        "UPDATE users SET totp_secret_enc = totp_pending_enc, totp_pending_enc = NULL, totp_last_step = $2,
                          session_epoch = session_epoch + 1, updated_at = now()
         WHERE id = $1 RETURNING session_epoch",
    )
    .bind(user_id)
    .bind(step)
    .fetch_one(&mut *tx)
    .await?;
    let codes = new_recovery_codes();
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) SELECT $1, unnest($2::text[])")
        .bind(user_id)
        .bind(codes.iter().map(|c| recovery_hash(c)).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((codes, epoch))
}

/// Whether `code` is a current TOTP code or an unused recovery code of the account; either is
/// used up by this check (a TOTP code's step and every earlier one are never accepted again).
pub async fn check(pool: &PgPool, crypto: &Crypto, user_id: Uuid, code: &str, unix_secs: i64) -> Result<bool, AccountError> {
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT totp_secret_enc FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .flatten();
    let Some(stored) = stored else { return Ok(false) };
    let secret = crypto.decrypt(&stored).map_err(|_| AccountError::Undecryptable)?;
    let code = normalized(code);
    if let Some(step) = matching_step(&secret, &code, unix_secs) {
        // Two requests with one code: only one moves the step on.
        let r = sqlx::query("UPDATE users SET totp_last_step = $2 WHERE id = $1 AND coalesce(totp_last_step, -1) < $2")
            .bind(user_id)
            .bind(step)
            .execute(pool)
            .await?;
        return Ok(r.rows_affected() == 1);
    }
    let r = sqlx::query("UPDATE recovery_codes SET used_at = now() WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(recovery_hash(&code))
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Turns two-factor sign-in off in the caller's transaction: by the owner (who gave the password
/// and a code), or by staff for an owner who lost both their device and recovery codes (who also
/// ends the account's sessions). Whether it was on.
pub async fn disable(conn: &mut PgConnection, user_id: Uuid) -> Result<bool, AccountError> {
    let was_on: Option<bool> = sqlx::query_scalar(
        "UPDATE users u SET totp_secret_enc = NULL, totp_pending_enc = NULL, totp_last_step = NULL, updated_at = now()
         FROM (SELECT id, totp_secret_enc IS NOT NULL AS on_before FROM users WHERE id = $1 FOR UPDATE) b
         WHERE u.id = b.id RETURNING b.on_before",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *conn).await?;
    Ok(was_on.unwrap_or(false))
}

/// Re-encrypts every TOTP secret (set up or being set up) under a new server secret, inside the
/// caller's transaction (`server secret rotate`, with the upstream credentials).
pub(crate) async fn reencrypt(conn: &mut PgConnection, old: &Crypto, new: &Crypto) -> Result<usize, RotateError> {
    let rows: Vec<(Uuid, String, Option<Vec<u8>>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT id, email, totp_secret_enc, totp_pending_enc FROM users
         WHERE totp_secret_enc IS NOT NULL OR totp_pending_enc IS NOT NULL ORDER BY id FOR UPDATE",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (id, email, secret, pending) in &rows {
        let again = |stored: &Option<Vec<u8>>| {
            stored.as_ref().map(|s| old.decrypt(s).map(|plain| new.encrypt(&plain)).map_err(|_| RotateError::TwoFactorUndecryptable(email.clone()))).transpose()
        };
        sqlx::query("UPDATE users SET totp_secret_enc = $2, totp_pending_enc = $3 WHERE id = $1")
            .bind(id)
            .bind(again(secret)?)
            .bind(again(pending)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1, last six digits.
    #[test]
    fn codes_match_the_rfc_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [(59, "287082"), (1_111_111_109, "081804"), (1_111_111_111, "050471"), (1_234_567_890, "005924"), (2_000_000_000, "279037"), (20_000_000_000, "353130")] {
            assert_eq!(code_at(secret, time / STEP_SECS), code, "at {time}");
        }
    }

    #[test]
    fn one_step_of_drift_either_way_and_no_more() {
        let secret = b"12345678901234567890";
        let t = 1_111_111_111;
        let now = t / STEP_SECS;
        assert_eq!(matching_step(secret, &code_at(secret, now), t), Some(now));
        assert_eq!(matching_step(secret, &code_at(secret, now - 1), t), Some(now - 1));
        assert_eq!(matching_step(secret, &code_at(secret, now + 1), t), Some(now + 1));
        assert_eq!(matching_step(secret, &code_at(secret, now + 2), t), None);
        assert_eq!(matching_step(secret, "", t), None);
        assert_eq!(matching_step(secret, "0000000", t), None);
    }

    #[test]
    fn uri_and_recovery_codes_have_their_shapes() {
        let uri = otpauth_uri(b"12345678901234567890", "a b@example.com");
        assert_eq!(uri, "otpauth://totp/CloudRouter:a%20b@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=CloudRouter&algorithm=SHA1&digits=6&period=30");
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert!(codes.iter().all(|c| c.len() == 11 && c.as_bytes()[5] == b'-'));
        assert_eq!(recovery_hash(&codes[0].to_uppercase().replace('-', " ")), recovery_hash(&codes[0]));
    }
}
