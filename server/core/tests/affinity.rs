//! Cache-aware routing (issue #13): the turns of a conversation reach the upstream that holds its
//! prompt cache, on any instance, and still fail over. The fakes behave like Anthropic's prompt
//! cache, one cache per fake (`FakeBehavior::prompt_cache`).
mod common;

use cloudrouter_core::demo::{FakeBehavior, FakeUpstream};
use cloudrouter_core::usage::UsageRecord;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

const SONNET: &str = "claude-sonnet-4-6";

fn caching() -> FakeBehavior {
    FakeBehavior { prompt_cache: true, ..Default::default() }
}

/// Turn `turn` (0-based) of a conversation as an SDK client sends it: a long cached system prompt,
/// the history, and the breakpoint on the last user message (moved forward every turn).
fn turn_body(conversation: &str, turn: usize) -> Value {
    let mut messages = vec![];
    for k in 0..=turn {
        let text = format!("{conversation}: question {k}, with enough words to make a prefix worth caching.");
        if k == turn {
            messages.push(json!({"role": "user", "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]}));
        } else {
            messages.push(json!({"role": "user", "content": [{"type": "text", "text": text}]}));
            messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": format!("answer {k}")}]}));
        }
    }
    json!({
        "model": SONNET,
        "max_tokens": 64,
        "system": [{"type": "text", "text": format!("You are the assistant of {conversation}. {}", "Long instructions. ".repeat(200)), "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
    })
}

async fn three_fakes(pool: &PgPool) -> Vec<(FakeUpstream, Uuid)> {
    let mut v = vec![];
    for name in ["a", "b", "c"] {
        v.push(fake(name, pool, caching(), 0).await);
    }
    v
}

/// The usage rows of one user in the order the turns were sent.
async fn turns(pool: &PgPool, user: Uuid) -> Vec<UsageRecord> {
    let mut rows = usage_rows(pool, user).await;
    rows.sort_by_key(|r| r.created_at);
    rows
}

#[sqlx::test(migrations = "../../migrations")]
async fn conversation_reads_the_cache_on_every_turn_after_the_first_on_any_instance(pool: PgPool) {
    let _ups = three_fakes(&pool).await;
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    for turn in 0..20 {
        // the two instances serve alternate turns
        let gw = if turn % 2 == 0 { &a } else { &b };
        let r = post(&gw.base, &k, &turn_body("conversation one", turn)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    a.sync().await;
    b.sync().await;
    let rows = turns(&pool, user).await;
    assert_eq!(rows.len(), 20);
    let hits = rows[1..].iter().filter(|r| r.tokens.cache_read_tokens > 0).count();
    assert_eq!(hits, 19, "cache reads on later turns: {:?}", rows.iter().map(|r| r.tokens.cache_read_tokens).collect::<Vec<_>>());
    assert!(rows.iter().all(|r| r.upstream_id == rows[0].upstream_id), "one upstream for the conversation");
    assert!(rows.iter().all(|r| r.affinity), "every turn routed by affinity");
    // staff see the cache-read share per upstream (Admin → Operations)
    let stats = cloudrouter_core::insights::upstream_stats(&pool, cloudrouter_core::insights::Range::Day, chrono::Utc::now()).await.unwrap();
    let sticky = stats.iter().find(|s| s.upstream_id == rows[0].upstream_id).unwrap();
    let read: i64 = rows.iter().map(|r| r.tokens.cache_read_tokens).sum();
    let input: i64 = rows.iter().map(|r| r.tokens.input_tokens + r.tokens.cache_write_5m_tokens + r.tokens.cache_read_tokens).sum();
    assert_eq!(sticky.cache_read_share, Some(read as f64 / input as f64));
    assert!(sticky.cache_read_share.unwrap() > 0.5);
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn claude_code_sessions_keep_their_upstream_while_the_prompt_changes(pool: PgPool) {
    let _ups = three_fakes(&pool).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    // Claude Code rewrites its system prompt between turns at times; the session still names the
    // conversation (in metadata.user_id, or in its header)
    for turn in 0..6 {
        let mut body = turn_body(&format!("variant {turn}"), turn);
        body["metadata"] = json!({"user_id": "user_1a2b_account_3c4d_session_7f0e5c1a-0b1c-4d2e-9f3a-5b6c7d8e9f01"});
        assert_eq!(post(&gw.base, &k, &body).await.status(), 200);
    }
    for turn in 0..6 {
        let r = client()
            .post(format!("{}/v1/messages", gw.base))
            .header("x-api-key", &k)
            .header("x-claude-code-session-id", "5d1c0a7e-2b3c-4d5e-8f9a-0b1c2d3e4f5a")
            .json(&turn_body(&format!("other {turn}"), turn))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    gw.sync().await;
    let rows = turns(&pool, user).await;
    assert!(rows[..6].iter().all(|r| r.upstream_id == rows[0].upstream_id));
    assert!(rows[6..].iter().all(|r| r.upstream_id == rows[6].upstream_id));
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn sticky_upstream_failing_mid_conversation_fails_over_and_the_cache_follows(pool: PgPool) {
    let ups = three_fakes(&pool).await;
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    for turn in 0..4 {
        assert_eq!(post(&a.base, &k, &turn_body("resilient", turn)).await.status(), 200);
    }
    a.sync().await;
    let sticky = turns(&pool, user).await[0].upstream_id.unwrap();
    let (fake, _) = ups.iter().find(|(_, id)| *id == sticky).unwrap();
    // the conversation's upstream fails: the turn is still answered, by another upstream
    fake.set(FakeBehavior { fail_status: Some(500), fail_times: Some(1), ..caching() });
    assert_eq!(post(&a.base, &k, &turn_body("resilient", 4)).await.status(), 200);
    a.sync().await;
    let moved = turns(&pool, user).await[4].clone();
    assert_ne!(moved.upstream_id, Some(sticky));
    assert!(!moved.affinity, "the failover turn was not routed by affinity");
    // the old upstream is healthy again, but the cache is where the conversation went: the
    // following turns stay there and read it, on this instance and on the other
    tokio::time::sleep(Duration::from_millis(300)).await;
    for turn in 5..10 {
        let gw = if turn % 2 == 0 { &a } else { &b };
        assert_eq!(post(&gw.base, &k, &turn_body("resilient", turn)).await.status(), 200);
    }
    a.sync().await;
    b.sync().await;
    let rows = turns(&pool, user).await;
    for r in &rows[5..] {
        assert_eq!(r.upstream_id, moved.upstream_id, "the binding moved with the answer");
        assert!(r.tokens.cache_read_tokens > 0, "the cache is read where it now lives");
        assert!(r.affinity);
    }
    // staff clear the bindings: the conversation goes back to its own upstream
    let staff = customer(&pool, "0").await;
    cloudrouter_core::gateway::clear_affinity(&pool, staff, Some(user)).await.unwrap();
    let audit = cloudrouter_core::billing::audit::list(&pool, 5).await.unwrap();
    assert_eq!((audit[0].action.as_str(), audit[0].target.clone()), ("affinity.clear", format!("user:{user}")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(post(&b.base, &k, &turn_body("resilient", 10)).await.status(), 200);
    b.sync().await;
    assert_eq!(turns(&pool, user).await[10].upstream_id, Some(sticky));
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn new_conversations_spread_over_the_upstreams_by_weight(pool: PgPool) {
    let mut ids = vec![];
    let mut fakes = vec![];
    for (name, weight) in [("a", 1), ("b", 2), ("c", 1)] {
        let f = FakeUpstream::start(FakeBehavior::default()).await.unwrap();
        let id = add_upstream(&pool, name, &f.base_url, &["smart"], 0).await;
        sqlx::query("UPDATE upstreams SET weight = $2 WHERE id = $1").bind(id).bind(weight).execute(&pool).await.unwrap();
        ids.push(id);
        fakes.push(f);
    }
    let gw = Gw::start(&pool, fast_config()).await;
    gw.gw.reload().await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let n = 1000;
    let statuses: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let (base, k) = (gw.base.clone(), k.clone());
            async move {
                let body = json!({"model": SONNET, "max_tokens": 8, "messages": [{"role": "user", "content": format!("conversation {i}")}]});
                post(&base, &k, &body).await.status().as_u16()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    gw.sync().await;
    let rows = usage_rows(&pool, user).await;
    assert_eq!(rows.len(), n);
    let share = |id: Uuid| rows.iter().filter(|r| r.upstream_id == Some(id)).count() as f64 / n as f64;
    for (id, want) in ids.iter().zip([0.25, 0.5, 0.25]) {
        assert!((share(*id) - want).abs() < 0.05, "share {} vs {want}", share(*id));
    }
    gw.stop().await;
}
