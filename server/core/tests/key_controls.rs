//! Per-key controls against a real gateway and Postgres: IP allow-lists (and a forged
//! `X-Forwarded-For`), tokens per minute across two instances, and the client restriction.
mod common;

use cloudrouter_core::demo::{FakeBehavior, PinnedUsage};
use cloudrouter_core::gateway::GatewayConfig;
use cloudrouter_core::keys::{Clients, NewKey};
use cloudrouter_core::net::TrustedProxies;
use common::*;
use sqlx::PgPool;
use std::time::Duration;

const SONNET: &str = "claude-sonnet-4-6";

async fn call(gw: &Gw, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = client().post(format!("{}/v1/messages", gw.base)).header("x-api-key", key).header("anthropic-version", "2023-06-01");
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.json(&body(SONNET, false)).send().await.unwrap()
}

fn controls(name: &str) -> NewKey {
    NewKey { name: name.into(), channel: "smart".into(), ..Default::default() }
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_ip_allow_list_admits_only_its_addresses_and_a_forged_forwarded_for_changes_nothing(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let user = customer(&pool, "100").await;
    let office = key_with(&pool, user, NewKey { ip_allow: vec!["198.51.100.0/24".into(), "2001:db8::/32".into()], ..controls("office") }).await;
    let local = key_with(&pool, user, NewKey { ip_allow: vec![" 127.0.0.1 ".into()], ..controls("local") }).await;

    let direct = Gw::start(&pool, fast_config()).await;
    assert_eq!(call(&direct, &local, &[]).await.status(), 200);
    let (status, kind, message, _) = error_of(call(&direct, &office, &[]).await).await;
    assert_eq!((status, kind.as_str()), (403, "permission_error"), "{message}");
    // the attack: claim to be in the office; the peer is no trusted proxy, so the header is ignored
    assert_eq!(call(&direct, &office, &[("x-forwarded-for", "198.51.100.7")]).await.status(), 403);
    direct.stop().await;

    // behind a trusted proxy (here 127.0.0.1), the address it names counts
    let proxied = Gw::start(&pool, GatewayConfig { trusted_proxies: TrustedProxies::parse("127.0.0.1").unwrap(), ..fast_config() }).await;
    assert_eq!(call(&proxied, &office, &[("x-forwarded-for", "198.51.100.7")]).await.status(), 200);
    assert_eq!(call(&proxied, &office, &[("x-forwarded-for", "198.51.100.7, 203.0.113.9")]).await.status(), 403, "the right-most untrusted hop is the client");
    proxied.stop().await;

    let bad = cloudrouter_core::keys::create(&pool, user, NewKey { ip_allow: vec!["10.0.0.0/33".into()], ..controls("bad") }).await;
    assert!(matches!(bad, Err(cloudrouter_core::keys::KeyError::InvalidAddress(_))));
}

/// The attack: spread requests over instances to use more tokens a minute than the key allows.
#[sqlx::test(migrations = "../../migrations")]
async fn tokens_per_minute_hold_across_instances_and_leave_cache_reads_out(pool: PgPool) {
    // counted per request: 1000 input + 500 output + 1000 + 2000 cache writes = 4500 (the 10 000
    // cache reads are not counted)
    let usage = PinnedUsage { input_tokens: 1000, output_tokens: 500, cache_write_5m_tokens: 1000, cache_write_1h_tokens: 2000, cache_read_tokens: 10_000 };
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(usage), ..Default::default() }, 0).await;
    let user = customer(&pool, "100").await;
    let k = key_with(&pool, user, NewKey { tpm_limit: Some(5000), ..controls("tpm") }).await;
    let (a, b) = (Gw::start(&pool, fast_config()).await, Gw::start(&pool, fast_config()).await);
    // never across a minute boundary, where the count starts again
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    assert_eq!(call(&a, &k, &[]).await.status(), 200, "4500 counted");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(call(&b, &k, &[]).await.status(), 200, "4500 < 5000: admitted on the other instance");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for gw in [&a, &b] {
        let r = call(gw, &k, &[]).await;
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry));
        let (status, kind, message, _) = error_of(r).await;
        assert_eq!((status, kind.as_str()), (429, "rate_limit_error"));
        assert!(message.contains("5000 tokens per minute"), "{message}");
    }
    a.sync().await;
    b.sync().await;
    assert_eq!(usage_rows(&pool, user).await.iter().filter(|u| u.status == 200).count(), 2);
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_key_for_one_client_refuses_the_others(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let cc = key_with(&pool, user, NewKey { clients: Clients::ClaudeCode, ..controls("cc") }).await;
    let sdk = key_with(&pool, user, NewKey { clients: Clients::Sdk, ..controls("sdk") }).await;
    let claude_code = [("user-agent", "claude-cli/2.1.3 (external, cli)"), ("x-stainless-lang", "js")];
    let python_sdk = [("user-agent", "Anthropic/Python 0.75.0"), ("x-stainless-lang", "python")];
    assert_eq!(call(&gw, &cc, &claude_code).await.status(), 200);
    let (status, kind, message, _) = error_of(call(&gw, &cc, &python_sdk).await).await;
    assert_eq!((status, kind.as_str()), (403, "permission_error"));
    assert!(message.contains("Claude Code"), "{message}");
    assert_eq!(call(&gw, &sdk, &python_sdk).await.status(), 200);
    assert_eq!(call(&gw, &sdk, &claude_code).await.status(), 200, "Claude Code is built on the SDK");
    assert_eq!(call(&gw, &sdk, &[("user-agent", "curl/8.5.0")]).await.status(), 403);
    gw.stop().await;
}

/// A plan's tokens per minute cover the whole account on the plan's channels: a second key does
/// not get a second allowance of tokens.
#[sqlx::test(migrations = "../../migrations")]
async fn a_plans_tokens_per_minute_are_shared_by_the_accounts_keys(pool: PgPool) {
    use cloudrouter_core::billing::{orders::PaymentMethod, plans, purchases};
    let usage = PinnedUsage { input_tokens: 3000, output_tokens: 1000, ..Default::default() };
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(usage), ..Default::default() }, 0).await;
    let mut pro = plans::get(&pool, "pro").await.unwrap().unwrap();
    pro.tpm_limit = Some(6000);
    plans::update(&pool, &pro).await.unwrap();
    let user = customer(&pool, "100").await;
    let o = purchases::create_subscription(&pool, user, "pro", PaymentMethod::Sandbox).await.unwrap();
    purchases::mark_paid_at(&pool, o.id, PaymentMethod::Sandbox, &format!("SBX-{}", o.id), o.amount_micros, chrono::Utc::now()).await.unwrap();
    let channel = pro.channels.first().cloned().unwrap_or_else(|| "smart".into());
    let one = key_with(&pool, user, NewKey { name: "one".into(), channel: channel.clone(), ..Default::default() }).await;
    let two = key_with(&pool, user, NewKey { name: "two".into(), channel, ..Default::default() }).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let second = chrono::Utc::now().timestamp() % 60;
    if second > 50 {
        tokio::time::sleep(Duration::from_secs((61 - second) as u64)).await;
    }
    assert_eq!(call(&gw, &one, &[]).await.status(), 200, "4000 counted");
    assert_eq!(call(&gw, &two, &[]).await.status(), 200, "8000 counted: admitted under 6000");
    let (status, kind, message, _) = error_of(call(&gw, &two, &[]).await).await;
    assert_eq!((status, kind.as_str()), (429, "rate_limit_error"));
    assert!(message.contains("plan is limited to 6000 tokens per minute"), "{message}");
    gw.stop().await;
}
