//! Models, list prices and channel rates: public for the landing page, editable by staff.

#[allow(unused_imports)]
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelPrice {
    pub code: String,
    pub name: String,
    pub rate: String,
    pub rate_yuan: String,
    pub capacity: i32,
    pub description: String,
    /// How long a conversation's busy upstream is waited for, in milliseconds (0: move at once).
    pub affinity_wait_ms: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub id: String,
    pub display_name: String,
    pub input: String,
    pub output: String,
    pub cache_write_5m: String,
    pub cache_write_1h: String,
    pub cache_read: String,
    /// Long-context and server-tool prices, when the model has them ("Above 200k input tokens: …").
    pub extras: Vec<String>,
    pub enabled: bool,
    pub deprecated: Option<String>,
    /// Its retirement date has passed.
    pub retired: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CatalogueView {
    pub channels: Vec<ChannelPrice>,
    pub models: Vec<ModelPrice>,
}

#[cfg(feature = "ssr")]
async fn load(include_disabled: bool) -> Result<CatalogueView, ServerFnError> {
    use crate::ssr::{cny, internal, usd};
    use cloudrouter_core::catalogue;
    let pool = crate::ssr::pool()?;
    let channels = catalogue::list_channels(&pool).await.map_err(internal)?;
    let models = catalogue::list_models(&pool).await.map_err(internal)?;
    Ok(CatalogueView {
        channels: channels
            .into_iter()
            .map(|c| ChannelPrice {
                rate: cny(c.rate_micros_per_usd.per_dollar()),
                rate_yuan: c.rate_micros_per_usd.per_dollar().decimal(),
                code: c.code,
                name: c.name,
                capacity: c.concurrency_capacity,
                description: c.description,
                affinity_wait_ms: c.affinity_wait_ms,
            })
            .collect(),
        models: models
            .into_iter()
            .filter(|m| include_disabled || m.enabled)
            .map(|m| ModelPrice {
                input: usd(m.input_price),
                output: usd(m.output_price),
                cache_write_5m: usd(m.cache_write_5m_price),
                cache_write_1h: usd(m.cache_write_1h_price),
                cache_read: usd(m.cache_read_price),
                extras: price_extras(&m),
                enabled: m.enabled,
                deprecated: m.deprecated_at.map(|t| t.format("%Y-%m-%d").to_string()),
                retired: m.deprecated_at.is_some_and(|t| t <= chrono::Utc::now()),
                id: m.id,
                display_name: m.display_name,
            })
            .collect(),
    })
}

/// The prices beyond the five token prices, as sentences.
#[cfg(feature = "ssr")]
fn price_extras(m: &cloudrouter_core::catalogue::Model) -> Vec<String> {
    use crate::ssr::usd;
    let mut out = vec![];
    if let Some(threshold) = m.long_context_threshold_tokens {
        out.push(tf(
            "Above {} input tokens the whole request is priced at {} input, {} output, {} / {} cache writes, {} cache reads.",
            &[
                &threshold,
                &usd(m.long_context_input_price),
                &usd(m.long_context_output_price),
                &usd(m.long_context_cache_write_5m_price),
                &usd(m.long_context_cache_write_1h_price),
                &usd(m.long_context_cache_read_price),
            ],
        ));
    }
    out.push(tf(
        "Web search {} and web fetch {} per 1,000 requests.",
        &[&usd(m.web_search_price_per_1k), &usd(m.web_fetch_price_per_1k)],
    ));
    out
}

#[server(endpoint = "catalogue")]
pub async fn public_catalogue() -> Result<CatalogueView, ServerFnError> {
    load(false).await
}

#[server(endpoint = "admin/catalogue")]
pub async fn admin_catalogue() -> Result<CatalogueView, ServerFnError> {
    crate::ssr::require_staff().await?;
    load(true).await
}

#[server(endpoint = "admin/channel")]
pub async fn update_channel(code: String, rate: String, capacity: String, affinity_wait_ms: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let rate = cloudrouter_core::money::CnyPerUsd::parse(&rate)
        .ok()
        .filter(|r| r.micros() > 0)
        .ok_or_else(|| ServerFnError::new(t("The rate must be a positive amount of yuan per dollar, like 0.6.")))?;
    let capacity: i32 = capacity.trim().parse().ok().filter(|c| *c > 0).ok_or_else(|| ServerFnError::new(t("Capacity must be a positive whole number.")))?;
    let wait: i32 = affinity_wait_ms
        .trim()
        .parse()
        .ok()
        .filter(|w| (0..=60_000).contains(w))
        .ok_or_else(|| ServerFnError::new(t("The wait for a conversation's upstream is a whole number of milliseconds from 0 to 60000.")))?;
    let mut tx = crate::ssr::begin().await?;
    let ok = cloudrouter_core::catalogue::update_channel(&mut *tx, &code, rate, capacity, wait).await.map_err(crate::ssr::internal)?;
    if !ok {
        return Err(ServerFnError::new(t("No such channel.")));
    }
    crate::ssr::commit_audited(tx, staff.id, "channel.update", &format!("channel:{code}"), serde_json::json!({"rate_micros_per_usd": rate, "capacity": capacity, "affinity_wait_ms": wait})).await?;
    Ok(tf("Channel {} now charges {} per $1.", &[&label(&code), &crate::ssr::cny(rate.per_dollar())]))
}

/// Forgets where conversations were moved (cache-aware routing), for one customer (`user_id`) or
/// for everyone (empty): they go back to their own upstreams.
#[server(endpoint = "admin/clear_bindings")]
pub async fn clear_bindings(user_id: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let user = match user_id.trim() {
        "" => None,
        id => Some(id.parse::<uuid::Uuid>().map_err(|_| ServerFnError::new(t("No such user.")))?),
    };
    let n = cloudrouter_core::gateway::clear_affinity(&crate::ssr::pool()?, staff.id, user).await.map_err(crate::ssr::internal)?;
    Ok(tf("Conversation bindings cleared ({} moved conversations go back to their own upstreams).", &[&n]))
}

/// Sets a model's list prices (US dollars per million tokens) and whether it is offered.
#[server(endpoint = "admin/model")]
pub async fn update_model(
    id: String,
    input: String,
    output: String,
    cache_write_5m: String,
    cache_write_1h: String,
    cache_read: String,
    enabled: Option<String>,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::{catalogue, money::MicroUsd};
    let staff = crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let mut model = catalogue::get_model(&pool, &id).await.map_err(crate::ssr::internal)?.ok_or_else(|| ServerFnError::new(t("No such model.")))?;
    let price = |s: &str| -> Result<MicroUsd, ServerFnError> {
        MicroUsd::parse(s.trim().trim_start_matches('$'))
            .ok()
            .filter(|p| !p.is_negative())
            .ok_or_else(|| ServerFnError::new(t("Prices are dollar amounts per million tokens, like 3 or 0.30.")))
    };
    model.input_price = price(&input)?;
    model.output_price = price(&output)?;
    model.cache_write_5m_price = price(&cache_write_5m)?;
    model.cache_write_1h_price = price(&cache_write_1h)?;
    model.cache_read_price = price(&cache_read)?;
    model.enabled = enabled.is_some();
    let mut tx = crate::ssr::begin().await?;
    catalogue::upsert_model(&mut *tx, &model).await.map_err(crate::ssr::internal)?;
    crate::ssr::commit_audited(tx, staff.id, "model.update", &format!("model:{id}"), serde_json::to_value(&model).unwrap_or_default()).await?;
    Ok(tf("Prices of {} saved.", &[&id]))
}
