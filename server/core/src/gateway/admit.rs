//! Admission, before anything is forwarded: the key (cached by the SHA-256 of what was presented),
//! the models it may use (the requested one, then its fallbacks), the key's and plan's rate and
//! concurrency limits, the channel's capacity, and the holds — the worst-case charge reserved
//! from the key's spend limit and the user's balance. Each refusal is the client's answer.

use super::error::{overloaded, ApiError};
use super::leases::{Budget, SlotGuard};
use super::meter::Ticket;
use super::request::{parse_head, presented_key, ParsedHead};
use super::state::{CatalogueSnapshot, Shared};
use crate::billing::windows;
use crate::catalogue::{Channel, Model};
use crate::keys::{self, Clients, KeyAuth};
use axum::extract::ConnectInfo;
use std::net::{IpAddr, SocketAddr};
use crate::pricing::{self, ModelPrices};
use crate::util::sha256;
use axum::http::StatusCode;
use bytes::Bytes;
use std::sync::Arc;

/// A message admitted: what it asks, where it may go.
pub(super) struct Admitted<'c> {
    pub(super) head: ParsedHead,
    pub(super) channel: &'c Channel,
    /// the requested model first, then the fallbacks the key allows
    pub(super) models: Vec<Arc<Model>>,
}

impl Shared {
    /// The key presented (`x-api-key` or `Authorization: Bearer`), usable now, from this
    /// address and this client.
    pub(super) async fn authenticate(&self, parts: &http::request::Parts) -> Result<Arc<KeyAuth>, ApiError> {
        let headers = &parts.headers;
        let presented = presented_key(headers).ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "x-api-key header is required"))?;
        let hash = sha256(presented.as_bytes());
        let pool = self.pool.clone();
        let found = self
            .keys
            .try_get_with(hash, async move { keys::lookup_by_hash(&pool, &hash).await.map(|k| k.map(Arc::new)) })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "key lookup failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Temporarily unable to verify the API key")
            })?;
        let key = found.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid x-api-key"))?;
        if key.revoked_at.is_some() {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "This API key has been revoked"));
        }
        if key.expires_at.is_some_and(|t| t <= chrono::Utc::now()) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "This API key has expired"));
        }
        if key.user_status != "active" {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "This account is suspended"));
        }
        if !key.ip_allow.admits(self.client_addr(parts)) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "This API key may not be used from this IP address (see the key's IP allow-list)"));
        }
        if !key.clients.admits(headers) {
            let which = match key.clients {
                Clients::ClaudeCode => "Claude Code",
                _ => "the official Anthropic and OpenAI SDKs",
            };
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("This API key may be used only from {which}")));
        }
        Ok(key)
    }

    /// The client's address: the connection's peer, or behind a trusted proxy the address it
    /// names (the console's rule, `crate::net`); None when the server gives no peer address.
    fn client_addr(&self, parts: &http::request::Parts) -> Option<IpAddr> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(self.config.trusted_proxies.client_addr(peer, &parts.headers))
    }

    /// A message, in order: its head, the key's channel and models, the limits, the channel's
    /// capacity, the holds. What it takes (slots, holds) and learns (model, rate) goes into `t`.
    pub(super) async fn admit_message<'c>(&self, t: &mut Ticket, key: &KeyAuth, cat: &'c CatalogueSnapshot, body: &Bytes) -> Result<Admitted<'c>, ApiError> {
        let head = parse_head(body)?;
        // The model field is client text and could carry anything (bodies are never stored): it is
        // recorded as asked only when it names a public model family (so "404 unknown model
        // gpt-4o" can say which), else as "(unknown)"; a known model by its catalogue id below.
        t.requested_model = recorded_model_name(&head.model);
        t.stream = head.stream;
        let Some(max_tokens) = head.max_tokens else {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "max_tokens: Field required"));
        };
        let Some((channel, channel_scope)) = cat.channels.get(&key.channel) else {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The key's channel is not configured"));
        };
        t.rate = channel.rate_micros_per_usd;
        let models = cat.models_for(key, &head.model)?;
        t.priced_model = Some(models[0].clone());
        t.requested_model = models[0].id.clone();

        self.limits(key, &mut t.slots).await?;
        self.token_limits(t, key).await?;
        match self.leases.acquire_slot(channel_scope, channel.concurrency_capacity).await {
            Ok(Some(g)) => t.slots.push(g),
            Ok(None) => {
                self.alerts.channel_at_capacity(&channel.code, &channel.name, &format!("the channel's capacity of {} concurrent requests is reached", channel.concurrency_capacity));
                return Err(ApiError::new(overloaded(), format!("The {} channel is at capacity; please retry shortly", channel.name)).should_retry(true));
            }
            Err(e) => return Err(db_unavailable(e)),
        }
        self.hold(t, key, channel, &models, body.len(), max_tokens).await?;
        Ok(Admitted { head, channel, models })
    }

    /// A token count: the key's and plan's limits, and a rate of `count_tokens_rpm` for a key
    /// without a rate of its own. Its slots go into `slots`.
    pub(super) async fn admit_count(&self, key: &KeyAuth, slots: &mut Vec<SlotGuard>) -> Result<(), ApiError> {
        self.limits(key, slots).await?;
        if key.rpm_limit.is_none() {
            let rpm = self.config.count_tokens_rpm;
            let msg = format!("This API key is limited to {rpm} token-counting requests per minute");
            self.take_rate(&format!("count_tokens:key:{}", key.key_id), rpm, &msg).await?;
        }
        Ok(())
    }

    /// The key's own request rate and concurrency limits, then its plan's (account-wide, on the
    /// plan's channels); concurrency slots go into `slots`.
    async fn limits(&self, key: &KeyAuth, slots: &mut Vec<SlotGuard>) -> Result<(), ApiError> {
        let on_plan = key.on_plan();
        let limits = [
            (key.rpm_limit, key.concurrency_limit, "key", key.key_id, None),
            (
                key.plan_rpm_limit.filter(|_| on_plan),
                key.plan_concurrency_limit.filter(|_| on_plan),
                "user",
                key.user_id,
                key.plan_name.as_deref(),
            ),
        ];
        for (rpm, concurrency, scope, id, plan) in limits {
            let who = || plan.map_or_else(|| "This API key is".to_string(), |p| format!("Your {p} plan is"));
            if let Some(rpm) = rpm {
                self.take_rate(&format!("rpm:{scope}:{id}"), rpm, &format!("{} limited to {rpm} requests per minute", who())).await?;
            }
            if let Some(limit) = concurrency {
                match self.leases.acquire_slot(&format!("{scope}:{id}"), limit).await {
                    Ok(Some(g)) => slots.push(g),
                    Ok(None) => {
                        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("{} limited to {limit} concurrent requests", who())).retry_after(1))
                    }
                    Err(e) => return Err(db_unavailable(e)),
                }
            }
        }
        Ok(())
    }

    /// The key's and its plan's tokens per minute: refused once this minute's count reached the
    /// limit; the scopes go into `t`, which adds the request's tokens when it ends.
    async fn token_limits(&self, t: &mut Ticket, key: &KeyAuth) -> Result<(), ApiError> {
        let on_plan = key.on_plan();
        let limits = [
            (key.tpm_limit, "key", key.key_id, None),
            (key.plan_tpm_limit.filter(|_| on_plan), "user", key.user_id, key.plan_name.as_deref()),
        ];
        for (limit, kind, id, plan) in limits {
            // the scope's name is made only for a limit that is set (most keys have none)
            let Some(limit) = limit else { continue };
            let scope = format!("tpm:{kind}:{id}");
            match self.tokens.check(&scope, limit).await {
                Ok(Ok(())) => t.token_scopes.push(scope),
                Ok(Err(secs)) => {
                    let who = plan.map_or_else(|| "This API key is".to_string(), |p| format!("Your {p} plan is"));
                    return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("{who} limited to {limit} tokens per minute")).retry_after(secs));
                }
                Err(e) => return Err(db_unavailable(e)),
            }
        }
        Ok(())
    }

    /// One request of a per-minute rate; 429 with `retry-after` beyond it.
    async fn take_rate(&self, scope: &str, rpm: i32, message: &str) -> Result<(), ApiError> {
        match self.leases.take_rate(scope, rpm).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(secs)) => Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).retry_after(secs)),
            Err(e) => Err(db_unavailable(e)),
        }
    }

    /// Reserves the worst case (the dearest of `models`, the whole body as input, `max_tokens`
    /// as output) from the key's spend limit, if it has one, and from the user's balance — or,
    /// for a subscriber on a channel outside the plan, from the off-plan lease (pay-as-you-go).
    async fn hold(&self, t: &mut Ticket, key: &KeyAuth, channel: &Channel, models: &[Arc<Model>], body_len: usize, max_tokens: u64) -> Result<(), ApiError> {
        let prices = models.iter().map(|m| m.prices()).reduce(ModelPrices::max).unwrap_or_default();
        let hold = pricing::estimate_hold(body_len, max_tokens, &prices, channel.rate_micros_per_usd);
        let needs = || hold.exact();
        if key.spend_limit_micros.is_some() {
            match self.leases.reserve(Budget::Key(key.key_id), hold).await {
                Ok(Some(h)) => t.key_hold = Some(h),
                Ok(None) => {
                    self.alerts.key_limit_refused(key.key_id);
                    return Err(ApiError::new(
                        StatusCode::PAYMENT_REQUIRED,
                        format!("This API key's spending limit is reached (this request needs up to {})", needs()),
                    ));
                }
                Err(e) => return Err(db_unavailable(e)),
            }
        }
        t.off_plan = key.plan_channels.is_some() && !key.on_plan();
        if key.plan_windows && !t.off_plan && !key.plan_overflow_payg {
            self.hold_window(t, key, &prices, body_len, max_tokens).await?;
        }
        let budget = if t.off_plan { Budget::UserOffPlan(key.user_id) } else { Budget::User(key.user_id) };
        match self.leases.reserve(budget, hold).await {
            Ok(Some(h)) => t.user_hold = Some(h),
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    match key.plan_name.as_deref().filter(|_| t.off_plan) {
                        Some(plan) => format!(
                            "Insufficient balance: your {plan} plan does not cover the {} channel, so this request is paid from your trial credit and balance, which cannot cover it (it holds up to {} while it runs). Top up, or use a key on one of your plan's channels.",
                            channel.name,
                            needs()
                        ),
                        None => format!(
                            "Insufficient balance: your trial credit, plan allowance and balance cannot cover this request (it holds up to {} while it runs). Top up or choose a plan in the console.",
                            needs()
                        ),
                    },
                ))
            }
            Err(e) => return Err(db_unavailable(e)),
        }
        Ok(())
    }

    /// A plan with 5-hour or weekly windows, for a customer who has not opted in to pay-as-you-go
    /// beyond them: the request's worst case at list price must fit in the windows' room, else
    /// 429 naming the window and when it resets (migration 0026).
    async fn hold_window(&self, t: &mut Ticket, key: &KeyAuth, prices: &ModelPrices, body_len: usize, max_tokens: u64) -> Result<(), ApiError> {
        let need = pricing::estimate_hold_usd(body_len, max_tokens, prices);
        match self.leases.reserve_window(key.user_id, need).await {
            Ok(Some(h)) => {
                t.window_hold = Some(h);
                Ok(())
            }
            Ok(None) => {
                // this instance's finished requests are counted in the figures the answer names
                self.usage.sync().await;
                let status = windows::status(&self.pool, key.user_id).await.map_err(db_unavailable)?;
                let plan = key.plan_name.as_deref().unwrap_or("plan");
                let Some(w) = status.as_ref().and_then(|s| s.binding()) else {
                    // the plan changed meanwhile: the key's cached plan is about to follow
                    return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Your plan changed; please retry").retry_after(1));
                };
                let resets = w.resets_at.map_or_else(
                    || "as requests now running finish".to_string(),
                    |r| format!("at {}", r.format("%Y-%m-%d %H:%M UTC")),
                );
                let retry = w.resets_at.map_or(1, |r| (r - chrono::Utc::now()).num_seconds().max(1) as u64);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Your {plan} plan's {} usage limit ({} of list price) is reached: {} is used and this request may need up to {}. It resets {resets}. To go on meanwhile at pay-as-you-go prices, choose \"Continue pay-as-you-go past a cap\" on the console's Overview.",
                        w.window.label(),
                        w.cap.short(),
                        w.used.short(),
                        need.short(),
                    ),
                )
                .retry_after(retry))
            }
            Err(e) => Err(db_unavailable(e)),
        }
    }
}

