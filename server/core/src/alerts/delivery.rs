//! Delivers the notices in `alert_outbox`: by mail (rendered in each recipient's language and
//! queued in the account-mail outbox, which retries SMTP itself) and by webhook POST (signed, see
//! [`super::signature`]). Every instance runs one sender; a sender claims due rows with a lease
//! (`next_at` moved on, `FOR UPDATE SKIP LOCKED`), so instances never deliver one row at once, and
//! a notice outlives a restart. A failed webhook is retried with doubling waits and given up
//! after [`MAX_ATTEMPTS`]; its error is kept for the Operations page, never the body it sent.
//!
//! A customer's webhook must resolve to public addresses (a customer must not make the server
//! POST into its own network), unless the console is only reachable from this machine.

use super::{customer, signature, Notice, Reporter};
use crate::crypto::Crypto;
use crate::mail::{self, Mail};
use sqlx::PgPool;
use std::net::IpAddr;
use std::time::Duration;

/// Tries before a webhook is given up (the waits double from the retry base: with the default
/// 30 s, about two hours in all).
pub const MAX_ATTEMPTS: i32 = 8;
/// How long a claim on a row lasts (a POST may take up to `POST_TIMEOUT`, ten rows a claim).
const LEASE: Duration = Duration::from_secs(300);
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a sender looks for notices another instance queued, or retries that came due.
const POLL: Duration = Duration::from_secs(5);

/// A webhook and the secret it is signed with.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.url).finish_non_exhaustive()
    }
}

/// A notice's mail (subject, body) in a language (the account's `locale`; None: English).
pub type RenderMail = fn(&Notice, Option<&str>) -> (String, String);

/// Where staff notices go and how delivery behaves.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// `CLOUDROUTER_ALERT_WEBHOOK_URL` with `CLOUDROUTER_ALERT_WEBHOOK_SECRET`.
    pub staff_webhook: Option<Webhook>,
    /// `CLOUDROUTER_ALERT_EMAILS`; empty: every active staff account.
    pub staff_emails: Vec<String>,
    /// Customer webhooks may point at private and loopback addresses (a console only this
    /// machine reaches).
    pub allow_private_webhooks: bool,
    /// The first wait after a failed webhook (`CLOUDROUTER_ALERT_RETRY_MS`, 30 s), doubled each time.
    pub retry_base: Duration,
    pub render: RenderMail,
}

/// Starts this instance's sender; it runs until the process ends.
pub fn spawn(pool: PgPool, crypto: Crypto, outbox: mail::Outbox, reporter: &Reporter, cfg: DeliveryConfig) -> tokio::task::JoinHandle<()> {
    let wake = reporter.wake_handle();
    let http = reqwest::Client::builder()
        .timeout(POST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("CloudRouter-Alerts")
        .build()
        .expect("the webhook client builds");
    let sender = Sender { pool, crypto, outbox, http, cfg };
    tokio::spawn(async move {
        loop {
            loop {
                match sender.deliver_due().await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the alert outbox cannot be read");
                        break;
                    }
                }
            }
            // until the next retry comes due, or a poll for what other instances queued
            let next = sender.next_due().await.unwrap_or(POLL).min(POLL);
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(next) => {}
            }
        }
    })
}

struct Sender {
    pool: PgPool,
    crypto: Crypto,
    outbox: mail::Outbox,
    http: reqwest::Client,
    cfg: DeliveryConfig,
}

#[derive(sqlx::FromRow)]
struct Due {
    #[sqlx(flatten)]
    notice: Notice,
    mail_due: bool,
    webhook_due: bool,
    attempts: i32,
}

