//! An OpenAI Chat Completions request made into an Anthropic Messages request. What cannot be
//! said to Claude is refused with a 400 naming the field, never dropped silently when it changes
//! the answer's shape (`n` above 1, log probabilities, audio); hints Claude has no use for
//! (`seed`, penalties, `logit_bias`, `store`) are ignored. README, "OpenAI format", lists both.

use super::super::error::ApiError;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// `max_tokens` when the client sets neither `max_tokens` nor `max_completion_tokens` (Messages
/// requires one; it also bounds the hold reserved for the request).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Thinking budgets for `reasoning_effort` (`minimal` turns thinking off).
const EFFORT_BUDGETS: [(&str, u64); 3] = [("low", 1024), ("medium", 4096), ("high", 16384)];

/// The smallest thinking budget Messages accepts.
const MIN_THINKING_BUDGET: u64 = 1024;

/// Said to Claude for `response_format: {"type": "json_object"}`, which Messages has no switch for.
const JSON_OBJECT_INSTRUCTION: &str = "Answer with a single JSON object and nothing else.";

pub(in crate::gateway) struct Translated {
    /// the Messages request body
    pub body: Bytes,
    pub include_usage: bool,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

pub(in crate::gateway) fn to_messages(body: &[u8]) -> Result<Translated, ApiError> {
    let req: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(bad("The request body must be a JSON object")),
        Err(_) => return Err(bad("We could not parse the JSON body of your request")),
    };
    let mut out = Map::new();
    let model = req.get("model").and_then(Value::as_str).ok_or_else(|| bad("model: a model id is required"))?;
    out.insert("model".into(), json!(model));

    refuse_unsupported(&req)?;
    let max_tokens = match req.get("max_completion_tokens").or_else(|| req.get("max_tokens")) {
        None | Some(Value::Null) => DEFAULT_MAX_TOKENS,
        Some(v) => v.as_u64().filter(|n| *n > 0).ok_or_else(|| bad("max_completion_tokens: must be a positive integer"))?,
    };
    out.insert("max_tokens".into(), json!(max_tokens));

    let (system, messages) = conversation(req.get("messages"))?;
    let mut system = system;
    if let Some(format) = req.get("response_format").filter(|f| !f.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => system.push(json!({"type": "text", "text": JSON_OBJECT_INSTRUCTION})),
            Some("json_schema") => {
                let schema = format.pointer("/json_schema/schema").filter(|s| s.is_object()).ok_or_else(|| bad("response_format.json_schema.schema: a JSON schema object is required"))?;
                out.insert("output_config".into(), json!({"format": {"type": "json_schema", "schema": schema}}));
            }
            _ => return Err(bad("response_format.type: must be text, json_object or json_schema")),
        }
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));

    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        out.insert("tools".into(), Value::Array(tool_definitions(tools)?));
    }
    let parallel = req.get("parallel_tool_calls").and_then(Value::as_bool).unwrap_or(true);
    if let Some(choice) = tool_choice(req.get("tool_choice"), parallel)? {
        out.insert("tool_choice".into(), choice);
    }
    match req.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        Some(_) => return Err(bad("stop: must be a string or an array of strings")),
    }
    // sampling and Claude's own settings pass as they are: the upstream judges them (newer
    // models refuse `temperature` with `thinking`, and above 1)
    for field in ["temperature", "top_p", "top_k", "thinking"] {
        if let Some(v) = req.get(field).filter(|v| !v.is_null()) {
            out.insert(field.into(), v.clone());
        }
    }
    if let Some(effort) = req.get("reasoning_effort").and_then(Value::as_str) {
        if let Some(thinking) = thinking_for(effort, max_tokens)? {
            out.insert("thinking".into(), thinking);
        }
    }
    if let Some(user) = req.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        out.insert("stream".into(), json!(true));
    }
    let include_usage = stream && req.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|_| bad("The request could not be translated"))?;
    Ok(Translated { body: Bytes::from(body), include_usage })
}

