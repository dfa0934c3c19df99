//! What operators and load balancers call on the assembled app: `/healthz`, `/readyz` (normal,
//! draining, database gone and back) and the token-protected `/metrics`, whose counters follow a
//! real request through the demo upstream; and what the built server does on SIGTERM and SIGKILL.

mod common;

use common::books::{answered, assert_books, customer_key, figures, http, lost, message_to, MODEL};
use common::process::{copy_tree, database_url, files_under, free_addr, probe, temp_dir, wait_ready, ServerProcess};
use common::{spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TOKEN: &str = "scrape-token-for-tests-0123456789";

async fn get(app: &TestApp, path: &str) -> (u16, String) {
    let r = http().get(format!("{}{path}", app.base)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

async fn scrape(app: &TestApp, token: Option<&str>) -> (u16, String) {
    let mut req = http().get(format!("{}/metrics", app.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The samples of one metric: label set → value.
fn samples(text: &str, name: &str) -> BTreeMap<BTreeMap<String, String>, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let (l, v) = r.split_once("} ").unwrap();
            (l, v)
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue; // another metric whose name starts with this one
        };
        let labels = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.insert(labels, value.trim().parse::<f64>().unwrap());
    }
    out
}

/// The value of `name` with exactly these labels (0 when absent).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    samples(text, name).get(&want).copied().unwrap_or(0.0)
}

#[sqlx::test(migrations = false)]
async fn healthz_and_readyz_answer_without_a_session(pool: PgPool) {
    let app = spawn_app(pool).await;
    let r = http().get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none(), "no session middleware on /healthz");
    assert_eq!(r.text().await.unwrap().trim(), "ok");
    let r = http().get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none(), "no session middleware on /readyz");
    assert_eq!(r.text().await.unwrap().trim(), "ready");
}

#[sqlx::test(migrations = false)]
async fn readyz_is_503_draining_once_shutdown_begins_while_the_rest_still_serves(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    assert_eq!(get(&app, "/readyz").await.0, 200);
    let key = customer_key(&pool, "drain@example.com", "value").await;

    app.built.gateway.start_draining();
    assert_eq!(get(&app, "/readyz").await, (503, "draining\n".into()));
    assert_eq!(get(&app, "/healthz").await.0, 200, "the process is still up");
    // a load balancer may still send a request before it notices: it is served
    assert_eq!(message_to(&app.base, &key, MODEL).await.status(), 200);
    assert_eq!(get(&app, "/readyz").await.0, 503, "and the instance stays unready");
}

#[sqlx::test(migrations = false)]
async fn readyz_is_503_while_the_database_refuses_connections_and_200_when_it_is_back(pool: PgPool) {
    let app = spawn_app(pool.clone()).await;
    assert_eq!(get(&app, "/readyz").await.0, 200);
    let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&pool).await.unwrap();
    // from the server's maintenance database: this one is made unreachable for the app's pool
    let admin_url = std::env::var("DATABASE_URL").unwrap();
    let admin = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin_url).await.unwrap();
    sqlx::query(&format!("ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS false")).execute(&admin).await.unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
        .bind(&db)
        .execute(&admin)
        .await
        .unwrap();

    let started = Instant::now();
    let down = get(&app, "/readyz").await;
    let took = started.elapsed();
    let healthz = get(&app, "/healthz").await;
    // before asserting: the database must take connections again for the harness to drop it
    sqlx::query(&format!("ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS true")).execute(&admin).await.unwrap();
    assert_eq!(down.0, 503, "{down:?}");
    assert!(down.1.starts_with("database unreachable"), "{down:?}");
    assert!(took < Duration::from_secs(3), "readyz answers within its timeout, took {took:?}");
    assert_eq!(healthz.0, 200, "the process is up without its database");

    let mut back = (0, String::new());
    for _ in 0..50 {
        back = get(&app, "/readyz").await;
        if back.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back.0, 200, "ready again once the database is back: {back:?}");
}

