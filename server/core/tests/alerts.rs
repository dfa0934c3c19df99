//! Alerts against a real Postgres, real gateways and a real HTTP receiver: a staff alert opens
//! and resolves once across two instances and does not storm while its condition flaps; each
//! customer crossing notifies once and re-arms; webhooks are signed, retried while the receiver
//! fails, and delivered by whichever sender runs after a restart.
mod common;

use axum::http::{HeaderMap, StatusCode};
use cloudrouter_core::alerts::delivery::{self, DeliveryConfig, Webhook};
use cloudrouter_core::alerts::{customer, signature, staff, AlertKind, Notice};
use cloudrouter_core::billing::ledger::{self, LedgerKind};
use cloudrouter_core::billing::{purchases, renewals, subscriptions};
use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::demo::{FakeBehavior, PinnedUsage};
use cloudrouter_core::gateway::GatewayConfig;
use cloudrouter_core::keys::NewKey;
use cloudrouter_core::mail;
use common::*;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const SONNET: &str = "claude-sonnet-4-6";
const SETTLE: Duration = Duration::from_millis(400);

/// Notices queued for `kind` with `status` ("opened", "resolved", "reached").
async fn notices(pool: &PgPool, kind: AlertKind, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM alert_outbox WHERE kind = $1 AND status = $2").bind(kind).bind(status).fetch_one(pool).await.unwrap()
}

