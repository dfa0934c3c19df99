//! A customer's API keys: create (secret shown once), list, revoke. Only the owner's keys.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub channel: String,
    pub created: String,
    pub last_used: Option<String>,
    pub spent: String,
    pub spend_limit: Option<String>,
    pub expires: Option<String>,
    pub revoked: bool,
    pub expired: bool,
    pub models: String,
    pub allow_fallback: bool,
    pub limits: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelOption {
    pub code: String,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeysData {
    /// A key created by a plain form post (JavaScript off): the answer to that post is this page
    /// rendered with the key in context (the server's `web::created_key_page`); kept nowhere.
    pub just_created: Option<CreatedKey>,
    /// What requests draw on, in order: "Plan allowance $12.30 left · balance ¥50.00".
    pub funds: String,
    pub keys: Vec<KeyView>,
    pub channels: Vec<ChannelOption>,
    pub models: Vec<String>,
}

/// The one moment the secret is visible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedKey {
    pub name: String,
    pub secret: String,
}

impl std::fmt::Display for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::i18n::tf("Key “{}” created.", &[&self.name]))
    }
}

#[cfg(feature = "ssr")]
pub fn key_view(k: cloudrouter_core::keys::KeySummary) -> KeyView {
    use crate::ssr::{cny, when};
    KeyView {
        id: k.id.to_string(),
        name: k.name,
        prefix: k.prefix,
        channel: k.channel,
        created: when(k.created_at),
        last_used: k.last_used_at.map(when),
        spent: cny(k.spent_micros),
        spend_limit: k.spend_limit_micros.map(cny),
        expired: k.expires_at.is_some_and(|t| t <= chrono::Utc::now()),
        expires: k.expires_at.map(when),
        revoked: k.revoked_at.is_some(),
        models: if k.allowed_models.is_empty() { crate::i18n::t("All models").into() } else { k.allowed_models.join(", ") },
        allow_fallback: k.allow_fallback,
        limits: {
            use cloudrouter_core::keys::Clients;
            let parts: Vec<String> = [
                k.rpm_limit.map(|r| crate::i18n::tf("{}/min", &[&r])),
                k.concurrency_limit.map(|c| crate::i18n::tf("{} at once", &[&c])),
                k.tpm_limit.map(|n| crate::i18n::tf("{} tokens/min", &[&n])),
                (!k.ip_allow.is_empty()).then(|| crate::i18n::tf("only from {}", &[&k.ip_allow.join(", ")])),
                match k.clients {
                    Clients::Any => None,
                    Clients::ClaudeCode => Some(crate::i18n::t("Claude Code only").to_string()),
                    Clients::Sdk => Some(crate::i18n::t("official SDKs only").to_string()),
                },
            ]
            .into_iter()
            .flatten()
            .collect();
            (!parts.is_empty()).then(|| parts.join(" · "))
        },
    }
}

/// Trial credit, then plan allowance, then balance: the order requests draw on.
#[cfg(feature = "ssr")]
pub(crate) async fn funds_line(pool: &sqlx::PgPool, user_id: uuid::Uuid) -> Result<String, ServerFnError> {
    use crate::ssr::{cny2, internal, usd};
    let now = chrono::Utc::now();
    let f = cloudrouter_core::billing::funds(pool, user_id, now).await.map_err(internal)?;
    let subscribed = cloudrouter_core::billing::subscriptions::current(pool, user_id, now).await.map_err(internal)?.is_some();
    let mut parts = vec![];
    if f.trial_micros.is_positive() {
        parts.push(crate::i18n::tf("trial credit {}", &[&cny2(f.trial_micros)]));
    }
    if subscribed {
        parts.push(crate::i18n::tf("plan allowance {} left", &[&usd(f.allowance_left_micro_usd)]));
    }
    parts.push(crate::i18n::tf("balance {}", &[&cny2(f.balance_micros)]));
    Ok(crate::i18n::tf("Requests draw on: {}.", &[&parts.join(crate::i18n::t(", then "))]))
}

#[server(endpoint = "keys")]
pub async fn keys_page() -> Result<KeysData, ServerFnError> {
    use cloudrouter_core::{catalogue, keys};
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let just_created = use_context::<CreatedKey>();
    let keys = keys::list(&pool, user.id).await.map_err(crate::ssr::internal)?;
    let funds = funds_line(&pool, user.id).await?;
    let channels = catalogue::list_channels(&pool).await.map_err(crate::ssr::internal)?;
    let models = catalogue::list_models(&pool).await.map_err(crate::ssr::internal)?;
    Ok(KeysData {
        just_created,
        funds,
        keys: keys.into_iter().map(key_view).collect(),
        channels: channels
            .into_iter()
            .map(|c| ChannelOption { label: crate::i18n::tf("{} — {} / $1", &[&crate::i18n::tr(&c.name), &crate::ssr::cny2(c.rate_micros_per_usd.per_dollar())]), code: c.code })
            .collect(),
        models: models.into_iter().filter(|m| m.enabled).map(|m| m.id).collect(),
    })
}

