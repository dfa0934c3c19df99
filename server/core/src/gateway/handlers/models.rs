//! `GET /v1/models` (Anthropic's list shape: `data`, `has_more`, `first_id`, `last_id`) and
//! `GET /v1/models/{id}`: the enabled models the key may use. A client that sends neither
//! `anthropic-version` nor `x-api-key` (every Anthropic SDK sends the first, OpenAI's SDKs
//! neither) is answered in OpenAI's shape (`object: "list"`, models as `object: "model"`).

use super::super::error::{set_request_id, ApiError, Dialect};
use super::super::request::X_API_KEY;
use super::super::state::Shared;
use crate::catalogue::Model;
use crate::util::request_id;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub(in super::super) struct ListQuery {
    limit: Option<usize>,
    after_id: Option<String>,
    before_id: Option<String>,
}

fn dialect(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") || headers.contains_key(&X_API_KEY) {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi { include_usage: false }
    }
}

fn model_json(m: &Model, dialect: Dialect) -> serde_json::Value {
    match dialect {
        Dialect::Anthropic => serde_json::json!({
            "type": "model",
            "id": m.id,
            "display_name": m.display_name,
            "created_at": m.released_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }),
        Dialect::OpenAi { .. } => serde_json::json!({
            "id": m.id,
            "object": "model",
            "created": m.released_at.timestamp(),
            "owned_by": "anthropic",
        }),
    }
}

fn json_response(rid: &str, dialect: Dialect, v: serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(resp.headers_mut(), rid, dialect);
    resp
}

pub(in super::super) async fn list_models(State(gw): State<Arc<Shared>>, parts: http::request::Parts, Query(q): Query<ListQuery>) -> Response {
    let headers = &parts.headers;
    let rid = request_id();
    let dialect = dialect(headers);
    let key = match gw.authenticate(&parts).await {
        Ok(k) => k,
        Err(e) => return e.respond_in(&rid, dialect),
    };
    let cat = gw.catalogue();
    let visible: Vec<&Arc<Model>> = cat
        .listed
        .iter()
        .filter(|m| key.allowed_models.is_empty() || key.allowed_models.iter().any(|a| *a == m.id))
        .collect();
    if let Dialect::OpenAi { .. } = dialect {
        // OpenAI's list is not paged
        let data: Vec<_> = visible.iter().map(|m| model_json(m, dialect)).collect();
        return json_response(&rid, dialect, serde_json::json!({"object": "list", "data": data}));
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let (start, end) = if let Some(before) = &q.before_id {
        let end = visible.iter().position(|m| &m.id == before).unwrap_or(0);
        (end.saturating_sub(limit), end)
    } else {
        let start = q.after_id.as_ref().and_then(|a| visible.iter().position(|m| &m.id == a)).map(|i| i + 1).unwrap_or(0);
        (start, (start + limit).min(visible.len()))
    };
    let page = &visible[start.min(end)..end];
    let has_more = if q.before_id.is_some() { start > 0 } else { end < visible.len() };
    json_response(
        &rid,
        dialect,
        serde_json::json!({
            "data": page.iter().map(|m| model_json(m, dialect)).collect::<Vec<_>>(),
            "has_more": has_more,
            "first_id": page.first().map(|m| m.id.clone()),
            "last_id": page.last().map(|m| m.id.clone()),
        }),
    )
}

pub(in super::super) async fn get_model(State(gw): State<Arc<Shared>>, Path(id): Path<String>, parts: http::request::Parts) -> Response {
    let headers = &parts.headers;
    let rid = request_id();
    let dialect = dialect(headers);
    let key = match gw.authenticate(&parts).await {
        Ok(k) => k,
        Err(e) => return e.respond_in(&rid, dialect),
    };
    let cat = gw.catalogue();
    match cat.lookup(&id).filter(|m| m.enabled && (key.allowed_models.is_empty() || key.allowed_models.contains(&m.id))) {
        Some(m) => json_response(&rid, dialect, model_json(m, dialect)),
        None => ApiError::new(StatusCode::NOT_FOUND, format!("model: {id}")).respond_in(&rid, dialect),
    }
}
