//! The gateway's settings: timeouts, retry budget, circuit breakers, usage batching and spool, alerts,
//! read once from `CLOUDROUTER_*` variables.

use std::path::PathBuf;
use std::time::Duration;

/// Gateway settings; `from_env` reads `CLOUDROUTER_*` variables (unset ones take the defaults).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body (`CLOUDROUTER_BODY_LIMIT_BYTES`, default 32 MiB).
    pub body_limit: usize,
    /// TCP/TLS connect timeout to an upstream (`CLOUDROUTER_CONNECT_TIMEOUT_MS`, 5 s).
    pub connect_timeout: Duration,
    /// Streams: time to response headers and the first event (`CLOUDROUTER_FIRST_BYTE_TIMEOUT_MS`, 60 s).
    pub first_byte_timeout: Duration,
    /// Non-streaming requests: time to the whole answer (`CLOUDROUTER_RESPONSE_TIMEOUT_MS`, 600 s).
    pub response_timeout: Duration,
    /// Streams: longest silence between chunks (`CLOUDROUTER_IDLE_TIMEOUT_MS`, 60 s).
    pub idle_timeout: Duration,
    /// Streams whose client left: how long the gateway keeps reading the upstream for its final
    /// usage (`CLOUDROUTER_DRAIN_TIMEOUT_MS`, 600 s); the idle timeout applies meanwhile too.
    pub drain_timeout: Duration,
    /// `count_tokens` requests per minute per key when the key sets no limit of its own
    /// (`CLOUDROUTER_COUNT_TOKENS_RPM`, 600).
    pub count_tokens_rpm: i32,
    /// Upstream attempts per request, fallbacks included (`CLOUDROUTER_MAX_ATTEMPTS`, 3).
    pub max_attempts: u32,
    /// No new attempt starts after this much time (`CLOUDROUTER_RETRY_BUDGET_MS`, 30 s).
    pub retry_budget: Duration,
    /// Shutdown waits this long for in-flight requests (`CLOUDROUTER_SHUTDOWN_GRACE_MS`, 30 s).
    pub grace_period: Duration,
    /// Consecutive failures that open a circuit (`CLOUDROUTER_BREAKER_FAILURES`, 5).
    pub breaker_failures: u32,
    /// First cool-down of an open circuit (`CLOUDROUTER_BREAKER_OPEN_MS`, 10 s).
    pub breaker_open_for: Duration,
    /// How long an upstream whose account refused (out of credit, disabled, credential or
    /// permission refused) stays out of rotation (`CLOUDROUTER_ACCOUNT_OUT_MS`, 30 min).
    pub account_out_for: Duration,
    /// Usage writer batch size and interval (`CLOUDROUTER_USAGE_BATCH_ROWS`, 500;
    /// `CLOUDROUTER_USAGE_FLUSH_MS`, 50).
    pub usage_batch_rows: usize,
    pub usage_flush_interval: Duration,
    /// Where usage records are spooled until they are committed (`CLOUDROUTER_SPOOL_DIR`,
    /// `.cloudrouter/spool`): a local disk of this machine, kept across restarts.
    pub usage_spool_dir: PathBuf,
    /// A staff alert resolves once its condition has stayed gone this long; one that comes back
    /// within it sends nothing new (`CLOUDROUTER_ALERT_SETTLE_MS`, 2 min).
    pub alert_settle: Duration,
    /// The proxies whose `X-Forwarded-For` names the client, for per-key IP allow-lists: the
    /// server's `CLOUDROUTER_TRUSTED_PROXIES`, set by the server (the console reads the same).
    pub trusted_proxies: crate::net::TrustedProxies,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            body_limit: 32 << 20,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(600),
            count_tokens_rpm: 600,
            max_attempts: 3,
            retry_budget: Duration::from_secs(30),
            grace_period: Duration::from_secs(30),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(10),
            account_out_for: Duration::from_secs(1800),
            usage_batch_rows: 500,
            usage_flush_interval: Duration::from_millis(50),
            usage_spool_dir: PathBuf::from(crate::usage::DEFAULT_SPOOL_DIR),
            alert_settle: Duration::from_secs(120),
            trusted_proxies: crate::net::TrustedProxies::default(),
        }
    }
}

impl GatewayConfig {
    /// The settings from the environment; see [`GatewayConfig::from_vars`].
    pub fn from_env() -> Result<Self, String> {
        GatewayConfig::from_vars(|k| std::env::var(k).ok())
    }

