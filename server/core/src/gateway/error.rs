//! Errors in Anthropic's shape, one type for every API this server answers (the gateway, the
//! staff API, the demo upstream): `{"type":"error","error":{"type":…,"message":…},"request_id":…}`
//! with a `request-id` header, as a JSON answer or, once a stream has begun, an SSE `error` event.
//! The error type follows from the status in one place ([`error_type`]), so a status and its type
//! cannot disagree. The OpenAI-compatible endpoint answers the same errors in OpenAI's shape
//! ([`Dialect::OpenAi`]): `{"error":{"message":…,"type":…,"param":null,"code":…}}`, type and code
//! both carrying Anthropic's error type.

use crate::util::request_id;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

pub(super) static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
/// OpenAI's SDKs read the request id from `x-request-id`: answers in OpenAI's shape carry both.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Anthropic's error type for a status (the one map from status to type).
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 409 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// 529, Anthropic's "overloaded" (no constant of its own in `http`).
pub(super) fn overloaded() -> StatusCode {
    StatusCode::from_u16(529).expect("529 is a valid status")
}

/// Which API's shape an answer takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) enum Dialect {
    /// Anthropic's Messages API.
    #[default]
    Anthropic,
    /// OpenAI's Chat Completions (`/v1/chat/completions`); a stream ends with a usage chunk when
    /// the client asked for it (`stream_options.include_usage`).
    OpenAi { include_usage: bool },
}

/// An error for the client: its status, its type (Anthropic's for the status unless
/// [`ApiError::with_type`] names one of the staff API's own), its message, and what the client's
/// retry logic reads (`retry-after`, `x-should-retry`).
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    retry_after: Option<u64>,
    should_retry: Option<bool>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, kind: error_type(status), message: message.into(), retry_after: None, should_retry: None }
    }

    /// A type beyond Anthropic's, for answers only the staff API gives (`conflict_error`,
    /// `idempotency_conflict`, `insufficient_balance`, `confirmation_required`).
    pub(crate) fn with_type(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    pub(crate) fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub(crate) fn should_retry(mut self, v: bool) -> Self {
        self.should_retry = Some(v);
        self
    }

    fn body(&self, rid: &str) -> serde_json::Value {
        serde_json::json!({"type": "error", "error": {"type": self.kind, "message": self.message}, "request_id": rid})
    }

    /// OpenAI's error object (the request id is in the `request-id` header, and in the message
    /// nowhere: OpenAI's shape has no field for it).
    pub(crate) fn openai_body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": self.kind}})
    }

    /// The JSON answer for the request named `rid`.
    pub(crate) fn respond(self, rid: &str) -> Response {
        self.respond_in(rid, Dialect::Anthropic)
    }

    /// The JSON answer in the shape of the API the client called.
    pub(crate) fn respond_in(self, rid: &str, dialect: Dialect) -> Response {
        let body = match dialect {
            Dialect::Anthropic => self.body(rid),
            Dialect::OpenAi { .. } => self.openai_body(),
        };
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        set_request_id(h, rid, dialect);
        if let Some(s) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(r) = self.should_retry {
            h.insert(SHOULD_RETRY.clone(), HeaderValue::from_static(if r { "true" } else { "false" }));
        }
        resp
    }

    /// The same error as an SSE event, for a stream already under way.
    pub(crate) fn sse_event(&self, rid: &str) -> Bytes {
        Bytes::from(format!("event: error\ndata: {}\n\n", self.body(rid)))
    }
}

/// CloudRouter's words for an `error` event an upstream sent mid-stream, whose own message may
/// carry its request id or its account's state: the kinds a client acts on are kept (overloaded,
/// rate limited, timed out), anything else is an `api_error`.
pub(super) fn upstream_stream_error(kind: Option<&str>) -> ApiError {
    match kind {
        Some("overloaded_error") => ApiError::new(overloaded(), "Claude is overloaded; the answer was cut short. Please retry."),
        Some("rate_limit_error") => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "The upstream is rate limited; the answer was cut short. Please retry."),
        Some("timeout_error") => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "The upstream timed out; the answer was cut short. Please retry."),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "The upstream failed while answering; the answer was cut short. Please retry."),
    }
}

/// An answer outside a metered request (the staff API, the demo upstream): named by a new
/// request id.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(&request_id())
    }
}

pub(super) fn set_request_id(h: &mut HeaderMap, rid: &str, dialect: Dialect) {
    if let Ok(v) = HeaderValue::from_str(rid) {
        if let Dialect::OpenAi { .. } = dialect {
            h.insert(X_REQUEST_ID.clone(), v.clone());
        }
        h.insert(REQUEST_ID.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_shape_as_json_and_as_an_sse_event() {
        let shape = serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}, "request_id": "req_1"});
        let event = ApiError::new(overloaded(), "busy").sse_event("req_1");
        let data = std::str::from_utf8(&event).unwrap().strip_prefix("event: error\ndata: ").unwrap().strip_suffix("\n\n").unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(data).unwrap(), shape);
        let resp = ApiError::new(overloaded(), "busy").should_retry(true).respond("req_1");
        assert_eq!((resp.status().as_u16(), resp.headers()["request-id"].to_str().unwrap()), (529, "req_1"));
        assert_eq!(resp.headers()["x-should-retry"], "true");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 10).await.unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), shape);
    }
}
