//! Billing integration tests against a fresh Postgres per test: plans and snapshots, payments
//! (sandbox, Alipay RSA2, WeChat Pay v3, bank transfer; duplicated and forged notifications),
//! cycle boundaries with a controllable clock, pro-rated refunds, invoices, trials, and the
//! trial → allowance → balance drawing order through the real gateway.
mod common;

use base64::Engine;
use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, TimeZone, Utc};
use cloudrouter_core::billing::invoices::{self, InvoiceDetails};
use cloudrouter_core::billing::orders;
use cloudrouter_core::billing::purchases::{self, PaidOutcome};
use cloudrouter_core::billing::payments::{
    self, AlipayProvider, BankTransfer, Checkout, PaymentError, PaymentProvider, Payments, SandboxProvider, WechatPayProvider,
};
use cloudrouter_core::billing::subscriptions::{self, Subscription};
use cloudrouter_core::billing::{self, audit, plans, refunds, renewals, trials, BillingError, Clock, TestClock};
use cloudrouter_core::demo::{FakeBehavior, PinnedUsage};
use cloudrouter_core::billing::ledger::{self, LedgerKind};
use common::*;
use sqlx::PgPool;
use std::sync::Arc;
use uuid::Uuid;

const SONNET: &str = "claude-sonnet-4-6";
const SECRET: &str = "billing-test-secret";

async fn new_user(pool: &PgPool, balance_micros: i64) -> Uuid {
    let u = cloudrouter_core::accounts::create_user(pool, &format!("b-{}@example.com", Uuid::new_v4()), "correct horse battery staple 9")
        .await
        .unwrap();
    if balance_micros > 0 {
        ledger::adjust(pool, u.id, cny(balance_micros), LedgerKind::Credit, &memo("test top-up"), None).await.unwrap();
    }
    u.id
}

async fn staff(pool: &PgPool) -> Uuid {
    cloudrouter_core::accounts::ensure_staff(pool, &format!("staff-{}@example.com", Uuid::new_v4()), "correct horse battery staple 9")
        .await
        .unwrap()
        .id
}

/// Buys a plan through the sandbox provider at `now`.
async fn subscribe(pool: &PgPool, user: Uuid, plan: &str, now: DateTime<Utc>) -> Subscription {
    let o = purchases::create_subscription(pool, user, plan, PaymentMethod::Sandbox).await.unwrap();
    let r = purchases::mark_paid_at(pool, o.id, PaymentMethod::Sandbox, &format!("SBX-{}", o.id), o.amount_micros, now).await.unwrap();
    assert_eq!(r, PaidOutcome::Applied);
    subscriptions::current(pool, user, now).await.unwrap().expect("subscribed")
}

async fn set_allowance(pool: &PgPool, code: &str, micro_usd: i64) {
    let mut p = plans::get(pool, code).await.unwrap().unwrap();
    p.allowance_micro_usd = usd(micro_usd);
    plans::update(pool, &p).await.unwrap();
}

async fn verify(pool: &PgPool, user: Uuid) {
    assert!(billing::verify(pool, user).await.unwrap(), "money invariants hold for {user}");
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

// ---------------------------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn plans_are_seeded_and_edits_never_change_what_was_bought(pool: PgPool) {
    let list = plans::list(&pool).await.unwrap();
    let codes: Vec<&str> = list.iter().map(|p| p.code.as_str()).collect();
    assert_eq!(codes, ["starter", "pro", "ultra", "payg", "enterprise"]);
    let pro = plans::get(&pool, "pro").await.unwrap().unwrap();
    assert_eq!((pro.price_micros.micros(), pro.allowance_micro_usd.micros(), pro.refund_window_days), (399_000_000, 150_000_000, Some(30)));
    assert_eq!(pro.audience, "Small team collaboration / frequent usage");
    let ultra = plans::get(&pool, "ultra").await.unwrap().unwrap();
    assert!(ultra.sla && ultra.refund_window_days.is_none() && ultra.purchasable);
    assert!(!plans::get(&pool, "payg").await.unwrap().unwrap().purchasable);
    assert!(!plans::get(&pool, "enterprise").await.unwrap().unwrap().purchasable);

    let user = new_user(&pool, 0).await;
    let sub = subscribe(&pool, user, "pro", Utc::now()).await;
    assert_eq!((sub.plan_name.as_str(), sub.price_micros.micros(), sub.allowance_micro_usd.micros()), ("Pro", 399_000_000, 150_000_000));

    // staff edit the plan: the subscription keeps its snapshot
    let boss = staff(&pool).await;
    let mut p = pro.clone();
    p.price_micros = cny(499_000_000);
    p.allowance_micro_usd = usd(10_000_000);
    plans::update_by(&pool, boss, &p).await.unwrap();
    let sub = subscriptions::current(&pool, user, Utc::now()).await.unwrap().unwrap();
    assert_eq!((sub.price_micros.micros(), sub.allowance_micro_usd.micros()), (399_000_000, 150_000_000));
    assert_eq!(billing::funds(&pool, user, Utc::now()).await.unwrap().allowance_left_micro_usd, usd(150_000_000));
    assert!(audit::list(&pool, 10).await.unwrap().iter().any(|e| e.action == "plan.update" && e.target == "plan:pro"));

    // a second purchase is a plan change; non-purchasable plans cannot be bought
    assert!(matches!(purchases::create_subscription(&pool, user, "ultra", PaymentMethod::Sandbox).await, Err(BillingError::AlreadySubscribed)));
    let other = new_user(&pool, 0).await;
    assert!(matches!(purchases::create_subscription(&pool, other, "payg", PaymentMethod::Sandbox).await, Err(BillingError::PlanNotPurchasable)));
    assert!(matches!(purchases::create_subscription(&pool, other, "nope", PaymentMethod::Sandbox).await, Err(BillingError::UnknownPlan)));
    assert!(matches!(purchases::create_topup(&pool, other, cny(999_999), PaymentMethod::Sandbox).await, Err(BillingError::TopupOutOfRange)));
    assert!(matches!(purchases::create_topup(&pool, other, cny(100_000_000_001), PaymentMethod::Alipay).await, Err(BillingError::TopupOutOfRange)));
    assert!(matches!(purchases::create_topup(&pool, other, cny(5_000_000), PaymentMethod::Balance).await, Err(BillingError::InvalidMethod)));
    verify(&pool, user).await;
}

