//! Alerts in the console: staff read the alert history on Operations; a customer sets their
//! low-balance threshold and alert webhook under Settings (its signing secret is shown once).

#[allow(unused_imports)]
use crate::i18n::t;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// One staff alert as the Operations page lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StaffAlertLine {
    pub open: bool,
    /// What it is, in the caller's language.
    pub what: String,
    pub subject: String,
    pub detail: String,
    pub opened: String,
    /// When it resolved ("" while open).
    pub resolved: String,
}

/// Staff alerts and how their delivery goes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertWatch {
    pub alerts: Vec<StaffAlertLine>,
    pub waiting: i64,
    pub retrying: i64,
    pub given_up: i64,
    pub last_error: Option<String>,
}

/// A customer's alert settings and latest alerts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertSettingsView {
    /// The threshold as a decimal ("50.00"), "" when off.
    pub low_balance: String,
    pub webhook_url: Option<String>,
    /// (when, what), newest first.
    pub recent: Vec<(String, String)>,
}

#[cfg(feature = "ssr")]
pub(crate) mod words {
    use crate::i18n::{t, tf};
    use cloudrouter_core::alerts::{AlertKind, Notice};
    use cloudrouter_core::money::{MicroCny, MicroUsd};

    /// What an alert is, in the current language.
    pub fn kind(kind: AlertKind) -> &'static str {
        match kind {
            AlertKind::UpstreamDown => t("Upstream failing"),
            AlertKind::UpstreamAccount => t("Upstream account refused"),
            AlertKind::UsageFlush => t("Usage writer failing"),
            AlertKind::ChannelCapacity => t("Channel at capacity"),
            AlertKind::LowBalance => t("Low balance"),
            AlertKind::Allowance80 => t("Plan allowance 80% used"),
            AlertKind::Allowance100 => t("Plan allowance used up"),
            AlertKind::KeyLimit => t("API key spending limit reached"),
        }
    }

    fn field<'a>(n: &'a Notice, name: &str) -> &'a str {
        n.data.get(name).and_then(|v| v.as_str()).unwrap_or("")
    }

    /// An amount of the notice's data as people read it ("¥12.50", "$80.00").
    fn amount(n: &Notice, name: &str) -> String {
        let v = field(n, name);
        match field(n, "currency") {
            "USD" => MicroUsd::parse(v).map(|a| a.short()).unwrap_or_else(|_| v.to_string()),
            _ => MicroCny::parse(v).map(|a| a.short()).unwrap_or_else(|_| v.to_string()),
        }
    }

    /// The notice's mail (subject, body) in the current language.
    pub fn mail(n: &Notice) -> (String, String) {
        use cloudrouter_core::alerts::AlertStatus;
        let at = n.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        match (n.kind, n.status) {
            (AlertKind::LowBalance, _) => (
                t("Your CloudRouter balance is low").into(),
                tf(
                    "Your balance is {}, below the alert threshold of {} you set. Top up in the console to keep your API keys working.\n\nYou will be told again only after your balance has been back at or above the threshold.",
                    &[&amount(n, "balance"), &amount(n, "threshold")],
                ),
            ),
            (AlertKind::Allowance80 | AlertKind::Allowance100, _) => (
                tf(if n.kind == AlertKind::Allowance80 { "You have used 80% of your {} plan's allowance" } else { "Your {} plan's allowance is used up" }, &[&field(n, "plan")]),
                tf(
                    "This cycle you have used {} of your plan's {} allowance. Beyond it, requests are paid from your balance until the allowance renews with the next cycle.",
                    &[&amount(n, "used"), &amount(n, "allowance")],
                ),
            ),
            (AlertKind::KeyLimit, _) => (
                tf("API key “{}” reached its spending limit", &[&n.subject_name]),
                tf(
                    "Your API key “{}” has spent {} of its {} limit and refuses requests that could go beyond it. Raise or remove the limit under API keys in the console.",
                    &[&n.subject_name, &amount(n, "spent"), &amount(n, "limit")],
                ),
            ),
            (_, AlertStatus::Resolved) => (
                tf("[CloudRouter] Resolved: {} — {}", &[&kind(n.kind), &n.subject_name]),
                tf("Resolved at {}: {} — {}.\n\nLast detail: {}", &[&at, &kind(n.kind), &n.subject_name, &n.detail]),
            ),
            _ => (
                tf("[CloudRouter] Alert: {} — {}", &[&kind(n.kind), &n.subject_name]),
                tf(
                    "Opened at {}: {} — {}.\n\nDetail: {}\n\nYou will be told once more when it resolves. The history is on the staff console's Operations page.",
                    &[&at, &kind(n.kind), &n.subject_name, &n.detail],
                ),
            ),
        }
    }
}