/// Form fields arrive as strings so that an empty optional field is simply ""; the model
/// allow-list is comma-separated (empty = every model).
#[server(endpoint = "keys/create")]
pub async fn create_key(
    name: String,
    channel: String,
    spend_limit: String,
    expires_in_days: String,
    models: String,
    allow_fallback: Option<String>,
    rpm_limit: String,
    concurrency_limit: String,
    // absent from forms that do not offer them (Quick start)
    tpm_limit: Option<String>,
    ip_allow: Option<String>,
    clients: Option<String>,
) -> Result<CreatedKey, ServerFnError> {
    use cloudrouter_core::keys::{self, KeyError, NewKey};
    let user = crate::ssr::require_user().await?;
    let spend_limit_micros = match spend_limit.trim() {
        "" => None,
        s => Some(
            cloudrouter_core::money::MicroCny::parse(s)
                .ok()
                .filter(|v| v.is_positive())
                .ok_or_else(|| ServerFnError::new(crate::i18n::t("The spending limit must be a positive amount in yuan, like 50 or 12.5.")))?,
        ),
    };
    let expires_at = match expires_in_days.trim() {
        "" | "0" => None,
        s => {
            let days: i64 = s.parse().ok().filter(|d| (1..=3650).contains(d)).ok_or_else(|| ServerFnError::new(crate::i18n::t("Expiry must be between 1 and 3650 days.")))?;
            Some(chrono::Utc::now() + chrono::Duration::days(days))
        }
    };
    let limit = |s: &str, what: &'static str| -> Result<Option<i32>, ServerFnError> {
        match s.trim() {
            "" => Ok(None),
            s => s
                .parse()
                .ok()
                .filter(|v: &i32| *v > 0)
                .map(Some)
                .ok_or_else(|| ServerFnError::new(crate::i18n::tf("{} must be a positive whole number.", &[&crate::i18n::t(what)]))),
        }
    };
    let new = NewKey {
        name: name.trim().to_string(),
        channel,
        spend_limit_micros,
        expires_at,
        allowed_models: models.split([',', ' ', '\n']).map(str::trim).filter(|m| !m.is_empty()).map(String::from).collect(),
        allow_fallback: allow_fallback.is_some(),
        rpm_limit: limit(&rpm_limit, "Requests per minute")?,
        concurrency_limit: limit(&concurrency_limit, "Concurrent requests")?,
        tpm_limit: limit(tpm_limit.as_deref().unwrap_or(""), "Tokens per minute")?,
        ip_allow: ip_allow.unwrap_or_default().split([',', ' ', '\n']).map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect(),
        clients: match clients.as_deref().map(str::trim) {
            None | Some("") => keys::Clients::Any,
            Some(c) => c.parse().map_err(|_| ServerFnError::new(crate::i18n::t("Choose which clients may use the key.")))?,
        },
    };
    let (summary, secret) = keys::create(&crate::ssr::pool()?, user.id, new).await.map_err(|e| match e {
        KeyError::InvalidName => ServerFnError::new(crate::i18n::t("Give the key a name of 1 to 100 characters.")),
        KeyError::UnknownChannel => ServerFnError::new(crate::i18n::t("Choose one of the listed channels.")),
        KeyError::UnknownModel(m) => ServerFnError::new(crate::i18n::tf("Unknown model: {}", &[&m])),
        KeyError::InvalidLimit => ServerFnError::new(crate::i18n::t("Limits must be positive.")),
        KeyError::InvalidAddress(a) => ServerFnError::new(crate::i18n::tf("The IP allow-list takes addresses and CIDR blocks, like 203.0.113.7 or 10.0.0.0/8: {}", &[&a])),
        KeyError::Db(e) => crate::ssr::internal(e),
    })?;
    // Never stored: with JavaScript off the server renders the answer to this post from it.
    Ok(CreatedKey { name: summary.name, secret })
}

#[server(endpoint = "keys/revoke")]
pub async fn revoke_key(id: String) -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let id = crate::ssr::parse_uuid(&id, "No such key.")?;
    let revoked = cloudrouter_core::keys::revoke(&crate::ssr::pool()?, user.id, id).await.map_err(crate::ssr::internal)?;
    if revoked { Ok(crate::i18n::t("Key revoked. Requests with it are refused from now on.").into()) } else { Err(ServerFnError::new(crate::i18n::t("No such key."))) }
}