// ---------------------------------------------------------------------------------------------
// Payments
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn sandbox_notifications_credit_once_and_forgeries_are_refused(pool: PgPool) {
    let user = new_user(&pool, 0).await;
    let sandbox = SandboxProvider::new(SECRET, "https://console.example.com");
    let order = purchases::create_topup(&pool, user, cny(50_000_000), PaymentMethod::Sandbox).await.unwrap();
    assert!(order.reference.starts_with("CR-") && order.reference.len() == 9);
    assert_eq!(sandbox.checkout(&order, "/x"), Checkout::Redirect(format!("https://console.example.com/pay/sandbox/{}", order.id)));
    let h = http::HeaderMap::new();

    // forged: signed with another secret, or the amount changed after signing
    let forged = SandboxProvider::new("not-the-secret", "").sign(order.id, cny(50_000_000));
    assert!(matches!(payments::handle_notification(&pool, &sandbox, &h, forged.as_bytes()).await, Err(PaymentError::BadSignature)));
    let good = sandbox.sign(order.id, cny(50_000_000));
    let tampered = good.replace("amount_micros=50000000", "amount_micros=90000000");
    assert!(matches!(payments::handle_notification(&pool, &sandbox, &h, tampered.as_bytes()).await, Err(PaymentError::BadSignature)));
    // correctly signed but for another amount
    let wrong_amount = sandbox.sign(order.id, cny(1_000_000));
    assert!(matches!(
        payments::handle_notification(&pool, &sandbox, &h, wrong_amount.as_bytes()).await,
        Err(PaymentError::Billing(BillingError::AmountMismatch { .. }))
    ));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0));

    // delivered twice at the same moment, then once more: credited once
    let (x, y) = tokio::join!(
        payments::handle_notification(&pool, &sandbox, &h, good.as_bytes()),
        payments::handle_notification(&pool, &sandbox, &h, good.as_bytes())
    );
    let mut outcomes = [x.unwrap(), y.unwrap()];
    outcomes.sort_by_key(|o| *o == PaidOutcome::AlreadyPaid);
    assert_eq!(outcomes, [PaidOutcome::Applied, PaidOutcome::AlreadyPaid]);
    assert_eq!(payments::handle_notification(&pool, &sandbox, &h, good.as_bytes()).await.unwrap(), PaidOutcome::AlreadyPaid);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(50_000_000));
    let o = orders::get(&pool, user, order.id).await.unwrap().unwrap();
    assert_eq!(o.status.as_str(), "paid");
    assert!(o.paid_at.is_some());
    let credits = ledger::entries(&pool, user, 10).await.unwrap();
    assert_eq!(credits.len(), 1);
    assert!(credits[0].note.contains(&order.reference));
    assert!(matches!(orders::cancel(&pool, user, order.id).await, Err(BillingError::OrderNotOpen(_))));

    // over HTTP through the router: the provider's ack, and a refusal for a forgery
    let order2 = purchases::create_topup(&pool, user, cny(2_000_000), PaymentMethod::Sandbox).await.unwrap();
    let pay = Arc::new(Payments::new().with(SandboxProvider::new(SECRET, "")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().nest("/api/payments", payments::router(pool.clone(), pay.clone()));
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/api/payments/notify/sandbox");
    let body = SandboxProvider::new(SECRET, "").sign(order2.id, cny(2_000_000));
    for _ in 0..2 {
        let r = client().post(&url).header("content-type", "application/x-www-form-urlencoded").body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    let r = client().post(&url).body(body.replace("amount_micros=2000000", "amount_micros=3000000")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = client().post(format!("http://{addr}/api/payments/notify/alipay")).body("x=1").send().await.unwrap();
    assert_eq!(r.status(), 404);
    task.abort();
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(52_000_000));

    // an unpaid order can be cancelled, and stale ones expire
    let o3 = purchases::create_topup(&pool, user, cny(3_000_000), PaymentMethod::Sandbox).await.unwrap();
    orders::cancel(&pool, user, o3.id).await.unwrap();
    let o4 = purchases::create_topup(&pool, user, cny(4_000_000), PaymentMethod::Alipay).await.unwrap();
    assert_eq!(orders::expire_stale(&pool, Utc::now()).await.unwrap(), 0);
    assert_eq!(orders::expire_stale(&pool, o4.expires_at).await.unwrap(), 1);
    assert_eq!(orders::get(&pool, user, o4.id).await.unwrap().unwrap().status.as_str(), "expired");
    assert_eq!(orders::list(&pool, user).await.unwrap().len(), 4);
    verify(&pool, user).await;
}

fn sign_sha256(k: &rsa::RsaPrivateKey, msg: &[u8]) -> String {
    use rsa::signature::{SignatureEncoding, Signer};
    let s = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.clone()).sign(msg);
    base64::engine::general_purpose::STANDARD.encode(s.to_vec())
}

fn form(params: &[(&str, String)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", payments::url_encode(k), payments::url_encode(v))).collect::<Vec<_>>().join("&")
}

#[sqlx::test(migrations = "../../migrations")]
async fn alipay_rsa2_notifications(pool: PgPool) {
    let (merchant, merchant_sk, merchant_pk) = rsa_pair();
    let (alipay, _alipay_sk, alipay_pk) = rsa_pair();
    let provider = AlipayProvider::new("2021000000000001", &merchant_sk, &alipay_pk, "https://openapi.alipay.com/gateway.do")
        .unwrap()
        .with_notify_url("https://console.example.com/api/payments/notify/alipay");
    let user = new_user(&pool, 0).await;
    let sub_order = purchases::create_subscription(&pool, user, "starter", PaymentMethod::Alipay).await.unwrap();

    // checkout: a redirect to Alipay's gateway whose request is signed with the merchant key
    let Checkout::Redirect(url) = provider.checkout(&sub_order, "https://console.example.com/billing") else { panic!("redirect") };
    assert!(url.starts_with("https://openapi.alipay.com/gateway.do?"));
    let params = payments::parse_form(url.split_once('?').unwrap().1.as_bytes()).unwrap();
    assert_eq!(params["sign_type"], "RSA2");
    assert!(params["biz_content"].contains("\"total_amount\":\"99.00\""));
    let merchant_pub = rsa::RsaPublicKey::from(&merchant);
    assert!(payments::rsa_sha256_verify(&merchant_pub, payments::alipay_sign_content(&params).as_bytes(), &params["sign"]));
    drop(merchant_pk);

    // Alipay's notification, signed as Alipay documents it (sorted k=v of non-empty params, without sign/sign_type)
    let mut p: Vec<(&str, String)> = vec![
        ("notify_time", "2026-11-25 10:00:00".into()),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", "ac05099524730693a8b330c5ecf72da9786".into()),
        ("app_id", "2021000000000001".into()),
        ("charset", "utf-8".into()),
        ("version", "1.0".into()),
        ("trade_no", "2026112522001400000000000001".into()),
        ("out_trade_no", sub_order.id.simple().to_string()),
        ("trade_status", "TRADE_SUCCESS".into()),
        ("total_amount", "99.00".into()),
        ("receipt_amount", "99.00".into()),
        ("subject", "CloudRouter order & more".into()),
        ("buyer_logon_id", "".into()),
    ];
    let mut sorted: Vec<(&str, String)> = p.iter().filter(|(_, v)| !v.is_empty()).cloned().collect();
    sorted.sort();
    let content = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    p.push(("sign", sign_sha256(&alipay, content.as_bytes())));
    p.push(("sign_type", "RSA2".into()));
    let body = form(&p);
    let h = http::HeaderMap::new();
    let n = provider.verify_notification(&h, body.as_bytes()).unwrap();
    assert_eq!((n.order_id, n.amount_micros.micros(), n.paid), (sub_order.id, 99_000_000, true));
    assert_eq!(payments::handle_notification(&pool, &provider, &h, body.as_bytes()).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(payments::handle_notification(&pool, &provider, &h, body.as_bytes()).await.unwrap(), PaidOutcome::AlreadyPaid);
    assert_eq!(provider.ack(), (200, "success".to_string()));
    let sub = subscriptions::current(&pool, user, Utc::now()).await.unwrap().unwrap();
    assert_eq!(sub.plan_code, "starter");
    // paid from outside: a credit and a purchase of the same amount
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0));
    let kinds: Vec<String> = ledger::entries(&pool, user, 10).await.unwrap().into_iter().map(|e| format!("{}/{}", e.source, e.kind)).collect();
    assert_eq!(kinds, ["allowance/grant", "wallet/purchase", "wallet/credit"]);

    // forged: tampered amount; signed by someone else; missing signature
    let tampered = body.replace("total_amount=99.00", "total_amount=1.00");
    assert!(matches!(provider.verify_notification(&h, tampered.as_bytes()), Err(PaymentError::BadSignature)));
    let (mallory, _, _) = rsa_pair();
    let mut q: Vec<(&str, String)> = p.iter().filter(|(k, _)| *k != "sign").cloned().collect();
    q.push(("sign", sign_sha256(&mallory, content.as_bytes())));
    assert!(matches!(provider.verify_notification(&h, form(&q).as_bytes()), Err(PaymentError::BadSignature)));
    let unsigned: Vec<(&str, String)> = p.iter().filter(|(k, _)| *k != "sign").cloned().collect();
    assert!(matches!(provider.verify_notification(&h, form(&unsigned).as_bytes()), Err(PaymentError::BadSignature)));
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn wechat_pay_v3_notifications(pool: PgPool) {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let (platform, _, platform_pk) = rsa_pair();
    let (_merchant, merchant_sk, _) = rsa_pair();
    let apiv3: [u8; 32] = *b"0123456789abcdefghijklmnopqrstuv";
    let provider = WechatPayProvider::new("1900000001", "wx0000000000000001", apiv3, &platform_pk, &merchant_sk)
        .unwrap()
        .with_serial_no("5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
    let user = new_user(&pool, 0).await;
    let order = purchases::create_topup(&pool, user, cny(88_880_000), PaymentMethod::Wechat).await.unwrap();
    let req = provider.native_request(&order);
    assert!(req.authorization.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\""));
    assert!(req.body.contains("\"total\":8888"));

    let encrypt = |key: &[u8; 32], plain: &serde_json::Value| {
        let c = aes_gcm::Aes256Gcm::new_from_slice(key).unwrap();
        let ct = c.encrypt(aes_gcm::Nonce::from_slice(b"fdasflkja484"), Payload { msg: plain.to_string().as_bytes(), aad: b"transaction" }).unwrap();
        base64::engine::general_purpose::STANDARD.encode(ct)
    };
    let plain = serde_json::json!({
        "mchid": "1900000001", "appid": "wx0000000000000001", "out_trade_no": order.id.simple().to_string(),
        "transaction_id": "4200000000202611250000000001", "trade_type": "NATIVE", "trade_state": "SUCCESS",
        "amount": {"total": 8888, "payer_total": 8888, "currency": "CNY", "payer_currency": "CNY"}
    });
    let notification = |ciphertext: String| {
        serde_json::json!({
            "id": "EV-2018022511223320873", "create_time": "2026-11-25T10:00:00+08:00", "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS", "summary": "payment succeeded",
            "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext,
                         "associated_data": "transaction", "nonce": "fdasflkja484"}
        })
        .to_string()
    };
    let headers = |body: &str, key: &rsa::RsaPrivateKey| {
        let ts = Utc::now().timestamp().to_string();
        let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
        let mut h = http::HeaderMap::new();
        h.insert("wechatpay-timestamp", ts.parse().unwrap());
        h.insert("wechatpay-nonce", nonce.parse().unwrap());
        h.insert("wechatpay-serial", "PUB_KEY_ID_0000000001".parse().unwrap());
        h.insert("wechatpay-signature", sign_sha256(key, format!("{ts}\n{nonce}\n{body}\n").as_bytes()).parse().unwrap());
        h
    };
    let body = notification(encrypt(&apiv3, &plain));
    let h = headers(&body, &platform);
    assert_eq!(payments::handle_notification(&pool, &provider, &h, body.as_bytes()).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(payments::handle_notification(&pool, &provider, &h, body.as_bytes()).await.unwrap(), PaidOutcome::AlreadyPaid);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(88_880_000));
    assert_eq!(provider.ack().0, 204);

    // forged: body changed after signing; signed with another key; resource encrypted with another key
    let tampered = body.replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESS ");
    assert!(matches!(provider.verify_notification(&h, tampered.as_bytes()), Err(PaymentError::BadSignature)));
    let (mallory, _, _) = rsa_pair();
    assert!(matches!(provider.verify_notification(&headers(&body, &mallory), body.as_bytes()), Err(PaymentError::BadSignature)));
    let wrong_key_body = notification(encrypt(b"vutsrqponmlkjihgfedcba9876543210", &plain));
    assert!(matches!(
        provider.verify_notification(&headers(&wrong_key_body, &platform), wrong_key_body.as_bytes()),
        Err(PaymentError::BadSignature)
    ));
    assert!(matches!(provider.verify_notification(&http::HeaderMap::new(), body.as_bytes()), Err(PaymentError::BadSignature)));
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn bank_transfer_is_confirmed_by_staff_and_audited(pool: PgPool) {
    let user = new_user(&pool, 0).await;
    let boss = staff(&pool).await;
    let bank = BankTransfer::new("China Merchants Bank Shanghai Branch", "CloudRouter Ltd", "6225 8800 0000 0000");
    let order = purchases::create_subscription(&pool, user, "pro", PaymentMethod::Bank).await.unwrap();
    assert!(order.expires_at - order.created_at >= Duration::days(7) - Duration::seconds(5));
    match bank.checkout(&order, "") {
        Checkout::Instructions { reference, amount, account_name, .. } => {
            assert_eq!((reference, amount, account_name.as_str()), (order.reference.clone(), cny(399_000_000), "CloudRouter Ltd"));
        }
        c => panic!("{c:?}"),
    }
    assert!(matches!(bank.verify_notification(&http::HeaderMap::new(), b""), Err(PaymentError::NotSupported)));
    let pending = orders::pending_bank_transfers(&pool).await.unwrap();
    assert_eq!(pending.iter().map(|o| o.id).collect::<Vec<_>>(), [order.id]);

    assert_eq!(purchases::confirm_bank_transfer(&pool, boss, order.id).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(purchases::confirm_bank_transfer(&pool, boss, order.id).await.unwrap(), PaidOutcome::AlreadyPaid);
    assert!(orders::pending_bank_transfers(&pool).await.unwrap().is_empty());
    assert_eq!(subscriptions::current(&pool, user, Utc::now()).await.unwrap().unwrap().plan_code, "pro");
    let log = audit::list(&pool, 10).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "order.confirm_bank_transfer").count(), 1);
    assert!(log[0].staff_email.starts_with("staff-") && log[0].target == format!("order:{}", order.id));
    verify(&pool, user).await;
}

// ---------------------------------------------------------------------------------------------
// Cycles
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn scheduled_plan_change_takes_effect_at_the_cycle_boundary(pool: PgPool) {
    let clock = TestClock::new(Utc::now().trunc_subsecs(0));
    let user = new_user(&pool, 1_000_000_000).await;
    let o = purchases::create_subscription(&pool, user, "starter", PaymentMethod::Balance).await.unwrap();
    assert_eq!(purchases::pay_with_balance_at(&pool, user, o.id, clock.now()).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(purchases::pay_with_balance_at(&pool, user, o.id, clock.now()).await.unwrap(), PaidOutcome::AlreadyPaid);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(901_000_000));
    let sub = subscriptions::current(&pool, user, clock.now()).await.unwrap().unwrap();
    assert_eq!(sub.cycle_start, clock.now());

    // schedule, cancel, schedule again
    assert!(matches!(subscriptions::schedule_change(&pool, user, "starter").await, Err(BillingError::SamePlan)));
    assert!(matches!(subscriptions::schedule_change(&pool, user, "enterprise").await, Err(BillingError::PlanNotPurchasable)));
    assert_eq!(subscriptions::schedule_change(&pool, user, "ultra").await.unwrap().pending_plan_code.as_deref(), Some("ultra"));
    subscriptions::cancel_change(&pool, user).await.unwrap();
    assert!(matches!(subscriptions::cancel_change(&pool, user).await, Err(BillingError::NoPendingChange)));
    assert_eq!(subscriptions::current(&pool, user, clock.now()).await.unwrap().unwrap().pending_plan_code, None);
    subscriptions::schedule_change(&pool, user, "pro").await.unwrap();

    // nothing happens before the boundary
    clock.set(sub.cycle_end - Duration::seconds(1));
    assert_eq!(billing::run_jobs(&pool, clock.now()).await.unwrap().cycles, renewals::CycleReport::default());
    let s = subscriptions::current(&pool, user, clock.now()).await.unwrap().unwrap();
    assert_eq!((s.plan_code.as_str(), s.pending_plan_code.as_deref()), ("starter", Some("pro")));

    // at the boundary, from two instances at once: renewed exactly once, on the new plan
    clock.set(sub.cycle_end);
    let (a, b) = tokio::join!(
        renewals::run_cycle_boundaries(&pool, clock.now()),
        renewals::run_cycle_boundaries(&pool, clock.now())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.renewed + b.renewed, a.plan_changes + b.plan_changes), (1, 1));
    assert_eq!(renewals::run_cycle_boundaries(&pool, clock.now()).await.unwrap(), renewals::CycleReport::default());
    let s = subscriptions::current(&pool, user, clock.now()).await.unwrap().unwrap();
    assert_eq!(s.id, sub.id);
    assert_eq!((s.plan_code.as_str(), s.price_micros.micros(), s.allowance_micro_usd.micros(), s.allowance_used_micro_usd.micros()), ("pro", 399_000_000, 150_000_000, 0));
    assert_eq!((s.cycle_start, s.pending_plan_code.clone()), (sub.cycle_end, None));
    assert!(s.cycle_end > s.cycle_start + Duration::days(27));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(901_000_000 - 399_000_000));
    let renewal = orders::get(&pool, user, s.order_id).await.unwrap().unwrap();
    assert_eq!((renewal.kind.as_str(), renewal.status.as_str(), renewal.method.as_str()), ("renewal", "paid", "balance"));
    // the old cycle's unused allowance expired, the new one was granted
    let e = ledger::entries(&pool, user, 3).await.unwrap();
    assert_eq!((e[0].source.as_str(), e[0].kind.as_str(), e[0].amount.micros()), ("allowance", "grant", 150_000_000));
    assert_eq!((e[1].source.as_str(), e[1].kind.as_str(), e[1].amount.micros()), ("allowance", "expiry", -30_000_000));
    assert!(matches!(e[0].amount, ledger::Amount::Usd(_)));
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn unpaid_renewal_ends_after_the_grace_period_and_a_paid_one_starts_a_cycle(pool: PgPool) {
    let clock = TestClock::new(Utc::now().trunc_subsecs(0));
    let poor = new_user(&pool, 99_000_000).await;
    let o = purchases::create_subscription(&pool, poor, "starter", PaymentMethod::Balance).await.unwrap();
    purchases::pay_with_balance_at(&pool, poor, o.id, clock.now()).await.unwrap();
    let payer = new_user(&pool, 0).await;
    let sub2 = subscribe(&pool, payer, "starter", clock.now()).await;

    clock.set(sub2.cycle_end + Duration::minutes(1));
    let r = billing::run_jobs(&pool, clock.now()).await.unwrap();
    assert_eq!((r.cycles.renewal_orders, r.cycles.renewed), (2, 0));
    assert_eq!(billing::run_jobs(&pool, clock.now()).await.unwrap().cycles, renewals::CycleReport::default(), "idempotent");
    // still active during the grace period, with a renewal order to pay
    let s = subscriptions::current(&pool, poor, clock.now()).await.unwrap().unwrap();
    let ro = orders::get(&pool, poor, s.renewal_order_id.unwrap()).await.unwrap().unwrap();
    assert_eq!((ro.kind.as_str(), ro.status.as_str(), ro.amount_micros.micros()), ("renewal", "created", 99_000_000));
    assert!(matches!(
        purchases::pay_with_balance_at(&pool, poor, ro.id, clock.now()).await,
        Err(BillingError::InsufficientBalance { .. })
    ));

    // the payer tops up through the sandbox one day into the grace period and pays the renewal
    // from the balance (a renewal order is a `balance` order: no provider can pay it directly)
    clock.advance(Duration::days(1));
    let s2 = subscriptions::current(&pool, payer, clock.now()).await.unwrap().unwrap();
    let ro2 = s2.renewal_order_id.unwrap();
    let sandbox = SandboxProvider::new(SECRET, "");
    assert!(matches!(
        payments::handle_notification(&pool, &sandbox, &http::HeaderMap::new(), sandbox.sign(ro2, cny(99_000_000)).as_bytes()).await,
        Err(PaymentError::Billing(BillingError::InvalidMethod))
    ));
    let top = purchases::create_topup(&pool, payer, cny(99_000_000), PaymentMethod::Sandbox).await.unwrap();
    let n = sandbox.verify_notification(&http::HeaderMap::new(), sandbox.sign(top.id, cny(99_000_000)).as_bytes()).unwrap();
    assert_eq!(purchases::mark_paid_at(&pool, top.id, PaymentMethod::Sandbox, &n.trade_no, n.amount_micros, clock.now()).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(purchases::pay_with_balance_at(&pool, payer, ro2, clock.now()).await.unwrap(), PaidOutcome::Applied);
    let s2 = subscriptions::current(&pool, payer, clock.now()).await.unwrap().unwrap();
    assert_eq!((s2.cycle_start, s2.renewal_order_id, s2.order_id), (clock.now(), None, ro2));

    // grace over: the unpaid one ends cleanly, the paid one goes on
    clock.set(sub2.cycle_end + Duration::days(subscriptions::RENEWAL_GRACE_DAYS));
    let r = billing::run_jobs(&pool, clock.now()).await.unwrap();
    assert_eq!(r.cycles.ended, 1);
    assert!(subscriptions::current(&pool, poor, clock.now()).await.unwrap().is_none());
    let hist = subscriptions::history(&pool, poor).await.unwrap();
    assert_eq!((hist[0].status.as_str(), hist[0].end_reason), ("ended", Some(ledger::EndReason::RenewalNotPaid)));
    assert_eq!(orders::get(&pool, poor, ro.id).await.unwrap().unwrap().status.as_str(), "expired");
    assert!(subscriptions::current(&pool, payer, clock.now()).await.unwrap().is_some());
    assert_eq!(billing::funds(&pool, poor, clock.now()).await.unwrap(), billing::Funds::default());
    verify(&pool, poor).await;
    verify(&pool, payer).await;
}

// ---------------------------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn pro_rated_refunds_at_day_boundaries_and_windows(pool: PgPool) {
    // bought 2026-11-25 10:00 in Shanghai (02:00 UTC); the cycle ends 2026-12-25: 30 days
    let t0 = at("2026-11-25T02:00:00Z");
    let user = new_user(&pool, 0).await;
    let sub = subscribe(&pool, user, "pro", t0).await;
    let q = refunds::quote(&pool, user, t0).await.unwrap().unwrap();
    assert_eq!((q.cycle_days, q.used_days, q.remaining_days, q.amount_micros.micros()), (30, 1, 29, 385_700_000));
    assert!(q.eligible && !q.negotiated);
    assert_eq!(q.explanation, "¥399.00 × 29 / 30 remaining days = ¥385.70");
    // last second of the Shanghai day: still day 1
    let q = refunds::quote(&pool, user, at("2026-11-25T15:59:59Z")).await.unwrap().unwrap();
    assert_eq!((q.used_days, q.remaining_days), (1, 29));
    // Shanghai midnight: day 2
    let q = refunds::quote(&pool, user, at("2026-11-25T16:00:00Z")).await.unwrap().unwrap();
    assert_eq!((q.used_days, q.remaining_days, q.amount_micros.micros()), (2, 28, 372_400_000));
    // Shanghai 2026-12-08 00:00 is day 14
    let q = refunds::quote(&pool, user, at("2026-12-07T16:00:00Z")).await.unwrap().unwrap();
    assert_eq!((q.used_days, q.remaining_days, q.amount_micros.micros()), (14, 16, 212_800_000));
    // a 31-day cycle, rounded half up to the fen: 399 × 16 / 31 = 205.935… → 205.94
    let dec = new_user(&pool, 0).await;
    subscribe(&pool, dec, "pro", at("2026-12-05T02:00:00Z")).await;
    let q = refunds::quote(&pool, dec, at("2026-12-19T03:00:00Z")).await.unwrap().unwrap();
    assert_eq!((q.cycle_days, q.used_days, q.remaining_days, q.amount_micros.micros()), (31, 15, 16, 205_940_000));
    assert_eq!(q.explanation, "¥399.00 × 16 / 31 remaining days = ¥205.94");
    // the 30-day window closes at the second
    let q = refunds::quote(&pool, user, t0 + Duration::days(30) - Duration::seconds(1)).await.unwrap().unwrap();
    assert!(!q.eligible && q.remaining_days == 0);
    let q = refunds::quote(&pool, user, t0 + Duration::days(30)).await.unwrap().unwrap();
    assert!(!q.eligible && q.reason.as_ref().unwrap().to_string().contains("30-day refund window"), "{q:?}");

    // request on day 2, twice
    let day2 = at("2026-11-26T01:00:00Z");
    let r = refunds::request(&pool, user, day2, "Not what I needed").await.unwrap();
    assert_eq!((r.amount_micros.micros(), r.status.as_str()), (372_400_000, "pending"));
    assert!(matches!(refunds::request(&pool, user, day2, "again").await, Err(BillingError::RefundPending)));
    assert_eq!(refunds::list_pending(&pool).await.unwrap().len(), 1);
    let boss = staff(&pool).await;
    refunds::approve(&pool, boss, r.id, None, "ok, sorry to see you go").await.unwrap();
    assert!(matches!(refunds::approve(&pool, boss, r.id, None, "twice").await, Err(BillingError::AlreadyDecided)));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(372_400_000));
    assert!(subscriptions::current(&pool, user, day2).await.unwrap().is_none());
    assert_eq!(subscriptions::history(&pool, user).await.unwrap()[0].status.as_str(), "refunded");
    assert_eq!(orders::get(&pool, user, sub.order_id).await.unwrap().unwrap().status.as_str(), "refunded");
    assert_eq!(refunds::list_for_user(&pool, user).await.unwrap()[0].status.as_str(), "approved");
    assert!(refunds::quote(&pool, user, day2).await.unwrap().is_none());
    assert!(audit::list(&pool, 5).await.unwrap().iter().any(|e| e.action == "refund.approve"));
    let last = &ledger::entries(&pool, user, 1).await.unwrap()[0];
    assert_eq!((last.kind.as_str(), last.amount.micros()), ("refund", 372_400_000));
    verify(&pool, user).await;

    // Starter: 7 days to the second
    let s = new_user(&pool, 0).await;
    subscribe(&pool, s, "starter", t0).await;
    let q = refunds::quote(&pool, s, t0 + Duration::days(7) - Duration::seconds(1)).await.unwrap().unwrap();
    assert!(q.eligible);
    assert_eq!((q.used_days, q.remaining_days, q.amount_micros.micros()), (8, 22, 72_600_000));
    assert!(matches!(
        refunds::request(&pool, s, t0 + Duration::days(7), "too late").await,
        Err(BillingError::RefundNotEligible(_))
    ));
    // rejected with a note: the subscription goes on
    let r = refunds::request(&pool, s, t0 + Duration::days(1), "changed my mind").await.unwrap();
    refunds::reject(&pool, boss, r.id, "Please contact support first").await.unwrap();
    assert_eq!(refunds::list_for_user(&pool, s).await.unwrap()[0].staff_note, "Please contact support first");
    assert!(subscriptions::current(&pool, s, t0 + Duration::days(1)).await.unwrap().is_some());

    // a request still pending at the cycle end: not renewed, the refund is decided afterwards
    let p = new_user(&pool, 1_000_000_000).await;
    let ps = subscribe(&pool, p, "pro", t0).await;
    let r = refunds::request(&pool, p, t0 + Duration::days(20), "moving to another provider").await.unwrap();
    assert_eq!(r.amount_micros, cny(399_000_000 * 9 / 30));
    let rep = renewals::run_cycle_boundaries(&pool, ps.cycle_end).await.unwrap();
    assert_eq!((rep.ended, rep.renewed), (1, 0));
    assert_eq!(ledger::balance(&pool, p).await.unwrap(), cny(1_000_000_000), "not charged for a renewal");
    refunds::approve(&pool, boss, r.id, None, "ok").await.unwrap();
    assert_eq!(ledger::balance(&pool, p).await.unwrap(), cny(1_000_000_000 + 119_700_000));
    verify(&pool, p).await;

    // Ultra: negotiated, staff set the amount
    let u = new_user(&pool, 0).await;
    subscribe(&pool, u, "ultra", t0).await;
    let q = refunds::quote(&pool, u, t0 + Duration::days(40)).await.unwrap();
    assert!(q.is_none() || q.as_ref().unwrap().negotiated);
    let q = refunds::quote(&pool, u, t0 + Duration::days(10)).await.unwrap().unwrap();
    assert!(q.eligible && q.negotiated && q.explanation.contains("agreed"));
    let r = refunds::request(&pool, u, t0 + Duration::days(10), "Project cancelled").await.unwrap();
    assert!(matches!(refunds::approve(&pool, boss, r.id, None, "").await, Err(BillingError::AmountRequired)));
    assert!(matches!(refunds::approve(&pool, boss, r.id, Some(cny(2_000_000_000)), "").await, Err(BillingError::InvalidAmount)));
    refunds::approve(&pool, boss, r.id, Some(cny(1_000_000_000)), "agreed by phone").await.unwrap();
    assert_eq!(ledger::balance(&pool, u).await.unwrap(), cny(1_000_000_000));
    verify(&pool, s).await;
    verify(&pool, u).await;
}

