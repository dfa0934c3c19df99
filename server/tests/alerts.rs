//! Alerts through the assembled app: a customer sets a low-balance threshold and a webhook in the
//! console (the signing secret is answered once and stored encrypted), the balance crosses the
//! threshold, and the alert reaches the customer's mailbox (the test's SMTP server) and their
//! webhook (a receiver here that verifies the signature). Staff read the history on Operations;
//! customers cannot.
mod common;

use axum::http::{HeaderMap, StatusCode};
use cloudrouter_core::alerts::{signature, staff, AlertKind};
use cloudrouter_core::billing::ledger::{self, LedgerKind, Memo};
use cloudrouter_core::money::MicroCny;
use common::{client, spawn_app, PASSWORD};
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A webhook receiver keeping each POST's signature header and body.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, axum::body::Bytes)>>>) {
    let got: Arc<Mutex<Vec<(String, axum::body::Bytes)>>> = Arc::default();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post({
            let got = got.clone();
            move |headers: HeaderMap, body: axum::body::Bytes| async move {
                let sig = headers.get(signature::HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                got.lock().unwrap().push((sig, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

#[sqlx::test(migrations = false)]
async fn a_low_balance_reaches_the_customers_mail_and_signed_webhook_once(pool: PgPool) {
    let app = spawn_app(pool).await;
    let c = client();
    app.signup(&c, "lowe@example.com").await;
    let user: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'lowe@example.com'").fetch_one(&app.pool).await.unwrap();
    let memo = Memo::Staff { text: Some("test".into()) };
    ledger::adjust(&app.pool, user, MicroCny::units(10), LedgerKind::Credit, &memo, None).await.unwrap();

    // settings are the signed-in customer's own
    let (status, _) = app.call(&client(), "account/alerts/threshold", &[("amount", "5")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app.call(&c, "account/alerts/threshold", &[("amount", "-1")]).await;
    assert!(status.is_client_error() || status.is_server_error(), "{status} {body}");
    let (status, body) = app.call(&c, "account/alerts/threshold", &[("amount", "5")]).await;
    assert!(status.is_success(), "{status} {body}");
    let (url, got) = receiver().await;
    let (status, body) = app.call(&c, "account/alerts/webhook", &[("url", &url)]).await;
    assert!(status.is_success(), "{status} {body}");
    let secret: String = serde_json::from_str(&body).unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT alert_webhook_secret_enc FROM users WHERE id = $1").bind(user).fetch_one(&app.pool).await.unwrap();
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "stored encrypted");
    let (_, view) = app.call(&c, "account/alerts", &[]).await;
    assert!(view.contains(&url) && !view.contains(&secret), "the address is shown again, the secret never: {view}");

    // ¥10 → ¥6 (above) → ¥4 (crossed) → ¥3 (still below)
    for units in [4, 2, 1] {
        ledger::adjust(&app.pool, user, -MicroCny::units(units), LedgerKind::Debit, &memo, None).await.unwrap();
    }
    let mail = app.mail.nth_to("lowe@example.com", 2).await;
    assert!(mail.text().contains("¥4.00") && mail.text().contains("¥5.00"), "{}", mail.text());
    let t0 = Instant::now();
    while got.lock().unwrap().is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = got.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "one crossing, one alert");
    let (sig, body) = &posts[0];
    signature::verify(&secret, sig, body, chrono::Utc::now().timestamp()).expect("signed with the secret shown once");
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!((v["audience"].as_str(), v["kind"].as_str()), (Some("customer"), Some("low_balance")));
    assert_eq!((v["data"]["balance"].as_str(), v["data"]["threshold"].as_str()), (Some("4.000000"), Some("5.000000")));
    assert_eq!(app.mail.to("lowe@example.com").len(), 2, "the sign-up mail and one alert");
    let (_, view) = app.call(&c, "account/alerts", &[]).await;
    assert!(view.contains("Your CloudRouter balance is low"), "listed as a latest alert: {view}");

    // the alert history is for staff only
    let (status, _) = app.call(&c, "admin/alerts", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[sqlx::test(migrations = false)]
async fn staff_read_open_and_resolved_alerts_on_operations(pool: PgPool) {
    let app = spawn_app(pool).await;
    let c = client();
    app.signup(&c, "ops@example.com").await;
    cloudrouter_core::accounts::ensure_staff(&app.pool, "ops@example.com", PASSWORD).await.unwrap();
    app.enable_two_factor(&c, "ops@example.com").await;
    staff::raise(&app.pool, AlertKind::UpstreamAccount, "u-1", "acct-one", "upstream 402 billing_error: credit balance is too low").await.unwrap();
    staff::raise(&app.pool, AlertKind::ChannelCapacity, "smart", "Smart", "capacity reached").await.unwrap();
    staff::clear(&app.pool, AlertKind::ChannelCapacity, "smart").await.unwrap();
    staff::resolve_settled(&app.pool, Duration::ZERO).await.unwrap();
    let (status, body) = app.call(&c, "admin/alerts", &[]).await;
    assert!(status.is_success(), "{status} {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!((alerts[0]["open"].as_bool(), alerts[0]["subject"].as_str()), (Some(true), Some("acct-one")), "open first");
    assert_eq!((alerts[1]["open"].as_bool(), alerts[1]["what"].as_str()), (Some(false), Some("Channel at capacity")));
    assert_ne!(alerts[1]["resolved"], "");
    // staff are mailed each notice (no CLOUDROUTER_ALERT_EMAILS: every staff account)
    app.mail.nth_to("ops@example.com", 4).await;
    let texts: Vec<String> = app.mail.to("ops@example.com").iter().skip(1).map(|m| m.text()).collect();
    assert_eq!(texts.iter().filter(|t| t.starts_with("Opened at")).count(), 2, "{texts:#?}");
    assert_eq!(texts.iter().filter(|t| t.starts_with("Resolved at") && t.contains("Channel at capacity — Smart")).count(), 1, "{texts:#?}");
}
