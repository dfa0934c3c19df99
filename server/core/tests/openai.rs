//! `POST /v1/chat/completions` (OpenAI's format) against in-process fake upstreams and a fresh
//! Postgres per test: what reaches the upstream, what the client reads, and that the books are
//! those of a `/v1/messages` request — including a client who leaves a stream early.
mod common;

use cloudrouter_core::billing::ledger;
use cloudrouter_core::demo::{FakeBehavior, PinnedUsage};
use common::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;

const SONNET: &str = "claude-sonnet-4-6";

fn pinned() -> PinnedUsage {
    PinnedUsage { input_tokens: 1000, output_tokens: 500, cache_write_5m_tokens: 1000, cache_write_1h_tokens: 2000, cache_read_tokens: 10_000 }
}
// 1000×3 + 500×15 + 1000×3.75 + 2000×6 + 10000×0.3 = 29 250 µ$ (Sonnet 4.6), on Stable ×5
const PINNED_CHARGE: i64 = 29_250 * 5;

async fn chat(base: &str, key: &str, v: &Value) -> reqwest::Response {
    client().post(format!("{base}/v1/chat/completions")).bearer_auth(key).json(v).send().await.unwrap()
}

async fn openai_error(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    assert!(r.headers()["request-id"].to_str().unwrap().starts_with("req_"));
    assert_eq!(r.headers()["x-request-id"], r.headers()["request-id"], "OpenAI's SDKs read x-request-id");
    let v: Value = r.json().await.unwrap();
    assert!(v.get("type").is_none(), "OpenAI's shape, not Anthropic's: {v}");
    assert_eq!(v["error"]["type"], v["error"]["code"]);
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    (status, v["error"]["type"].as_str().unwrap().to_string())
}

fn data_lines(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("data: ")).collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_completion_reaches_claude_as_a_message_and_is_billed_as_one(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "stable").await;

    let png = "data:image/png;base64,iVBORw0KGgo=";
    let req = json!({
        "model": SONNET,
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "stop": "END",
        "user": "end-user-7",
        "seed": 42,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units.", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": png}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}},
            ]},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "user", "content": "So?"},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Looks up", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "none",
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
    });
    let r = chat(&gw.base, &k, &req).await;
    assert_eq!(r.status(), 200);
    let rid = r.headers()["request-id"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-msg_"));
    assert_eq!(v["model"], SONNET);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // prompt tokens count every input token the model read, cache writes and reads included
    assert_eq!(v["usage"], json!({"prompt_tokens": 14_000, "completion_tokens": 500, "total_tokens": 14_500, "prompt_tokens_details": {"cached_tokens": 10_000}}));

    let seen: Value = serde_json::from_slice(&up.last_request().unwrap().body).unwrap();
    assert_eq!(up.last_request().unwrap().headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        seen,
        json!({
            "model": SONNET,
            "max_tokens": 300,
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cat"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                    {"type": "text", "text": "So?"},
                ]},
            ],
            "tools": [{"name": "lookup", "description": "Looks up", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
            "tool_choice": {"type": "none"},
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "metadata": {"user_id": "end-user-7"},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        })
    );

    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 1);
    let u = &rows[0];
    assert_eq!((u.id.as_str(), u.endpoint.as_str(), u.status, u.stream), (rid.as_str(), "chat_completions", 200, false));
    assert_eq!(u.charge_micros, cny(PINNED_CHARGE));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - PINNED_CHARGE));
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_streamed_tool_call_round_trip_with_usage_at_the_end(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "stable").await;
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}]);
    let mut req = json!({
        "model": SONNET, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools,
    });
    let r = chat(&gw.base, &k, &req).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let lines = data_lines(&text);
    assert_eq!(*lines.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert!(calls.len() > 2, "arguments arrive in pieces: {calls:?}");
    assert_eq!(calls[0][0]["function"]["name"], "weather");
    let id = calls[0][0]["id"].as_str().unwrap().to_string();
    let args: String = calls.iter().filter_map(|c| c[0]["function"]["arguments"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"city": "example", "days": 1}));
    let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
    assert_eq!(finish, ["tool_calls"]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 500);

    // the result goes back; Claude answers with it
    req["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "weather", "arguments": args}}]}),
        json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21°C"}),
    ]);
    let text = chat(&gw.base, &k, &req).await.text().await.unwrap();
    let said: String = data_lines(&text)
        .iter()
        .filter(|l| **l != "[DONE]")
        .filter_map(|l| serde_json::from_str::<Value>(l).unwrap()["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    assert!(said.contains("sunny, 21°C"), "{said}");

    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|u| u.stream && u.endpoint == "chat_completions" && u.charge_micros == cny(PINNED_CHARGE)));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - 2 * PINNED_CHARGE));
    gw.stop().await;
}