#[server(endpoint = "admin/alerts")]
pub async fn staff_alerts() -> Result<AlertWatch, ServerFnError> {
    use cloudrouter_core::alerts::{delivery, staff};
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let list = staff::history(&pool, 50).await.map_err(crate::ssr::internal)?;
    let h = delivery::health(&pool).await.map_err(crate::ssr::internal)?;
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    Ok(AlertWatch {
        alerts: list
            .into_iter()
            .map(|a| StaffAlertLine {
                open: a.resolved_at.is_none(),
                what: words::kind(a.kind).to_string(),
                subject: a.subject_name,
                detail: a.detail,
                opened: when(a.opened_at),
                resolved: a.resolved_at.map(when).unwrap_or_default(),
            })
            .collect(),
        waiting: h.waiting,
        retrying: h.retrying,
        given_up: h.given_up,
        last_error: h.last_error,
    })
}

#[server(endpoint = "account/alerts")]
pub async fn alert_settings() -> Result<AlertSettingsView, ServerFnError> {
    use cloudrouter_core::alerts::customer;
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let s = customer::settings(&pool, user.id).await.map_err(crate::ssr::internal)?;
    let recent = customer::recent(&pool, user.id, 10).await.map_err(crate::ssr::internal)?;
    Ok(AlertSettingsView {
        low_balance: s.low_balance.map(|a| a.two_places().unwrap_or_else(|| a.decimal())).unwrap_or_default(),
        webhook_url: s.webhook_url,
        recent: recent.iter().map(|n| (n.created_at.format("%Y-%m-%d %H:%M UTC").to_string(), words::mail(n).0)).collect(),
    })
}

/// Sets the low-balance threshold (CNY); empty turns the alert off.
#[server(endpoint = "account/alerts/threshold")]
pub async fn set_low_balance(amount: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::alerts::customer;
    use cloudrouter_core::money::MicroCny;
    let user = crate::ssr::require_user().await?;
    let threshold = match amount.trim() {
        "" => None,
        a => Some(MicroCny::parse(a).ok().filter(|m| m.is_positive()).ok_or_else(|| ServerFnError::new(t("Enter an amount above zero, like 50 or 12.50.")))?),
    };
    customer::set_low_balance(&crate::ssr::pool()?, user.id, threshold).await.map_err(crate::ssr::internal)?;
    Ok(match threshold {
        Some(_) => t("Saved. You will be alerted when your balance goes below it."),
        None => t("Low-balance alerts are off."),
    }
    .into())
}

/// Points alerts at a webhook; answers its new signing secret (shown once).
#[server(endpoint = "account/alerts/webhook")]
pub async fn set_alert_webhook(url: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::alerts::customer::{self, SettingsError};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    customer::set_webhook(&state.pool, &state.crypto, user.id, &url).await.map_err(|e| match e {
        SettingsError::WebhookUrl => ServerFnError::new(t("The webhook address must be an http:// or https:// URL.")),
        e => crate::ssr::internal(e),
    })
}

#[server(endpoint = "account/alerts/webhook/remove")]
pub async fn remove_alert_webhook() -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    cloudrouter_core::alerts::customer::remove_webhook(&crate::ssr::pool()?, user.id).await.map_err(crate::ssr::internal)?;
    Ok(t("The webhook is removed; alerts come by mail only.").into())
}