#[test]
fn refund_days_use_the_shanghai_calendar() {
    assert_eq!(refunds::local_date(at("2026-11-25T15:59:59Z")), NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    assert_eq!(refunds::local_date(at("2026-11-25T16:00:00Z")), NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
    assert_eq!(Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap().checked_add_months(chrono::Months::new(1)).unwrap().day0(), 27);
}

// ---------------------------------------------------------------------------------------------
// Invoices
// ---------------------------------------------------------------------------------------------

#[test]
fn credit_codes_follow_gb_32100() {
    for ok in ["9144030071526726XG", "91350100M000100Y43", "91110000600037341L"] {
        assert_eq!(invoices::validate_credit_code(ok), Ok(()), "{ok}");
    }
    assert!(invoices::validate_credit_code("9144030071526726XH").unwrap_err().contains("check character"));
    assert!(invoices::validate_credit_code("9144030071526726X").is_err());
    assert!(invoices::validate_credit_code("9144030071526726IG").unwrap_err().contains("other than I"));
    assert!(invoices::validate_credit_code("91A4030071526726XG").unwrap_err().contains("digits"));
    assert!(invoices::validate_credit_code("9144030071526726xg").is_err());
}

fn vat(tax_id: &str) -> InvoiceDetails {
    InvoiceDetails::VatSpecial {
        company: "Shenzhen Example Technology Co., Ltd.".into(),
        tax_id: tax_id.into(),
        address: "1 Keji Road, Nanshan District, Shenzhen".into(),
        phone: "0755-86013388".into(),
        bank: "China Merchants Bank Shenzhen Branch".into(),
        account: "7559 0000 0000 0001".into(),
        email: "finance@example.com".into(),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn an_order_is_invoiced_at_most_once(pool: PgPool) {
    let user = new_user(&pool, 0).await;
    let other = new_user(&pool, 0).await;
    let boss = staff(&pool).await;
    let sandbox = SandboxProvider::new(SECRET, "");
    let order = purchases::create_topup(&pool, user, cny(500_000_000), PaymentMethod::Sandbox).await.unwrap();
    payments::handle_notification(&pool, &sandbox, &http::HeaderMap::new(), sandbox.sign(order.id, cny(500_000_000)).as_bytes()).await.unwrap();
    let unpaid = purchases::create_topup(&pool, user, cny(5_000_000), PaymentMethod::Sandbox).await.unwrap();

    let personal = InvoiceDetails::Personal { name: "Li Lei".into(), email: "li@example.com".into() };
    assert!(matches!(invoices::request(&pool, user, unpaid.id, personal.clone()).await, Err(BillingError::OrderNotInvoiceable)));
    assert!(matches!(invoices::request(&pool, other, order.id, personal.clone()).await, Err(BillingError::OrderNotFound)));
    assert!(matches!(invoices::request(&pool, user, order.id, vat("9144030071526726XH")).await, Err(BillingError::Invalid(_))));
    assert!(matches!(
        invoices::request(&pool, user, order.id, InvoiceDetails::Personal { name: "".into(), email: "x@y.cn".into() }).await,
        Err(BillingError::MissingField("name"))
    ));

    let inv = invoices::request(&pool, user, order.id, personal.clone()).await.unwrap();
    assert_eq!((inv.status.as_str(), inv.kind.as_str(), inv.amount_micros.micros()), ("requested", "personal", 500_000_000));
    assert_eq!(inv.order_reference, order.reference);
    // requested twice
    assert!(matches!(invoices::request(&pool, user, order.id, personal.clone()).await, Err(BillingError::AlreadyInvoiced)));
    // rejected: may be asked again, now as a VAT invoice
    invoices::reject(&pool, boss, inv.id, "Please request a special VAT invoice for company purchases").await.unwrap();
    // the taxpayer ID is trimmed and upper-cased before it is checked
    let inv2 = invoices::request(&pool, user, order.id, vat(" 9144030071526726xg ")).await.unwrap();
    let InvoiceDetails::VatSpecial { tax_id, .. } = &inv2.details else { panic!() };
    assert_eq!(tax_id, "9144030071526726XG");
    assert_eq!(inv2.kind, "vat_special");
    assert!(matches!(invoices::request(&pool, user, order.id, personal.clone()).await, Err(BillingError::AlreadyInvoiced)));
    assert_eq!(invoices::queue(&pool).await.unwrap().iter().map(|i| i.id).collect::<Vec<_>>(), [inv2.id]);

    let pdf = b"%PDF-1.7\n...".to_vec();
    assert!(matches!(
        invoices::issue(&pool, boss, inv2.id, "24442000000012345678", NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(), Some(b"GIF89a".to_vec())).await,
        Err(BillingError::Invalid(_))
    ));
    invoices::issue(&pool, boss, inv2.id, "24442000000012345678", NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(), Some(pdf.clone())).await.unwrap();
    assert!(matches!(invoices::reject(&pool, boss, inv2.id, "late").await, Err(BillingError::AlreadyDecided)));
    let mine = invoices::list_for_user(&pool, user).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert_eq!((mine[0].status.as_str(), mine[0].has_pdf, mine[0].number.as_deref()), ("issued", true, Some("24442000000012345678")));
    assert_eq!(mine[1].reject_reason.as_deref(), Some("Please request a special VAT invoice for company purchases"));
    assert_eq!(invoices::pdf(&pool, Some(user), inv2.id).await.unwrap(), Some(pdf.clone()));
    assert_eq!(invoices::pdf(&pool, Some(other), inv2.id).await.unwrap(), None);
    assert_eq!(invoices::pdf(&pool, None, inv2.id).await.unwrap(), Some(pdf));
    let actions: Vec<String> = audit::list(&pool, 10).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["invoice.issue", "invoice.reject"]);
}

// ---------------------------------------------------------------------------------------------
// Trials
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn trial_credit_is_granted_and_expires_unused(pool: PgPool) {
    let user = new_user(&pool, 0).await;
    let other = new_user(&pool, 0).await;
    let boss = staff(&pool).await;
    assert!(matches!(trials::apply(&pool, user, "short").await, Err(BillingError::Invalid(_))));
    assert!(matches!(trials::apply(&pool, user, &"x".repeat(501)).await, Err(BillingError::Invalid(_))));
    let app = trials::apply(&pool, user, "Evaluating Claude for our support bot").await.unwrap();
    assert!(matches!(trials::apply(&pool, user, "Evaluating Claude again please").await, Err(BillingError::TrialAlreadyApplied)));
    let app2 = trials::apply(&pool, other, "Trying the gateway for a class project").await.unwrap();
    assert_eq!(trials::pending(&pool).await.unwrap().len(), 2);

    let expires = Utc::now() + Duration::days(7);
    trials::approve(&pool, boss, app.id, cny(20_000_000), expires).await.unwrap();
    assert!(matches!(trials::approve(&pool, boss, app.id, cny(20_000_000), expires).await, Err(BillingError::AlreadyDecided)));
    trials::decline(&pool, boss, app2.id, "Please use the sandbox first").await.unwrap();
    let mine = trials::mine(&pool, user).await.unwrap().unwrap();
    assert_eq!((mine.status.as_str(), mine.remaining_micros.micros(), mine.expires_at.is_some()), ("approved", 20_000_000, true));
    assert_eq!(trials::mine(&pool, other).await.unwrap().unwrap().status.as_str(), "declined");
    assert_eq!(billing::funds(&pool, user, Utc::now()).await.unwrap().trial_micros, cny(20_000_000));
    verify(&pool, user).await;

    // not yet
    assert_eq!(trials::expire(&pool, expires - Duration::seconds(1)).await.unwrap(), 0);
    assert_eq!(billing::funds(&pool, user, expires).await.unwrap().trial_micros, cny(0), "not counted once past expiry");
    let r = billing::run_jobs(&pool, expires).await.unwrap();
    assert_eq!(r.trials_expired, 1);
    assert_eq!(trials::expire(&pool, expires + Duration::days(1)).await.unwrap(), 0, "idempotent");
    let mine = trials::mine(&pool, user).await.unwrap().unwrap();
    assert_eq!((mine.status.as_str(), mine.remaining_micros.micros()), ("expired", 0));
    let e = ledger::entries(&pool, user, 1).await.unwrap();
    assert_eq!((e[0].source.as_str(), e[0].kind.as_str(), e[0].amount.micros(), e[0].balance_after.micros()), ("trial", "expiry", -20_000_000, 0));
    let actions: Vec<String> = audit::list(&pool, 10).await.unwrap().into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["trial.decline", "trial.approve"]);
    verify(&pool, user).await;
}

// ---------------------------------------------------------------------------------------------
// Drawing order through the gateway
// ---------------------------------------------------------------------------------------------

fn pinned() -> PinnedUsage {
    PinnedUsage { input_tokens: 10, output_tokens: 1000, ..Default::default() }
}
/// 10 × $3/M + 1000 × $15/M
const COST: i64 = 15_030;

#[sqlx::test(migrations = "../../migrations")]
async fn trial_then_allowance_then_balance_with_a_request_straddling_the_allowance(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    set_allowance(&pool, "pro", 20_000).await; // $0.02; Pro covers the stable channel
    let user = new_user(&pool, 400_000_000).await;
    let o = purchases::create_subscription(&pool, user, "pro", PaymentMethod::Balance).await.unwrap();
    purchases::pay_with_balance(&pool, user, o.id).await.unwrap();
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(1_000_000));
    let boss = staff(&pool).await;
    let app = trials::apply(&pool, user, "Trying the high-speed channel").await.unwrap();
    trials::approve(&pool, boss, app.id, cny(100_000), Utc::now() + Duration::days(7)).await.unwrap(); // ¥0.10
    let k = key(&pool, user, "stable").await; // ¥5/$: a request is ¥0.07515

    let funds = || async { billing::funds(&pool, user, Utc::now()).await.unwrap() };
    let post_one = || async {
        let r = post(&gw.base, &k, &body(SONNET, false)).await;
        assert_eq!(r.status(), 200);
        gw.sync().await;
    };
    // 1: all from the trial credit
    post_one().await;
    assert_eq!(funds().await, billing::Funds { trial_micros: cny(100_000 - 75_150), allowance_left_micro_usd: usd(20_000), balance_micros: cny(1_000_000) });
    // 2: the trial's last ¥0.02485, the rest ($0.01006) from the allowance
    post_one().await;
    assert_eq!(funds().await, billing::Funds { trial_micros: cny(0), allowance_left_micro_usd: usd(20_000 - 10_060), balance_micros: cny(1_000_000) });
    // 3: starts inside the allowance ($0.00994 left) and ends past it: the uncovered $0.00509 is
    //    charged pro rata, ¥0.07515 × 5090 / 15030 = ¥0.02545
    post_one().await;
    assert_eq!(funds().await, billing::Funds { trial_micros: cny(0), allowance_left_micro_usd: usd(0), balance_micros: cny(1_000_000 - 25_450) });
    // 4: all from the balance
    post_one().await;
    assert_eq!(funds().await.balance_micros, cny(1_000_000 - 25_450 - 75_150));

    let rows = usage_rows(&pool, user).await;
    assert!(rows.iter().all(|r| r.cost_micro_usd.micros() == COST && r.charge_micros.micros() == COST * 5));
    let e: Vec<(String, String, i64, i32)> = ledger::entries(&pool, user, 7)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.source.to_string(), e.kind.to_string(), e.amount.micros(), e.request_count))
        .collect();
    let s = |a: &str, b: &str, c: i64, d: i32| (a.to_string(), b.to_string(), c, d);
    assert_eq!(
        e,
        [
            s("wallet", "usage", -75_150, 1),
            s("wallet", "usage", -25_450, 1),
            s("allowance", "usage", -9_940, 1),
            s("allowance", "usage", -10_060, 1),
            s("trial", "usage", -24_850, 1),
            s("trial", "usage", -75_150, 1),
            s("trial", "grant", 100_000, 0),
        ]
    );
    verify(&pool, user).await;

    // both exhausted but ¥0.9 left: more requests are served from the balance until it runs out
    // and then refused with a billing error
    let mut refused = None;
    for _ in 0..20 {
        let r = post(&gw.base, &k, &body(SONNET, false)).await;
        if r.status() != 200 {
            refused = Some(error_of(r).await);
            break;
        }
    }
    let (status, kind, _msg, _) = refused.expect("refused once the balance is gone");
    assert_eq!((status, kind.as_str()), (402, "billing_error"));
    gw.sync().await;
    assert!(!ledger::balance(&pool, user).await.unwrap().is_negative());
    verify(&pool, user).await;
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn allowance_then_balance_under_concurrent_use_never_overspends(pool: PgPool) {
    let (_up, _) = fake(
        "a",
        &pool,
        FakeBehavior { usage: Some(pinned()), first_byte_delay: std::time::Duration::from_millis(50), ..Default::default() },
        0,
    )
    .await;
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    let mut starter = plans::get(&pool, "starter").await.unwrap().unwrap();
    starter.allowance_micro_usd = usd(100_000); // $0.10
    starter.concurrency_limit = None; // 40 at once: this test is about money
    plans::update(&pool, &starter).await.unwrap();
    let user = new_user(&pool, 99_300_000).await;
    let o = purchases::create_subscription(&pool, user, "starter", PaymentMethod::Balance).await.unwrap();
    purchases::pay_with_balance(&pool, user, o.id).await.unwrap();
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(300_000));
    // smart: ¥1/$, so a request is ¥0.01503 and the funds are $0.10 + ¥0.30 = 26 requests at most
    let k = key(&pool, user, "smart").await;
    let rs = post_spread(&[&a, &b], &k, 40, &body(SONNET, false)).await;
    assert!(rs.iter().all(|s| *s == 200 || *s == 402), "{rs:?}");
    let ok = rs.iter().filter(|s| **s == 200).count() as i64;
    a.sync().await;
    b.sync().await;
    assert!((7..=26).contains(&ok), "served {ok}: more than the allowance alone, never more than the funds");
    let f = billing::funds(&pool, user, Utc::now()).await.unwrap();
    let from_allowance = 100_000 - f.allowance_left_micro_usd.micros();
    let from_balance = 300_000 - f.balance_micros.micros();
    assert_eq!(from_allowance, (ok * COST).min(100_000), "the allowance is drawn first");
    assert_eq!(from_allowance + from_balance, ok * COST, "every request paid in full, exactly once");
    assert!(!f.balance_micros.is_negative());
    verify(&pool, user).await;
    a.stop().await;
    b.stop().await;
    let held: i64 = sqlx::query_scalar("SELECT COALESCE(sum(amount_micros),0)::BIGINT FROM balance_leases").fetch_one(&pool).await.unwrap();
    assert_eq!(held, 0);
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_settle_stage").fetch_one(&pool).await.unwrap();
    assert_eq!(staged, 0, "settlement consumed every staged draw");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_subscriber_without_balance_is_served_from_the_allowance_then_refused(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    set_allowance(&pool, "starter", 60_000).await; // $0.06: 3 requests on smart, then ¥0.01491 left
    let user = new_user(&pool, 0).await;
    subscribe(&pool, user, "starter", Utc::now()).await;
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0));
    let k = key(&pool, user, "smart").await;
    let mut served = 0;
    let mut last_error = None;
    for _ in 0..10 {
        let r = post(&gw.base, &k, &body(SONNET, false)).await;
        if r.status() == 200 {
            served += 1;
        } else {
            last_error = Some(error_of(r).await);
            break;
        }
    }
    gw.sync().await;
    assert!(served >= 1, "the allowance alone pays for requests");
    let (status, kind, _, _) = last_error.expect("refused when the allowance cannot cover a request");
    assert_eq!((status, kind.as_str()), (402, "billing_error"));
    let f = billing::funds(&pool, user, Utc::now()).await.unwrap();
    assert_eq!((f.balance_micros.micros(), f.allowance_left_micro_usd.micros()), (0, 60_000 - served * COST));
    verify(&pool, user).await;
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Plan limits: channels, requests per minute, concurrency
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn the_allowance_pays_only_on_the_plans_channels(pool: PgPool) {
    let (_up, _) = fake("a", &pool, FakeBehavior { usage: Some(pinned()), ..Default::default() }, 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let user = new_user(&pool, 1_000_000).await;
    subscribe(&pool, user, "starter", Utc::now()).await; // Value and Smart, $30
    let on = key(&pool, user, "smart").await;
    let off = key(&pool, user, "stable").await;
    assert_eq!(post(&gw.base, &on, &body(SONNET, false)).await.status(), 200);
    assert_eq!(post(&gw.base, &off, &body(SONNET, false)).await.status(), 200);
    gw.sync().await;
    let f = billing::funds(&pool, user, Utc::now()).await.unwrap();
    assert_eq!((f.allowance_left_micro_usd.micros(), f.balance_micros.micros()), (30_000_000 - COST, 1_000_000 - COST * 5));
    let e: Vec<(String, i64)> =
        ledger::entries(&pool, user, 2).await.unwrap().into_iter().map(|e| (e.source.to_string(), e.amount.micros())).collect();
    assert!(e.contains(&("wallet".into(), -COST * 5)) && e.contains(&("allowance".into(), -COST)), "{e:?}");

    // without a wallet, the allowance backs only requests on the plan's channels
    let broke = new_user(&pool, 0).await;
    subscribe(&pool, broke, "starter", Utc::now()).await;
    let off = key(&pool, broke, "stable").await;
    let (status, kind, msg, _) = error_of(post(&gw.base, &off, &body(SONNET, false)).await).await;
    assert_eq!((status, kind.as_str()), (402, "billing_error"));
    assert!(msg.contains("Starter plan does not cover the High-Speed Stable channel"), "{msg}");
    assert_eq!(post(&gw.base, &key(&pool, broke, "value").await, &body(SONNET, false)).await.status(), 200);
    gw.sync().await;
    verify(&pool, user).await;
    verify(&pool, broke).await;
    gw.stop().await;
}

/// Leases for requests off the plan's channels are backed by trial credit and wallet only, and
/// plan requests (which draw the trial first) may not take the trial credit they rely on.
#[sqlx::test(migrations = "../../migrations")]
async fn off_plan_leases_never_count_on_the_allowance(pool: PgPool) {
    set_allowance(&pool, "starter", 100_000).await; // $0.10 = ¥0.10 on smart
    let user = new_user(&pool, 0).await;
    subscribe(&pool, user, "starter", Utc::now()).await;
    key(&pool, user, "smart").await;
    key(&pool, user, "stable").await;
    let boss = staff(&pool).await;
    let app = trials::apply(&pool, user, "Evaluating").await.unwrap();
    trials::approve(&pool, boss, app.id, cny(100_000), Utc::now() + Duration::days(7)).await.unwrap();
    let instance = Uuid::new_v4();
    sqlx::query("INSERT INTO gateway_instances (id) VALUES ($1)").bind(instance).execute(&pool).await.unwrap();
    let lease = |need: i64, off_plan: bool| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT cr_lease_balance($1, $2, $3, $3, $4)")
                .bind(instance)
                .bind(user)
                .bind(need)
                .bind(off_plan)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(lease(100_001, true).await, 0, "off-plan: the trial credit only");
    assert_eq!(lease(60_000, true).await, 60_000);
    // trial ¥0.10 + allowance ¥0.10 - ¥0.06 held = ¥0.14, but plan requests draw the trial
    // first: beyond ¥0.04 they could leave the off-plan holds unpaid
    assert_eq!(lease(40_001, false).await, 0);
    assert_eq!(lease(40_000, false).await, 40_000);
    assert_eq!(lease(1, true).await, 0);
    let wallet_held: i64 = sqlx::query_scalar("SELECT cr_wallet_held($1)").bind(user).fetch_one(&pool).await.unwrap();
    assert_eq!(wallet_held, 0, "everything held is covered by trial and allowance");
    // a top-up widens both
    ledger::adjust(&pool, user, cny(10_000), LedgerKind::Credit, &memo("top-up"), None).await.unwrap();
    assert_eq!(lease(10_001, true).await, 0);
    assert_eq!(lease(10_000, true).await, 10_000);
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn plan_rate_and_concurrency_limits_span_keys_on_the_plans_channels(pool: PgPool) {
    let (up, _) = fake("a", &pool, FakeBehavior::default(), 0).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let mut starter = plans::get(&pool, "starter").await.unwrap().unwrap();
    starter.rpm_limit = Some(3);
    starter.concurrency_limit = None;
    plans::update(&pool, &starter).await.unwrap();

    // the key is cached before the subscription starts: the plan's limits must still apply
    let user = new_user(&pool, 10_000_000).await;
    let keys = [key(&pool, user, "value").await, key(&pool, user, "smart").await];
    let off = key(&pool, user, "stable").await;
    assert_eq!(post(&gw.base, &keys[0], &body(SONNET, false)).await.status(), 200);
    subscribe(&pool, user, "starter", Utc::now()).await;
    let t0 = std::time::Instant::now();
    let mut limited = None;
    for i in 0.. {
        let r = post(&gw.base, &keys[i % 2], &body(SONNET, false)).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(t0.elapsed() < std::time::Duration::from_secs(3) && i < 40, "the plan's rate limit never applied");
    }
    let (s, t, msg, h) = error_of(limited.unwrap()).await;
    assert_eq!((s, t.as_str()), (429, "rate_limit_error"));
    assert!(msg.contains("Starter plan") && msg.contains("3 requests per minute"), "{msg}");
    assert!(h.contains_key("retry-after"));
    assert_eq!(post(&gw.base, &off, &body(SONNET, false)).await.status(), 200, "pay-as-you-go channels are not the plan's");

    // limits are part of what was bought: this edit applies to the next subscriber only
    starter.rpm_limit = None;
    starter.concurrency_limit = Some(2);
    plans::update(&pool, &starter).await.unwrap();
    let other = new_user(&pool, 10_000_000).await;
    subscribe(&pool, other, "starter", Utc::now()).await;
    let keys = [key(&pool, other, "value").await, key(&pool, other, "smart").await];
    up.set(FakeBehavior { first_byte_delay: std::time::Duration::from_millis(400), ..Default::default() });
    let b = body(SONNET, false);
    let rs = futures::future::join_all((0..5).map(|i| post(&gw.base, &keys[i % 2], &b))).await;
    let codes: Vec<u16> = rs.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!((codes.iter().filter(|c| **c == 200).count(), codes.iter().filter(|c| **c == 429).count()), (2, 3), "{codes:?}");
    gw.sync().await;
    verify(&pool, user).await;
    verify(&pool, other).await;
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_set_up_custom_terms_that_renew_on_an_unlisted_plan(pool: PgPool) {
    let boss = staff(&pool).await;
    let mut acme = plans::get(&pool, "ultra").await.unwrap().unwrap();
    (acme.code, acme.name, acme.purchasable, acme.price_micros) = ("acme".into(), "ACME Enterprise".into(), false, cny(5_000_000_000));
    plans::update(&pool, &acme).await.unwrap();
    let user = new_user(&pool, 0).await;
    assert!(matches!(purchases::create_subscription(&pool, user, "acme", PaymentMethod::Bank).await, Err(BillingError::PlanNotPurchasable)));
    assert!(matches!(purchases::offer_subscription(&pool, boss, user, "enterprise").await, Err(BillingError::Invalid(_))), "no price");

    let o = purchases::offer_subscription(&pool, boss, user, "acme").await.unwrap();
    assert_eq!((o.kind.as_str(), o.method.as_str(), o.amount_micros.micros(), o.status.as_str()), ("subscription", "bank", 5_000_000_000, "created"));
    assert_eq!(o.plan_name.as_deref(), Some("ACME Enterprise"), "the plan as sold");
    assert!(audit::list(&pool, 10).await.unwrap().iter().any(|e| e.action == "order.offer" && e.staff_id == Some(boss)));
    assert_eq!(purchases::confirm_bank_transfer(&pool, boss, o.id).await.unwrap(), PaidOutcome::Applied);
    let s = subscriptions::current(&pool, user, Utc::now()).await.unwrap().unwrap();
    assert_eq!((s.plan_code.as_str(), s.by_contract, s.allowance_micro_usd.micros()), ("acme", true, 800_000_000));

    // a self-service subscription whose plan is withdrawn ends at renewal; the contract renews
    let other = new_user(&pool, 0).await;
    let s2 = subscribe(&pool, other, "starter", Utc::now()).await;
    assert!(!s2.by_contract);
    let mut starter = plans::get(&pool, "starter").await.unwrap().unwrap();
    starter.purchasable = false;
    plans::update(&pool, &starter).await.unwrap();
    let later = s.cycle_end.max(s2.cycle_end) + Duration::minutes(1);
    let r = billing::run_jobs(&pool, later).await.unwrap();
    assert_eq!((r.cycles.renewal_orders, r.cycles.ended), (1, 1));
    assert!(subscriptions::current(&pool, other, later).await.unwrap().is_none());
    let s = subscriptions::current(&pool, user, later).await.unwrap().unwrap();
    let ro = orders::get(&pool, user, s.renewal_order_id.unwrap()).await.unwrap().unwrap();
    assert_eq!((ro.kind.as_str(), ro.amount_micros.micros(), ro.status.as_str()), ("renewal", 5_000_000_000, "created"));
    verify(&pool, user).await;
    verify(&pool, other).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn enterprise_enquiries_are_recorded_and_followed_up(pool: PgPool) {
    use cloudrouter_core::billing::enquiries::{self, EnquiryForm};
    let boss = staff(&pool).await;
    let mut form = EnquiryForm {
        company: "Example Robotics Co., Ltd.".into(),
        contact_name: "Wang Fang".into(),
        email: "wang@example.com".into(),
        phone: "+86 21 5555 0000".into(),
        message: "Private deployment for 200 engineers, monthly contract and VAT invoices.".into(),
    };
    let e = enquiries::submit(&pool, None, &form).await.unwrap();
    assert_eq!(e.status.as_str(), "new");
    form.email = "not-an-email".into();
    assert!(matches!(enquiries::submit(&pool, None, &form).await, Err(BillingError::Invalid(_))));
    enquiries::set_status(&pool, boss, e.id, "closed", "Contract signed").await.unwrap();
    assert!(enquiries::list(&pool, false).await.unwrap().is_empty());
    assert_eq!(enquiries::list(&pool, true).await.unwrap()[0].staff_note, "Contract signed");
    assert_eq!(audit::list(&pool, 1).await.unwrap()[0].action, "enquiry.status");
}

/// The QR checkout asks WeChat Pay's Native API (here a fake on loopback) for the order's
/// `code_url`, with a signed request for the exact amount in fen.
#[sqlx::test(migrations = "../../migrations")]
async fn wechat_checkout_gets_a_code_url(pool: PgPool) {
    use axum::{extract::State, http::HeaderMap, routing::post, Json, Router};
    type Seen = Arc<std::sync::Mutex<Option<(String, String)>>>;
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/v3/pay/transactions/native",
            post(|State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                *seen.lock().unwrap() = Some((auth, body));
                Json(serde_json::json!({"code_url": "weixin://wxpay/bizpayurl?pr=TEST123"}))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_platform, _, platform_pk) = rsa_pair();
    let (_merchant, merchant_sk, _) = rsa_pair();
    let provider = WechatPayProvider::new("1900000001", "wx0000000000000001", *b"0123456789abcdefghijklmnopqrstuv", &platform_pk, &merchant_sk)
        .unwrap()
        .with_api_base(&base);
    let payments = cloudrouter_core::billing::payments::Payments::new().with_wechat(provider);
    let user = new_user(&pool, 0).await;
    let order = purchases::create_topup(&pool, user, cny(12_340_000), PaymentMethod::Wechat).await.unwrap();

    let code_url = payments.wechat().unwrap().native_code_url(&order).await.unwrap();
    assert_eq!(code_url, "weixin://wxpay/bizpayurl?pr=TEST123");
    let (auth, body) = seen.lock().unwrap().clone().unwrap();
    assert!(auth.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\""), "{auth}");
    assert!(body.contains("\"total\":1234"), "{body}");
    assert_eq!(payments.get(PaymentMethod::Wechat).unwrap().method(), PaymentMethod::Wechat, "listed among the providers too");
}
