//! Personal preferences beyond the language: the time zone every time is shown in.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeZoneChoice {
    /// The zone chosen in Settings ("" = automatic).
    pub chosen: String,
    /// What automatic means for this person now ("Asia/Shanghai (UTC+08:00)").
    pub automatic: String,
    /// Every zone that can be chosen (IANA names).
    pub choices: Vec<String>,
}

#[server(endpoint = "time_zone")]
pub async fn time_zone_view() -> Result<TimeZoneChoice, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    Ok(TimeZoneChoice {
        chosen: user.time_zone.clone().unwrap_or_default(),
        automatic: crate::ssr::zone_label(crate::ssr::default_zone()),
        choices: cloudrouter_core::zone::choices().into_iter().map(String::from).collect(),
    })
}

/// Saves the zone (`""`: automatic) and reloads Settings, so every label on the page follows.
#[server(endpoint = "set_time_zone")]
pub async fn set_time_zone(zone: String) -> Result<(), ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let zone = zone.trim();
    let chosen = if zone.is_empty() {
        None
    } else {
        Some(cloudrouter_core::zone::parse(zone).ok_or_else(|| ServerFnError::new(crate::i18n::t("That is not a time zone we know.")))?.name())
    };
    cloudrouter_core::accounts::set_time_zone(&crate::ssr::pool()?, user.id, chosen).await.map_err(crate::ssr::internal)?;
    leptos_axum::redirect("/console/settings?saved=time-zone#time-zone");
    Ok(())
}
