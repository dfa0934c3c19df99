//! Tokens per minute, per key and per plan, across instances. A token count is known only when a
//! request ends, so the rule is: a request is admitted while the minute's count is under the
//! limit; tokens are added when it ends (input, cache writes and output — cache reads are not
//! counted, as Anthropic's own input limits do not count them). Requests already running when the
//! limit is crossed finish; the next ones wait for the next minute (`retry-after`).
//!
//! The count of each (scope, minute) lives in `rate_windows`, the table of the request-rate
//! leases; an instance re-reads a scope's count at most every [`REREAD`] and adds its own at
//! once, so instances agree within that time.

use super::leases::minute_window;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REREAD: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Window {
    minute: i64,
    used: i64,
    read_at: Option<Instant>,
}

pub(super) struct TokenRates {
    pool: PgPool,
    windows: Mutex<HashMap<String, Arc<Mutex<Window>>>>,
}

impl TokenRates {
    pub(super) fn new(pool: PgPool) -> TokenRates {
        TokenRates { pool, windows: Mutex::default() }
    }

    fn window(&self, scope: &str) -> Arc<Mutex<Window>> {
        self.windows.lock().unwrap().entry(scope.to_string()).or_default().clone()
    }

    /// `Err(seconds to the next minute)` when this minute's tokens reached `limit`.
    pub(super) async fn check(&self, scope: &str, limit: i32) -> Result<Result<(), u64>, sqlx::Error> {
        let (minute, start, retry_after) = minute_window();
        let w = self.window(scope);
        let stale = {
            let mut st = w.lock().unwrap();
            if st.minute != minute {
                *st = Window { minute, ..Default::default() };
            }
            st.read_at.is_none_or(|t| t.elapsed() >= REREAD)
        };
        if stale {
            let used: Option<i32> = sqlx::query_scalar("SELECT used FROM rate_windows WHERE scope = $1 AND window_start = $2")
                .bind(scope)
                .bind(start)
                .fetch_optional(&self.pool)
                .await?;
            let mut st = w.lock().unwrap();
            if st.minute == minute {
                // an addition of this instance may not have landed yet: keep the larger count
                st.used = st.used.max(used.unwrap_or(0) as i64);
                st.read_at = Some(Instant::now());
            }
        }
        let used = w.lock().unwrap().used;
        Ok(if used >= limit as i64 { Err(retry_after) } else { Ok(()) })
    }

    /// Adds a finished request's tokens to this minute (written in the background).
    pub(super) fn add(&self, scope: &str, tokens: i64) {
        if tokens <= 0 {
            return;
        }
        let (minute, start, _) = minute_window();
        {
            let w = self.window(scope);
            let mut st = w.lock().unwrap();
            if st.minute != minute {
                *st = Window { minute, ..Default::default() };
            }
            st.used += tokens;
        }
        let (pool, scope) = (self.pool.clone(), scope.to_string());
        let tokens = tokens.min(i32::MAX as i64) as i32;
        tokio::spawn(async move {
            let r = sqlx::query(
                "INSERT INTO rate_windows (scope, window_start, used) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, window_start) DO UPDATE SET used = LEAST(rate_windows.used::bigint + EXCLUDED.used, 2147483647)::int",
            )
            .bind(&scope)
            .bind(start)
            .bind(tokens)
            .execute(&pool)
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "token rate count not written");
            }
        });
    }
}
