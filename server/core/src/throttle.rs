//! Throttling of guessable steps (sign-in, the two-factor code, redeem codes) and of what sends mail (sign-up,
//! password reset, mails to one address), shared by every instance through Postgres.
//!
//! An attempt is counted *before* it is checked, in one atomic upsert per key: parallel attempts
//! on any number of instances are all counted, and once a key is over its limit no further
//! attempt is checked until its wait is over. A successful sign-in then forgives its pair and
//! gives its address back the attempt, so the counters hold failures (and attempts in flight).
//!
//! Keys are per (account, address) pair with exponential backoff — a guesser elsewhere cannot
//! lock the owner out — and per address with a looser limit, so one address cannot try many
//! accounts. IPv6 addresses count per /64, the block one subscriber usually gets.

use sqlx::{PgConnection, PgPool};
use std::net::IpAddr;

/// How many attempts a key allows, and how long it waits after that.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Attempts allowed before the first wait.
    pub free: i32,
    /// The first wait; each further attempt doubles it, up to `max_wait_secs`.
    pub base_wait_secs: i64,
    pub max_wait_secs: i64,
    /// The count starts again this long after its first attempt.
    pub window_secs: i64,
}

/// One account from one address: 5 failures, then 1, 2, 4… minutes up to an hour between tries.
pub const SIGN_IN_PAIR: Policy = Policy { free: 5, base_wait_secs: 60, max_wait_secs: 3600, window_secs: 86_400 };
/// One address over all accounts: 50 failures per 15 minutes.
pub const SIGN_IN_ADDRESS: Policy = Policy { free: 50, base_wait_secs: 900, max_wait_secs: 900, window_secs: 900 };
/// New accounts from one address: 20 an hour.
pub const SIGN_UP_ADDRESS: Policy = Policy { free: 20, base_wait_secs: 3600, max_wait_secs: 3600, window_secs: 3600 };
/// Password-reset requests from one address: 20 an hour.
pub const RESET_ADDRESS: Policy = SIGN_UP_ADDRESS;
/// Mails (sign-up links, reset links) to one email address: 5 an hour, whoever asks.
pub const MAIL_PER_ADDRESS: Policy = Policy { free: 5, base_wait_secs: 3600, max_wait_secs: 3600, window_secs: 3600 };

/// Redeem codes tried by one account: 10 failures an hour.
pub const REDEEM_ACCOUNT: Policy = Policy { free: 10, base_wait_secs: 3600, max_wait_secs: 3600, window_secs: 3600 };
/// Redeem codes tried from one address over all accounts: 30 failures an hour.
pub const REDEEM_ADDRESS: Policy = Policy { free: 30, base_wait_secs: 3600, max_wait_secs: 3600, window_secs: 3600 };

impl Policy {
    /// The wait after the `attempts`-th attempt, if that attempt used up the free ones.
    fn wait_after(&self, attempts: i32) -> Option<i64> {
        let over = attempts - self.free;
        (over >= 0).then(|| self.base_wait_secs.saturating_mul(1i64 << over.min(30)).min(self.max_wait_secs))
    }
}

/// The part of an address that identifies a client: the whole IPv4 address, an IPv6 /64.
pub fn address_key(addr: IpAddr) -> String {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Counts one attempt on every key, all or none. `Ok(None)`: go ahead; `Ok(Some(secs))`: a key
/// is waiting, try again in that many seconds (and nothing was counted).
pub async fn take_all(pool: &PgPool, keys: &[(&str, Policy)]) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (key, policy) in keys {
        if let Some(wait) = take(&mut tx, key, *policy).await? {
            tx.rollback().await?;
            return Ok(Some(wait));
        }
    }
    tx.commit().await?;
    Ok(None)
}

/// Counts one attempt on `key` unless it is waiting (then: seconds until it is not).
async fn take(conn: &mut PgConnection, key: &str, policy: Policy) -> Result<Option<i64>, sqlx::Error> {
    // The WHERE of ON CONFLICT DO UPDATE is checked on the row as locked, after any concurrent
    // attempt committed: concurrent attempts queue here and each sees the previous one's count.
    let attempts: Option<i32> = sqlx::query_scalar(
        "INSERT INTO auth_throttle AS t (key, attempts) VALUES ($1, 1)
         ON CONFLICT (key) DO UPDATE SET
             attempts = CASE WHEN t.window_start <= now() - make_interval(secs => $2) THEN 1 ELSE t.attempts + 1 END,
             window_start = CASE WHEN t.window_start <= now() - make_interval(secs => $2) THEN now() ELSE t.window_start END
         WHERE t.next_at <= now()
         RETURNING attempts",
    )
    .bind(key)
    .bind(policy.window_secs as f64)
    .fetch_optional(&mut *conn)
    .await?;
    match attempts {
        None => {
            let wait: f64 = sqlx::query_scalar("SELECT greatest(extract(epoch FROM next_at - now()), 1)::float8 FROM auth_throttle WHERE key = $1")
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
            Ok(Some(wait.ceil() as i64))
        }
        Some(n) => {
            if let Some(wait) = policy.wait_after(n) {
                sqlx::query("UPDATE auth_throttle SET next_at = now() + make_interval(secs => $2) WHERE key = $1")
                    .bind(key)
                    .bind(wait as f64)
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(None)
        }
    }
}

/// Forgets a key (a pair that just succeeded).
pub async fn forgive(pool: &PgPool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM auth_throttle WHERE key = $1").bind(key).execute(pool).await?;
    Ok(())
}

/// Gives back one attempt counted by [`take`] that turned out not to be a failure.
pub async fn give_back(pool: &PgPool, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE auth_throttle SET attempts = greatest(attempts - 1, 0) WHERE key = $1").bind(key).execute(pool).await?;
    Ok(())
}

/// Forgets keys whose count and wait are both over (housekeeping; every instance may run it).
pub async fn prune(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let longest = [SIGN_IN_PAIR, SIGN_IN_ADDRESS, SIGN_UP_ADDRESS, RESET_ADDRESS, MAIL_PER_ADDRESS, REDEEM_ACCOUNT, REDEEM_ADDRESS].iter().map(|p| p.window_secs).max().unwrap_or(0);
    let r = sqlx::query("DELETE FROM auth_throttle WHERE next_at < now() AND window_start < now() - make_interval(secs => $1)")
        .bind(longest as f64)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_after_the_free_attempts_up_to_the_cap() {
        let waits: Vec<_> = (4..=13).map(|n| SIGN_IN_PAIR.wait_after(n)).collect();
        assert_eq!(waits, [None, Some(60), Some(120), Some(240), Some(480), Some(960), Some(1920), Some(3600), Some(3600), Some(3600)]);
        assert_eq!(SIGN_IN_PAIR.wait_after(i32::MAX), Some(3600));
        assert_eq!(SIGN_IN_ADDRESS.wait_after(50), Some(900));
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(address_key("2001:db8:1:2:aaaa::1".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:bbbb::9".parse().unwrap()), "2001:db8:1:2::/64");
        assert_eq!(address_key("::ffff:198.51.100.7".parse().unwrap()), "198.51.100.7");
    }
}
