//! What every request reads and no request waits for: the key cache, the snapshot of the model
//! catalogue, the table of upstream targets with their circuits, conversation overrides; kept
//! current by the NOTIFY listener (reloads), plus the lease maintenance task. Built once by
//! `Gateway::start`.

use super::affinity;
use super::config::GatewayConfig;
use super::health::{Breaker, Watch};
use super::leases::Leases;
use super::token_rate::TokenRates;
use super::request::X_API_KEY;
use super::upstream_client;
use crate::alerts::Reporter;
use crate::catalogue::{self, Channel, Model};
use crate::crypto::Crypto;
use crate::keys::KeyAuth;
use crate::upstreams::{self, UpstreamTarget};
use crate::usage::{UsageWriter, WriterConfig};
use axum::http::{HeaderName, HeaderValue};
use http::Uri;
use hyper_util::client::proxy::matcher::Matcher;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// NOTIFY channel on which database triggers announce changes the gateway caches.
pub const NOTIFY_CHANNEL: &str = "cloudrouter_gateway";

/// The gateway's shared state (one per instance, behind an `Arc`).
pub(super) struct Shared {
    pub(super) pool: PgPool,
    pub(super) config: GatewayConfig,
    crypto: Crypto,
    pub(super) client: upstream_client::Client,
    /// the proxies from the environment, also known to `client`
    proxy: Arc<Matcher>,
    pub(super) keys: moka::future::Cache<[u8; 32], Option<Arc<KeyAuth>>>,
    catalogue: RwLock<Arc<CatalogueSnapshot>>,
    targets: RwLock<Arc<Vec<Arc<Target>>>>,
    breakers: Mutex<HashMap<Uuid, Breakers>>,
    /// conversations moved away from their rendezvous choice (cache-aware routing)
    pub(super) overrides: affinity::Overrides,
    /// true once shutdown's grace period is over: open streams and drains end now
    pub(super) closing: tokio::sync::watch::Sender<bool>,
    /// true from the shutdown signal on: `readyz` answers 503 so load balancers stop sending here
    pub(super) draining: AtomicBool,
    pub(super) leases: Arc<Leases>,
    /// tokens per minute, per key and plan
    pub(super) tokens: TokenRates,
    pub(super) usage: UsageWriter,
    /// staff alerts and customer key-limit notices, reported without waiting
    pub(super) alerts: Reporter,
    pub(super) inflight: AtomicUsize,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The model catalogue (`catalogue.rs`'s tables) as the gateway reads it, replaced whole on reload.
pub(super) struct CatalogueSnapshot {
    models: HashMap<String, Arc<Model>>,
    /// alias → model (`claude-sonnet-4-5` → `claude-sonnet-4-5-20250929`); ids take precedence
    aliases: HashMap<String, Arc<Model>>,
    /// enabled models, newest first (the order of `GET /v1/models`)
    pub(super) listed: Vec<Arc<Model>>,
    /// by code, with the scope of the channel's concurrency lease
    pub(super) channels: HashMap<String, (Channel, String)>,
}

impl CatalogueSnapshot {
    /// A model by its id or one of its aliases.
    pub(super) fn lookup(&self, name: &str) -> Option<&Arc<Model>> {
        self.models.get(name).or_else(|| self.aliases.get(name))
    }
}

/// An upstream's two circuits: `count_tokens` failures (a flood of it, say) never open the
/// circuit that `/v1/messages` depends on.
#[derive(Clone)]
pub(super) struct Breakers {
    pub(super) messages: Arc<Breaker>,
    count_tokens: Arc<Breaker>,
}

/// An upstream (a row of `upstreams.rs`'s table) ready to be sent requests: its URLs and
/// credential header parsed once, its circuits, the scope of its concurrency lease.
pub(super) struct Target {
    pub(super) upstream: UpstreamTarget,
    pub(super) breakers: Breakers,
    /// parsed once; cloning a `Uri` is much cheaper than parsing one per request
    pub(super) messages_url: Uri,
    pub(super) count_url: Uri,
    pub(super) auth_name: HeaderName,
    pub(super) auth_value: HeaderValue,
    /// for plain HTTP through a proxy with credentials (`upstream_client::proxy_authorization`)
    pub(super) proxy_auth: Option<HeaderValue>,
    pub(super) slot_scope: String,
}

impl Target {
    pub(super) fn serves(&self, channel: &str, model: &Model) -> bool {
        let u = &self.upstream;
        u.channels.iter().any(|c| c == channel) && (u.models.is_empty() || u.models.iter().any(|m| *m == model.id || model.aliases.contains(m)))
    }

    pub(super) fn breaker(&self, count_tokens: bool) -> &Arc<Breaker> {
        if count_tokens {
            &self.breakers.count_tokens
        } else {
            &self.breakers.messages
        }
    }
}

impl Shared {
    /// Loads the catalogue, the upstream targets and the conversation overrides, and starts the
    /// NOTIFY listener and the lease maintenance task.
    pub(super) async fn start(pool: PgPool, crypto: Crypto, config: GatewayConfig) -> anyhow::Result<Arc<Shared>> {
        let leases = Leases::register(pool.clone()).await?;
        let (alerts, alerts_task) = Reporter::start(pool.clone(), config.alert_settle);
        // replays the spools of instances that are gone before anything is served
        let usage = UsageWriter::start(
            pool.clone(),
            leases.instance_id,
            WriterConfig {
                batch_rows: config.usage_batch_rows,
                flush_interval: config.usage_flush_interval,
                spool_dir: config.usage_spool_dir.clone(),
                alerts: Some(alerts.clone()),
                ..WriterConfig::default()
            },
        )
        .await?;
        let proxy = Arc::new(Matcher::from_env());
        let client = upstream_client::client(config.connect_timeout, proxy.clone())?;
        let keys = moka::future::Cache::builder()
            .max_capacity(200_000)
            .time_to_live(Duration::from_secs(600))
            .support_invalidation_closures()
            .build();
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            config,
            crypto,
            client,
            proxy,
            keys,
            catalogue: RwLock::new(Arc::new(CatalogueSnapshot {
                models: HashMap::new(),
                aliases: HashMap::new(),
                listed: vec![],
                channels: HashMap::new(),
            })),
            targets: RwLock::new(Arc::new(vec![])),
            breakers: Mutex::new(HashMap::new()),
            overrides: affinity::Overrides::default(),
            closing: tokio::sync::watch::Sender::new(false),
            draining: AtomicBool::new(false),
            leases,
            tokens: TokenRates::new(pool.clone()),
            usage,
            alerts,
            inflight: AtomicUsize::new(0),
            tasks: Mutex::new(vec![alerts_task]),
        });
        // listen before loading, so that no change between the two is missed
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        shared.reload_catalogue().await?;
        shared.reload_targets().await?;
        affinity::load(&shared.pool, &shared.overrides).await?;

        let weak = Arc::downgrade(&shared);
        let listen_task = tokio::spawn(async move {
            loop {
                let r = listener.try_recv().await;
                let Some(shared) = weak.upgrade() else { return };
                match r {
                    Ok(Some(n)) => shared.on_notify(n.payload()).await,
                    Ok(None) => {
                        // connection lost: notifications may have been missed
                        tracing::warn!("gateway NOTIFY connection lost; reconnecting and reloading caches");
                        shared.reload_all().await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "gateway NOTIFY listener error");
                        drop(shared);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if let Some(shared) = weak.upgrade() {
                            shared.reload_all().await;
                        }
                    }
                }
            }
        });
        let weak = Arc::downgrade(&shared);
        let maint_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.leases.return_idle(false).await;
                if n.is_multiple_of(5) {
                    if let Err(e) = shared.leases.heartbeat().await {
                        tracing::warn!(error = %e, "gateway heartbeat failed");
                    }
                }
                n += 1;
            }
        });
        shared.tasks.lock().unwrap().extend([listen_task, maint_task]);
        Ok(shared)
    }

    /// The catalogue as of now (a request keeps the snapshot it started with).
    pub(super) fn catalogue(&self) -> Arc<CatalogueSnapshot> {
        self.catalogue.read().unwrap().clone()
    }

    /// The enabled upstream targets as of now.
    pub(super) fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.read().unwrap().clone()
    }

    /// Waits until no request is in flight, for at most `limit`.
    pub(super) async fn wait_idle(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) async fn reload_all(&self) {
        self.keys.invalidate_all();
        if let Err(e) = self.reload_catalogue().await {
            tracing::warn!(error = %e, "catalogue reload failed");
        }
        if let Err(e) = self.reload_targets().await {
            tracing::warn!(error = %e, "upstream reload failed");
        }
        if let Err(e) = affinity::load(&self.pool, &self.overrides).await {
            tracing::warn!(error = %e, "conversation overrides reload failed");
        }
    }

    async fn on_notify(&self, payload: &str) {
        if let Some(hex) = payload.strip_prefix("key:") {
            let mut h = [0u8; 32];
            if hex::decode_to_slice(hex, &mut h).is_ok() {
                self.keys.invalidate(&h).await;
            }
        } else if let Some(id) = payload.strip_prefix("user:") {
            if let Ok(uid) = id.parse::<Uuid>() {
                let _ = self.keys.invalidate_entries_if(move |_, v| v.as_ref().is_some_and(|k| k.user_id == uid));
            }
        } else if let Some(a) = payload.strip_prefix("affinity:") {
            affinity::apply_notify(&self.overrides, a);
        } else if payload == "upstreams" {
            if let Err(e) = self.reload_targets().await {
                tracing::warn!(error = %e, "upstream reload failed");
            }
        } else if payload == "catalogue" {
            if let Err(e) = self.reload_catalogue().await {
                tracing::warn!(error = %e, "catalogue reload failed");
            }
        }
    }

    async fn reload_catalogue(&self) -> Result<(), sqlx::Error> {
        let models = catalogue::list_models(&self.pool).await?;
        let channels = catalogue::list_channels(&self.pool).await?;
        let mut listed: Vec<Arc<Model>> = vec![];
        let mut map = HashMap::new();
        let mut aliases = HashMap::new();
        for m in models {
            let m = Arc::new(m);
            if m.enabled {
                listed.push(m.clone());
            }
            for a in &m.aliases {
                aliases.insert(a.clone(), m.clone());
            }
            map.insert(m.id.clone(), m);
        }
        aliases.retain(|a, _| !map.contains_key(a));
        listed.sort_by(|a, b| b.released_at.cmp(&a.released_at).then(a.sort.cmp(&b.sort)));
        let channels = channels
            .into_iter()
            .map(|c| {
                let scope = format!("channel:{}", c.code);
                (c.code.clone(), (c, scope))
            })
            .collect();
        let cat = CatalogueSnapshot { models: map, aliases, listed, channels };
        *self.catalogue.write().unwrap() = Arc::new(cat);
        Ok(())
    }

    async fn reload_targets(&self) -> Result<(), sqlx::Error> {
        let rows = upstreams::load_targets(&self.pool, &self.crypto).await?;
        let mut targets = Vec::with_capacity(rows.len());
        let mut known = self.breakers.lock().unwrap();
        for t in rows {
            let new_breaker = || {
                let watch = Watch { alerts: self.alerts.clone(), upstream: t.id, name: t.name.clone() };
                Arc::new(Breaker::new(self.config.breaker_failures, self.config.breaker_open_for).watched(watch))
            };
            let breakers = known
                .entry(t.id)
                .or_insert_with(|| Breakers { messages: new_breaker(), count_tokens: new_breaker() })
                .clone();
            let (auth_name, auth_value) = if t.bearer {
                (http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", t.credential)))
            } else {
                (X_API_KEY.clone(), HeaderValue::from_str(&t.credential))
            };
            let Ok(mut auth_value) = auth_value else {
                tracing::warn!(upstream = %t.name, "upstream credential is not a valid header value; skipped");
                continue;
            };
            auth_value.set_sensitive(true);
            let base = t.base_url.trim_end_matches('/');
            let (Some(messages_url), Some(count_url)) = (
                upstream_client::parse_uri(&format!("{base}/v1/messages")),
                upstream_client::parse_uri(&format!("{base}/v1/messages/count_tokens")),
            ) else {
                tracing::warn!(upstream = %t.name, "upstream base URL is not a valid URL; skipped");
                continue;
            };
            targets.push(Arc::new(Target {
                proxy_auth: upstream_client::proxy_authorization(&self.proxy, &messages_url),
                messages_url,
                count_url,
                slot_scope: format!("upstream:{}", t.id),
                auth_name,
                auth_value,
                breakers,
                upstream: t,
            }));
        }
        drop(known);
        *self.targets.write().unwrap() = Arc::new(targets);
        Ok(())
    }
}
