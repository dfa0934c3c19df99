//! Which upstream, in which order: the candidates for a channel and model (priority, then weight,
//! or the conversation's rendezvous order for cache-aware routing; open circuits left out), the
//! conversation's own upstream, and rebinding a conversation to the upstream that answered it.

use super::affinity::{self, ConvKey};
use super::state::{Shared, Target};
use crate::catalogue::Model;
use std::sync::Arc;
use uuid::Uuid;

impl Shared {
    /// Candidate upstreams for a channel and model: higher priority first; within a priority, a
    /// weighted order — the conversation's rendezvous order when there is a conversation (its
    /// override first), else a weighted random one; open circuits (of the endpoint's breaker)
    /// left out.
    pub(super) fn candidates(&self, channel: &str, model: &Model, count_tokens: bool, conv: Option<ConvKey>) -> Vec<Arc<Target>> {
        use rand::Rng;
        let targets = self.targets();
        let mut rng = rand::thread_rng();
        let mut c: Vec<(i32, f64, Arc<Target>)> = targets
            .iter()
            .filter(|r| r.serves(channel, model) && r.breaker(count_tokens).maybe_available())
            .map(|r| {
                let order = match conv {
                    Some(k) => k.score(r.upstream.id, r.upstream.weight),
                    // Efraimidis–Spirakis: -u^(1/w), smaller first
                    None => -rng.gen_range(f64::EPSILON..1.0f64).powf(1.0 / r.upstream.weight.max(1) as f64),
                };
                (r.upstream.priority, order, r.clone())
            })
            .collect();
        c.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal)));
        let mut out: Vec<Arc<Target>> = c.into_iter().map(|x| x.2).collect();
        if let Some(moved) = conv.and_then(|k| self.overrides.get(k)) {
            if let Some(i) = out.iter().position(|r| r.upstream.id == moved) {
                let r = out.remove(i);
                out.insert(0, r);
            }
        }
        out
    }

    /// The conversation's own upstream: its rendezvous choice among every upstream of the channel
    /// and model at the highest priority, healthy or not.
    pub(super) fn natural_upstream(&self, channel: &str, model: &Model, conv: ConvKey) -> Option<Uuid> {
        let targets = self.targets();
        let serving = targets.iter().filter(|r| r.serves(channel, model));
        let top = serving.clone().map(|r| r.upstream.priority).max()?;
        serving
            .filter(|r| r.upstream.priority == top)
            .min_by(|a, b| conv.score(a.upstream.id, a.upstream.weight).partial_cmp(&conv.score(b.upstream.id, b.upstream.weight)).unwrap_or(std::cmp::Ordering::Equal))
            .map(|r| r.upstream.id)
    }

    /// After an upstream answered a conversation's turn: its cache is there now. Moves away from
    /// the rendezvous choice are bound by an override (shared off the request path); a return to
    /// it drops the override. Returns whether the turn went to the conversation's upstream.
    pub(super) fn rebind(&self, conv: ConvKey, user: Uuid, natural: Option<Uuid>, answered: Uuid, body: &[u8]) -> bool {
        let bound = self.overrides.get(conv);
        let sticky = bound.or(natural) == Some(answered);
        // only a moved conversation needs its cache's lifetime (a scan of the body)
        let ttl = || if memchr::memmem::find(body, b"\"1h\"").is_some() { affinity::TTL_1H } else { affinity::TTL_5M };
        if natural == Some(answered) {
            if bound.is_some() && self.overrides.remove(conv) {
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    if let Err(e) = affinity::forget(&pool, conv).await {
                        tracing::warn!(error = %e, "could not drop a conversation override");
                    }
                });
            }
        } else if bound == Some(answered) {
            self.overrides.touch(conv, ttl());
        } else {
            let expires = affinity::now_ms() + ttl().as_millis() as i64;
            self.overrides.set(conv, user, answered, expires);
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = affinity::persist(&pool, conv, user, answered, expires).await {
                    tracing::warn!(error = %e, "could not share a conversation override");
                }
            });
        }
        sticky
    }
}
