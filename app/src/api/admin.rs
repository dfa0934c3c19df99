//! Staff-only server functions. Every one starts with `require_staff`.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserListItem {
    pub id: String,
    pub email: String,
    pub is_staff: bool,
    pub suspended: bool,
    pub created: String,
    /// The current subscription ("Pro until 2026-12-25, $120.00 of $150.00 left"), if any.
    pub plan: Option<String>,
}

#[cfg(feature = "ssr")]
impl From<cloudrouter_core::accounts::User> for UserListItem {
    fn from(u: cloudrouter_core::accounts::User) -> Self {
        UserListItem {
            id: u.id.to_string(),
            email: u.email,
            is_staff: u.role == cloudrouter_core::accounts::Role::Staff,
            suspended: u.suspended,
            created: u.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
            plan: None,
        }
    }
}

#[cfg(feature = "ssr")]
fn parse_id(id: &str) -> Result<uuid::Uuid, ServerFnError> {
    uuid::Uuid::parse_str(id).map_err(|_| ServerFnError::new("No such user."))
}

#[server(endpoint = "admin/users")]
pub async fn list_users(query: String) -> Result<Vec<UserListItem>, ServerFnError> {
    crate::ssr::require_staff().await?;
    let users = cloudrouter_core::accounts::search(&crate::ssr::pool()?, &query, 200).await.map_err(crate::ssr::internal)?;
    Ok(users.into_iter().map(UserListItem::from).collect())
}

#[server(endpoint = "admin/user")]
pub async fn get_user(id: String) -> Result<UserListItem, ServerFnError> {
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let user = cloudrouter_core::accounts::find_by_id(&pool, parse_id(&id)?).await.map_err(crate::ssr::internal)?;
    let mut item = user.map(UserListItem::from).ok_or_else(|| ServerFnError::new("No such user."))?;
    let sub = cloudrouter_core::billing::subscriptions::current(&pool, parse_id(&id)?, chrono::Utc::now()).await.map_err(crate::ssr::internal)?;
    item.plan = sub.map(|s| {
        format!(
            "{} until {}, {} of {} left{}",
            s.plan_name,
            s.cycle_end.format("%Y-%m-%d"),
            crate::ssr::usd((s.allowance_micro_usd - s.allowance_used_micro_usd).max(0)),
            crate::ssr::usd(s.allowance_micro_usd),
            s.pending_plan_code.map(|p| format!("; changing to {p} next cycle")).unwrap_or_default()
        )
    });
    Ok(item)
}

#[server(endpoint = "admin/user/suspend")]
pub async fn set_suspended(id: String, suspend: bool) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = parse_id(&id)?;
    if id == staff.id {
        return Err(ServerFnError::new("You cannot suspend your own account."));
    }
    let changed = cloudrouter_core::accounts::set_suspended(&crate::ssr::pool()?, id, suspend).await.map_err(crate::ssr::internal)?;
    if !changed {
        return Err(ServerFnError::new("No such user."));
    }
    crate::ssr::audit(staff.id, if suspend { "user.suspend" } else { "user.reinstate" }, &id.to_string(), serde_json::json!({})).await?;
    Ok(if suspend { "Account suspended." } else { "Account reinstated." }.into())
}

#[server(endpoint = "admin/user/billing")]
pub async fn user_billing(id: String) -> Result<crate::api::usage::BillingData, ServerFnError> {
    crate::ssr::require_staff().await?;
    crate::api::usage::billing_for(parse_id(&id)?).await
}

#[server(endpoint = "admin/user/keys")]
pub async fn user_keys(id: String) -> Result<Vec<crate::api::keys::KeyView>, ServerFnError> {
    crate::ssr::require_staff().await?;
    let keys = cloudrouter_core::keys::list(&crate::ssr::pool()?, parse_id(&id)?).await.map_err(crate::ssr::internal)?;
    Ok(keys.into_iter().map(crate::api::keys::key_view).collect())
}

