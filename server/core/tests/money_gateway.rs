//! The gateway's money, tried as an adversarial customer would: each test is an attempt to get
//! output or usage without paying for it (issue #11), against a real Postgres and in-process
//! fake upstreams.
mod common;

use cloudrouter_core::demo::{FakeBehavior, PinnedUsage};
use cloudrouter_core::gateway::sse::BYTES_PER_TOKEN_ESTIMATE;
use cloudrouter_core::gateway::GatewayConfig;
use cloudrouter_core::keys::NewKey;
use cloudrouter_core::billing::ledger;
use cloudrouter_core::usage::UsageRecord;
use common::*;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

const SONNET: &str = "claude-sonnet-4-6";

fn pinned() -> PinnedUsage {
    PinnedUsage { input_tokens: 1000, output_tokens: 500, ..Default::default() }
}
// 1000 × $3/M + 500 × $15/M = 10 500 µ$ = µ¥ on the smart channel (¥1/$)
const PINNED_CHARGE: i64 = 10_500;

/// The one usage row of `user`, waiting (up to 10 s) for a settlement that happens after the
/// response, as it does when the gateway drains a stream its client left.
async fn the_row(pool: &PgPool, gw: &Gw, user: Uuid) -> UsageRecord {
    let t0 = Instant::now();
    loop {
        gw.sync().await;
        let rows = usage_rows(pool, user).await;
        if let Some(r) = rows.into_iter().next() {
            return r;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no usage record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Output tokens the documented estimate gives for the delta content in an SSE text.
fn estimate_from(text: &str) -> i64 {
    let mut bytes = 0usize;
    for line in text.lines() {
        if let Some(data) = line.strip_prefix("data: ") {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data) {
                if v["type"] == "content_block_delta" {
                    bytes += v["delta"]["text"].as_str().map_or(0, str::len);
                }
            }
        }
    }
    (bytes as u64).div_ceil(BYTES_PER_TOKEN_ESTIMATE) as i64
}

#[sqlx::test(migrations = "../../migrations")]
async fn stream_client_that_hangs_up_pays_for_the_whole_answer(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), event_delay: Duration::from_millis(40), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let mut r = post(&gw.base, &k, &body(SONNET, true)).await;
    assert_eq!(r.status(), 200);
    // read message_start, then hang up: the upstream goes on generating (and billing) the answer
    let first = r.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("message_start"));
    drop(r);
    let row = the_row(&pool, &gw, user).await;
    assert_eq!(row.outcome.as_str(), "client_closed");
    assert_eq!((row.tokens.input_tokens, row.tokens.output_tokens), (1000, 500), "billed for the whole answer, not 1 token");
    assert_eq!(row.charge_micros, cny(PINNED_CHARGE));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(10_000_000 - PINNED_CHARGE));
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn json_client_that_hangs_up_is_still_charged(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), first_byte_delay: Duration::from_millis(500), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    // the client gives up before the answer; the upstream still answers (and bills) it
    let r = client()
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &k)
        .timeout(Duration::from_millis(150))
        .json(&body(SONNET, false))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out");
    let row = the_row(&pool, &gw, user).await;
    assert_eq!(up.requests(), 1);
    assert_eq!(row.outcome.as_str(), "ok");
    assert_eq!(row.charge_micros, cny(PINNED_CHARGE));
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn stream_cut_by_the_upstream_bills_the_output_read(pool: PgPool) {
    // message_start, content_block_start, ping, three deltas, then the connection breaks
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), cut_after_events: Some(6), event_delay: Duration::from_millis(20), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let text = post(&gw.base, &k, &body(SONNET, true)).await.text().await.unwrap();
    assert_eq!(event_names(&text).last().unwrap(), "error");
    let row = the_row(&pool, &gw, user).await;
    assert_eq!(row.outcome.as_str(), "upstream_cut");
    let estimate = estimate_from(&text);
    // two or three deltas of 24 bytes: the fake's last event may not leave before the break
    assert!(estimate == 16 || estimate == 24, "{estimate}");
    assert_eq!(row.tokens.output_tokens, estimate, "not message_start's 1 token");
    assert_eq!(row.charge_micros, cny(1000 * 3 + estimate * 15));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn stream_that_stalls_bills_the_output_read(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), stall_after_events: Some(5), event_delay: Duration::from_millis(20), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, GatewayConfig { idle_timeout: Duration::from_millis(300), ..fast_config() }).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let text = post(&gw.base, &k, &body(SONNET, true)).await.text().await.unwrap();
    assert!(text.contains("timeout_error"));
    let row = the_row(&pool, &gw, user).await;
    assert_eq!(row.outcome.as_str(), "idle_timeout");
    assert_eq!(row.tokens.output_tokens, 16, "two deltas of 24 bytes");
    assert_eq!(row.tokens.output_tokens, estimate_from(&text));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn stream_cut_at_shutdown_bills_the_output_read(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), event_delay: Duration::from_millis(100), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, GatewayConfig { grace_period: Duration::from_millis(400), ..fast_config() }).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let r = post(&gw.base, &k, &body(SONNET, true)).await;
    assert_eq!(r.status(), 200);
    let reader = tokio::spawn(async move { r.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(350)).await;
    // the server stops while the stream is open: after the grace period the stream is cut
    gw.gw.clone().shutdown().await;
    let text = reader.await.unwrap();
    assert_eq!(event_names(&text).last().unwrap(), "error", "{text}");
    assert!(text.contains("overloaded_error"));
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 1, "recorded before the instance stopped");
    let row = &rows[0];
    assert_eq!(row.outcome.as_str(), "shutdown");
    let estimate = estimate_from(&text);
    assert!(estimate > 1, "some output was read: {text}");
    assert_eq!(row.tokens.output_tokens, estimate);
    assert!(ledger::verify(&pool, user).await.unwrap());
}

