//! Alerts: telling staff when the service is in trouble and customers when their money runs low.
//!
//! * **Staff** ([`staff`]): an upstream whose circuit opens (`upstream_down`) or whose account
//!   refuses (`upstream_account`: disabled, out of credit, credential refused), the usage writer
//!   failing to flush (`usage_flush`), a channel refusing requests at capacity
//!   (`channel_capacity`). The gateway reports them to this instance's [`Reporter`] without
//!   waiting (a bounded channel, `try_send`); its task writes them to `staff_alerts`, where one
//!   row per (kind, subject) is open at a time whichever instance saw it, so each condition
//!   notifies once when it starts and once when it has stayed gone for the settle time.
//! * **Customers** ([`customer`]): low balance (their threshold), plan allowance at 80 % and
//!   100 %, a key's spending limit reached. Row triggers (migration 0021) queue the notice in the
//!   transaction that moved the money, only on the crossing, so each crossing notifies once and a
//!   new one needs the balance back above the threshold, a new cycle, or a raised limit.
//! * **Delivery** ([`delivery`]): every notice is a row of `alert_outbox`, sent by a background
//!   task of every instance (claimed with a lease, retried with backoff, surviving restarts):
//!   by mail through the account-mail outbox, and by webhook POST signed as [`signature`] says.

pub mod customer;
pub mod delivery;
pub mod signature;
pub mod staff;

pub use staff::Reporter;

use crate::text_enum::text_enum;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

text_enum! {
    /// What an alert is about.
    pub enum AlertKind {
        /// An upstream's circuit opened (failures, timeouts, 5xx).
        UpstreamDown = "upstream_down",
        /// An upstream's account refused: disabled, out of credit, credential or permission refused.
        UpstreamAccount = "upstream_account",
        /// An instance's usage writer cannot flush (records wait in its spool).
        UsageFlush = "usage_flush",
        /// Requests refused because a channel, or every upstream of it, is at its concurrency.
        ChannelCapacity = "channel_capacity",
        /// A customer's balance went below their threshold.
        LowBalance = "low_balance",
        /// A customer used 80 % of their plan's allowance this cycle.
        Allowance80 = "allowance_80",
        /// A customer used all of their plan's allowance this cycle.
        Allowance100 = "allowance_100",
        /// A customer's API key reached its spending limit.
        KeyLimit = "key_limit",
    }
}

text_enum! {
    /// What happened to the condition, as a notice says it.
    pub enum AlertStatus {
        /// A staff alert opened.
        Opened = "opened",
        /// A staff alert's condition has been gone for the settle time.
        Resolved = "resolved",
        /// A customer's threshold was crossed.
        Reached = "reached",
    }
}

/// One notice in the outbox: what mail and webhook say.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Notice {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// None: for staff.
    #[serde(skip)]
    pub user_id: Option<Uuid>,
    pub kind: AlertKind,
    pub status: AlertStatus,
    /// An upstream's id, a channel's code, an instance's id, a key's id, a cycle's order id.
    pub subject: String,
    pub subject_name: String,
    /// For staff: what was seen (an upstream's error, the flush's error).
    pub detail: String,
    /// Per kind: amounts (decimals with six places) and their currency, the plan, the key.
    pub data: serde_json::Value,
}

impl Notice {
    /// The webhook's body: the notice with its audience and an id to deduplicate by.
    pub fn webhook_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            id: String,
            audience: &'static str,
            #[serde(flatten)]
            notice: &'a Notice,
        }
        let body = Body { id: format!("alert_{}", self.id), audience: if self.user_id.is_some() { "customer" } else { "staff" }, notice: self };
        serde_json::to_vec(&body).expect("a notice serialises")
    }
}
