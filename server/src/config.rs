//! Runtime settings, from the environment (with defaults that suit a local run).

use std::net::{IpAddr, SocketAddr};

#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    /// Where customers reach this server; used in snippets and to decide whether cookies are Secure.
    pub public_url: String,
    /// `CLOUDROUTER_SECRET` ("" when unset): encrypts upstream credentials at rest and signs
    /// sandbox payments. Required to serve; see [`Config::check_secret`].
    pub secret: String,
    pub addr: SocketAddr,
    /// `CLOUDROUTER_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` names the client
    /// (comma-separated IPs and CIDRs; none by default). See [`Config::trusted_proxies`].
    pub trusted_proxies: String,
    /// `CLOUDROUTER_HASH_SLOTS`: password hashes (19 MiB each) computed at once; one per core by default.
    pub hash_slots: usize,
    /// `CLOUDROUTER_SMTP_URL`: where sign-up and password-reset mail is sent (see [`Config::mail`]).
    pub smtp_url: Option<String>,
    /// `CLOUDROUTER_MAIL_FROM`: the sender of that mail; `CloudRouter <no-reply@host of the public URL>` by default.
    pub mail_from: Option<String>,
    /// `CLOUDROUTER_METRICS_TOKEN`: `GET /metrics` answers only with `Authorization: Bearer
    /// <this>`; unset, `/metrics` is 404.
    pub metrics_token: Option<String>,
    /// `CLOUDROUTER_UNREADY_DELAY_MS` (2000 by default): on SIGTERM, how long `/readyz` answers 503
    /// "draining" while everything still serves, before new connections are refused, so that a
    /// load balancer's health check sees the instance go first.
    pub unready_delay: std::time::Duration,
    /// `CLOUDROUTER_DB_POOL_SIZE` (20 by default): Postgres connections this instance opens at
    /// most; with N instances the database needs N times this (and Postgres' default allows 100).
    pub db_pool_size: u32,
    /// `CLOUDROUTER_USAGE_RETENTION_MONTHS` (13 by default; 0 keeps everything): whole months of
    /// request records kept; older monthly partitions are dropped, the hourly and daily rollups
    /// (charts, totals, the status page) are kept. See docs/gateway.md, "Retention".
    pub usage_retention_months: u32,
    /// `CLOUDROUTER_ALERT_WEBHOOK_URL`: where staff alerts are POSTed (signed with
    /// `CLOUDROUTER_ALERT_WEBHOOK_SECRET`, required with it). See [`Config::alert_delivery`].
    pub alert_webhook_url: Option<String>,
    pub alert_webhook_secret: Option<String>,
    /// `CLOUDROUTER_ALERT_EMAILS`: who is mailed staff alerts (comma-separated); every active
    /// staff account when unset.
    pub alert_emails: Vec<String>,
    /// `CLOUDROUTER_ALERT_RETRY_MS` (30000): the first wait after a failed alert webhook, doubled
    /// at each further failure (eight tries in all).
    pub alert_retry: std::time::Duration,
    /// Settings that were set but do not parse: the server refuses to start on them rather than
    /// quietly running on a default (see [`Config::check_parsed`]).
    pub unparsed: Vec<String>,
}

/// Secrets known to the world (the old built-in development value among them): refused for a
/// deployment others can reach.
pub const KNOWN_SECRETS: &[&str] = &[
    "cloudrouter-development-secret-change-me",
    "changeme",
    "change-me",
    "secret",
    "password",
    "cloudrouter",
    "test-server-secret",
    "billing-test-secret",
    "testbed-secret",
];

/// Why a secret is too weak for a deployment others can reach, if it is: known, shorter than 32
/// characters, or fewer than 10 different characters (a repeated word).
pub fn secret_weakness(secret: &str) -> Option<&'static str> {
    let s = secret.trim();
    let distinct = s.chars().collect::<std::collections::BTreeSet<_>>().len();
    if KNOWN_SECRETS.iter().any(|k| k.eq_ignore_ascii_case(s)) {
        Some("it is a published value")
    } else if s.chars().count() < 32 {
        Some("it is shorter than 32 characters")
    } else if distinct < 10 {
        Some("it has fewer than 10 different characters")
    } else {
        None
    }
}

