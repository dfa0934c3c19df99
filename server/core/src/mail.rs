//! Mail: an outbox in Postgres that every instance sends from, and the way out (SMTP, or files
//! for a console only this machine reaches).
//!
//! A request that mails someone only adds a row ([`Outbox::queue`]) and wakes this instance's
//! sender, so answering never waits on (or reveals through its timing) a mail server, and a mail
//! outlives a restart. A sender claims due rows with a lease (`next_at` moved on), so instances
//! never send one row twice at once; a failure is retried with backoff, and once sent or given up
//! the body, which holds a one-time link, is dropped.

use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Mailbox, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// One mail to one address: plain text.
#[derive(Clone, Debug)]
pub struct Mail {
    /// What it is, for the record kept after sending ("signup", "signup_taken", "reset").
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// Queues mail and wakes this instance's sender.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Wakes the sender, e.g. after committing mail queued in a transaction (the wake at
    /// `queue` may come before the commit, and the sender then finds nothing until its next poll).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn queue(&self, conn: impl sqlx::PgExecutor<'_>, mail: &Mail) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO mail_outbox (kind, to_addr, subject, body) VALUES ($1, $2, $3, $4)")
            .bind(mail.kind)
            .bind(&mail.to)
            .bind(&mail.subject)
            .bind(&mail.body)
            .execute(conn)
            .await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// Whether `s` is a mail address (`name@example.com`, no display name).
pub fn is_address(s: &str) -> bool {
    s.parse::<lettre::Address>().is_ok()
}

/// Where mail goes.
pub enum Transport {
    /// `CLOUDROUTER_SMTP_URL`: `smtps://user:pass@host:465` (TLS), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), or `smtp://host:25` (plain, for a relay on a trusted network).
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// No SMTP on a local console: each mail is written to this folder as an `.eml` file.
    Directory(PathBuf),
}

/// How long one SMTP exchange may take; the claim on a row lasts longer.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
const LEASE_SECS: i64 = 120;
/// Tries before a mail is given up (the waits double from 30 s: about 2 hours in all).
const MAX_ATTEMPTS: i32 = 8;
/// How often a sender looks for mail another instance queued or a retry that came due.
const POLL: Duration = Duration::from_secs(15);

impl Transport {
    pub fn smtp(url: &str) -> Result<Transport, String> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.trim())
            .map_err(|e| format!("CLOUDROUTER_SMTP_URL is not a valid SMTP URL: {e}"))?;
        Ok(Transport::Smtp(builder.timeout(Some(SMTP_TIMEOUT)).build()))
    }

    async fn send(&self, id: i64, kind: &str, message: Message) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| e.to_string()),
            Transport::Directory(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| e.to_string())?;
                let path = dir.join(format!("{id}-{kind}.eml"));
                tokio::fs::write(&path, message.formatted()).await.map_err(|e| e.to_string())?;
                tracing::info!(path = %path.display(), "mail written to a file (no SMTP server is set)");
                Ok(())
            }
        }
    }
}

/// The way out and the sender's address.
pub struct Sender {
    transport: Transport,
    from: Mailbox,
}

impl Sender {
    /// `from`: a mailbox such as `CloudRouter <no-reply@example.com>`.
    pub fn new(transport: Transport, from: &str) -> Result<Sender, String> {
        let from = from.parse().map_err(|e| format!("CLOUDROUTER_MAIL_FROM is not a mail address ({from}): {e}"))?;
        Ok(Sender { transport, from })
    }
}