impl Sender {
    /// How long until the earliest notice waiting for a retry comes due (None: none waits).
    async fn next_due(&self) -> Option<Duration> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM min(next_at) - now())::float8 FROM alert_outbox WHERE done_at IS NULL AND failed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .ok()
        .flatten();
        secs.map(|s| Duration::from_secs_f64(s.max(0.0)))
    }

    /// Claims up to ten due notices and delivers them; how many were claimed.
    async fn deliver_due(&self) -> Result<usize, sqlx::Error> {
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE alert_outbox SET next_at = now() + make_interval(secs => $1), attempts = attempts + 1
             WHERE id IN (SELECT id FROM alert_outbox WHERE done_at IS NULL AND failed_at IS NULL AND next_at <= now()
                          ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)
             RETURNING id, created_at, user_id, kind, status, subject, subject_name, detail, data, mail_due, webhook_due, attempts",
        )
        .bind(LEASE.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        for d in &due {
            self.deliver(d).await?;
        }
        Ok(due.len())
    }

    async fn deliver(&self, d: &Due) -> Result<(), sqlx::Error> {
        let n = &d.notice;
        let mut error = None;
        let mut mail_due = d.mail_due;
        if mail_due {
            match self.queue_mail(n).await {
                Ok(()) => mail_due = false,
                Err(e) => error = Some(format!("mail: {e}")),
            }
        }
        let mut webhook_due = d.webhook_due;
        if webhook_due {
            match self.post(n).await {
                Ok(()) => webhook_due = false,
                Err(e) => error = Some(format!("webhook: {e}")),
            }
        }
        let give_up = d.attempts >= MAX_ATTEMPTS;
        if let Some(e) = &error {
            tracing::warn!(id = n.id, kind = %n.kind, attempts = d.attempts, give_up, error = %e, "an alert was not delivered");
        }
        let wait = self.cfg.retry_base.as_secs_f64() * f64::from(1u32 << (d.attempts - 1).clamp(0, 10));
        sqlx::query(
            "UPDATE alert_outbox SET mail_due = $2, webhook_due = $3, last_error = $4,
                 done_at = CASE WHEN NOT $2 AND NOT $3 THEN now() END,
                 failed_at = CASE WHEN ($2 OR $3) AND $5 THEN now() END,
                 next_at = now() + make_interval(secs => $6)
             WHERE id = $1",
        )
        .bind(n.id)
        .bind(mail_due)
        .bind(webhook_due)
        .bind(error)
        .bind(give_up)
        .bind(wait)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Queues the notice's mail to each recipient, and marks it mailed, in one transaction.
    async fn queue_mail(&self, n: &Notice) -> Result<(), sqlx::Error> {
        let to: Vec<(String, Option<String>)> = match n.user_id {
            Some(user) => sqlx::query_as("SELECT email, locale FROM users WHERE id = $1 AND status = 'active'").bind(user).fetch_all(&self.pool).await?,
            None if !self.cfg.staff_emails.is_empty() => self.cfg.staff_emails.iter().map(|e| (e.clone(), None)).collect(),
            None => {
                sqlx::query_as("SELECT email, locale FROM users WHERE role = 'staff' AND status = 'active' ORDER BY created_at")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let mut tx = self.pool.begin().await?;
        for (addr, locale) in to {
            let (subject, body) = (self.cfg.render)(n, locale.as_deref());
            self.outbox.queue(&mut *tx, &Mail { kind: "alert", to: addr, subject, body }).await?;
        }
        sqlx::query("UPDATE alert_outbox SET mail_due = false WHERE id = $1").bind(n.id).execute(&mut *tx).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(())
    }

    /// POSTs the notice to its webhook, if one is set; an error says why it was not taken.
    async fn post(&self, n: &Notice) -> Result<(), String> {
        let (url, secret, check_public) = match n.user_id {
            None => match &self.cfg.staff_webhook {
                Some(w) => (w.url.clone(), w.secret.clone(), false),
                None => return Ok(()),
            },
            Some(user) => match customer::webhook(&self.pool, &self.crypto, user).await? {
                Some((url, secret)) => (url, secret, !self.cfg.allow_private_webhooks),
                None => return Ok(()),
            },
        };
        let url = reqwest::Url::parse(&url).map_err(|_| "the webhook address is not a URL".to_string())?;
        if check_public {
            public_target(&url).await?;
        }
        let body = n.webhook_body();
        let signed = signature::sign(&secret, chrono::Utc::now().timestamp(), &body);
        let answer = self
            .http
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(signature::HEADER, signed)
            .header("cloudrouter-event-id", format!("alert_{}", n.id))
            .body(body)
            .send()
            .await
            // the URL may carry a token of the receiver's: not in errors or logs
            .map_err(|e| e.without_url().to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered HTTP {}", answer.status().as_u16()))
        }
    }
}

/// Every address the webhook's host resolves to is public.
async fn public_target(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().ok_or("the webhook address has no host")?.trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<_> = tokio::net::lookup_host((host, port)).await.map_err(|_| "the webhook host does not resolve".to_string())?.collect();
    if addrs.is_empty() || addrs.iter().any(|a| !is_public(a.ip())) {
        return Err("the webhook address is not public".into());
    }
    Ok(())
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // shared address space (carrier-grade NAT), 100.64.0.0/10
                || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                // unique local fc00::/7, link-local fe80::/10
                !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// How delivery is going: notices waiting, failing (retrying) and given up in the last day.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct DeliveryHealth {
    pub waiting: i64,
    pub retrying: i64,
    pub given_up: i64,
    /// The latest error of a notice not delivered yet or given up, if any.
    pub last_error: Option<String>,
}

pub async fn health(pool: &PgPool) -> Result<DeliveryHealth, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE done_at IS NULL AND failed_at IS NULL) AS waiting,
                count(*) FILTER (WHERE done_at IS NULL AND failed_at IS NULL AND last_error IS NOT NULL) AS retrying,
                count(*) FILTER (WHERE failed_at IS NOT NULL) AS given_up,
                (array_agg(last_error ORDER BY id DESC) FILTER (WHERE done_at IS NULL AND last_error IS NOT NULL))[1] AS last_error
         FROM alert_outbox WHERE done_at IS NULL AND (failed_at IS NULL OR failed_at > now() - interval '1 day')",
    )
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1"] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