impl Config {
    pub fn from_env(addr: SocketAddr) -> Config {
        Config::from_vars(addr, |k| std::env::var(k).ok())
    }

    /// The settings from `lookup` (the environment, or a test's table); empty values are unset.
    pub fn from_vars(addr: SocketAddr, lookup: impl Fn(&str) -> Option<String>) -> Config {
        let var = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let mut unparsed = vec![];
        // a set value that does not parse (or is out of range) is noted, and the default taken
        let mut number = |name: &str, range: std::ops::RangeInclusive<u64>, default: u64| match var(name) {
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if range.contains(&n) => n,
                _ => {
                    unparsed.push(format!("{name}={v:?} is not a whole number from {} to {}", range.start(), range.end()));
                    default
                }
            },
            None => default,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let hash_slots = number("CLOUDROUTER_HASH_SLOTS", 1..=1024, cores) as usize;
        let unready_delay = std::time::Duration::from_millis(number("CLOUDROUTER_UNREADY_DELAY_MS", 0..=600_000, 2000));
        let db_pool_size = number("CLOUDROUTER_DB_POOL_SIZE", 2..=1000, 20) as u32;
        let usage_retention_months = number("CLOUDROUTER_USAGE_RETENTION_MONTHS", 0..=1200, 13) as u32;
        let alert_retry = std::time::Duration::from_millis(number("CLOUDROUTER_ALERT_RETRY_MS", 1..=86_400_000, 30_000));
        Config {
            alert_webhook_url: var("CLOUDROUTER_ALERT_WEBHOOK_URL").map(|v| v.trim().to_string()),
            alert_webhook_secret: var("CLOUDROUTER_ALERT_WEBHOOK_SECRET").map(|v| v.trim().to_string()),
            alert_emails: var("CLOUDROUTER_ALERT_EMAILS")
                .map(|v| v.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect())
                .unwrap_or_default(),
            alert_retry,
            metrics_token: var("CLOUDROUTER_METRICS_TOKEN").map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            unready_delay,
            db_pool_size,
            usage_retention_months,
            database_url: var("DATABASE_URL").unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/cloudrouter".into()),
            public_url: var("CLOUDROUTER_PUBLIC_URL").unwrap_or_else(|| format!("http://{addr}")),
            secret: var("CLOUDROUTER_SECRET").map(|s| s.trim().to_string()).unwrap_or_default(),
            addr,
            trusted_proxies: var("CLOUDROUTER_TRUSTED_PROXIES").unwrap_or_default(),
            hash_slots,
            smtp_url: var("CLOUDROUTER_SMTP_URL"),
            mail_from: var("CLOUDROUTER_MAIL_FROM"),
            unparsed,
        }
    }

    /// Every setting that was given parsed.
    pub fn check_parsed(&self) -> Result<(), String> {
        if self.unparsed.is_empty() { Ok(()) } else { Err(format!("settings that do not parse: {}", self.unparsed.join("; "))) }
    }

