//! Staff-only server functions. Every one starts with `require_staff`.

#[allow(unused_imports)]
use crate::i18n::{t, tf, tr};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserListItem {
    pub id: String,
    pub email: String,
    pub is_staff: bool,
    pub suspended: bool,
    /// Two-factor sign-in is on.
    pub two_factor: bool,
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
            two_factor: u.two_factor,
            created: crate::ssr::when(u.created_at),
            plan: None,
        }
    }
}

#[cfg(feature = "ssr")]
fn parse_id(id: &str) -> Result<uuid::Uuid, ServerFnError> {
    crate::ssr::parse_uuid(id, "No such user.")
}

/// An upstream the form got wrong, in the caller's language (database errors stay generic).
#[cfg(feature = "ssr")]
fn upstream_error(e: cloudrouter_core::upstreams::UpstreamError) -> ServerFnError {
    match e {
        cloudrouter_core::upstreams::UpstreamError::Db(e) => crate::ssr::internal(e),
        cloudrouter_core::upstreams::UpstreamError::UnknownChannel(c) => ServerFnError::new(crate::i18n::tf("unknown channel: {}", &[&c])),
        other => ServerFnError::new(crate::i18n::tr(&other.to_string())),
    }
}

/// One line of the staff list of users: money at a glance (two decimals), the exact amounts in
/// the tooltips.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserLine {
    pub id: String,
    pub email: String,
    pub is_staff: bool,
    pub suspended: bool,
    pub created: String,
    pub balance: String,
    pub balance_exact: String,
    /// The active plan's name; none for pay-as-you-go.
    pub plan: Option<String>,
    pub spend_30d: String,
    pub spend_30d_exact: String,
}

/// The staff list of users matching `query`, sorted on the server by `sort` ("joined",
/// "balance", "plan", "spend"; anything else: joined) in `dir` ("asc", else descending).
#[server(endpoint = "admin/users")]
pub async fn list_users(query: String, sort: String, dir: String) -> Result<Vec<UserLine>, ServerFnError> {
    use cloudrouter_core::{accounts, insights};
    crate::ssr::require_staff().await?;
    let sort = accounts::UserSort::parse(&sort).unwrap_or(accounts::UserSort::Joined);
    let (since, _) = insights::Range::Month.bounds(chrono::Utc::now());
    let users = accounts::search(&crate::ssr::pool()?, &query, sort, dir == "asc", since, 200).await.map_err(crate::ssr::internal)?;
    Ok(users
        .into_iter()
        .map(|l| UserLine {
            id: l.user.id.to_string(),
            email: l.user.email,
            is_staff: l.user.role == accounts::Role::Staff,
            suspended: l.user.suspended,
            created: crate::ssr::when(l.user.created_at),
            balance: crate::ssr::cny2(l.balance_micros),
            balance_exact: l.balance_micros.exact(),
            plan: l.plan_name.map(|p| tr(&p)),
            spend_30d: crate::ssr::cny2(l.spend_micros),
            spend_30d_exact: l.spend_micros.exact(),
        })
        .collect())
}

#[server(endpoint = "admin/user")]
pub async fn get_user(id: String) -> Result<UserListItem, ServerFnError> {
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let user = cloudrouter_core::accounts::find_by_id(&pool, parse_id(&id)?).await.map_err(crate::ssr::internal)?;
    let mut item = user.map(UserListItem::from).ok_or_else(|| ServerFnError::new(t("No such user.")))?;
    let sub = cloudrouter_core::billing::subscriptions::current(&pool, parse_id(&id)?, chrono::Utc::now()).await.map_err(crate::ssr::internal)?;
    item.plan = sub.map(|s| {
        tf(
            "{} until {}, {} of {} left{}",
            &[
                &tr(&s.plan_name),
                &s.cycle_end.format("%Y-%m-%d"),
                &crate::ssr::usd(s.allowance_left_micro_usd().max(cloudrouter_core::money::MicroUsd::ZERO)),
                &crate::ssr::usd(s.allowance_micro_usd),
                &s.pending_plan_code.map(|p| tf("; changing to {} next cycle", &[&p])).unwrap_or_default(),
            ],
        )
    });
    Ok(item)
}

#[server(endpoint = "admin/user/suspend")]
pub async fn set_suspended(id: String, suspend: bool) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = parse_id(&id)?;
    if id == staff.id {
        return Err(ServerFnError::new(t("You cannot suspend your own account.")));
    }
    let mut tx = crate::ssr::begin().await?;
    let changed = cloudrouter_core::accounts::set_suspended(&mut *tx, id, suspend).await.map_err(crate::ssr::internal)?;
    if !changed {
        return Err(ServerFnError::new(t("No such user.")));
    }
    crate::ssr::commit_audited(tx, staff.id, if suspend { "user.suspend" } else { "user.reinstate" }, &format!("user:{id}"), serde_json::json!({})).await?;
    Ok(t(if suspend { "Account suspended." } else { "Account reinstated." }).into())
}

