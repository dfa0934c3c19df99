//! A marker sent in prompts must appear nowhere in the database or the logs, and neither may the
//! client's key or the upstream's credential appear in the logs.
mod common;

use common::*;
use cloudrouter_core::demo::FakeBehavior;
use sqlx::PgPool;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn prompt_marker_is_never_stored_or_logged(pool: PgPool) {
    let logs = Buf::default();
    let w = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .with_ansi(false)
        .init();
    const MARKER: &str = "MARKER-7f3a9c1e-do-not-store";

    let (up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    let k = key(&pool, user, "smart").await;
    let mut b = body("claude-sonnet-4-6", false);
    b["messages"][0]["content"] = serde_json::Value::String(format!("Please remember {MARKER}"));
    b["system"] = serde_json::Value::String(MARKER.into());
    b["metadata"] = serde_json::json!({"user_id": MARKER});
    for stream in [false, true] {
        b["stream"] = serde_json::Value::Bool(stream);
        let r = post(&gw.base, &k, &b).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // errors too: an upstream 400, a cut stream, a malformed body and a forbidden model
    up.set(FakeBehavior { fail_status: Some(400), ..Default::default() });
    post(&gw.base, &k, &b).await.bytes().await.unwrap();
    up.set(FakeBehavior { cut_after_events: Some(3), event_delay: std::time::Duration::from_millis(10), echo: true, ..Default::default() });
    post(&gw.base, &k, &b).await.bytes().await.unwrap();
    let r = client().post(format!("{}/v1/messages", gw.base)).header("x-api-key", &k).body(format!("{{\"model\": {MARKER}")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let mut bad = b.clone();
    bad["model"] = serde_json::Value::String(MARKER.into());
    post(&gw.base, &k, &bad).await.bytes().await.unwrap();
    client()
        .post(format!("{}/v1/messages/count_tokens", gw.base))
        .header("x-api-key", &k)
        .json(&b)
        .send()
        .await
        .unwrap();
    gw.sync().await;

    let tables: Vec<String> = sqlx::query_scalar("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(tables.contains(&"usage_records".to_string()));
    let mut rows_seen = 0;
    for t in tables {
        let dump: Vec<String> = sqlx::query_scalar(&format!("SELECT x::text FROM \"{t}\" x")).fetch_all(&pool).await.unwrap();
        rows_seen += dump.len();
        for row in dump {
            assert!(!row.contains("MARKER-7f3a9c1e"), "marker found in table {t}: {row}");
            assert!(!row.contains(&k[3..]), "client key found in table {t}");
        }
    }
    assert!(rows_seen > 5);
    gw.stop().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.len() > 1000, "logging was on: {} bytes", text.len());
    assert!(!text.contains("MARKER-7f3a9c1e"), "marker found in logs");
    assert!(!text.contains(&k[3..]), "client key found in logs");
    assert!(!text.contains("sk-upstream-a-credential"), "upstream credential found in logs");
}