/// Credits (positive) or debits (negative) a balance; the note is mandatory and goes to the ledger.
#[server(endpoint = "admin/user/adjust")]
pub async fn adjust_balance(id: String, amount: String, note: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::ledger::{self, LedgerError, LedgerKind};
    let staff = crate::ssr::require_staff().await?;
    let user_id = parse_id(&id)?;
    let note = note.trim();
    if note.is_empty() {
        return Err(ServerFnError::new("Write a note saying why the balance changes."));
    }
    let micros = cloudrouter_core::money::parse_decimal(amount.trim())
        .map_err(|_| ServerFnError::new("Enter an amount in yuan, like 100 or -12.50."))?;
    let kind = if micros > 0 { LedgerKind::Credit } else { LedgerKind::Debit };
    let entry = ledger::adjust(&crate::ssr::pool()?, user_id, micros, kind, note, Some(staff.id)).await.map_err(|e| match e {
        LedgerError::Db(e) => crate::ssr::internal(e),
        other => ServerFnError::new(other.to_string()),
    })?;
    crate::ssr::audit(staff.id, "balance.adjust", &user_id.to_string(), serde_json::json!({"amount_micros": micros, "note": note})).await?;
    Ok(format!("Balance is now {}.", crate::ssr::cny(entry.balance_after_micros)))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamView {
    pub id: String,
    pub name: String,
    pub base_url: String,
    pub credential_hint: String,
    pub channels: String,
    pub priority: i32,
    pub weight: i32,
    pub concurrency_cap: Option<i32>,
    pub enabled: bool,
    pub is_demo: bool,
    pub circuit: String,
    pub success_rate: Option<String>,
    pub latency: Option<String>,
    pub last_error: Option<String>,
}

#[server(endpoint = "admin/upstreams")]
pub async fn list_upstreams() -> Result<Vec<UpstreamView>, ServerFnError> {
    crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let list = cloudrouter_core::upstreams::list(&state.pool).await.map_err(crate::ssr::internal)?;
    let health: std::collections::HashMap<_, _> = state.gateway.health().into_iter().map(|h| (h.id, h)).collect();
    Ok(list
        .into_iter()
        .map(|u| {
            let h = health.get(&u.id);
            UpstreamView {
                id: u.id.to_string(),
                name: u.name,
                base_url: u.base_url,
                credential_hint: u.credential_hint,
                channels: u.channels.join(", "),
                priority: u.priority,
                weight: u.weight,
                concurrency_cap: u.concurrency_cap,
                enabled: u.enabled,
                is_demo: u.is_demo,
                circuit: h.map(|h| h.circuit.clone()).unwrap_or_else(|| if u.enabled { "starting".into() } else { "disabled".into() }),
                success_rate: h.and_then(|h| h.success_rate).map(|r| format!("{:.1}% of {}", r * 100.0, h.map_or(0, |h| h.recent_attempts))),
                latency: h.and_then(|h| h.latency_ms).map(|l| format!("{l:.0} ms")),
                last_error: h.and_then(|h| h.last_error.clone()),
            }
        })
        .collect())
}

#[server(endpoint = "admin/upstreams/add")]
pub async fn add_upstream(
    name: String,
    base_url: String,
    api_key: String,
    channels: String,
    priority: String,
    weight: String,
    concurrency_cap: String,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::upstreams::{self, NewUpstream, UpstreamError};
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let int = |s: &str, what: &str, default: i32| -> Result<i32, ServerFnError> {
        if s.trim().is_empty() { Ok(default) } else { s.trim().parse().map_err(|_| ServerFnError::new(format!("{what} must be a whole number."))) }
    };
    let new = NewUpstream {
        name: name.trim().into(),
        base_url: base_url.trim().into(),
        api_key: api_key.trim().into(),
        channels: channels.split([',', ' ']).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect(),
        priority: int(&priority, "Priority", 0)?,
        weight: int(&weight, "Weight", 1)?,
        concurrency_cap: if concurrency_cap.trim().is_empty() { None } else { Some(int(&concurrency_cap, "Concurrency cap", 0)?) },
        enabled: true,
    };
    let name = new.name.clone();
    let id = upstreams::create(&state.pool, &state.crypto, new).await.map_err(|e| match e {
        UpstreamError::Db(e) => crate::ssr::internal(e),
        other => ServerFnError::new(other.to_string()),
    })?;
    // The first real upstream ends demo mode: the simulated Claude stops taking traffic.
    for demo in upstreams::list(&state.pool).await.map_err(crate::ssr::internal)?.into_iter().filter(|u| u.is_demo && u.enabled) {
        upstreams::set_enabled(&state.pool, demo.id, false).await.map_err(crate::ssr::internal)?;
    }
    crate::ssr::audit(staff.id, "upstream.add", &id.to_string(), serde_json::json!({"name": name})).await?;
    Ok("Upstream added. Gateways pick it up within a second.".into())
}

#[server(endpoint = "admin/upstreams/enable")]
pub async fn set_upstream_enabled(id: String, enabled: bool) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let ok = cloudrouter_core::upstreams::set_enabled(&crate::ssr::pool()?, parse_id(&id)?, enabled).await.map_err(crate::ssr::internal)?;
    if !ok {
        return Err(ServerFnError::new("No such upstream."));
    }
    crate::ssr::audit(staff.id, if enabled { "upstream.enable" } else { "upstream.disable" }, &id, serde_json::json!({})).await?;
    Ok(if enabled { "Upstream enabled." } else { "Upstream disabled." }.into())
}

/// Staff edit of an upstream's routing, and optionally a new credential (blank keeps the old).
#[server(endpoint = "admin/upstreams/update")]
pub async fn update_upstream(
    id: String,
    channels: String,
    priority: String,
    weight: String,
    concurrency_cap: String,
    api_key: String,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::upstreams::{self, UpstreamError};
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let id = parse_id(&id)?;
    let current = upstreams::list(&state.pool)
        .await
        .map_err(crate::ssr::internal)?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| ServerFnError::new("No such upstream."))?;
    let int = |s: &str, what: &str| -> Result<i32, ServerFnError> {
        s.trim().parse().map_err(|_| ServerFnError::new(format!("{what} must be a whole number.")))
    };
    let channels: Vec<String> = channels.split([',', ' ']).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect();
    let cap = if concurrency_cap.trim().is_empty() { None } else { Some(int(&concurrency_cap, "Concurrency cap")?) };
    let as_message = |e: UpstreamError| match e {
        UpstreamError::Db(e) => crate::ssr::internal(e),
        other => ServerFnError::new(other.to_string()),
    };
    upstreams::update_routing(&state.pool, id, &channels, &current.models, int(&priority, "Priority")?, int(&weight, "Weight")?, cap)
        .await
        .map_err(as_message)?;
    if !api_key.trim().is_empty() {
        upstreams::set_credential(&state.pool, &state.crypto, id, &api_key).await.map_err(as_message)?;
    }
    crate::ssr::audit(
        staff.id,
        "upstream.update",
        &id.to_string(),
        serde_json::json!({"channels": channels, "weight": weight, "priority": priority, "credential_replaced": !api_key.trim().is_empty()}),
    )
    .await?;
    Ok(format!("Upstream {} saved.", current.name))
}