/// For an owner who lost both their authenticator and their recovery codes: turns two-factor
/// sign-in off and ends the account's sessions, with a required note on how the owner was
/// verified (audited), and mails the owner so an impostor's request does not go unnoticed.
#[server(endpoint = "admin/user/two_factor_off")]
pub async fn turn_off_two_factor(id: String, note: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = parse_id(&id)?;
    if id == staff.id {
        return Err(ServerFnError::new(t("Ask another staff member to do this for your own account.")));
    }
    let note = note.trim();
    if note.is_empty() {
        return Err(ServerFnError::new(t("Write how you checked that the owner is asking.")));
    }
    let state = crate::ssr::state()?;
    let mut tx = crate::ssr::begin().await?;
    let user = cloudrouter_core::accounts::find_by_id(&state.pool, id).await.map_err(crate::ssr::internal)?.ok_or_else(|| ServerFnError::new(t("No such user.")))?;
    let was_on = cloudrouter_core::totp::disable(&mut tx, id).await.map_err(crate::ssr::internal)?;
    if !was_on {
        return Err(ServerFnError::new(t("Two-factor sign-in is already off.")));
    }
    cloudrouter_core::accounts::end_sessions(&mut *tx, id).await.map_err(crate::ssr::internal)?;
    crate::ssr::commit_audited(tx, staff.id, "user.two_factor_off", &format!("user:{id}"), serde_json::json!({ "note": note })).await?;
    let mail = super::mails::two_factor_turned_off(user.email);
    state.outbox.queue(&state.pool, &mail).await.map_err(crate::ssr::internal)?;
    Ok(t("Two-factor sign-in is off for this account; its sessions are signed out and the owner is mailed.").into())
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

/// What the balance adjustment form needs: a fresh idempotency key for this rendering of the form
/// (a second submit of the same form applies once) and the bounds it is checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdjustFormView {
    pub key: String,
    pub confirm_above: String,
    pub max: String,
}

#[server(endpoint = "admin/user/adjust-form")]
pub async fn adjust_form() -> Result<AdjustFormView, ServerFnError> {
    crate::ssr::require_staff().await?;
    let limits = crate::ssr::state()?.staff_limits;
    Ok(AdjustFormView {
        key: uuid::Uuid::new_v4().to_string(),
        confirm_above: crate::ssr::cny(limits.confirm_above_micros),
        max: crate::ssr::cny(limits.max_adjustment_micros),
    })
}