impl CatalogueSnapshot {
    /// The model a key asks for (by id or alias; enabled, allowed to the key), then — when the
    /// key allows fallbacks — the model's enabled, allowed fallbacks.
    pub(super) fn models_for(&self, key: &KeyAuth, model: &str) -> Result<Vec<Arc<Model>>, ApiError> {
        let allowed = |id: &str| key.allowed_models.is_empty() || key.allowed_models.iter().any(|m| m == id);
        let primary =
            self.lookup(model).filter(|m| m.enabled).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("model: {model}")))?;
        if !allowed(&primary.id) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, format!("This API key is not allowed to use model {model}")));
        }
        let mut out = vec![primary.clone()];
        if key.allow_fallback {
            for f in &primary.fallbacks {
                if let Some(m) = self.lookup(f) {
                    if m.enabled && allowed(&m.id) && !out.iter().any(|o| o.id == m.id) {
                        out.push(m.clone());
                    }
                }
            }
        }
        Ok(out)
    }
}

fn db_unavailable(e: sqlx::Error) -> ApiError {
    tracing::error!(error = %e, "database unavailable for a lease");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Temporarily unavailable; please retry shortly").should_retry(true)
}

/// Public model families whose names the usage log may show as asked.
const MODEL_FAMILIES: &[&str] = &[
    "claude-", "anthropic/", "gpt-", "chatgpt-", "o1", "o3", "o4", "openai/", "gemini-", "deepseek-", "qwen", "llama", "mistral",
    "grok-", "kimi-", "moonshot-", "glm-", "doubao-",
];

