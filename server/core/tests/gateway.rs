//! Gateway integration tests against in-process fake upstreams and a fresh Postgres per test.
mod common;

use common::*;
use cloudrouter_core::demo::{FakeBehavior, PinnedUsage};
use cloudrouter_core::gateway::GatewayConfig;
use cloudrouter_core::keys::{self, NewKey};
use cloudrouter_core::billing::ledger;
use sqlx::PgPool;
use std::time::{Duration, Instant};

const SONNET: &str = "claude-sonnet-4-6";

fn pinned() -> PinnedUsage {
    PinnedUsage { input_tokens: 1000, output_tokens: 500, cache_write_5m_tokens: 1000, cache_write_1h_tokens: 2000, cache_read_tokens: 10_000 }
}
// 1000×3 + 500×15 + 1000×3.75 + 2000×6 + 10000×0.3 = 29 250 µ$
const PINNED_COST: i64 = 29_250;

#[sqlx::test(migrations = "../../migrations")]
async fn json_passthrough_metering_and_charge(pool: PgPool) {
    let (up, up_id) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), echo: true, ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "stable").await;

    // an unusual body with unknown fields, odd spacing and unicode must arrive byte for byte
    let raw = format!(
        r#"{{ "model" : "{SONNET}", "max_tokens": 1000, "messages": [{{"role":"user","content":[{{"type":"text","text":"héllo","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}]}}],
            "thinking": {{"type":"enabled","budget_tokens":1024}}, "metadata": {{"user_id":"{{\"session\":\"x\"}}"}}, "context_management": {{"edits":[]}}, "tools": [] }}"#
    );
    let r = client()
        .post(format!("{}/v1/messages?beta=true", gw.base))
        .header("authorization", format!("Bearer {k}"))
        .header("anthropic-version", "2026-10-21")
        .header("anthropic-beta", "context-management-2025-06-27,interleaved-thinking-2025-05-14")
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["request-id"].to_str().unwrap().to_string();
    assert!(rid.starts_with("req_"));
    assert!(r.headers().get("anthropic-ratelimit-requests-remaining").is_none(), "upstream limits are not leaked");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], SONNET);
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 2000);

    // what the upstream saw
    let seen = up.last_request().unwrap();
    assert_eq!(&seen.body[..], raw.as_bytes());
    assert_eq!(seen.query.as_deref(), Some("beta=true"));
    assert_eq!(seen.headers["anthropic-version"], "2026-10-21");
    assert_eq!(seen.headers["anthropic-beta"], "context-management-2025-06-27,interleaved-thinking-2025-05-14");
    assert_eq!(seen.headers["x-api-key"], "sk-upstream-a-credential");
    assert!(seen.headers.get("authorization").is_none());
    for (_, v) in seen.headers.iter() {
        assert!(!v.to_str().unwrap_or("").contains(&k), "client key must not reach the upstream");
    }

    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 1);
    let u = &rows[0];
    assert_eq!(u.id, rid);
    assert_eq!((u.status, u.outcome.as_str(), u.stream, u.attempts), (200, "ok", false, 1));
    assert_eq!(u.served_model.as_deref(), Some(SONNET));
    assert_eq!(u.upstream_id, Some(up_id));
    assert_eq!(
        (u.tokens.input_tokens, u.tokens.output_tokens, u.tokens.cache_write_5m_tokens, u.tokens.cache_write_1h_tokens, u.tokens.cache_read_tokens),
        (1000, 500, 1000, 2000, 10_000)
    );
    assert_eq!(u.cost_micro_usd, usd(PINNED_COST));
    assert_eq!(u.charge_micros, cny(PINNED_COST * 5), "stable channel ¥5/$");
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - PINNED_COST * 5));
    assert!(ledger::verify(&pool, user).await.unwrap());
    let e = ledger::entries(&pool, user, 10).await.unwrap();
    assert_eq!(e[0].kind.as_str(), "usage");
    assert_eq!(e[0].amount.micros(), -PINNED_COST * 5);
    let ks = keys::list(&pool, user).await.unwrap();
    assert_eq!(ks[0].spent_micros, cny(PINNED_COST * 5));
    assert!(ks[0].last_used_at.is_some());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn stream_passthrough_is_incremental_and_metered(pool: PgPool) {
    let (_up, _) = fake(
        "a",
        &pool,
        FakeBehavior { usage: Some(pinned()), event_delay: Duration::from_millis(60), ..Default::default() },
        0,
    )
    .await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "value").await;
    let t0 = Instant::now();
    let mut r = post(&gw.base, &k, &body(SONNET, true)).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(r.headers().contains_key("request-id"));
    let first = r.chunk().await.unwrap().unwrap();
    let t_first = t0.elapsed();
    let mut text = String::from_utf8(first.to_vec()).unwrap();
    while let Some(c) = r.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&c).unwrap());
    }
    let t_all = t0.elapsed();
    assert!(text.starts_with("event: message_start\n"));
    assert!(t_all - t_first > Duration::from_millis(300), "events arrive as sent, not buffered: first {t_first:?}, all {t_all:?}");
    let names = event_names(&text);
    assert_eq!(names.first().unwrap(), "message_start");
    assert_eq!(names.last().unwrap(), "message_stop");
    assert!(names.contains(&"ping".to_string()) && names.contains(&"message_delta".to_string()));
    gw.sync().await;
    let u = &usage_rows(&pool, user).await[0];
    assert_eq!((u.stream, u.outcome.as_str()), (true, "ok"));
    assert_eq!((u.tokens.input_tokens, u.tokens.output_tokens, u.tokens.cache_write_1h_tokens, u.tokens.cache_read_tokens), (1000, 500, 2000, 10_000));
    assert_eq!(u.charge_micros, cny(PINNED_COST * 6 / 10), "value channel ¥0.6/$");
    assert!(u.ttft_ms.is_some());
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn authentication_and_permission_errors(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;

    let r = client().post(format!("{}/v1/messages", gw.base)).json(&body(SONNET, false)).send().await.unwrap();
    let (s, t, _, h) = error_of(r).await;
    assert_eq!((s, t.as_str()), (401, "authentication_error"));
    assert!(h.contains_key("request-id"));
    let (s, t, _, _) = error_of(post(&gw.base, "cr-not-a-key", &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (401, "authentication_error"));

    // Bearer works too
    let r = client()
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(&k)
        .json(&body(SONNET, false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // model checks
    let (s, t, _, _) = error_of(post(&gw.base, &k, &body("claude-nonexistent-9", false)).await).await;
    assert_eq!((s, t.as_str()), (404, "not_found_error"));
    let limited = key_with(
        &pool,
        user,
        NewKey { name: "haiku only".into(), channel: "smart".into(), allowed_models: vec!["claude-haiku-4-5-20251001".into()], ..Default::default() },
    )
    .await;
    let (s, t, m, _) = error_of(post(&gw.base, &limited, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (403, "permission_error"), "{m}");
    assert_eq!(post(&gw.base, &limited, &body("claude-haiku-4-5-20251001", false)).await.status(), 200);

    // malformed bodies
    let r = client().post(format!("{}/v1/messages", gw.base)).header("x-api-key", &k).body("{not json").send().await.unwrap();
    let (s, t, _, _) = error_of(r).await;
    assert_eq!((s, t.as_str()), (400, "invalid_request_error"));
    let (s, t, _, _) = error_of(post(&gw.base, &k, &serde_json::json!({"model": SONNET, "messages": []})).await).await;
    assert_eq!((s, t.as_str()), (400, "invalid_request_error"));
    let (s, t, _, _) = error_of(post(&gw.base, &k, &serde_json::json!({"max_tokens": 5, "messages": []})).await).await;
    assert_eq!((s, t.as_str()), (400, "invalid_request_error"));

    // expired key
    let expired = key_with(
        &pool,
        user,
        NewKey { name: "old".into(), channel: "smart".into(), expires_at: Some(chrono::Utc::now() - chrono::Duration::minutes(1)), ..Default::default() },
    )
    .await;
    let (s, _, m, _) = error_of(post(&gw.base, &expired, &body(SONNET, false)).await).await;
    assert_eq!(s, 401, "{m}");

    // suspension takes effect at once (NOTIFY on users)
    assert_eq!(post(&gw.base, &k, &body(SONNET, false)).await.status(), 200);
    cloudrouter_core::accounts::set_suspended(&pool, user, true).await.unwrap();
    let mut status = 0;
    for _ in 0..50 {
        status = post(&gw.base, &k, &body(SONNET, false)).await.status().as_u16();
        if status == 403 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 403);
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn revocation_takes_effect_promptly_on_every_instance(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let (summary, k) = keys::create(&pool, user, NewKey { name: "k".into(), channel: "smart".into(), ..Default::default() }).await.unwrap();
    assert!(summary.prefix.starts_with("cr-") && k.starts_with(&summary.prefix) && k.len() == 43);
    // both instances have the key cached
    assert_eq!(post(&a.base, &k, &body(SONNET, false)).await.status(), 200);
    assert_eq!(post(&b.base, &k, &body(SONNET, false)).await.status(), 200);
    let other = customer(&pool, "0").await;
    assert!(!keys::revoke(&pool, other, summary.id).await.unwrap(), "only the owner may revoke");
    assert!(keys::revoke(&pool, user, summary.id).await.unwrap());
    let t0 = Instant::now();
    for gw in [&a, &b] {
        loop {
            let s = post(&gw.base, &k, &body(SONNET, false)).await.status();
            if s == 401 {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(2), "revocation not seen after 2 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn body_limit(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, GatewayConfig { body_limit: 2048, ..fast_config() }).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let mut b = body(SONNET, false);
    b["messages"][0]["content"] = serde_json::Value::String("x".repeat(4096));
    let (s, t, _, _) = error_of(post(&gw.base, &k, &b).await).await;
    assert_eq!((s, t.as_str()), (413, "request_too_large"));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn balance_and_spend_limit(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let poor = customer(&pool, "0.01").await;
    let k = key(&pool, poor, "stable").await;
    let (s, t, m, _) = error_of(post(&gw.base, &k, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (402, "billing_error"));
    assert!(m.contains("Insufficient balance"), "{m}");

    let rich = customer(&pool, "1000").await;
    let capped = key_with(&pool, rich, NewKey { name: "c".into(), channel: "stable".into(), spend_limit_micros: Some(cny(10_000)), ..Default::default() }).await;
    let (s, t, m, _) = error_of(post(&gw.base, &capped, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (402, "billing_error"));
    assert!(m.contains("spending limit"), "{m}");
    gw.sync().await;
    assert_eq!(ledger::balance(&pool, rich).await.unwrap(), cny(1_000_000_000));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn rpm_and_concurrency_limits(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key_with(&pool, user, NewKey { name: "r".into(), channel: "smart".into(), rpm_limit: Some(3), ..Default::default() }).await;
    // may straddle a minute boundary: then a 4th request passes; retry once
    let mut limited = None;
    for _ in 0..8 {
        let r = post(&gw.base, &k, &body(SONNET, false)).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let (s, t, _, h) = error_of(limited.expect("rate limited")).await;
    assert_eq!((s, t.as_str()), (429, "rate_limit_error"));
    let ra: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra));

    up.set(FakeBehavior { first_byte_delay: Duration::from_millis(400), ..Default::default() });
    let k = key_with(&pool, user, NewKey { name: "c".into(), channel: "smart".into(), concurrency_limit: Some(2), ..Default::default() }).await;
    let b = body(SONNET, false);
    let futs: Vec<_> = (0..5).map(|_| post(&gw.base, &k, &b)).collect();
    let rs = futures::future::join_all(futs).await;
    let ok = rs.iter().filter(|r| r.status() == 200).count();
    let limited = rs.iter().filter(|r| r.status() == 429).count();
    assert_eq!((ok, limited), (2, 3));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn channel_capacity_is_shared_across_instances(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { first_byte_delay: Duration::from_millis(400), ..Default::default() }, 0).await;
    cloudrouter_core::catalogue::update_channel(&pool, "value", CnyPerUsd::from_micros(600_000), 3, 0).await.unwrap();
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "value").await;
    let rs = post_spread(&[&a, &b], &k, 8, &body(SONNET, false)).await;
    assert_eq!(rs.iter().filter(|s| **s == 200).count(), 3, "{rs:?}");
    assert!(rs.iter().all(|s| *s == 200 || *s == 529), "{rs:?}");
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn failover_on_every_retryable_failure(pool: PgPool) {
    let (bad, _) = fake("bad", &pool, FakeBehavior::default(), 10).await;
    let (good, good_id) = fake("good", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    // an upstream nobody listens on, highest priority
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let dead_id = add_upstream(&pool, "dead", &format!("http://{dead}"), &["smart"], 20).await;
    let gw = Gw::start(&pool, GatewayConfig { breaker_failures: 1000, max_attempts: 4, ..fast_config() }).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let cases = [
        FakeBehavior { fail_status: Some(529), ..Default::default() },
        FakeBehavior { fail_status: Some(500), ..Default::default() },
        FakeBehavior { fail_status: Some(503), ..Default::default() },
        FakeBehavior { fail_status: Some(429), ..Default::default() },
        FakeBehavior { drop_connection: true, ..Default::default() },
        FakeBehavior { first_byte_delay: Duration::from_secs(5), ..Default::default() },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        bad.set(c);
        for stream in [false, true] {
            let r = post(&gw.base, &k, &body(SONNET, stream)).await;
            assert_eq!(r.status(), 200, "case {i} stream {stream}");
            let text = r.text().await.unwrap();
            assert!(!text.contains("\"error\""), "case {i}: {text}");
        }
    }
    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 12);
    for u in &rows {
        assert_eq!(u.upstream_id, Some(good_id));
        // dead, bad, good — until the failure-rate rule opens the circuits of dead and bad
        assert!((1..=3).contains(&u.attempts));
        assert_eq!(u.charge_micros, cny(PINNED_COST), "billed once, for the attempt that answered");
    }
    assert_eq!(rows.last().unwrap().attempts, 3, "first request: dead, bad, good");
    assert!(good.requests() >= 12);
    let h = gw.gw.health();
    let dead_h = h.iter().find(|x| x.id == dead_id).unwrap();
    assert_eq!(dead_h.success_rate, Some(0.0));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - 12 * PINNED_COST));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn exhausted_errors_and_pass_through(pool: PgPool) {
    let (up, _) = fake("only", &pool, FakeBehavior { fail_status: Some(529), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, GatewayConfig { breaker_failures: 1000, ..fast_config() }).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let (s, t, _, h) = error_of(post(&gw.base, &k, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (529, "overloaded_error"));
    assert_eq!(h["x-should-retry"], "true");
    up.set(FakeBehavior { fail_status: Some(429), ..Default::default() });
    let (s, t, _, h) = error_of(post(&gw.base, &k, &body(SONNET, true)).await).await;
    assert_eq!((s, t.as_str()), (429, "rate_limit_error"));
    assert!(h.contains_key("retry-after"));
    // a client error from the upstream reaches the client word for word, not retried
    up.set(FakeBehavior { fail_status: Some(400), ..Default::default() });
    let n = up.requests();
    let (s, t, m, _) = error_of(post(&gw.base, &k, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str(), m.as_str()), (400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"));
    assert_eq!(up.requests(), n + 1);
    gw.sync().await;
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000), "failed requests cost nothing");
    assert!(usage_rows(&pool, user).await.iter().all(|u| u.charge_micros.micros() == 0));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn breaker_opens_skips_and_recovers(pool: PgPool) {
    let (bad, bad_id) = fake("bad", &pool, FakeBehavior { fail_status: Some(500), ..Default::default() }, 10).await;
    let (_good, _) = fake("good", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, GatewayConfig { breaker_failures: 3, breaker_open_for: Duration::from_millis(300), ..fast_config() }).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    // a new conversation each time: a conversation that failed over stays where it was answered
    // (cache-aware routing), so only new ones try the preferred upstream
    let conversation = |i: usize| {
        let mut b = body(SONNET, false);
        b["messages"][0]["content"] = format!("conversation {i}").into();
        b
    };
    for i in 0..10 {
        assert_eq!(post(&gw.base, &k, &conversation(i)).await.status(), 200);
    }
    assert_eq!(bad.requests(), 3, "circuit opened after 3 failures");
    let h = gw.gw.health().into_iter().find(|h| h.id == bad_id).unwrap();
    assert_eq!(h.circuit, "open");
    bad.set(FakeBehavior::default());
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(post(&gw.base, &k, &conversation(10)).await.status(), 200);
    assert_eq!(bad.requests(), 4, "recovery probe");
    assert_eq!(gw.gw.health().into_iter().find(|h| h.id == bad_id).unwrap().circuit, "closed");
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn fallback_only_when_allowed_and_recorded(pool: PgPool) {
    // sonnet-4-6's first fallback is sonnet-4-5; this upstream serves only the fallback
    let (up, up_id) = fake("a", &pool, FakeBehavior::default(), 0).await;
    cloudrouter_core::upstreams::update_routing(&mut *pool.acquire().await.unwrap(), up_id, &["smart".into()], &["claude-sonnet-4-5-20250929".into()], 0, 1, None)
        .await
        .unwrap();
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let strict = key(&pool, user, "smart").await;
    let (s, t, _, _) = error_of(post(&gw.base, &strict, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (529, "overloaded_error"));
    let flexible = key_with(&pool, user, NewKey { name: "f".into(), channel: "smart".into(), allow_fallback: true, ..Default::default() }).await;
    let r = post(&gw.base, &flexible, &body(SONNET, false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cloudrouter-served-model"], "claude-sonnet-4-5-20250929");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(up.models_seen(), vec!["claude-sonnet-4-5-20250929".to_string()]);
    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    let ok = rows.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.requested_model, SONNET);
    assert_eq!(ok.served_model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn mid_stream_cut_and_stall_end_with_error_event(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), cut_after_events: Some(4), event_delay: Duration::from_millis(20), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, GatewayConfig { idle_timeout: Duration::from_millis(300), ..fast_config() }).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let r = post(&gw.base, &k, &body(SONNET, true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let names = event_names(&text);
    assert_eq!(names.last().unwrap(), "error", "{text}");
    assert!(!names.contains(&"message_delta".to_string()));
    assert!(text.contains("\"type\":\"api_error\""));

    up.set(FakeBehavior { usage: Some(pinned()), stall_after_events: Some(3), event_delay: Duration::from_millis(20), ..Default::default() });
    let text = post(&gw.base, &k, &body(SONNET, true)).await.text().await.unwrap();
    assert_eq!(event_names(&text).last().unwrap(), "error");
    assert!(text.contains("timeout_error"));

    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    let mut outcomes: Vec<_> = rows.iter().map(|r| r.outcome.as_str()).collect();
    outcomes.sort();
    assert_eq!(outcomes, vec!["idle_timeout", "upstream_cut"]);
    // billed only for what the delivered events reported: message_start's input side and 1 output token
    let expected = 1000 * 3 + 15 + 1000 * 3_750 / 1000 + 2000 * 6 + 10_000 * 3 / 10;
    for r in &rows {
        assert_eq!(r.tokens.output_tokens, 1);
        assert_eq!(r.charge_micros, cny(expected));
    }
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_upstream_error_event_mid_stream_reaches_the_client_in_cloudrouters_words(pool: PgPool) {
    let upstream_words = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded for org-7Hq2 (credit balance too low)\"},\"request_id\":\"req_011UPSTREAM\"}\n\n";
    let (up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), stream_error: Some((4, upstream_words.into())), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    // whole events, then events split into 7-byte writes (the error event across many chunks)
    for chunk_bytes in [None, Some(7)] {
        up.set(FakeBehavior { usage: Some(pinned()), stream_error: Some((4, upstream_words.into())), chunk_bytes, event_delay: Duration::from_millis(2), ..Default::default() });
        let r = post(&gw.base, &k, &body(SONNET, true)).await;
        let rid = r.headers()["request-id"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        let names = event_names(&text);
        assert_eq!(names.iter().filter(|n| *n == "error").count(), 1, "{text}");
        assert_eq!(names.last().unwrap(), "error", "{text}");
        assert_eq!(names.len(), 5, "the four events before it pass as they came: {text}");
        for leak in ["org-7Hq2", "credit balance", "req_011UPSTREAM"] {
            assert!(!text.contains(leak), "{leak} reached the client ({chunk_bytes:?}): {text}");
        }
        assert!(text.contains("\"type\":\"overloaded_error\""), "the kind the client acts on is kept: {text}");
        assert!(text.contains(&format!("\"request_id\":\"{rid}\"")), "CloudRouter's request id: {text}");
    }
    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert!(rows.iter().all(|r| r.outcome == Outcome::UpstreamError && r.error_type.as_deref() == Some("overloaded_error")), "{rows:?}");
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn concurrent_spending_never_overspends_across_instances(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(PinnedUsage { input_tokens: 10, output_tokens: 1000, ..Default::default() }), first_byte_delay: Duration::from_millis(50), ..Default::default() }, 0).await;
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    // hold per request ≈ (body + 4096) × $6/M + 1000 × $15/M ≈ $0.042 → ¥0.042 on smart; charge ≈ ¥0.01503
    let user = customer(&pool, "0.3").await;
    let k = key(&pool, user, "smart").await;
    let rs = post_spread(&[&a, &b], &k, 40, &body(SONNET, false)).await;
    let ok = rs.iter().filter(|s| **s == 200).count() as i64;
    assert!(rs.iter().all(|s| *s == 200 || *s == 402), "{rs:?}");
    assert!(ok >= 1 && ok < 40, "{ok}");
    a.sync().await;
    b.sync().await;
    let bal = ledger::balance(&pool, user).await.unwrap();
    let charge = 10 * 3 + 1000 * 15; // µ$ = µ¥ on smart
    assert_eq!(bal, cny(300_000 - ok * charge));
    assert!(!bal.is_negative());
    assert!(ledger::verify(&pool, user).await.unwrap());
    a.stop().await;
    b.stop().await;
    let held: i64 = sqlx::query_scalar("SELECT COALESCE(sum(amount_micros),0)::BIGINT FROM balance_leases").fetch_one(&pool).await.unwrap();
    assert_eq!(held, 0, "all leases returned at shutdown");
}

#[sqlx::test(migrations = "../../migrations")]
async fn graceful_shutdown_loses_no_usage(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, GatewayConfig { usage_flush_interval: Duration::from_secs(3600), usage_batch_rows: 100_000, ..fast_config() }).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let bodies = [body(SONNET, true), body(SONNET, false)];
    let futs: Vec<_> = (0..30).map(|i| post(&gw.base, &k, &bodies[i % 2])).collect();
    for r in futures::future::join_all(futs).await {
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(usage_rows(&pool, user).await.len(), 0, "nothing written yet (long flush interval)");
    gw.stop().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 30);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - 30 * PINNED_COST));
    assert!(ledger::verify(&pool, user).await.unwrap());
}

#[sqlx::test(migrations = "../../migrations")]
async fn count_tokens_and_models(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior { usage: Some(PinnedUsage { input_tokens: 42, ..Default::default() }), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "1").await;
    let k = key(&pool, user, "smart").await;
    let r = client()
        .post(format!("{}/v1/messages/count_tokens?beta=true", gw.base))
        .header("x-api-key", &k)
        .json(&serde_json::json!({"model": SONNET, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("request-id"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["input_tokens"], 42);
    assert_eq!(up.last_request().unwrap().path, "/v1/messages/count_tokens");
    assert_eq!(up.last_request().unwrap().query.as_deref(), Some("beta=true"));

    let r = client().get(format!("{}/v1/models?limit=1000", gw.base)).header("x-api-key", &k).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&SONNET) && ids.contains(&"claude-opus-5-5"));
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], ids[0]);
    assert_eq!(v["data"][0]["type"], "model");
    let r = client().get(format!("{}/v1/models?limit=2", gw.base)).header("x-api-key", &k).send().await.unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["has_more"], true);

    let limited = key_with(&pool, user, NewKey { name: "h".into(), channel: "smart".into(), allowed_models: vec!["claude-haiku-5-5".into()], ..Default::default() }).await;
    let v: serde_json::Value = client().get(format!("{}/v1/models", gw.base)).bearer_auth(&limited).header("anthropic-version", "2026-10-21").send().await.unwrap().json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let r = client().get(format!("{}/v1/models/{SONNET}", gw.base)).bearer_auth(&limited).header("anthropic-version", "2026-10-21").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client().get(format!("{}/v1/models/claude-haiku-5-5", gw.base)).bearer_auth(&limited).header("anthropic-version", "2026-10-21").send().await.unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["display_name"], "Claude Haiku 5.5");
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn model_aliases_resolve_to_the_canonical_model(pool: PgPool) {
    const HAIKU: &str = "claude-haiku-4-5-20251001";
    const ALIAS: &str = "claude-haiku-4-5";
    let (up, up_id) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    // the key allow-lists the canonical id only
    let limited = key_with(
        &pool,
        user,
        NewKey { name: "haiku only".into(), channel: "stable".into(), allowed_models: vec![HAIKU.into()], ..Default::default() },
    )
    .await;

    // JSON call with the alias: accepted, forwarded byte for byte (alias kept), priced as Haiku 4.5
    let raw = format!(r#"{{"model":"{ALIAS}","max_tokens":1000,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    let r = client()
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &limited)
        .header("content-type", "application/json")
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["request-id"].to_str().unwrap().to_string();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["model"], ALIAS, "the upstream answered for the alias it was sent");
    assert_eq!(&up.last_request().unwrap().body[..], raw.as_bytes(), "the body is not rewritten");

    // stream with the alias too
    let r = post(&gw.base, &limited, &body(ALIAS, true)).await;
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert_eq!(event_names(&text).last().unwrap(), "message_stop");

    // an alias of a model the key does not allow is refused like the model itself
    let (s, t, _, _) = error_of(post(&gw.base, &limited, &body("claude-sonnet-4-5", false)).await).await;
    assert_eq!((s, t.as_str()), (403, "permission_error"));
    // the Sonnet 4.5 alias works for an unrestricted key and is priced as Sonnet 4.5
    let any = key(&pool, user, "stable").await;
    assert_eq!(post(&gw.base, &any, &body("claude-sonnet-4-5", false)).await.status(), 200);

    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 4);
    // 1000×1 + 500×5 + 1000×1.25 + 2000×2 + 10000×0.1 = 9 750 µ$ (Haiku 4.5 list prices)
    const HAIKU_COST: i64 = 9_750;
    let u = rows.iter().find(|u| u.id == rid).unwrap();
    assert_eq!(u.requested_model, HAIKU);
    assert_eq!(u.served_model.as_deref(), Some(HAIKU), "an alias echoed by the upstream is recorded as the model");
    assert_eq!(u.upstream_id, Some(up_id));
    assert_eq!(u.cost_micro_usd, usd(HAIKU_COST));
    assert_eq!(u.charge_micros, cny(HAIKU_COST * 5));
    let streamed = rows.iter().find(|u| u.stream).unwrap();
    assert_eq!((streamed.requested_model.as_str(), streamed.cost_micro_usd.micros()), (HAIKU, HAIKU_COST));
    let refused = rows.iter().find(|u| u.status == 403).unwrap();
    assert_eq!(refused.charge_micros, cny(0));
    let sonnet = rows.iter().find(|u| u.requested_model == "claude-sonnet-4-5-20250929").unwrap();
    assert_eq!((sonnet.status, sonnet.cost_micro_usd.micros()), (200, PINNED_COST));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - (2 * HAIKU_COST + PINNED_COST) * 5));
    assert!(ledger::verify(&pool, user).await.unwrap());

    // /v1/models lists canonical ids only; an alias can be looked up and answers with the model
    let v: serde_json::Value =
        client().get(format!("{}/v1/models?limit=1000", gw.base)).header("x-api-key", &any).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&HAIKU) && ids.contains(&"claude-sonnet-4-5-20250929"));
    for alias in [ALIAS, "claude-sonnet-4-5", "claude-opus-4-5", "claude-3-7-sonnet-latest"] {
        assert!(!ids.contains(&alias), "{alias} is not listed");
    }
    let v: serde_json::Value =
        client().get(format!("{}/v1/models/{ALIAS}", gw.base)).header("x-api-key", &limited).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["id"], HAIKU);

    // a key created with an alias in its allow-list stores the canonical id
    let (summary, _) = keys::create(
        &pool,
        user,
        NewKey { name: "alias list".into(), channel: "smart".into(), allowed_models: vec!["claude-opus-4-5".into()], ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(summary.allowed_models, vec!["claude-opus-4-5-20251101".to_string()]);
    gw.stop().await;
}

/// An upstream's refusal in its own words, with its identifiers.
fn refusal(kind: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_011UPSTREAMsecretId"}).to_string()
}

/// Upstream answers that its account is out of credit, disabled or refused take it out of
/// rotation (for a long time, with the reason for staff) and the request fails over; the customer
/// never sees the upstream's words or ids, only CloudRouter's message and request id.
#[sqlx::test(migrations = "../../migrations")]
async fn upstream_account_refusals_fail_over_and_never_reach_the_customer(pool: PgPool) {
    let cases = [
        (400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."),
        (403, "permission_error", "This organization (org-7f3a Acme Corp) has been disabled."),
        (401, "authentication_error", "invalid x-api-key for organization org-7f3a"),
        (400, "billing_error", "Organization org-7f3a is out of credit"),
    ];
    for (status, kind, message) in cases {
        let (broke, broke_id) = fake("broke", &pool, FakeBehavior { fail_status: Some(status), fail_body: Some(refusal(kind, message)), ..Default::default() }, 10).await;
        let (good, good_id) = fake("good", &pool, FakeBehavior::default(), 0).await;
        let gw = Gw::start(&pool, GatewayConfig { breaker_failures: 1000, ..fast_config() }).await;
        let user = customer(&pool, "100").await;
        let k = key(&pool, user, "smart").await;
        for stream in [false, true, false] {
            let r = post(&gw.base, &k, &body(SONNET, stream)).await;
            assert_eq!(r.status(), 200, "{status} {message}: failed over");
        }
        assert_eq!(broke.requests(), 1, "{message}: out of rotation after its first refusal");
        assert_eq!(good.requests(), 3);
        let h = gw.gw.health().into_iter().find(|h| h.id == broke_id).unwrap();
        assert_eq!(h.circuit, "open");
        assert!(h.retry_in_secs.unwrap() > 600, "out for a long time: {h:?}");
        assert!(h.last_error.as_deref().is_some_and(|r| r.starts_with("out of rotation") && r.contains(message)), "staff see why: {h:?}");

        // with no other upstream the customer gets CloudRouter's words, never the upstream's
        sqlx::query("DELETE FROM upstreams WHERE id = $1").bind(good_id).execute(&pool).await.unwrap();
        gw.gw.reload().await;
        let r = post(&gw.base, &k, &body(SONNET, false)).await;
        let rid = r.headers()["request-id"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        for leak in ["credit", "org-7f3a", "Acme", "req_011UPSTREAM", "disabled", "x-api-key"] {
            assert!(!text.contains(leak), "{leak} reached the customer: {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["request_id"], rid.as_str());
        assert_eq!(v["type"], "error");
        gw.stop().await;
        sqlx::query("DELETE FROM upstreams").execute(&pool).await.unwrap();
        drop((broke, good));
    }
}

/// A refusal about the request itself passes through word for word (Claude Code compacts on
/// "prompt is too long"), under CloudRouter's request id; anything else keeps only its status.
#[sqlx::test(migrations = "../../migrations")]
async fn upstream_refusals_keep_their_status_but_not_the_upstreams_ids(pool: PgPool) {
    let (up, _) = fake("only", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, GatewayConfig { breaker_failures: 1000, ..fast_config() }).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let cases = [
        (400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum", true),
        (400, "invalid_request_error", "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'", true),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", true),
        (400, "invalid_request_error", "Your workspace wrk_01ABC (Acme Corp) has reached its monthly spend limit", false),
        (409, "conflict_error", "req_011UPSTREAMsecretId conflicts", false),
        (422, "invalid_request_error", "something about organization org-7f3a", false),
        // a request can cause these: never out of rotation (the next case would answer 503)
        (403, "permission_error", "Your organization does not have access to the beta feature x", false),
        (400, "invalid_request_error", "thinking is disabled for this model", true),
    ];
    for (status, kind, message, passes) in cases {
        up.set(FakeBehavior { fail_status: Some(status), fail_body: Some(refusal(kind, message)), ..Default::default() });
        let r = post(&gw.base, &k, &body(SONNET, false)).await;
        assert_eq!(r.status().as_u16(), status, "{message}: the status is kept");
        let rid = r.headers()["request-id"].to_str().unwrap().to_string();
        let text = r.text().await.unwrap();
        assert!(!text.contains("req_011UPSTREAM"), "the upstream's request id reached the customer: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["request_id"], rid.as_str());
        if passes {
            assert_eq!((v["error"]["type"].as_str(), v["error"]["message"].as_str()), (Some(kind), Some(message)));
        } else {
            for leak in ["Acme", "wrk_01ABC", "org-7f3a", "spend limit"] {
                assert!(!text.contains(leak), "{leak} reached the customer: {text}");
            }
        }
    }
    gw.stop().await;
}