#[sqlx::test(migrations = false)]
async fn metrics_is_404_without_a_configured_token(pool: PgPool) {
    let app = spawn_app_with(pool, |c| c.metrics_token = None).await;
    assert_eq!(scrape(&app, None).await.0, 404);
    assert_eq!(scrape(&app, Some(TOKEN)).await.0, 404, "no token configured: no token opens it");
}

#[sqlx::test(migrations = false)]
async fn metrics_needs_the_token(pool: PgPool) {
    let app = spawn_app_with(pool, |c| c.metrics_token = Some(TOKEN.into())).await;
    assert_eq!(scrape(&app, None).await.0, 401);
    assert_eq!(scrape(&app, Some("scrape-token-for-tests-012345678")).await.0, 401, "a prefix of the token");
    assert_eq!(scrape(&app, Some(&format!("{TOKEN}0"))).await.0, 401, "the token and more");
    let r = http().get(format!("{}/metrics", app.base)).header("authorization", TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 401, "the token without the Bearer scheme");
    let (status, text) = scrape(&app, Some(TOKEN)).await;
    assert_eq!(status, 200);
    for gauge in ["cloudrouter_db_pool_connections", "cloudrouter_usage_queue_depth", "cloudrouter_requests_in_flight"] {
        assert!(!samples(&text, gauge).is_empty(), "{gauge} in\n{text}");
    }
    let demo = samples(&text, "cloudrouter_upstream_healthy");
    assert!(demo.iter().any(|(l, v)| l.get("upstream").is_some() && *v == 1.0), "the demo upstream is healthy: {demo:?}");
}

#[sqlx::test(migrations = false)]
async fn metrics_count_a_request_by_channel_and_catalogue_model_with_its_tokens_and_charge(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), |c| c.metrics_token = Some(TOKEN.into())).await;
    let key = customer_key(&pool, "metered@example.com", "value").await;
    // other tests in this binary share the process's recorder: compare with a scrape before
    let (_, before) = scrape(&app, Some(TOKEN)).await;

    let r = message_to(&app.base, &key, MODEL).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    // free text from the client never becomes a label
    let odd = "my-own-model-name-xyz";
    assert_eq!(message_to(&app.base, &key, odd).await.status().as_u16() / 100, 4);
    app.built.gateway.sync_usage().await;
    let (input, output, charge): (i64, i64, i64) = sqlx::query_as(
        "SELECT input_tokens, output_tokens, charge_micros FROM usage_records WHERE requested_model = $1",
    )
    .bind(MODEL)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(input, answer["usage"]["input_tokens"].as_i64().unwrap());
    assert!(output > 0 && charge > 0);

    let (status, after) = scrape(&app, Some(TOKEN)).await;
    assert_eq!(status, 200);
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    let ok = [("channel", "value"), ("model", MODEL), ("endpoint", "messages"), ("status_class", "2xx"), ("outcome", "ok")];
    assert_eq!(delta("cloudrouter_requests_total", &ok), 1.0, "\n{after}");
    let refused: f64 = samples(&after, "cloudrouter_requests_total")
        .iter()
        .filter(|(l, _)| l.get("model").map(String::as_str) == Some("unknown") && l.get("status_class").map(String::as_str) == Some("4xx"))
        .map(|(_, v)| v)
        .sum::<f64>()
        - samples(&before, "cloudrouter_requests_total")
            .iter()
            .filter(|(l, _)| l.get("model").map(String::as_str) == Some("unknown") && l.get("status_class").map(String::as_str) == Some("4xx"))
            .map(|(_, v)| v)
            .sum::<f64>();
    assert_eq!(refused, 1.0, "the unknown model is counted as unknown\n{after}");
    assert!(!after.contains(odd), "the client's model name is not a label");

    let cm = [("channel", "value"), ("model", MODEL)];
    assert_eq!(delta("cloudrouter_tokens_total", &[cm[0], cm[1], ("kind", "input")]), input as f64);
    assert_eq!(delta("cloudrouter_tokens_total", &[cm[0], cm[1], ("kind", "output")]), output as f64);
    assert_eq!(delta("cloudrouter_charge_micro_cny_total", &cm), charge as f64);
    let count = [("channel", "value"), ("model", MODEL), ("endpoint", "messages")];
    assert_eq!(delta("cloudrouter_request_duration_seconds_count", &count), 1.0, "latency histogram\n{after}");
    assert!(value(&after, "cloudrouter_usage_records_written_total", &[]) >= 2.0, "the writer counted its rows\n{after}");
    assert!(samples(&after, "cloudrouter_usage_flush_rows_count").values().sum::<f64>() >= 1.0, "flush batch sizes\n{after}");
    let attempts = |text: &str| samples(text, "cloudrouter_upstream_attempts_total").values().sum::<f64>();
    assert_eq!(attempts(&after) - attempts(&before), 1.0, "one attempt at the demo upstream (the unknown model sent none)\n{after}");
    assert!(samples(&after, "cloudrouter_upstream_failures_total").values().all(|v| *v == 0.0), "{after}");
    assert!(value(&after, "cloudrouter_money_leases", &[]) >= 1.0, "the customer's balance lease\n{after}");
    assert!(value(&after, "cloudrouter_money_leased_unreserved_micro_cny", &[]) > 0.0, "{after}");
    assert_eq!(value(&after, "cloudrouter_money_holds", &[]), 0.0, "no request holds money now\n{after}");
}

