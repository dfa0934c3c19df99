//! An Anthropic message made into an OpenAI `chat.completion`, and the parts a streamed chunk
//! shares with it: finish reasons and usage.

use crate::pricing::UsageReport;
use serde::Deserialize;
use serde_json::{json, Value};

/// OpenAI's finish reason for Claude's stop reason.
pub(super) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// OpenAI's usage object for Anthropic's (merged, as the meter reads it): prompt tokens include
/// cache writes and reads (all of them were read by the model), of which `cached_tokens` were
/// cache reads.
pub(super) fn openai_usage(u: &UsageReport) -> Value {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens.unwrap_or(0) + u.cache_creation_input_tokens.unwrap_or(0) + cached;
    let completion = u.output_tokens.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The completion's id for a message id (`msg_…` → `chatcmpl-msg_…`).
pub(super) fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

pub(super) fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: UsageReport,
}

/// The `chat.completion` for an Anthropic message body; None when the body is not a message.
pub(in crate::gateway) fn completion(body: &[u8]) -> Option<Value> {
    let m: Message = serde_json::from_slice(body).ok()?;
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = vec![];
    for block in &m.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id"),
                "type": "function",
                "function": {
                    "name": block.get("name"),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            // server tools' blocks and redacted thinking have no OpenAI form
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    Some(json!({
        "id": completion_id(&m.id),
        "object": "chat.completion",
        "created": now_unix(),
        "model": m.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(m.stop_reason.as_deref().unwrap_or("end_turn")),
            "logprobs": null,
        }],
        "usage": openai_usage(&m.usage),
        "system_fingerprint": null,
    }))
}
