//! Coding-plan windows: what a plan's allowance may pay per 5-hour window and per 7-day window
//! (migration 0026, which holds the rules; README "Plan windows"). This module reads a
//! subscription's windows for the console and the gateway's refusals, and keeps the customer's
//! choice to go on pay-as-you-go beyond them.

use crate::money::MicroUsd;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    FiveHours,
    Week,
}

impl Window {
    pub fn label(self) -> &'static str {
        match self {
            Window::FiveHours => "5-hour",
            Window::Week => "weekly",
        }
    }
}

/// One window of the active subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowUse {
    pub window: Window,
    pub cap: MicroUsd,
    /// paid by the allowance in the open window (zero when none is open)
    pub used: MicroUsd,
    /// when the open window closes; None when none is open (the next opens with the next usage)
    pub resets_at: Option<DateTime<Utc>>,
}

impl WindowUse {
    pub fn left(&self) -> MicroUsd {
        (self.cap - self.used).max(MicroUsd::ZERO)
    }
}

/// The windows of a subscription whose plan has any, and the customer's choice beyond them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStatus {
    pub windows: Vec<WindowUse>,
    /// beyond a cap, plan requests go on at pay-as-you-go prices (else they get 429)
    pub overflow_payg: bool,
}

impl WindowStatus {
    /// The window with the least room: the one that refuses a request first.
    pub fn binding(&self) -> Option<&WindowUse> {
        self.windows.iter().min_by_key(|w| w.left())
    }
}

/// The active subscription's windows; None without a subscription or when its plan has no caps.
pub async fn status(pool: &PgPool, user_id: Uuid) -> Result<Option<WindowStatus>, sqlx::Error> {
    type Row = (Option<i64>, Option<DateTime<Utc>>, i64, Option<i64>, Option<DateTime<Utc>>, i64, bool);
    // when each window closes, by the migration's one rule (`cr_window_end`)
    let row: Option<Row> = sqlx::query_as(
        "SELECT c.cap_5h, cr_window_end(s.window_5h_start, '5 hours'), s.window_5h_used_micro_usd, \
                c.cap_week, cr_window_end(s.week_start, '7 days'), s.week_used_micro_usd, u.plan_overflow_payg \
           FROM subscriptions s JOIN users u ON u.id = s.user_id, cr_window_caps(s.plan_snapshot) c \
          WHERE s.user_id = $1 AND s.status = 'active'",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some((cap_5h, end_5h, used_5h, cap_week, end_week, used_week, overflow_payg)) = row else { return Ok(None) };
    // a closed window has used nothing of its cap
    let open = |cap: Option<i64>, resets_at: Option<DateTime<Utc>>, used: i64, window: Window| {
        let used = if resets_at.is_some() { MicroUsd::from_micros(used) } else { MicroUsd::ZERO };
        Some(WindowUse { window, cap: MicroUsd::from_micros(cap?), used, resets_at })
    };
    let windows: Vec<WindowUse> = [open(cap_5h, end_5h, used_5h, Window::FiveHours), open(cap_week, end_week, used_week, Window::Week)]
        .into_iter()
        .flatten()
        .collect();
    Ok((!windows.is_empty()).then_some(WindowStatus { windows, overflow_payg }))
}

/// The customer's choice: beyond a window's cap, go on at pay-as-you-go prices (trial credit,
/// then balance) or be refused until it resets. The gateways' cached keys follow at once.
pub async fn set_overflow_payg(pool: &PgPool, user_id: Uuid, on: bool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE users SET plan_overflow_payg = $2 WHERE id = $1").bind(user_id).bind(on).execute(&mut *tx).await?;
    sqlx::query("SELECT cr_notify('user:' || $1::text)").bind(user_id).execute(&mut *tx).await?;
    tx.commit().await
}
