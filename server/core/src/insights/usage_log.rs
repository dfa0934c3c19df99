//! The usage log: one page at a time behind an opaque cursor, every row for CSV export, and the
//! CSV rendering (formula-safe fields, never request or reply text).

use crate::usage::UsageRecord;
use base64::Engine;
use chrono::{DateTime, Datelike, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusFilter {
    /// status < 400
    Ok,
    /// status >= 400
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    /// None = all customers (staff only).
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    /// Matches `COALESCE(served_model, requested_model)`, as the charts do.
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
    /// created_at >= since
    pub since: Option<DateTime<Utc>>,
    /// created_at < until
    pub until: Option<DateTime<Utc>>,
    /// One request by its id (the `request-id` every answer carries).
    pub request_id: Option<String>,
}

/// Opaque position in the usage log: the (created_at, id) of the last row of a page.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor(String);

impl Cursor {
    pub fn new(created_at: DateTime<Utc>, id: &str) -> Cursor {
        let raw = format!("{}:{}", created_at.timestamp_micros(), id);
        Cursor(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
    }

    /// Accepts only what [`Cursor::as_str`] produced.
    pub fn parse(s: &str) -> Option<Cursor> {
        let c = Cursor(s.to_string());
        c.decode().map(|_| c)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn decode(&self) -> Option<(DateTime<Utc>, String)> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(self.0.as_bytes()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ts, id) = raw.split_once(':')?;
        // a forged cursor may name any moment chrono holds; Postgres holds fewer
        let at = DateTime::<Utc>::from_timestamp_micros(ts.parse().ok()?).filter(|t| (1970..=9999).contains(&t.year()))?;
        Some((at, id.to_string()))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}


/// Most rows per page.
pub const LOG_PAGE_MAX: i64 = 1000;

/// One page of the usage log, newest first (ties on created_at by id, descending), and the cursor
/// of the next page (None on the last page). `limit` is clamped to 1..=1000. A cursor that does
/// not decode is treated as the start.
pub async fn log_page(pool: &PgPool, f: &LogFilter, cursor: Option<&Cursor>, limit: i64) -> Result<(Vec<UsageRecord>, Option<Cursor>), sqlx::Error> {
    let limit = limit.clamp(1, LOG_PAGE_MAX);
    let after = cursor.and_then(|c| c.decode());
    let mut sql = format!("SELECT {} FROM usage_records WHERE true", crate::usage::RECORD_COLUMNS);
    let mut n = 0;
    let mut p = |sql: &mut String, cond: &str| -> usize {
        n += 1;
        sql.push_str(&cond.replace('?', &format!("${n}")));
        n
    };
    if f.user_id.is_some() {
        p(&mut sql, " AND user_id = ?");
    }
    if f.key_id.is_some() {
        p(&mut sql, " AND key_id = ?");
    }
    if f.model.is_some() {
        p(&mut sql, " AND COALESCE(served_model, requested_model) = ?");
    }
    if f.request_id.is_some() {
        p(&mut sql, " AND id = ?");
    }
    if f.since.is_some() {
        p(&mut sql, " AND created_at >= ?");
    }
    if f.until.is_some() {
        p(&mut sql, " AND created_at < ?");
    }
    if after.is_some() {
        // (created_at, id) < (c_at, c_id), written so the created_at index bounds the scan
        let at = p(&mut sql, " AND created_at <= ?");
        p(&mut sql, &format!(" AND (created_at < ${at} OR id < ?)"));
    }
    match f.status {
        Some(StatusFilter::Ok) => sql.push_str(" AND status < 400"),
        Some(StatusFilter::Error) => sql.push_str(" AND status >= 400"),
        None => {}
    }
    p(&mut sql, " ORDER BY created_at DESC, id DESC LIMIT ?");
    let mut q = sqlx::query_as::<_, UsageRecord>(&sql);
    if let Some(u) = f.user_id {
        q = q.bind(u);
    }
    if let Some(k) = f.key_id {
        q = q.bind(k);
    }
    if let Some(m) = &f.model {
        q = q.bind(m.clone());
    }
    if let Some(id) = &f.request_id {
        q = q.bind(id.clone());
    }
    if let Some(s) = f.since {
        q = q.bind(s);
    }
    if let Some(u) = f.until {
        q = q.bind(u);
    }
    if let Some((at, id)) = &after {
        q = q.bind(*at).bind(id.clone());
    }
    let mut rows = q.bind(limit + 1).fetch_all(pool).await?;
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| Cursor::new(r.created_at, &r.id))
    } else {
        None
    };
    Ok((rows, next))
}

/// Every row of the filter, newest first, fetched a page (1000 rows) at a time: for CSV export.
pub fn log_stream<'a>(pool: &'a PgPool, f: &'a LogFilter) -> impl Stream<Item = Result<UsageRecord, sqlx::Error>> + 'a {
    use futures::StreamExt;
    // state: Some(cursor) to fetch from (None inside = start), None = done
    futures::stream::unfold(Some(None::<Cursor>), move |state| async move {
        let cursor = state?;
        match log_page(pool, f, cursor.as_ref(), LOG_PAGE_MAX).await {
            Ok((rows, next)) => {
                let next_state = next.map(Some);
                Some((futures::stream::iter(rows.into_iter().map(Ok)).left_stream(), next_state))
            }
            Err(e) => Some((futures::stream::iter(vec![Err(e)]).right_stream(), None)),
        }
    })
    .flatten()
}


/// The CSV header line (with CRLF). Columns match [`csv_line`].
pub fn csv_header() -> &'static str {
    "request_id,created_at,key_id,key_name,channel,endpoint,requested_model,served_model,stream,status,outcome,\
error_type,attempts,input_tokens,output_tokens,cache_write_5m_tokens,cache_write_1h_tokens,cache_read_tokens,\
web_search_requests,web_fetch_requests,cost_usd,charge_cny,latency_ms,ttft_ms\r\n"
}

