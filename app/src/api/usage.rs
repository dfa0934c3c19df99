//! What a customer spends: overview figures, the usage log, and the balance with its ledger.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverviewData {
    pub base_url: String,
    pub balance: String,
    pub held: String,
    /// Plan allowance left this cycle (list-price dollars), if subscribed.
    pub allowance_left: Option<String>,
    /// Unexpired trial credit, if any.
    pub trial: Option<String>,
    pub active_keys: usize,
    pub requests_24h: i64,
    pub errors_24h: i64,
    pub spend_24h: String,
    pub spend_30d: String,
    /// True while the only upstream is the built-in simulated Claude.
    pub demo: bool,
}

#[server(endpoint = "overview")]
pub async fn overview() -> Result<OverviewData, ServerFnError> {
    use crate::ssr::{cny, internal};
    use cloudrouter_core::{insights, keys, ledger, upstreams};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let pool = &state.pool;
    let now = chrono::Utc::now();
    let balance = ledger::balance_info(pool, user.id).await.map_err(internal)?;
    let funds = cloudrouter_core::billing::funds(pool, user.id, now).await.map_err(internal)?;
    let subscribed = cloudrouter_core::billing::subscriptions::current(pool, user.id, now).await.map_err(internal)?.is_some();
    let day = insights::totals(pool, Some(user.id), now - chrono::Duration::hours(24)).await.map_err(internal)?;
    let month = insights::totals(pool, Some(user.id), now - chrono::Duration::days(30)).await.map_err(internal)?;
    let keys = keys::list(pool, user.id).await.map_err(internal)?;
    let ups = upstreams::list(pool).await.map_err(internal)?;
    Ok(OverviewData {
        base_url: state.public_base_url.clone(),
        balance: cny(balance.balance_micros),
        held: cny(balance.held_micros),
        allowance_left: subscribed.then(|| crate::ssr::usd(funds.allowance_left_micro_usd)),
        trial: (funds.trial_micros > 0).then(|| cny(funds.trial_micros)),
        active_keys: keys.iter().filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > now)).count(),
        requests_24h: day.requests,
        errors_24h: day.errors,
        spend_24h: cny(day.charge_micros),
        spend_30d: cny(month.charge_micros),
        demo: ups.iter().any(|u| u.enabled) && ups.iter().filter(|u| u.enabled).all(|u| u.is_demo),
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageLine {
    pub time: String,
    pub key: String,
    pub requested_model: String,
    pub served_model: String,
    pub fallback: bool,
    pub channel: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_usd: String,
    pub charge: String,
    pub status: i32,
    pub outcome: String,
    pub latency_ms: i32,
    pub ttft_ms: Option<i32>,
}

#[server(endpoint = "usage")]
pub async fn usage_log() -> Result<Vec<UsageLine>, ServerFnError> {
    use crate::ssr::{cny, internal, usd, when};
    use cloudrouter_core::{keys, usage};
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let names: std::collections::HashMap<_, _> =
        keys::list(&pool, user.id).await.map_err(internal)?.into_iter().map(|k| (k.id, k.name)).collect();
    let rows = usage::list(&pool, &usage::UsageFilter { user_id: Some(user.id), limit: Some(200), ..Default::default() })
        .await
        .map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let served = r.served_model.clone().unwrap_or_default();
            UsageLine {
                time: when(r.created_at),
                key: r.key_id.and_then(|id| names.get(&id).cloned()).unwrap_or_else(|| "—".into()),
                fallback: !served.is_empty() && served != r.requested_model,
                requested_model: r.requested_model,
                served_model: served,
                channel: r.channel,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cache_write_tokens: r.cache_write_5m_tokens + r.cache_write_1h_tokens,
                cache_read_tokens: r.cache_read_tokens,
                cost_usd: usd(r.cost_micro_usd),
                charge: cny(r.charge_micros),
                status: r.status,
                outcome: r.outcome,
                latency_ms: r.latency_ms,
                ttft_ms: r.ttft_ms,
            }
        })
        .collect())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub time: String,
    pub kind: String,
    pub amount: String,
    pub balance_after: String,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BillingData {
    pub balance: String,
    pub held: String,
    pub available: String,
    pub entries: Vec<LedgerLine>,
}

#[cfg(feature = "ssr")]
pub async fn billing_for(user_id: uuid::Uuid) -> Result<BillingData, ServerFnError> {
    use crate::ssr::{cny, internal, when};
    use cloudrouter_core::ledger;
    let pool = crate::ssr::pool()?;
    let info = ledger::balance_info(&pool, user_id).await.map_err(internal)?;
    let entries = ledger::entries(&pool, user_id, 200).await.map_err(internal)?;
    Ok(BillingData {
        balance: cny(info.balance_micros),
        held: cny(info.held_micros),
        available: cny(info.available_micros),
        entries: entries
            .into_iter()
            .map(|e| LedgerLine {
                time: when(e.created_at),
                kind: e.kind,
                amount: cny(e.amount_micros),
                balance_after: cny(e.balance_after_micros),
                note: e.note,
            })
            .collect(),
    })
}

#[server(endpoint = "billing")]
pub async fn billing() -> Result<BillingData, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    billing_for(user.id).await
}