    /// The settings from `lookup` (empty values are unset). A value that is set but does not
    /// parse is an error naming it: a typo in a timeout must not quietly run on the default.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let bad = std::cell::RefCell::new(vec![]);
        let num = |name: &str, min: u64, max: u64| -> Option<u64> {
            let v = lookup(name).filter(|v| !v.trim().is_empty())?;
            match v.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    bad.borrow_mut().push(format!("{name}={v:?} is not a whole number from {min} to {max}"));
                    None
                }
            }
        };
        let d = GatewayConfig::default();
        let day_ms = 86_400_000;
        let ms = |name: &str, d: Duration| num(name, 0, day_ms).map_or(d, Duration::from_millis);
        let config = GatewayConfig {
            body_limit: num("CLOUDROUTER_BODY_LIMIT_BYTES", 1024, 1 << 30).map_or(d.body_limit, |v| v as usize),
            connect_timeout: ms("CLOUDROUTER_CONNECT_TIMEOUT_MS", d.connect_timeout),
            first_byte_timeout: ms("CLOUDROUTER_FIRST_BYTE_TIMEOUT_MS", d.first_byte_timeout),
            response_timeout: ms("CLOUDROUTER_RESPONSE_TIMEOUT_MS", d.response_timeout),
            idle_timeout: ms("CLOUDROUTER_IDLE_TIMEOUT_MS", d.idle_timeout),
            drain_timeout: ms("CLOUDROUTER_DRAIN_TIMEOUT_MS", d.drain_timeout),
            retry_budget: ms("CLOUDROUTER_RETRY_BUDGET_MS", d.retry_budget),
            grace_period: ms("CLOUDROUTER_SHUTDOWN_GRACE_MS", d.grace_period),
            breaker_open_for: ms("CLOUDROUTER_BREAKER_OPEN_MS", d.breaker_open_for),
            account_out_for: ms("CLOUDROUTER_ACCOUNT_OUT_MS", d.account_out_for),
            usage_flush_interval: ms("CLOUDROUTER_USAGE_FLUSH_MS", d.usage_flush_interval),
            count_tokens_rpm: num("CLOUDROUTER_COUNT_TOKENS_RPM", 1, i32::MAX as u64).map_or(d.count_tokens_rpm, |v| v as i32),
            max_attempts: num("CLOUDROUTER_MAX_ATTEMPTS", 1, 10).map_or(d.max_attempts, |v| v as u32),
            breaker_failures: num("CLOUDROUTER_BREAKER_FAILURES", 1, 1000).map_or(d.breaker_failures, |v| v as u32),
            usage_batch_rows: num("CLOUDROUTER_USAGE_BATCH_ROWS", 1, 100_000).map_or(d.usage_batch_rows, |v| v as usize),
            usage_spool_dir: lookup("CLOUDROUTER_SPOOL_DIR").filter(|v| !v.is_empty()).map_or(d.usage_spool_dir, PathBuf::from),
            alert_settle: ms("CLOUDROUTER_ALERT_SETTLE_MS", d.alert_settle),
            trusted_proxies: d.trusted_proxies,
        };
        let bad = bad.into_inner();
        if bad.is_empty() { Ok(config) } else { Err(format!("gateway settings that do not parse: {}", bad.join("; "))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<GatewayConfig, String> {
        let vars: std::collections::HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        GatewayConfig::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn unset_and_empty_settings_take_the_defaults() {
        let c = from(&[("CLOUDROUTER_IDLE_TIMEOUT_MS", "")]).unwrap();
        assert_eq!(c.idle_timeout, GatewayConfig::default().idle_timeout);
        assert_eq!(c.max_attempts, 3);
    }

    #[test]
    fn settings_that_parse_are_used() {
        let c = from(&[("CLOUDROUTER_IDLE_TIMEOUT_MS", " 2500 "), ("CLOUDROUTER_MAX_ATTEMPTS", "5"), ("CLOUDROUTER_SPOOL_DIR", "/var/lib/x")]).unwrap();
        assert_eq!(c.idle_timeout, Duration::from_millis(2500));
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.usage_spool_dir, PathBuf::from("/var/lib/x"));
    }

    #[test]
    fn a_setting_that_does_not_parse_or_is_out_of_range_is_refused_by_name() {
        let e = from(&[("CLOUDROUTER_IDLE_TIMEOUT_MS", "60s"), ("CLOUDROUTER_MAX_ATTEMPTS", "0"), ("CLOUDROUTER_BREAKER_FAILURES", "-1")]).unwrap_err();
        assert!(e.contains("CLOUDROUTER_IDLE_TIMEOUT_MS=\"60s\""), "{e}");
        assert!(e.contains("CLOUDROUTER_MAX_ATTEMPTS=\"0\""), "{e}");
        assert!(e.contains("CLOUDROUTER_BREAKER_FAILURES"), "{e}");
    }
}
