//! Incidents staff post on the status page: opened with a first update, then updated (status,
//! impact, a message) until resolved. Staff write each text in English, Chinese or both; readers
//! get their language, or the other when only one was written. The caller runs each change in
//! its transaction and writes the audit row in it (the console's `commit_audited`).

use crate::text_enum::text_enum;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

text_enum! {
    /// Where the work on an incident stands (Atlassian Statuspage's four steps).
    pub enum IncidentStatus {
        Investigating = "investigating",
        Identified = "identified",
        Monitoring = "monitoring",
        Resolved = "resolved",
    }
}

text_enum! {
    /// How bad an incident is for the channels it names.
    pub enum Impact {
        /// Slower, or some requests fail: "degraded".
        Minor = "minor",
        /// Most or all requests fail: "major outage".
        Major = "major",
    }
}

/// The longest title and message staff may post, in characters.
pub const TITLE_MAX: usize = 200;
pub const MESSAGE_MAX: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("a title is required (English, Chinese or both)")]
    NoTitle,
    #[error("the title is longer than 200 characters")]
    TitleTooLong,
    #[error("a message is required (English, Chinese or both)")]
    NoMessage,
    #[error("the message is longer than 4000 characters")]
    MessageTooLong,
    #[error("unknown channel: {0}")]
    UnknownChannel(String),
    #[error("no such incident")]
    NotFound,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A text in both languages; one written alone stands for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bilingual {
    pub en: String,
    pub zh: String,
}

