//! Per-upstream circuit breaker and live health (per gateway instance, in memory).
//!
//! Closed → (N consecutive failures, or ≥ 50 % failures over the last 20 with ≥ 10 samples) →
//! Open for a cool-down (doubling on each reopening, at most 8×) → Half-open: one real request
//! is let through as a recovery probe; success closes the circuit, failure reopens it.
//!
//! A breaker with a [`Watch`] tells staff (`alerts::Reporter`, which never waits) when its circuit
//! opens — after failures, or because the upstream's account refused — and when it closes again:
//! only on those transitions, never per request.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WINDOW: usize = 100;
const PROBE_STALE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_started: Option<Instant> },
}

struct Inner {
    state: State,
    consecutive_failures: u32,
    reopenings: u32,
    outcomes: VecDeque<bool>,
    latency_ewma_ms: Option<f64>,
    last_error: Option<String>,
    total: u64,
    failed: u64,
}

pub(crate) struct Breaker {
    inner: Mutex<Inner>,
    threshold: u32,
    open_for: Duration,
    watch: Option<Watch>,
}

/// Who is told about a breaker's transitions, and which upstream it guards.
pub(crate) struct Watch {
    pub(crate) alerts: crate::alerts::Reporter,
    pub(crate) upstream: Uuid,
    pub(crate) name: String,
}

/// Live health of one upstream, as seen by this gateway instance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamHealth {
    pub id: Uuid,
    pub name: String,
    /// "closed" (healthy), "open" (skipped) or "half_open" (probing)
    pub circuit: String,
    /// Successes among the last (up to 100) attempts, 0.0–1.0; None before any traffic.
    pub success_rate: Option<f64>,
    pub recent_attempts: u32,
    /// Exponentially weighted time to response headers, ms.
    pub latency_ms: Option<f64>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub total_attempts: u64,
    /// Attempts that failed (errors, timeouts, refusals of its account) since start.
    pub total_failures: u64,
    /// Seconds until the next recovery probe while open.
    pub retry_in_secs: Option<u64>,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                reopenings: 0,
                outcomes: VecDeque::with_capacity(WINDOW),
                latency_ewma_ms: None,
                last_error: None,
                total: 0,
                failed: 0,
            }),
            threshold: threshold.max(1),
            open_for,
            watch: None,
        }
    }

    /// Reports this breaker's openings and closings to staff.
    pub(crate) fn watched(self, watch: Watch) -> Breaker {
        Breaker { watch: Some(watch), ..self }
    }

    /// Cheap check used when ordering candidates (does not take the probe).
    pub(crate) fn maybe_available(&self) -> bool {
        let g = self.inner.lock().unwrap();
        match g.state {
            State::Closed => true,
            State::Open { until } => Instant::now() >= until,
            State::HalfOpen { probe_started } => probe_started.is_none_or(|t| t.elapsed() > PROBE_STALE),
        }
    }

    /// Whether a request may go to this upstream now (takes the probe when half-open).
    pub(crate) fn try_acquire(&self) -> bool {
        let mut g = self.inner.lock().unwrap();
        let now = Instant::now();
        match g.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                g.state = State::HalfOpen { probe_started: Some(now) };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_started } => {
                if probe_started.is_none_or(|t| now.duration_since(t) > PROBE_STALE) {
                    g.state = State::HalfOpen { probe_started: Some(now) };
                    true
                } else {
                    false
                }
            }
        }
    }

    fn push(g: &mut Inner, ok: bool) {
        if g.outcomes.len() == WINDOW {
            g.outcomes.pop_front();
        }
        g.outcomes.push_back(ok);
        g.total += 1;
        g.failed += u64::from(!ok);
    }

    pub(crate) fn success(&self, latency: Duration) {
        let mut g = self.inner.lock().unwrap();
        Self::push(&mut g, true);
        let ms = latency.as_secs_f64() * 1000.0;
        g.latency_ewma_ms = Some(match g.latency_ewma_ms {
            Some(e) => e * 0.8 + ms * 0.2,
            None => ms,
        });
        g.consecutive_failures = 0;
        if !matches!(g.state, State::Closed) {
            g.state = State::Closed;
            g.reopenings = 0;
            drop(g);
            if let Some(w) = &self.watch {
                w.alerts.upstream_recovered(w.upstream);
            }
        }
    }

    /// The upstream's account cannot serve (out of credit, disabled, its credential or permission
    /// refused): open for `open_for`, far longer than a failure's cool-down, with the reason for
    /// staff; then probed like any open circuit.
    pub(crate) fn out_of_rotation(&self, reason: &str, open_for: Duration) {
        let mut g = self.inner.lock().unwrap();
        Self::push(&mut g, false);
        g.consecutive_failures += 1;
        g.last_error = Some(format!("out of rotation: {reason}"));
        g.state = State::Open { until: Instant::now() + open_for };
        drop(g);
        if let Some(w) = &self.watch {
            w.alerts.upstream_account(w.upstream, &w.name, reason);
        }
    }

    pub(crate) fn failure(&self, what: &str) {
        let mut g = self.inner.lock().unwrap();
        Self::push(&mut g, false);
        g.consecutive_failures += 1;
        g.last_error = Some(what.to_string());
        let recent: Vec<bool> = g.outcomes.iter().rev().take(20).copied().collect();
        let fails = recent.iter().filter(|o| !**o).count();
        let trip = match g.state {
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
            State::Closed => g.consecutive_failures >= self.threshold || (recent.len() >= 10 && fails * 2 >= recent.len()),
        };
        if trip {
            let factor = 1u32 << g.reopenings.min(3);
            g.state = State::Open { until: Instant::now() + self.open_for * factor };
            g.reopenings += 1;
            drop(g);
            if let Some(w) = &self.watch {
                w.alerts.upstream_down(w.upstream, &w.name, what);
            }
        }
    }

    pub(crate) fn snapshot(&self, id: Uuid, name: &str) -> UpstreamHealth {
        let g = self.inner.lock().unwrap();
        let now = Instant::now();
        let (circuit, retry_in) = match g.state {
            State::Closed => ("closed", None),
            State::Open { until } if now < until => ("open", Some((until - now).as_secs())),
            State::Open { .. } | State::HalfOpen { .. } => ("half_open", None),
        };
        let n = g.outcomes.len();
        UpstreamHealth {
            id,
            name: name.to_string(),
            circuit: circuit.to_string(),
            success_rate: (n > 0).then(|| g.outcomes.iter().filter(|o| **o).count() as f64 / n as f64),
            recent_attempts: n as u32,
            latency_ms: g.latency_ewma_ms,
            consecutive_failures: g.consecutive_failures,
            last_error: g.last_error.clone(),
            total_attempts: g.total,
            total_failures: g.failed,
            retry_in_secs: retry_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let b = Breaker::new(3, Duration::from_millis(30));
        assert!(b.try_acquire());
        b.failure("500");
        b.failure("500");
        assert!(b.try_acquire());
        b.failure("500");
        assert!(!b.try_acquire(), "open after 3 failures");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.try_acquire(), "probe allowed after cool-down");
        assert!(!b.try_acquire(), "only one probe at a time");
        b.failure("timeout");
        assert!(!b.try_acquire(), "reopened");
        std::thread::sleep(Duration::from_millis(70));
        assert!(b.try_acquire());
        b.success(Duration::from_millis(5));
        assert!(b.try_acquire() && b.try_acquire(), "closed again");
        let h = b.snapshot(Uuid::nil(), "u");
        assert_eq!(h.circuit, "closed");
        assert_eq!(h.recent_attempts, 5);
    }
}