/// Fields whose answer Claude cannot give in OpenAI's terms.
fn refuse_unsupported(req: &Map<String, Value>) -> Result<(), ApiError> {
    if req.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return Err(bad("n: Claude models return one choice; n must be 1"));
    }
    if req.get("logprobs").and_then(Value::as_bool) == Some(true) || req.get("top_logprobs").is_some_and(|v| !v.is_null()) {
        return Err(bad("logprobs: log probabilities are not available for Claude models"));
    }
    if req.get("audio").is_some_and(|v| !v.is_null())
        || req.get("modalities").and_then(Value::as_array).is_some_and(|m| m.iter().any(|x| x != "text"))
    {
        return Err(bad("modalities: Claude models answer in text only"));
    }
    if req.get("functions").is_some() || req.get("function_call").is_some() {
        return Err(bad("functions: the deprecated functions API is not supported; use tools and tool_choice"));
    }
    Ok(())
}

fn thinking_for(effort: &str, max_tokens: u64) -> Result<Option<Value>, ApiError> {
    if effort == "minimal" || effort == "none" {
        return Ok(None);
    }
    let Some(&(_, budget)) = EFFORT_BUDGETS.iter().find(|(e, _)| *e == effort) else {
        return Err(bad("reasoning_effort: must be minimal, low, medium or high"));
    };
    // the budget is part of max_tokens (as reasoning tokens are of max_completion_tokens)
    let budget = budget.min(max_tokens.saturating_sub(1));
    if budget < MIN_THINKING_BUDGET {
        return Err(bad(format!("reasoning_effort: thinking needs max_completion_tokens above {MIN_THINKING_BUDGET}")));
    }
    Ok(Some(json!({"type": "enabled", "budget_tokens": budget})))
}

/// `messages` into Messages' `system` blocks and alternating turns: system and developer
/// messages (wherever they stand) become system blocks, tool results user turns, and turns of
/// the same role in a row are merged.
fn conversation(messages: Option<&Value>) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let list = messages.and_then(Value::as_array).filter(|m| !m.is_empty()).ok_or_else(|| bad("messages: a non-empty array is required"))?;
    let mut system = vec![];
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in list.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| bad(format!("{}: is required", at("role"))))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, &at("content"))?);
                continue;
            }
            "user" => ("user", user_blocks(content, &at("content"))?),
            "assistant" => ("assistant", assistant_blocks(m, &at)?),
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).ok_or_else(|| bad(format!("{}: is required", at("tool_call_id"))))?;
                let result = match content {
                    Value::String(s) => json!(s),
                    other => Value::Array(text_blocks(other, &at("content"))?),
                };
                ("user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": result})])
            }
            "function" => return Err(bad(format!("{}: the deprecated function role is not supported; use tool", at("role")))),
            other => return Err(bad(format!("{}: unknown role {other:?}", at("role")))),
        };
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let turns = turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect();
    Ok((system, turns))
}

/// Text content (a string, or text parts): text blocks, with their `cache_control` if given.
fn text_blocks(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") => text_part(p, &format!("{at}[{j}]")),
                _ => Err(bad(format!("{at}[{j}].type: only text parts are allowed here"))),
            })
            .collect(),
        Value::Null => Ok(vec![]),
        _ => Err(bad(format!("{at}: must be a string or an array of parts"))),
    }
}

fn text_part(p: &Value, at: &str) -> Result<Value, ApiError> {
    let text = p.get("text").and_then(Value::as_str).ok_or_else(|| bad(format!("{at}.text: is required")))?;
    let mut block = json!({"type": "text", "text": text});
    if let Some(cc) = p.get("cache_control") {
        block["cache_control"] = cc.clone();
    }
    Ok(block)
}

