//! An Anthropic SSE stream made into OpenAI `chat.completion.chunk`s, event by event as they
//! arrive (never held back to be merged): text and thinking deltas become `content` and
//! `reasoning_content`, tool-use blocks `tool_calls` with their arguments streamed, the stop
//! reason a `finish_reason`, then — when asked — one usage chunk, then `[DONE]`. An `error`
//! event (the gateway's own words, see `MeteredStream`) becomes OpenAI's error object. It wraps
//! the metered stream, which reads usage from the original bytes, so billing is the same as for
//! `/v1/messages`; dropping it drops the metered stream, which drains the upstream as usual.

use super::response::{completion_id, finish_reason, now_unix, openai_usage};
use crate::pricing::UsageReport;
use bytes::Bytes;
use futures::Stream;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::task::{Context, Poll};

pub(in crate::gateway) struct ChunkStream<S> {
    inner: S,
    /// the tail of an event not yet complete
    pending: Vec<u8>,
    out: VecDeque<Bytes>,
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    /// tool-use content block index → the call's index among tool calls
    tools: HashMap<u64, usize>,
    usage: UsageReport,
    ended: bool,
}

impl<S> ChunkStream<S> {
    pub(in crate::gateway) fn new(inner: S, model: &str, include_usage: bool) -> Self {
        ChunkStream {
            inner,
            pending: Vec::new(),
            out: VecDeque::new(),
            id: completion_id("msg"),
            model: model.to_string(),
            created: now_unix(),
            include_usage,
            tools: HashMap::new(),
            usage: UsageReport::default(),
            ended: false,
        }
    }

    fn chunk(&mut self, delta: Value, finish: Option<&str>) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        self.data(&c);
    }

    fn data(&mut self, v: &Value) {
        self.out.push_back(Bytes::from(format!("data: {v}\n\n")));
    }

    /// Complete events out of `pending`, translated.
    fn translate_pending(&mut self) {
        while let Some(end) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end.1).take(end.0).collect();
            self.translate(&event);
        }
    }

    fn translate(&mut self, event: &[u8]) {
        let Ok(text) = std::str::from_utf8(event) else { return };
        let data: String = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect::<Vec<_>>().join("\n");
        let Ok(v) = serde_json::from_str::<Value>(&data) else { return };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                #[derive(Deserialize)]
                struct Start {
                    #[serde(default)]
                    id: Option<String>,
                    #[serde(default)]
                    model: Option<String>,
                    #[serde(default)]
                    usage: UsageReport,
                }
                if let Some(m) = v.get("message").and_then(|m| Start::deserialize(m).ok()) {
                    if let Some(id) = m.id {
                        self.id = completion_id(&id);
                    }
                    if let Some(model) = m.model {
                        self.model = model;
                    }
                    self.usage.merge(&m.usage);
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None);
            }
            Some("content_block_start") => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = self.tools.len();
                    self.tools.insert(v.get("index").and_then(Value::as_u64).unwrap_or(0), index);
                    let call = json!({"index": index, "id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": ""}});
                    self.chunk(json!({"tool_calls": [call]}), None);
                }
            }
            Some("content_block_delta") => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let s = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => self.chunk(json!({"content": s("text")}), None),
                    Some("thinking_delta") => self.chunk(json!({"reasoning_content": s("thinking")}), None),
                    Some("input_json_delta") => {
                        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if let Some(&index) = self.tools.get(&block) {
                            self.chunk(json!({"tool_calls": [{"index": index, "function": {"arguments": s("partial_json")}}]}), None);
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                if let Some(u) = v.get("usage").and_then(|u| UsageReport::deserialize(u).ok()) {
                    self.usage.merge(&u);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.chunk(json!({}), Some(finish_reason(reason)));
                }
            }
            Some("message_stop") => {
                if self.include_usage {
                    let c = json!({
                        "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": openai_usage(&self.usage),
                    });
                    self.data(&c);
                }
                self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                self.ended = true;
            }
            Some("error") => {
                let e = v.get("error").unwrap_or(&Value::Null);
                let kind = e.get("type").cloned().unwrap_or(Value::Null);
                self.data(&json!({"error": {"message": e.get("message"), "type": kind, "param": null, "code": kind}}));
                self.ended = true;
            }
            // keeps clients' idle watchdogs fed; OpenAI's SDKs skip comment lines
            Some("ping") => self.out.push_back(Bytes::from_static(b": ping\n\n")),
            _ => {}
        }
    }
}

/// Where the first complete event in `buf` ends: (its length, the length including the blank
/// line after it). Events end with a blank line (`\n\n` or `\r\n\r\n`).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| (i, i + 2));
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

impl<S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin> Stream for ChunkStream<S> {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(c))) => {
                    this.pending.extend_from_slice(&c);
                    this.translate_pending();
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => {
                    this.ended = true;
                    // an event the upstream left without its blank line
                    if !this.pending.is_empty() {
                        let rest = std::mem::take(&mut this.pending);
                        this.translate(&rest);
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn sse(event: &str, data: Value) -> String {
        format!("event: {event}\ndata: {data}\n\n")
    }

    async fn translate(events: &str, split: usize, include_usage: bool) -> Vec<String> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = events.as_bytes().chunks(split).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let s = ChunkStream::new(futures::stream::iter(chunks), "claude-x", include_usage);
        let out: Vec<_> = s.map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap()).collect().await;
        out.concat().split("\n\n").filter(|l| !l.is_empty()).map(str::to_string).collect()
    }

    #[tokio::test]
    async fn a_tool_call_streams_its_arguments_whatever_the_chunking() {
        let events = [
            sse("message_start", json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}})),
            sse("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
            sse("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me look."}})),
            sse("content_block_start", json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})),
            sse("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}})),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n".to_string(),
            sse("content_block_delta", json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})),
            sse("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 25}})),
            sse("message_stop", json!({"type": "message_stop"})),
        ]
        .concat();
        for split in [1, 7, 4096] {
            let lines = translate(&events, split, true).await;
            let data: Vec<Value> = lines.iter().filter_map(|l| l.strip_prefix("data: ")).filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
            assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(data[0]["id"], "chatcmpl-msg_1");
            assert_eq!(data[1]["choices"][0]["delta"]["content"], "Let me look.");
            assert_eq!(data[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "weather");
            let args: String = data.iter().filter_map(|d| d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()).collect();
            assert_eq!(args, "{\"city\":\"Paris\"}");
            assert!(lines.contains(&": ping".to_string()));
            let finish: Vec<_> = data.iter().filter_map(|d| d["choices"][0]["finish_reason"].as_str()).collect();
            assert_eq!(finish, ["tool_calls"]);
            let usage = &data.last().unwrap()["usage"];
            assert_eq!((usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()), (Some(100), Some(25)));
            assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 90);
            assert_eq!(lines.last().unwrap(), "data: [DONE]");
        }
    }

    #[tokio::test]
    async fn an_error_event_becomes_openais_error_and_ends_the_stream() {
        let events = [
            sse("message_start", json!({"type": "message_start", "message": {"id": "msg_2", "model": "claude-x", "usage": {}}})),
            sse("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Claude is overloaded"}, "request_id": "req_1"})),
        ]
        .concat();
        let lines = translate(&events, 5, false).await;
        let last: Value = serde_json::from_str(lines.last().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(last["error"]["type"], "overloaded_error");
        assert!(!lines.iter().any(|l| l.contains("[DONE]")));
        assert!(lines.iter().all(|l| !l.contains("\"usage\"")), "no usage chunk unless asked");
    }
}