/// The attack: read the first chunks of a long answer and hang up, hoping to pay for little.
#[sqlx::test(migrations = "../../migrations")]
async fn a_client_who_leaves_a_stream_early_pays_for_the_whole_answer(pool: PgPool) {
    let b = FakeBehavior { usage: Some(pinned()), event_delay: Duration::from_millis(30), ..Default::default() };
    let (_up, _) = fake("a", &pool, b, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "stable").await;
    let mut r = chat(&gw.base, &k, &json!({"model": SONNET, "stream": true, "max_tokens": 1000, "messages": [{"role": "user", "content": "A long story"}]})).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: "));
    drop(r);
    // the gateway reads the upstream on to its final usage
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        gw.sync().await;
        if !usage_rows(&pool, user).await.is_empty() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].outcome.as_str(), rows[0].charge_micros), ("client_closed", cny(PINNED_CHARGE)));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - PINNED_CHARGE));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn refusals_are_in_openais_shape(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let rich = key(&pool, customer(&pool, "100").await, "stable").await;
    let broke_user = customer(&pool, "0").await;
    let broke = key(&pool, broke_user, "stable").await;
    let hello = json!({"model": SONNET, "messages": [{"role": "user", "content": "Hi"}]});

    assert_eq!(openai_error(chat(&gw.base, "cr-wrong", &hello).await).await, (401, "authentication_error".into()));
    assert_eq!(openai_error(chat(&gw.base, &broke, &hello).await).await, (402, "billing_error".into()));
    let unknown = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(openai_error(chat(&gw.base, &rich, &unknown).await).await, (404, "not_found_error".into()));
    for bad in [
        json!({"model": SONNET, "n": 2, "messages": [{"role": "user", "content": "Hi"}]}),
        json!({"model": SONNET, "logprobs": true, "messages": [{"role": "user", "content": "Hi"}]}),
        json!({"model": SONNET, "messages": []}),
        json!({"model": SONNET, "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
        json!({"model": SONNET, "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{not json"}}]}]}),
        json!({"model": SONNET, "reasoning_effort": "high", "max_tokens": 500, "messages": [{"role": "user", "content": "Hi"}]}),
    ] {
        assert_eq!(openai_error(chat(&gw.base, &rich, &bad).await).await, (400, "invalid_request_error".into()), "{bad}");
    }
    let r = client().post(format!("{}/v1/chat/completions", gw.base)).bearer_auth(&rich).body("{oops").send().await.unwrap();
    assert_eq!(openai_error(r).await, (400, "invalid_request_error".into()));

    // every upstream overloaded: 529 in OpenAI's shape, after the failover
    up.set(FakeBehavior { fail_status: Some(529), ..Default::default() });
    let (status, kind) = openai_error(chat(&gw.base, &rich, &hello).await).await;
    assert_eq!((status, kind.as_str()), (529, "overloaded_error"));
    gw.sync().await;
    let refused = usage_rows(&pool, broke_user).await;
    assert_eq!((refused.len(), refused[0].status, refused[0].charge_micros), (1, 402, cny(0)));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn models_answer_in_the_shape_the_client_asks_for(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let k = key(&pool, customer(&pool, "1").await, "stable").await;
    let openai: Value = client().get(format!("{}/v1/models", gw.base)).bearer_auth(&k).send().await.unwrap().json().await.unwrap();
    assert_eq!(openai["object"], "list");
    assert!(openai["data"].as_array().unwrap().iter().any(|m| m["id"] == SONNET && m["object"] == "model" && m["owned_by"] == "anthropic"));
    let one: Value = client().get(format!("{}/v1/models/{SONNET}", gw.base)).bearer_auth(&k).send().await.unwrap().json().await.unwrap();
    assert_eq!((one["id"].as_str(), one["object"].as_str()), (Some(SONNET), Some("model")));
    let anthropic: Value = client()
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(&k)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(anthropic.get("has_more").is_some() && anthropic.get("object").is_none());
    let missing = client().get(format!("{}/v1/models/gpt-4o", gw.base)).bearer_auth(&k).send().await.unwrap();
    assert_eq!(openai_error(missing).await, (404, "not_found_error".into()));
    gw.stop().await;
}