/// Sends what the outbox holds until the process ends.
pub fn spawn_sender(pool: PgPool, sender: Sender, outbox: &Outbox) {
    let Sender { transport, from } = sender;
    let wake = outbox.wake.clone();
    tokio::spawn(async move {
        loop {
            loop {
                match send_due(&pool, &transport, &from).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the mail outbox cannot be read");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
}

#[derive(sqlx::FromRow)]
struct Due {
    id: i64,
    kind: String,
    to_addr: String,
    subject: String,
    body: Option<String>,
    attempts: i32,
}

/// Claims up to ten due mails and sends them; how many were claimed.
async fn send_due(pool: &PgPool, transport: &Transport, from: &Mailbox) -> Result<usize, sqlx::Error> {
    let due: Vec<Due> = sqlx::query_as(
        "UPDATE mail_outbox SET next_at = now() + make_interval(secs => $1), attempts = attempts + 1
         WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL AND next_at <= now()
                      ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, to_addr, subject, body, attempts",
    )
    .bind(LEASE_SECS as f64)
    .fetch_all(pool)
    .await?;
    for mail in &due {
        let sent = match message(from, mail) {
            Ok(message) => transport.send(mail.id, &mail.kind, message).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                sqlx::query("UPDATE mail_outbox SET sent_at = now(), body = NULL, last_error = NULL WHERE id = $1")
                    .bind(mail.id)
                    .execute(pool)
                    .await?;
            }
            Err(error) => {
                let give_up = mail.attempts >= MAX_ATTEMPTS || mail.body.is_none();
                tracing::warn!(id = mail.id, kind = %mail.kind, attempts = mail.attempts, give_up, error = %error, "a mail was not sent");
                let retry_secs = 30.0 * f64::from(1u32 << (mail.attempts - 1).clamp(0, 7));
                sqlx::query(
                    "UPDATE mail_outbox SET last_error = $2,
                         failed_at = CASE WHEN $3 THEN now() END,
                         body = CASE WHEN $3 THEN NULL ELSE body END,
                         next_at = now() + make_interval(secs => $4)
                     WHERE id = $1",
                )
                .bind(mail.id)
                .bind(error)
                .bind(give_up)
                .bind(retry_secs)
                .execute(pool)
                .await?;
            }
        }
    }
    Ok(due.len())
}

/// The message as sent: UTF-8 plain text, base64 so that no line is ever rewrapped.
fn message(from: &Mailbox, mail: &Due) -> Result<Message, String> {
    let to: Mailbox = mail.to_addr.parse().map_err(|e| format!("the address cannot be mailed: {e}"))?;
    let body = mail.body.clone().ok_or("the body is gone")?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(&mail.subject)
        .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).header(ContentTransferEncoding::Base64).body(body))
        .map_err(|e| e.to_string())
}

/// A mail that failed at least once (for the staff Operations page).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Trouble {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub kind: String,
    pub to_addr: String,
    pub attempts: i32,
    /// The mail server's last answer.
    pub last_error: String,
    /// Given up after [`MAX_ATTEMPTS`] (else it is retried).
    pub given_up: bool,
}

/// How mail is going over the last day.
#[derive(Debug, Clone, Default)]
pub struct OutboxHealth {
    pub sent: i64,
    pub waiting: i64,
    pub given_up: i64,
    /// The latest mails with an error, sent since or not, newest first (at most 20).
    pub troubles: Vec<Trouble>,
}

pub async fn health(pool: &PgPool) -> Result<OutboxHealth, sqlx::Error> {
    let (sent, waiting, given_up): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE sent_at IS NOT NULL), count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL),
                count(*) FILTER (WHERE failed_at IS NOT NULL)
         FROM mail_outbox WHERE created_at > now() - interval '1 day' OR (sent_at IS NULL AND failed_at IS NULL)",
    )
    .fetch_one(pool)
    .await?;
    let troubles = sqlx::query_as(
        "SELECT created_at, kind, to_addr, attempts, last_error, failed_at IS NOT NULL AS given_up FROM mail_outbox
         WHERE last_error IS NOT NULL AND created_at > now() - interval '1 day' ORDER BY id DESC LIMIT 20",
    )
    .fetch_all(pool)
    .await?;
    Ok(OutboxHealth { sent, waiting, given_up, troubles })
}
