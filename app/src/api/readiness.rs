//! Whether the caller's account can pay for a call yet, and the ways to make it so (Quick start's
//! first step): a request draws on trial credit, then a plan's allowance, then the balance, and
//! with none of them the gateway answers 402.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FundingView {
    /// Some funds a call can draw on.
    pub ready: bool,
    /// "Requests draw on: trial credit ¥20.00, then balance ¥0.00."
    pub funds: String,
    pub balance: String,
    /// The trial application, if any: "pending", "approved", "declined" or "expired".
    pub trial_status: Option<String>,
    /// For an approved trial: what is left, of how much, until when.
    pub trial_remaining: String,
    pub trial_amount: String,
    pub trial_expires: String,
}

#[server(endpoint = "readiness")]
pub async fn readiness() -> Result<FundingView, ServerFnError> {
    use crate::ssr::{cny, internal, when};
    use cloudrouter_core::billing;
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let now = chrono::Utc::now();
    let f = billing::funds(&pool, user.id, now).await.map_err(internal)?;
    let subscribed = billing::subscriptions::current(&pool, user.id, now).await.map_err(internal)?.is_some();
    let trial = billing::trials::mine(&pool, user.id).await.map_err(internal)?;
    let ready = f.trial_micros.is_positive() || f.balance_micros.is_positive() || (subscribed && f.allowance_left_micro_usd.is_positive());
    Ok(FundingView {
        ready,
        funds: crate::api::keys::funds_line(&pool, user.id).await?,
        balance: cny(f.balance_micros),
        trial_status: trial.as_ref().map(|t| t.status.clone()),
        trial_remaining: trial.as_ref().map(|t| cny(t.remaining_micros)).unwrap_or_default(),
        trial_amount: trial.as_ref().and_then(|t| t.amount_micros).map(cny).unwrap_or_default(),
        trial_expires: trial.as_ref().and_then(|t| t.expires_at).map(when).unwrap_or_default(),
    })
}