/// `server` as deployed, stopped with SIGTERM: `/readyz` turns 503 `draining` at once while the
/// process still accepts connections for `CLOUDROUTER_UNREADY_DELAY_MS`; then connections are
/// refused and the process exits cleanly.
#[sqlx::test(migrations = false)]
async fn sigterm_makes_the_server_unready_before_it_refuses_connections(pool: PgPool) {
    let delay = Duration::from_millis(1500);
    let delay_ms = delay.as_millis().to_string();
    let mut server = ServerProcess::ready(&database_url(&pool), &[("CLOUDROUTER_UNREADY_DELAY_MS", &delay_ms), ("CLOUDROUTER_SHUTDOWN_GRACE_MS", "1000"), ("RUST_LOG", "warn")]).await;
    let addr = server.addr;
    let probe = |path: &'static str| probe(addr, path);

    let term = Instant::now();
    server.sigterm();
    let mut draining = None;
    while term.elapsed() < delay {
        if let Some(r) = probe("/readyz").await {
            if r.0 == 503 {
                draining = Some((r, term.elapsed()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (r, at) = draining.expect("readyz turned 503 within the unready delay");
    assert_eq!(r.1.trim(), "draining");
    let healthz = probe("/healthz").await;
    let still_up = term.elapsed();
    if still_up < delay - Duration::from_millis(200) {
        assert_eq!(healthz.map(|r| r.0), Some(200), "still serving during the unready delay ({at:?} after SIGTERM)");
    }
    let mut refused_at = None;
    while term.elapsed() < Duration::from_secs(10) {
        if probe("/healthz").await.is_none() {
            refused_at = Some(term.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_at = refused_at.expect("connections refused after the delay");
    assert!(refused_at >= delay - Duration::from_millis(100), "refused only after the unready delay: {refused_at:?}");
    let exited = server.exited(Duration::from_secs(10)).await;
    assert!(exited.is_some_and(|s| s.success()), "the server exits cleanly: {exited:?}");
}

/// With `CLOUDROUTER_LOG_FORMAT=json` every log line is one JSON object, and each request has
/// one access line with its id, key, channel, models, status, outcome and timing, and never the
/// prompt, the answer or the key's secret.
#[sqlx::test(migrations = false)]
async fn json_logs_have_one_access_line_per_request_and_no_bodies_or_secrets(pool: PgPool) {
    let server = ServerProcess::spawn(&database_url(&pool), free_addr(), &[("CLOUDROUTER_LOG_FORMAT", "json"), ("RUST_LOG", "info,sqlx=warn")], std::process::Stdio::piped());
    let addr = server.addr;
    assert_eq!(wait_ready(addr).await, Some(200));
    let key = customer_key(&pool, "logs@example.com", "smart").await;
    let prompt = "the secret prompt 5b1e9c";
    let res = http()
        .post(format!("http://{addr}/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let rid = res.headers()["request-id"].to_str().unwrap().to_string();
    let answer: Value = res.json().await.unwrap();
    let answer_text = answer["content"][0]["text"].as_str().unwrap().to_string();
    server.sigterm();
    let child = server.into_child();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let logs = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<Value> = logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}"))).collect();
    let access: Vec<&Value> = lines.iter().filter(|l| l["target"] == "cloudrouter::access" && l["request_id"] == rid.as_str()).collect();
    assert_eq!(access.len(), 1, "one access line for the request: {logs}");
    let a = access[0];
    assert_eq!((a["status"].as_i64(), a["channel"].as_str(), a["outcome"].as_str()), (Some(200), Some("smart"), Some("ok")), "{a}");
    assert_eq!(a["served"], MODEL);
    assert!(a["latency_ms"].as_i64().is_some() && a["key_id"].as_str().is_some_and(|k| !k.is_empty()), "{a}");
    for secret in [prompt, answer_text.as_str(), key.as_str()] {
        assert!(!logs.contains(secret), "{secret:?} is in the logs");
    }
}

/// `server` as deployed, killed with SIGKILL while the usage writer still held every record of
/// the requests it had answered (a ten-minute flush interval): the next start replays the spool
/// the dead process left before it serves, so each answered request has exactly one usage record
/// and one charge. Records in a spool that were committed already (an instance killed between a
/// flush and the spool's truncation; simulated by putting the first process's spool back after
/// it was replayed) are replayed without a second record or charge, next to ones that were not.
#[sqlx::test(migrations = false)]
async fn sigkill_loses_no_usage_record_and_a_replay_charges_each_request_once(pool: PgPool) {
    let spool = temp_dir("sigkill");
    let spool_var = spool.to_str().unwrap().to_string();
    let env = [
        ("CLOUDROUTER_USAGE_FLUSH_MS", "600000"),
        ("CLOUDROUTER_SPOOL_DIR", spool_var.as_str()),
        ("CLOUDROUTER_UNREADY_DELAY_MS", "0"),
        ("RUST_LOG", "warn"),
    ];
    let db = database_url(&pool);
    let email = "sigkill@example.com";

    let mut first = ServerProcess::ready(&db, &env).await;
    let key = customer_key(&pool, email, "value").await;
    let mut ids = answered(&first.base(), &key, 25).await;
    first.kill();
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records").fetch_one(&pool).await.unwrap();
    assert_eq!(written, 0, "nothing was flushed before the kill (the test's premise)");
    let first_spool = spool.with_extension("first");
    copy_tree(&spool, &first_spool);

    let restarted = Instant::now();
    let mut second = ServerProcess::ready(&db, &env).await;
    figures("SIGKILL with every record unflushed", ids.len(), ids.len(), &Default::default(), lost(&pool, &ids).await, restarted.elapsed());
    assert_eq!(assert_books(&pool, email, &ids).await, ids.len() as i64, "no record but the answered ones");

    ids.extend(answered(&second.base(), &key, 10).await);
    second.kill();
    // the first process's spool once more, every record of it committed by now
    copy_tree(&first_spool, &spool);
    let mut third = ServerProcess::ready(&db, &env).await;
    assert_eq!(assert_books(&pool, email, &ids).await, ids.len() as i64, "no record but the answered ones");

    let exited = third.stop().await;
    assert!(exited.is_some_and(|s| s.success()), "a clean stop: {exited:?}");
    assert_eq!(files_under(&spool), Vec::<std::path::PathBuf>::new(), "a clean stop leaves an empty spool");
    let _ = std::fs::remove_dir_all(&spool);
    let _ = std::fs::remove_dir_all(&first_spool);
}