/// Waits (up to 10 s) until `f` holds.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alerting_config() -> GatewayConfig {
    GatewayConfig { breaker_failures: 1, breaker_open_for: Duration::from_millis(200), max_attempts: 1, alert_settle: SETTLE, ..fast_config() }
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_upstream_failing_on_two_instances_opens_one_alert_and_resolves_it_once(pool: PgPool) {
    let (_up, id) = fake("flaky", &pool, FakeBehavior { fail_status: Some(500), fail_times: Some(2), ..Default::default() }, 0).await;
    let (a, b) = (Gw::start(&pool, alerting_config()).await, Gw::start(&pool, alerting_config()).await);
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    // each instance's own breaker opens on its failure, and each reports it
    assert_eq!(post(&a.base, &k, &body(SONNET, false)).await.status().as_u16(), 500);
    assert_eq!(post(&b.base, &k, &body(SONNET, false)).await.status().as_u16(), 500);
    until("the alert", || async { notices(&pool, AlertKind::UpstreamDown, "opened").await == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows: Vec<(String, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT subject, resolved_at FROM staff_alerts").fetch_all(&pool).await.unwrap();
    assert_eq!(rows, vec![(id.to_string(), None)], "one open alert for the upstream, whichever instance saw it");
    assert_eq!(notices(&pool, AlertKind::UpstreamDown, "opened").await, 1);

    // the circuits' probes succeed on both instances: one resolution after the settle time
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(post(&a.base, &k, &body(SONNET, false)).await.status().as_u16(), 200);
    assert_eq!(post(&b.base, &k, &body(SONNET, false)).await.status().as_u16(), 200);
    until("the resolution", || async { notices(&pool, AlertKind::UpstreamDown, "resolved").await == 1 }).await;
    tokio::time::sleep(SETTLE * 2).await;
    assert_eq!(notices(&pool, AlertKind::UpstreamDown, "resolved").await, 1);
    assert_eq!(notices(&pool, AlertKind::UpstreamDown, "opened").await, 1);
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_condition_that_flaps_within_the_settle_time_sends_nothing_new(pool: PgPool) {
    let kind = AlertKind::ChannelCapacity;
    assert!(staff::raise(&pool, kind, "smart", "Smart", "full").await.unwrap());
    for _ in 0..5 {
        staff::clear(&pool, kind, "smart").await.unwrap();
        assert!(!staff::raise(&pool, kind, "smart", "Smart", "full again").await.unwrap(), "still the same alert");
    }
    assert_eq!(staff::resolve_settled(&pool, SETTLE).await.unwrap(), 0, "seen again: not resolved");
    staff::clear(&pool, kind, "smart").await.unwrap();
    tokio::time::sleep(SETTLE).await;
    assert_eq!(staff::resolve_settled(&pool, SETTLE).await.unwrap(), 1);
    assert_eq!(staff::resolve_settled(&pool, SETTLE).await.unwrap(), 0, "resolved once");
    assert_eq!((notices(&pool, kind, "opened").await, notices(&pool, kind, "resolved").await), (1, 1));
    // a new occurrence after the resolution is a new alert
    assert!(staff::raise(&pool, kind, "smart", "Smart", "full").await.unwrap());
    // capacity has no "gone" signal: unseen for the settle time resolves it
    tokio::time::sleep(SETTLE).await;
    assert_eq!(staff::resolve_settled(&pool, SETTLE).await.unwrap(), 1);
    assert_eq!((notices(&pool, kind, "opened").await, notices(&pool, kind, "resolved").await), (2, 2));
}

#[sqlx::test(migrations = "../../migrations")]
async fn low_balance_alerts_once_per_crossing_through_settlement(pool: PgPool) {
    let usage = PinnedUsage { input_tokens: 100_000, output_tokens: 0, ..Default::default() };
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(usage), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "10").await;
    let k = key(&pool, user, "smart").await;
    let balance = || async { sqlx::query_scalar::<_, i64>("SELECT balance_micros FROM balances WHERE user_id = $1").bind(user).fetch_one(&pool).await.unwrap() };
    let request = || async {
        assert_eq!(post(&gw.base, &k, &body(SONNET, false)).await.status().as_u16(), 200);
        gw.sync().await;
    };
    request().await;
    let charge = 10_000_000 - balance().await;
    assert!(charge > 0);
    // the threshold sits inside the next charge: that request crosses it
    let threshold = balance().await - charge / 2;
    customer::set_low_balance(&pool, user, Some(cny(threshold))).await.unwrap();
    assert_eq!(notices(&pool, AlertKind::LowBalance, "reached").await, 0, "set below the balance: nothing yet");
    request().await;
    assert_eq!(notices(&pool, AlertKind::LowBalance, "reached").await, 1, "crossed");
    request().await;
    assert_eq!(notices(&pool, AlertKind::LowBalance, "reached").await, 1, "still below: once per crossing");
    // a top-up back above the threshold re-arms it; the next crossing alerts again
    let up = threshold + charge / 2 - balance().await;
    ledger::adjust(&pool, user, cny(up), LedgerKind::Credit, &memo("top-up"), None).await.unwrap();
    assert_eq!(notices(&pool, AlertKind::LowBalance, "reached").await, 1);
    request().await;
    assert_eq!(notices(&pool, AlertKind::LowBalance, "reached").await, 2, "crossed again");
    let data: serde_json::Value = sqlx::query_scalar("SELECT data FROM alert_outbox WHERE user_id = $1 ORDER BY id DESC LIMIT 1").bind(user).fetch_one(&pool).await.unwrap();
    assert_eq!(data["threshold"], cny(threshold).decimal());
    assert_eq!(data["balance"], cny(balance().await).decimal());
    // a threshold set above the balance is crossed at once
    customer::set_low_balance(&pool, user, None).await.unwrap();
    customer::set_low_balance(&pool, user, Some(cny(balance().await + 1))).await.unwrap();
    assert_eq!(notices(&pool, AlertKind::LowBalance, "reached").await, 3);
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_key_limit_notifies_once_per_limit_and_again_after_it_is_raised(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = customer(&pool, "100").await;
    // a limit smaller than any request's hold: every request is refused for it
    let k = key_with(&pool, user, NewKey { name: "ci".into(), channel: "smart".into(), spend_limit_micros: Some(cny(1)), ..Default::default() }).await;
    for _ in 0..3 {
        assert_eq!(post(&gw.base, &k, &body(SONNET, false)).await.status().as_u16(), 402);
    }
    until("the key-limit notice", || async { notices(&pool, AlertKind::KeyLimit, "reached").await == 1 }).await;
    let key_id: Uuid = sqlx::query_scalar("SELECT id FROM api_keys WHERE user_id = $1").bind(user).fetch_one(&pool).await.unwrap();
    assert!(!customer::key_limit_refused(&pool, key_id).await.unwrap(), "the same limit: not again");
    sqlx::query("UPDATE api_keys SET spend_limit_micros = 2 WHERE id = $1").bind(key_id).execute(&pool).await.unwrap();
    assert!(customer::key_limit_refused(&pool, key_id).await.unwrap(), "a raised limit is re-armed");
    assert_eq!(notices(&pool, AlertKind::KeyLimit, "reached").await, 2);
    // reached by its spend at settlement (charged in full above the limit)
    sqlx::query("UPDATE api_keys SET spend_limit_micros = 100 WHERE id = $1").bind(key_id).execute(&pool).await.unwrap();
    sqlx::query("UPDATE api_keys SET spent_micros = 100 WHERE id = $1").bind(key_id).execute(&pool).await.unwrap();
    sqlx::query("UPDATE api_keys SET spent_micros = 150 WHERE id = $1").bind(key_id).execute(&pool).await.unwrap();
    assert_eq!(notices(&pool, AlertKind::KeyLimit, "reached").await, 3);
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_allowance_alerts_at_80_and_100_percent_once_per_cycle(pool: PgPool) {
    let user = customer(&pool, "0").await;
    let now = chrono::Utc::now();
    let o = purchases::create_subscription(&pool, user, "pro", PaymentMethod::Sandbox).await.unwrap();
    purchases::mark_paid_at(&pool, o.id, PaymentMethod::Sandbox, &format!("SBX-{}", o.id), o.amount_micros, now).await.unwrap();
    let sub = subscriptions::current(&pool, user, now).await.unwrap().expect("subscribed");
    let all = sub.allowance_micro_usd.micros();
    // what the allowance draw of settlement does to the row, in percent of the allowance
    let used = |percent: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE subscriptions SET allowance_used_micro_usd = $2 WHERE id = $1").bind(sub.id).bind(all * percent / 100).execute(&pool).await.unwrap()
        }
    };
    let counts = || async { (notices(&pool, AlertKind::Allowance80, "reached").await, notices(&pool, AlertKind::Allowance100, "reached").await) };
    used(79).await;
    assert_eq!(counts().await, (0, 0));
    used(80).await;
    used(95).await;
    assert_eq!(counts().await, (1, 0));
    used(100).await;
    assert_eq!(counts().await, (1, 1));
    // a new cycle starts from zero: re-armed; one usage across both marks sends the 100 % notice
    sqlx::query("UPDATE subscriptions SET allowance_used_micro_usd = 0, cycle_start = cycle_start + interval '1 second' WHERE id = $1").bind(sub.id).execute(&pool).await.unwrap();
    used(100).await;
    assert_eq!(counts().await, (1, 2));
    // the allowance left at the end of the subscription expires: not a use, no notice
    sqlx::query("UPDATE subscriptions SET allowance_used_micro_usd = 0, cycle_start = cycle_start + interval '1 second' WHERE id = $1").bind(sub.id).execute(&pool).await.unwrap();
    used(50).await;
    // the first run raises a renewal order (the wallet is empty), the next ends it unpaid
    for _ in 0..2 {
        renewals::run_cycle_boundaries(&pool, now + chrono::Duration::days(400)).await.unwrap();
    }
    let (status, left): (String, i64) = sqlx::query_as("SELECT status, allowance_micro_usd - allowance_used_micro_usd FROM subscriptions WHERE id = $1").bind(sub.id).fetch_one(&pool).await.unwrap();
    assert_eq!((status.as_str(), left), ("ended", 0), "the subscription ended and its allowance expired");
    assert_eq!(counts().await, (1, 2));
}

/// A webhook receiver that verifies each POST as the docs tell receivers to, answering 503 while
/// `down` or for its first `fail_first` POSTs.
struct Receiver {
    url: String,
    secret: String,
    /// (event id, body) of every POST whose signature verified
    verified: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    forged: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let secret = "whsec_test-receiver-secret".to_string();
        let verified: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let (forged, accepted, down) = ( Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let seen = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let (secret, verified, forged, accepted, down) = (secret.clone(), Arc::clone(&verified), forged.clone(), accepted.clone(), down.clone());
                move |headers: HeaderMap, body: axum::body::Bytes| async move {
                    let sig = headers.get(signature::HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
                    if signature::verify(&secret, sig, &body, chrono::Utc::now().timestamp()).is_err() {
                        forged.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::BAD_REQUEST;
                    }
                    let id = headers.get("cloudrouter-event-id").unwrap().to_str().unwrap().to_string();
                    verified.lock().unwrap().push((id, serde_json::from_slice(&body).unwrap()));
                    if down.load(Ordering::SeqCst) || seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    accepted.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, secret, verified, forged, accepted, down }
    }
}

fn render(n: &Notice, _locale: Option<&str>) -> (String, String) {
    (format!("{} {}", n.kind, n.status), n.detail.clone())
}

fn sender(pool: &PgPool, to: &Receiver) -> tokio::task::JoinHandle<()> {
    let (reporter, _task) = cloudrouter_core::alerts::Reporter::start(pool.clone(), SETTLE);
    let cfg = DeliveryConfig {
        staff_webhook: Some(Webhook { url: to.url.clone(), secret: to.secret.clone() }),
        staff_emails: vec!["ops@example.com".into()],
        allow_private_webhooks: false,
        retry_base: Duration::from_millis(100),
        render,
    };
    delivery::spawn(pool.clone(), Crypto::from_secret(SECRET), mail::Outbox::new(), &reporter, cfg)
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_signed_webhook_is_retried_until_the_receiver_takes_it_and_mailed_once(pool: PgPool) {
    let rx = Receiver::start(2).await;
    let _sender = sender(&pool, &rx);
    let up = Uuid::new_v4();
    assert!(staff::raise(&pool, AlertKind::UpstreamAccount, &up.to_string(), "acct-1", "upstream 400 invalid_request_error: Your credit balance is too low").await.unwrap());
    until("the delivery", || async { rx.accepted.load(Ordering::SeqCst) == 1 }).await;
    let got = rx.verified.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "two refusals, then taken");
    assert!(got.iter().all(|(id, _)| *id == got[0].0), "one event id across retries, to deduplicate by");
    let body = &got[0].1;
    assert_eq!((body["audience"].as_str(), body["kind"].as_str(), body["status"].as_str()), (Some("staff"), Some("upstream_account"), Some("opened")));
    assert_eq!(body["subject"], up.to_string());
    assert_eq!(rx.forged.load(Ordering::SeqCst), 0);
    let (done, attempts): (bool, i32) = sqlx::query_as("SELECT done_at IS NOT NULL, attempts FROM alert_outbox").fetch_one(&pool).await.unwrap();
    assert_eq!((done, attempts), (true, 3));
    let mails: Vec<(String, String)> = sqlx::query_as("SELECT to_addr, kind FROM mail_outbox").fetch_all(&pool).await.unwrap();
    assert_eq!(mails, vec![("ops@example.com".to_string(), "alert".to_string())], "mailed once, not once per webhook try");
    // a forged or replayed POST fails the receiver's check
    let b = serde_json::to_vec(body).unwrap();
    assert!(signature::verify(&rx.secret, &signature::sign("guess", chrono::Utc::now().timestamp(), &b), &b, chrono::Utc::now().timestamp()).is_err());
    let old = chrono::Utc::now().timestamp() - 3600;
    assert!(signature::verify(&rx.secret, &signature::sign(&rx.secret, old, &b), &b, chrono::Utc::now().timestamp()).is_err());
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_notice_outlives_its_sender_and_the_next_one_delivers_it(pool: PgPool) {
    let rx = Receiver::start(0).await;
    rx.down.store(true, Ordering::SeqCst);
    let first = sender(&pool, &rx);
    assert!(staff::raise(&pool, AlertKind::UsageFlush, "instance-1", "instance 1", "connection refused").await.unwrap());
    until("a failed try", || async { !rx.verified.lock().unwrap().is_empty() }).await;
    first.abort(); // the instance dies
    let _ = first.await;
    rx.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.accepted.load(Ordering::SeqCst), 0, "nobody sends while no instance runs");
    let _second = sender(&pool, &rx);
    until("the delivery after the restart", || async { rx.accepted.load(Ordering::SeqCst) == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.accepted.load(Ordering::SeqCst), 1, "delivered once");
}