/// Credits (positive) or debits (negative) a balance once per form (`idempotency_key`): the
/// description is what the customer's ledger says, the note (required) is for staff only, and an
/// amount above the threshold needs `confirm`. See `billing::adjustments`.
#[server(endpoint = "admin/user/adjust")]
pub async fn adjust_balance(
    id: String,
    amount: String,
    description: String,
    note: String,
    idempotency_key: String,
    confirm: Option<String>,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::adjustments::{self, Adjustment};
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let micros = cloudrouter_core::money::MicroCny::parse(&amount)
        .map_err(|_| ServerFnError::new(t("Enter an amount in yuan, like 100 or -12.50.")))?;
    let adj = Adjustment {
        user_id: parse_id(&id)?,
        amount_micros: micros,
        description,
        staff_note: note,
        idempotency_key,
        confirmed: confirm.is_some(),
    };
    let done = adjustments::apply(&state.pool, &state.staff_limits, staff.id, &adj).await.map_err(crate::ssr::billing_error)?;
    let balance = done.entry.balance_after.short();
    Ok(if done.replayed { tf("Already applied: this form was submitted before. Balance after it: {}.", &[&balance]) } else { tf("Balance is now {}.", &[&balance]) })
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

/// An upstream's name as staff read it: the simulated Claude's in the reader's language.
#[cfg(feature = "ssr")]
pub fn upstream_name(name: &str, is_demo: bool) -> String {
    if is_demo { t("Demo (simulated Claude)").into() } else { name.to_string() }
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
                name: upstream_name(&u.name, u.is_demo),
                base_url: u.base_url,
                credential_hint: u.credential_hint,
                channels: u.channels.join(", "),
                priority: u.priority,
                weight: u.weight,
                concurrency_cap: u.concurrency_cap,
                enabled: u.enabled,
                is_demo: u.is_demo,
                // A closed circuit is the healthy one: the words say so.
                circuit: t(match h.map(|h| h.circuit.as_str()) {
                    Some("closed") => "closed (healthy)",
                    Some("open") => "open (skipped)",
                    Some("half_open") => "half-open (probing)",
                    _ if u.enabled => "starting",
                    _ => "disabled",
                })
                .to_string(),
                success_rate: h
                    .and_then(|h| h.success_rate)
                    .map(|r| tf("{}% of {}", &[&format!("{:.1}", r * 100.0), &h.map_or(0, |h| h.recent_attempts)])),
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
    use cloudrouter_core::upstreams::{self, NewUpstream};
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let int = |s: &str, what: &'static str, default: i32| -> Result<i32, ServerFnError> {
        if s.trim().is_empty() { Ok(default) } else { s.trim().parse().map_err(|_| ServerFnError::new(tf("{} must be a whole number.", &[&t(what)]))) }
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
    // The first real upstream ends demo mode (`upstreams::create` disables the simulated Claude).
    let mut tx = crate::ssr::begin().await?;
    let id = upstreams::create_in(&mut tx, &state.crypto, new).await.map_err(upstream_error)?;
    crate::ssr::commit_audited(tx, staff.id, "upstream.add", &format!("upstream:{id}"), serde_json::json!({"name": name})).await?;
    state.gateway.reload().await;
    Ok(t("Upstream added. Gateways pick it up within a second.").into())
}

#[server(endpoint = "admin/upstreams/enable")]
pub async fn set_upstream_enabled(id: String, enabled: bool) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let upstream = crate::ssr::parse_uuid(&id, "No such upstream.")?;
    let mut tx = crate::ssr::begin().await?;
    let ok = cloudrouter_core::upstreams::set_enabled(&mut *tx, upstream, enabled).await.map_err(crate::ssr::internal)?;
    if !ok {
        return Err(ServerFnError::new(t("No such upstream.")));
    }
    crate::ssr::commit_audited(tx, staff.id, if enabled { "upstream.enable" } else { "upstream.disable" }, &format!("upstream:{upstream}"), serde_json::json!({})).await?;
    Ok(t(if enabled { "Upstream enabled." } else { "Upstream disabled." }).into())
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
    use cloudrouter_core::upstreams;
    let staff = crate::ssr::require_staff().await?;
    let state = crate::ssr::state()?;
    let id = crate::ssr::parse_uuid(&id, "No such upstream.")?;
    let current = upstreams::list(&state.pool)
        .await
        .map_err(crate::ssr::internal)?
        .into_iter()
        .find(|u| u.id == id)
        .ok_or_else(|| ServerFnError::new(t("No such upstream.")))?;
    let int = |s: &str, what: &'static str| -> Result<i32, ServerFnError> {
        s.trim().parse().map_err(|_| ServerFnError::new(tf("{} must be a whole number.", &[&t(what)])))
    };
    let channels: Vec<String> = channels.split([',', ' ']).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect();
    let cap = if concurrency_cap.trim().is_empty() { None } else { Some(int(&concurrency_cap, "Concurrency cap")?) };
    let mut tx = crate::ssr::begin().await?;
    upstreams::update_routing(&mut tx, id, &channels, &current.models, int(&priority, "Priority")?, int(&weight, "Weight")?, cap)
        .await
        .map_err(upstream_error)?;
    if !api_key.trim().is_empty() {
        upstreams::set_credential(&mut *tx, &state.crypto, id, &api_key).await.map_err(upstream_error)?;
    }
    crate::ssr::commit_audited(
        tx,
        staff.id,
        "upstream.update",
        &format!("upstream:{id}"),
        serde_json::json!({"channels": channels, "weight": weight, "priority": priority, "credential_replaced": !api_key.trim().is_empty()}),
    )
    .await?;
    Ok(tf("Upstream {} saved.", &[&current.name]))
}

/// A staff API token as the console shows it (never the token itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub prefix: String,
    pub owner: String,
    pub created: String,
    pub last_used: Option<String>,
    pub expires: String,
    /// "Active", "Expired" or "Revoked", translated.
    pub status: String,
    pub active: bool,
}

#[server(endpoint = "admin/tokens")]
pub async fn admin_tokens() -> Result<Vec<TokenView>, ServerFnError> {
    use crate::ssr::when;
    crate::ssr::require_staff().await?;
    let now = chrono::Utc::now();
    let list = cloudrouter_core::admin_api::list_tokens(&crate::ssr::pool()?).await.map_err(crate::ssr::internal)?;
    Ok(list
        .into_iter()
        .map(|k| {
            let (status, active) = match (k.revoked_at, k.expires_at <= now) {
                (Some(_), _) => ("Revoked", false),
                (None, true) => ("Expired", false),
                (None, false) => ("Active", true),
            };
            TokenView {
                id: k.id.to_string(),
                prefix: k.prefix,
                owner: k.owner_email,
                created: when(k.created_at),
                last_used: k.last_used_at.map(when),
                expires: when(k.expires_at),
                status: t(status).into(),
                active,
            }
        })
        .collect())
}

/// Revokes a staff API token at once (audited with the token's prefix and owner).
#[server(endpoint = "admin/tokens/revoke")]
pub async fn revoke_admin_token(id: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::admin_api::{self, AdminError};
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such token.")?;
    let mut tx = crate::ssr::begin().await?;
    let token = admin_api::revoke_token(&mut tx, &id.to_string()).await.map_err(|e| match e {
        AdminError::Db(e) => crate::ssr::internal(e),
        _ => ServerFnError::new(t("No such token.")),
    })?;
    crate::ssr::commit_audited(tx, staff.id, "admin_token.revoke", &format!("admin_token:{id}"), serde_json::json!({"prefix": token.prefix, "owner": token.owner_email}))
        .await?;
    Ok(tf("Token {} revoked. The staff API refuses it from now on.", &[&token.prefix]))
}