/// An RFC 4180 field: quoted when it holds a comma, quote, CR or LF (quotes doubled). Text that
/// a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading apostrophe.
fn csv_text(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// One CSV line (with CRLF) for a usage row. Amounts are exact decimal strings (USD cost, CNY
/// charge); times are RFC 3339 in `tz` with its offset (the zone the console shows). Never
/// contains request or reply text (records hold none).
pub fn csv_line(row: &UsageRecord, key_name: &str, tz: crate::zone::Tz) -> String {
    let opt = |v: Option<i32>| v.map(|x| x.to_string()).unwrap_or_default();
    let fields: Vec<String> = vec![
        csv_text(&row.id),
        row.created_at.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        row.key_id.map(|k| k.to_string()).unwrap_or_default(),
        csv_text(key_name),
        csv_text(&row.channel),
        csv_text(&row.endpoint),
        csv_text(&row.requested_model),
        csv_text(row.served_model.as_deref().unwrap_or("")),
        row.stream.to_string(),
        row.status.to_string(),
        csv_text(row.outcome.as_str()),
        csv_text(row.error_type.as_deref().unwrap_or("")),
        row.attempts.to_string(),
        row.tokens.input_tokens.to_string(),
        row.tokens.output_tokens.to_string(),
        row.tokens.cache_write_5m_tokens.to_string(),
        row.tokens.cache_write_1h_tokens.to_string(),
        row.tokens.cache_read_tokens.to_string(),
        row.server_tools.web_search_requests.to_string(),
        row.server_tools.web_fetch_requests.to_string(),
        row.cost_micro_usd.decimal(),
        row.charge_micros.decimal(),
        row.latency_ms.to_string(),
        opt(row.ttft_ms),
    ];
    let mut line = fields.join(",");
    line.push_str("\r\n");
    line
}