impl Bilingual {
    fn new(en: String, zh: String) -> Bilingual {
        match (en.is_empty(), zh.is_empty()) {
            (true, false) => Bilingual { en: zh.clone(), zh },
            (false, true) => Bilingual { zh: en.clone(), en },
            _ => Bilingual { en, zh },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentUpdate {
    pub status: IncidentStatus,
    pub message: Bilingual,
    pub posted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: Uuid,
    pub title: Bilingual,
    pub impact: Impact,
    /// The latest update's status.
    pub status: IncidentStatus,
    /// Codes of the channels it concerns; empty: none in particular.
    pub channels: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Newest first.
    pub updates: Vec<IncidentUpdate>,
}

/// What staff fill in to open an incident (its first update included).
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub title_en: String,
    pub title_zh: String,
    pub impact: Impact,
    pub channels: Vec<String>,
    pub status: IncidentStatus,
    pub message_en: String,
    pub message_zh: String,
}

/// A later update: the status and impact it leaves the incident in, and what it says.
#[derive(Debug, Clone)]
pub struct NewUpdate {
    pub status: IncidentStatus,
    pub impact: Impact,
    pub message_en: String,
    pub message_zh: String,
}

/// Trimmed English and Chinese: at least one present, neither above `max` characters.
fn texts(en: &str, zh: &str, max: usize, missing: IncidentError, too_long: IncidentError) -> Result<(String, String), IncidentError> {
    let (en, zh) = (en.trim(), zh.trim());
    if en.is_empty() && zh.is_empty() {
        return Err(missing);
    }
    if en.chars().count() > max || zh.chars().count() > max {
        return Err(too_long);
    }
    Ok((en.to_string(), zh.to_string()))
}

fn message(en: &str, zh: &str) -> Result<(String, String), IncidentError> {
    texts(en, zh, MESSAGE_MAX, IncidentError::NoMessage, IncidentError::MessageTooLong)
}

/// The channel codes, each once, in the channels' display order; an unknown one is refused.
async fn known_channels(tx: &mut PgConnection, codes: &[String]) -> Result<Vec<String>, IncidentError> {
    let codes: Vec<String> = codes.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
    let known: Vec<String> = sqlx::query_scalar("SELECT code FROM channels WHERE code = ANY($1) ORDER BY sort, code")
        .bind(&codes)
        .fetch_all(&mut *tx)
        .await?;
    match codes.into_iter().find(|c| !known.contains(c)) {
        Some(unknown) => Err(IncidentError::UnknownChannel(unknown)),
        None => Ok(known),
    }
}

async fn add_update(tx: &mut PgConnection, id: Uuid, status: IncidentStatus, (en, zh): (String, String), staff: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO incident_updates (incident_id, status, message_en, message_zh, posted_at, posted_by) VALUES ($1, $2, $3, $4, now(), $5)")
        .bind(id)
        .bind(status)
        .bind(en)
        .bind(zh)
        .bind(staff)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Opens an incident with its first update; its id.
pub async fn open(tx: &mut PgConnection, staff: Uuid, n: &NewIncident) -> Result<Uuid, IncidentError> {
    let (title_en, title_zh) = texts(&n.title_en, &n.title_zh, TITLE_MAX, IncidentError::NoTitle, IncidentError::TitleTooLong)?;
    let text = message(&n.message_en, &n.message_zh)?;
    let channels = known_channels(tx, &n.channels).await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO incidents (title_en, title_zh, impact, channels, status, started_at, resolved_at) \
         VALUES ($1, $2, $3, $4, $5, now(), CASE WHEN $5 = 'resolved' THEN now() END) RETURNING id",
    )
    .bind(title_en)
    .bind(title_zh)
    .bind(n.impact)
    .bind(&channels)
    .bind(n.status)
    .fetch_one(&mut *tx)
    .await?;
    add_update(tx, id, n.status, text, staff).await?;
    Ok(id)
}

/// Posts an update: the incident takes its status and impact; `resolved` sets the time it was
/// resolved (kept by later resolved updates, cleared if it is reopened).
pub async fn update(tx: &mut PgConnection, staff: Uuid, id: Uuid, u: &NewUpdate) -> Result<(), IncidentError> {
    let text = message(&u.message_en, &u.message_zh)?;
    let found = sqlx::query(
        "UPDATE incidents SET status = $2, impact = $3, \
         resolved_at = CASE WHEN $2 = 'resolved' THEN COALESCE(resolved_at, now()) END WHERE id = $1",
    )
    .bind(id)
    .bind(u.status)
    .bind(u.impact)
    .execute(&mut *tx)
    .await?;
    if found.rows_affected() == 0 {
        return Err(IncidentError::NotFound);
    }
    add_update(tx, id, u.status, text, staff).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct IncidentRow {
    id: Uuid,
    title_en: String,
    title_zh: String,
    impact: Impact,
    status: IncidentStatus,
    channels: Vec<String>,
    started_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
}

/// The open incidents (newest first) and those resolved since `resolved_since` (latest
/// resolved first, at most `limit`), each with its updates.
pub async fn open_and_resolved(pool: &PgPool, resolved_since: DateTime<Utc>, limit: i64) -> Result<(Vec<Incident>, Vec<Incident>), sqlx::Error> {
    let rows: Vec<IncidentRow> = sqlx::query_as(
        "(SELECT id, title_en, title_zh, impact, status, channels, started_at, resolved_at FROM incidents \
          WHERE resolved_at IS NULL ORDER BY started_at DESC, id) \
         UNION ALL \
         (SELECT id, title_en, title_zh, impact, status, channels, started_at, resolved_at FROM incidents \
          WHERE resolved_at >= $1 ORDER BY resolved_at DESC, id LIMIT $2)",
    )
    .bind(resolved_since)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut updates: HashMap<Uuid, Vec<IncidentUpdate>> = HashMap::new();
    let list: Vec<(Uuid, IncidentStatus, String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT incident_id, status, message_en, message_zh, posted_at FROM incident_updates \
         WHERE incident_id = ANY($1) ORDER BY posted_at DESC, id DESC",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    for (id, status, en, zh, posted_at) in list {
        updates.entry(id).or_default().push(IncidentUpdate { status, message: Bilingual::new(en, zh), posted_at });
    }
    let (open, resolved): (Vec<Incident>, Vec<Incident>) = rows
        .into_iter()
        .map(|r| Incident {
            updates: updates.remove(&r.id).unwrap_or_default(),
            id: r.id,
            title: Bilingual::new(r.title_en, r.title_zh),
            impact: r.impact,
            status: r.status,
            channels: r.channels,
            started_at: r.started_at,
            resolved_at: r.resolved_at,
        })
        .partition(|i| i.resolved_at.is_none());
    Ok((open, resolved))
}