#[sqlx::test(migrations = "../../migrations")]
async fn drain_ends_at_its_timeout_and_bills_the_output_read(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), event_delay: Duration::from_millis(150), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, GatewayConfig { drain_timeout: Duration::from_millis(700), ..fast_config() }).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let mut r = post(&gw.base, &k, &body(SONNET, true)).await;
    r.chunk().await.unwrap().unwrap();
    drop(r);
    let row = the_row(&pool, &gw, user).await;
    assert_eq!(row.outcome.as_str(), "client_closed");
    // read on for 0.7 s at one event per 0.15 s: a few deltas, not the whole answer
    assert!(row.tokens.output_tokens >= 8 && row.tokens.output_tokens < 500, "{}", row.tokens.output_tokens);
    assert_eq!(row.tokens.output_tokens % 8, 0, "whole deltas of 24 bytes");
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn charge_above_the_hold_is_billed_in_full(pool: PgPool) {
    // a tiny body whose input the upstream counts at 400k tokens (a document fetched by URL): above
    // Sonnet 4.6's 200k threshold, so everything is at long-context prices ($6 in, $22.50 out)
    let usage = PinnedUsage { input_tokens: 400_000, output_tokens: 10, ..Default::default() };
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(usage), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let r = post(&gw.base, &k, &body(SONNET, false)).await;
    assert_eq!(r.status(), 200);
    gw.sync().await;
    let row = &usage_rows(&pool, user).await[0];
    let full = 400_000 * 6 + 10 * 45 / 2; // µ$ = µ¥ on smart
    assert_eq!(row.charge_micros, cny(full), "the whole usage, at long-context prices");
    assert!(row.held_micros.is_positive() && row.held_micros.micros() < full / 10, "the hold foresaw only the body: {}", row.held_micros);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_000_000 - full));
    let entries = ledger::entries(&pool, user, 10).await.unwrap();
    let above = entries.iter().find(|e| e.note == "API usage above the hold").expect("an overage ledger row");
    assert_eq!(above.amount.micros(), -(full - row.held_micros.micros()));
    assert!(ledger::verify(&pool, user).await.unwrap());
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn overage_takes_the_balance_below_zero_and_then_refuses(pool: PgPool) {
    let usage = PinnedUsage { input_tokens: 400_000, output_tokens: 10, ..Default::default() };
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(usage), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "0.5").await;
    let k = key(&pool, user, "smart").await;
    assert_eq!(post(&gw.base, &k, &body(SONNET, false)).await.status(), 200);
    gw.sync().await;
    let full = 400_000 * 6 + 10 * 45 / 2;
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(500_000 - full), "a debt, not a discount");
    assert!(ledger::verify(&pool, user).await.unwrap());
    // staff see the request and the debt (Admin → Operations)
    let over = cloudrouter_core::insights::recent_overages(&pool, 10).await.unwrap();
    assert_eq!(over.len(), 1);
    assert_eq!((over[0].user_id, over[0].charge_micros.micros()), (user, full));
    assert!(over[0].held_micros.micros() < full);
    let debts = cloudrouter_core::insights::debts(&pool).await.unwrap();
    assert_eq!(debts.len(), 1);
    assert_eq!((debts[0].user_id, debts[0].balance_micros.micros()), (user, 500_000 - full));
    let (s, t, _, _) = error_of(post(&gw.base, &k, &body(SONNET, false)).await).await;
    assert_eq!((s, t.as_str()), (402, "billing_error"), "nothing more until the debt is paid");
    // other debits still cannot take a balance below zero
    assert!(ledger::adjust(&pool, user, cny(-1), ledger::LedgerKind::Debit, &memo("test"), None).await.is_err());
    // a top-up pays the debt first
    ledger::adjust(&pool, user, cny(3_000_000), ledger::LedgerKind::Credit, &memo("top-up"), None).await.unwrap();
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(3_500_000 - full));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn web_searches_are_charged(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), web_search_requests: Some(3), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    assert_eq!(post(&gw.base, &k, &body(SONNET, false)).await.status(), 200);
    let r = post(&gw.base, &k, &body(SONNET, true)).await;
    r.text().await.unwrap();
    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.server_tools.web_search_requests, 3, "stream: {}", row.stream);
        // three searches at $10 per 1000
        assert_eq!(row.charge_micros, cny(PINNED_CHARGE + 30_000));
    }
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn count_tokens_obeys_the_key_rate_limits(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, GatewayConfig { count_tokens_rpm: 3, ..fast_config() }).await;
    // an account with no money at all floods the free endpoint
    let user = customer(&pool, "0").await;
    let count = |k: String| {
        let base = gw.base.clone();
        async move {
            client()
                .post(format!("{base}/v1/messages/count_tokens"))
                .header("x-api-key", k)
                .json(&serde_json::json!({"model": SONNET, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    let limited = key_with(&pool, user, NewKey { name: "l".into(), channel: "smart".into(), rpm_limit: Some(2), ..Default::default() }).await;
    assert_eq!(count(limited.clone()).await.status(), 200);
    assert_eq!(count(limited.clone()).await.status(), 200);
    let (s, t, _, h) = error_of(count(limited).await).await;
    assert_eq!((s, t.as_str()), (429, "rate_limit_error"), "the key's own rate");
    assert!(h.contains_key("retry-after"));
    // a key without a rate of its own gets the gateway's count_tokens rate
    let open = key(&pool, user, "smart").await;
    for _ in 0..3 {
        assert_eq!(count(open.clone()).await.status(), 200);
    }
    assert_eq!(count(open).await.status(), 429);
    assert_eq!(up.requests(), 5, "refused requests never reach the upstream");
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn count_tokens_failures_do_not_open_the_messages_circuit(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior { fail_status: Some(429), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    for _ in 0..8 {
        let r = client()
            .post(format!("{}/v1/messages/count_tokens", gw.base))
            .header("x-api-key", &k)
            .json(&serde_json::json!({"model": SONNET, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 200);
    }
    up.set(FakeBehavior::default());
    let r = post(&gw.base, &k, &body(SONNET, false)).await;
    assert_eq!(r.status(), 200, "messages still reach the upstream");
    gw.stop().await;
}