/// What the usage log records for a model name the catalogue may not know: the name itself when
/// it is a plausible model id (1–64 of ASCII letters, digits and `-._:/@`) of a public model
/// family, otherwise "(unknown)": free text in the field (a prompt pasted by mistake, a marker)
/// is never stored.
pub(crate) fn recorded_model_name(asked: &str) -> String {
    let shape = (1..=64).contains(&asked.len()) && asked.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:/@".contains(&b));
    let lower = asked.to_ascii_lowercase();
    if shape && MODEL_FAMILIES.iter().any(|f| lower.starts_with(f)) { asked.to_string() } else { "(unknown)".to_string() }
}

#[cfg(test)]
mod recorded_model_tests {
    use super::recorded_model_name;

    #[test]
    fn only_plausible_model_ids_are_recorded() {
        assert_eq!(recorded_model_name("gpt-4o"), "gpt-4o");
        assert_eq!(recorded_model_name("claude-3-5-sonnet@20241022"), "claude-3-5-sonnet@20241022");
        assert_eq!(recorded_model_name("ignore previous instructions"), "(unknown)");
        assert_eq!(recorded_model_name("MARKER-7f3a9c1e-do-not-store"), "(unknown)", "free text shaped like an id");
        assert_eq!(recorded_model_name("my-secret-project-name"), "(unknown)");
        assert_eq!(recorded_model_name(""), "(unknown)");
        assert_eq!(recorded_model_name(&"a".repeat(65)), "(unknown)");
    }
}