fn user_blocks(content: &Value, at: &str) -> Result<Vec<Value>, ApiError> {
    let Value::Array(parts) = content else { return text_blocks(content, at) };
    parts
        .iter()
        .enumerate()
        .map(|(j, p)| {
            let at = format!("{at}[{j}]");
            match p.get("type").and_then(Value::as_str) {
                Some("text") => text_part(p, &at),
                Some("image_url") => {
                    let url = p.pointer("/image_url/url").and_then(Value::as_str).ok_or_else(|| bad(format!("{at}.image_url.url: is required")))?;
                    Ok(json!({"type": "image", "source": source(url, &at, "image/")?}))
                }
                Some("file") => {
                    let data = p.pointer("/file/file_data").and_then(Value::as_str).ok_or_else(|| bad(format!("{at}.file.file_data: a data URL is required (file ids are not supported)")))?;
                    Ok(json!({"type": "document", "source": source(data, &at, "application/pdf")?}))
                }
                Some(other) => Err(bad(format!("{at}.type: {other} parts are not supported for Claude models"))),
                None => Err(bad(format!("{at}.type: is required"))),
            }
        })
        .collect()
}

/// An image or document source: a `data:` URL as base64 (its media type must start with
/// `media`), anything else as a URL Claude fetches.
fn source(url: &str, at: &str, media: &str) -> Result<Value, ApiError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return if url.starts_with("https://") || url.starts_with("http://") {
            Ok(json!({"type": "url", "url": url}))
        } else {
            Err(bad(format!("{at}: the URL must be http(s) or a base64 data URL")))
        };
    };
    match rest.split_once(";base64,") {
        Some((media_type, data)) if media_type.starts_with(media) => Ok(json!({"type": "base64", "media_type": media_type, "data": data})),
        _ => Err(bad(format!("{at}: a data URL must be base64 with a {media}… media type"))),
    }
}

fn assistant_blocks(m: &Value, at: &dyn Fn(&str) -> String) -> Result<Vec<Value>, ApiError> {
    let content = m.get("content").unwrap_or(&Value::Null);
    let mut blocks: Vec<Value> = match content {
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match p.get("type").and_then(Value::as_str) {
                Some("text") => Some(text_part(p, &format!("{}[{j}]", at("content")))),
                Some("refusal") => p.get("refusal").and_then(Value::as_str).map(|r| Ok(json!({"type": "text", "text": r}))),
                _ => Some(Err(bad(format!("{}[{j}].type: only text and refusal parts are allowed", at("content"))))),
            })
            .collect::<Result<_, _>>()?,
        other => text_blocks(other, &at("content"))?,
    };
    // Messages refuses empty text blocks; an assistant turn of only tool calls often has one
    blocks.retain(|b| b.get("text").and_then(Value::as_str) != Some(""));
    for (k, call) in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = at(&format!("tool_calls[{k}]"));
        let id = call.get("id").and_then(Value::as_str).ok_or_else(|| bad(format!("{at}.id: is required")))?;
        let name = call.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| bad(format!("{at}.function.name: is required")))?;
        let args = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
        let input: Value = if args.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(args).map_err(|_| bad(format!("{at}.function.arguments: must be a JSON object encoded as a string")))?
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

fn tool_definitions(tools: &Value) -> Result<Vec<Value>, ApiError> {
    let list = tools.as_array().ok_or_else(|| bad("tools: must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(bad(format!("tools[{i}].type: only function tools are supported")));
            }
            let f = t.get("function").ok_or_else(|| bad(format!("tools[{i}].function: is required")))?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| bad(format!("tools[{i}].function.name: is required")))?;
            let schema = f.get("parameters").filter(|p| p.is_object()).cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut tool = json!({"name": name, "input_schema": schema});
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                tool["description"] = json!(d);
            }
            Ok(tool)
        })
        .collect()
}

fn tool_choice(choice: Option<&Value>, parallel: bool) -> Result<Option<Value>, ApiError> {
    let mut out = match choice {
        None | Some(Value::Null) => {
            if parallel {
                return Ok(None);
            }
            json!({"type": "auto"})
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => return Ok(Some(json!({"type": "none"}))),
            _ => return Err(bad("tool_choice: must be none, auto, required or a named function")),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => json!({"type": "tool", "name": name}),
            None => return Err(bad("tool_choice.function.name: is required")),
        },
    };
    if !parallel {
        out["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some(out))
}