    /// Where mail goes and who sends it. Without `CLOUDROUTER_SMTP_URL`, a console only this
    /// machine reaches writes each mail to `.cloudrouter/mail/` (the run command's demo); one
    /// others reach refuses to start, since nobody could confirm a sign-up or reset a password.
    pub fn mail(&self) -> Result<cloudrouter_core::mail::Sender, String> {
        use cloudrouter_core::mail::{Sender, Transport};
        let host = self.public_url.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_owned)).unwrap_or_else(|| "localhost".into());
        let from = self.mail_from.clone().unwrap_or_else(|| format!("CloudRouter <no-reply@{}>", host.trim_matches(['[', ']'])));
        let transport = match &self.smtp_url {
            Some(url) => Transport::smtp(url)?,
            None if self.is_local() => Transport::Directory(".cloudrouter/mail".into()),
            None => {
                return Err(format!(
                    "CLOUDROUTER_SMTP_URL is not set, and {} is reachable by others: sign-up confirmations and password \
                     resets are mailed. Set it, e.g. smtps://user:password@smtp.example.com:465",
                    self.public_url
                ))
            }
        };
        Sender::new(transport, &from)
    }

    /// Where staff alerts go and how alerts are delivered; a webhook without a secret (or a
    /// secret shorter than 16 characters, or a URL that is not http(s)) stops the server rather
    /// than sending alerts nobody can verify. `render` writes an alert's mail.
    pub fn alert_delivery(&self, render: cloudrouter_core::alerts::delivery::RenderMail) -> Result<cloudrouter_core::alerts::delivery::DeliveryConfig, String> {
        use cloudrouter_core::alerts::delivery::{DeliveryConfig, Webhook};
        let staff_webhook = match (&self.alert_webhook_url, &self.alert_webhook_secret) {
            (None, _) => None,
            (Some(_), None) => return Err("CLOUDROUTER_ALERT_WEBHOOK_URL is set without CLOUDROUTER_ALERT_WEBHOOK_SECRET, which signs each alert (e.g. `openssl rand -hex 32`)".into()),
            (Some(_), Some(secret)) if secret.chars().count() < 16 => return Err("CLOUDROUTER_ALERT_WEBHOOK_SECRET is shorter than 16 characters".into()),
            (Some(url), Some(secret)) => {
                let ok = url.parse::<http::Uri>().is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
                if !ok {
                    return Err(format!("CLOUDROUTER_ALERT_WEBHOOK_URL is not an http(s) URL: {url:?}"));
                }
                Some(Webhook { url: url.clone(), secret: secret.clone() })
            }
        };
        if let Some(bad) = self.alert_emails.iter().find(|e| !cloudrouter_core::mail::is_address(e)) {
            return Err(format!("CLOUDROUTER_ALERT_EMAILS holds {bad:?}, which is not a mail address"));
        }
        Ok(DeliveryConfig { staff_webhook, staff_emails: self.alert_emails.clone(), allow_private_webhooks: self.is_local(), retry_base: self.alert_retry, render })
    }

    /// The trusted proxies, parsed; a list that does not parse stops the server (a typo must not
    /// quietly turn the proxy's address into every client's).
    pub fn trusted_proxies(&self) -> Result<cloudrouter_core::net::TrustedProxies, String> {
        cloudrouter_core::net::TrustedProxies::parse(&self.trusted_proxies)
    }

    /// How this instance reaches itself (for the built-in demo upstream).
    pub fn loopback_addr(&self) -> SocketAddr {
        let mut a = self.addr;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        a
    }

    /// Only this machine reaches the console: plain `http` to a loopback host (127.0.0.0/8, ::1,
    /// localhost). Anything else, an unparsable URL included, counts as reachable by others.
    pub fn is_local(&self) -> bool {
        let Ok(uri) = self.public_url.trim().parse::<http::Uri>() else { return false };
        let Some(host) = uri.host() else { return false };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("http"))
            && (host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()))
    }

    /// Cookies carry `Secure` unless the console is plain `http` on a loopback address: a plain
    /// `http` public URL usually sits behind a TLS proxy, and a cookie sent in clear is a session
    /// given away.
    pub fn secure_cookies(&self) -> bool {
        !self.is_local()
    }

    /// The server does not run on a constant secret: it needs `CLOUDROUTER_SECRET`, and where
    /// others can reach the console (see [`Config::is_local`]) a strong one. A weak secret on a
    /// local console is only warned about.
    pub fn check_secret(&self) -> Result<(), String> {
        if self.secret.trim().is_empty() {
            return Err("CLOUDROUTER_SECRET is not set. It encrypts upstream credentials at rest: set it to a long random value \
                        (e.g. `openssl rand -hex 32`) and keep it. `bash scripts/run.sh` makes one in .cloudrouter/secret."
                .into());
        }
        match secret_weakness(&self.secret) {
            Some(why) if !self.is_local() => Err(format!(
                "CLOUDROUTER_SECRET is refused for {}: {why}. Use a long random value (e.g. `openssl rand -hex 32`); \
                 to change it, see `server secret rotate`.",
                self.public_url
            )),
            Some(why) => {
                tracing::warn!(reason = why, "CLOUDROUTER_SECRET is weak; it would be refused for a public URL");
                Ok(())
            }
            None => Ok(()),
        }
    }
}
