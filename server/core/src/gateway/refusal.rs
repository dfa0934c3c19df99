//! What an upstream's refusal (a 4xx other than 429) means: its account cannot serve (out of
//! rotation, fail over), the request itself is at fault (the message word for word), or neither
//! (its status, in CloudRouter's words). Kept apart because the rule protects the pool: no
//! customer request may take an upstream out of rotation.

use super::error::ApiError;
use axum::http::StatusCode;
use serde::Deserialize;

/// What an upstream's non-retryable answer (4xx) means. The rule (docs/gateway.md, "Errors"):
/// * its account cannot serve — 401 (our credential), 402, a `billing_error`, its credit balance,
///   or its organisation, workspace or account disabled, suspended, banned or deactivated: out of
///   rotation, and the request fails over. Only what no request can cause counts: a customer must
///   not be able to take the pool out with a crafted request (a 403 about a feature is theirs);
/// * about the request itself — `invalid_request_error` (400), `not_found_error` (404),
///   `request_too_large` (413) whose message names nothing of the upstream's account: the message
///   word for word (Claude Code compacts on "prompt is too long");
/// * anything else: its status, in CloudRouter's words.
///
/// The upstream's `request_id` and headers never reach the client.
pub(super) enum Refusal {
    /// The upstream's account cannot serve; the reason, for staff (the Upstreams page).
    Account(String),
    /// The client's answer (with the upstream's `x-should-retry`, if it sent one).
    Client(ApiError),
}

/// Words that tie a message to the upstream's account (or carry its identifiers).
const ACCOUNT_WORDS: &[&str] = &[
    "credit", "billing", "balance", "organization", "organisation", "org-", "org_", "workspace", "wrk_", "account", "api key",
    "api_key", "x-api-key", "req_", "spend limit",
];

pub(super) fn refusal(status: StatusCode, body: &[u8], should_retry: Option<bool>) -> Refusal {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        message: String,
    }
    let (kind, message) = serde_json::from_slice::<Body>(body).map(|b| (b.error.kind, b.error.message)).unwrap_or_default();
    let lower = message.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    let about_account = has(&["credit balance", "out of credit"])
        || (has(&["organization", "organisation", "workspace", "account"]) && has(&["disabled", "suspended", "banned", "deactivated"]));
    if matches!(status.as_u16(), 401 | 402) || kind == "billing_error" || about_account {
        let short: String = message.chars().take(300).collect();
        return Refusal::Account(format!("upstream {} {kind}: {short}", status.as_u16()));
    }
    // the type that goes with the status, as the client will see it (`error_type`)
    let about_request = matches!((status.as_u16(), kind.as_str()), (400, "invalid_request_error") | (404, "not_found_error") | (413, "request_too_large"));
    let e = if about_request && !message.is_empty() && !ACCOUNT_WORDS.iter().any(|w| lower.contains(w)) {
        ApiError::new(status, message)
    } else {
        ApiError::new(status, format!("The upstream refused the request (HTTP {}).", status.as_u16()))
    };
    Refusal::Client(match should_retry {
        Some(r) => e.should_retry(r),
        None => e,
    })
}
