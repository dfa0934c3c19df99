//! Money and trust (issue #11), each test named for the attack it stops: refunds after using the
//! allowance, staff mistakes that move money twice or too much, and invoices of refunded orders.
//! Real Postgres, a fresh database per test; usage is written as the usage writer writes it (an
//! insert into `usage_records`, whose statement trigger draws the plan allowance).
mod common;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use cloudrouter_core::billing::invoices::{self, InvoiceDetails};
use cloudrouter_core::billing::purchases::{self, PaidOutcome};
use cloudrouter_core::billing::subscriptions::{self, Subscription};
use cloudrouter_core::billing::{self, audit, refunds, trials, BillingError};
use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::billing::ledger;
use cloudrouter_core::{accounts, admin_api};
use common::*;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Bought 2026-11-25 10:00 in Shanghai: a 30-day cycle to 2026-12-25.
const T0: &str = "2026-11-25T02:00:00Z";

async fn staff_member(pool: &PgPool) -> (Uuid, String) {
    let email = format!("staff-{}@example.com", Uuid::new_v4());
    let id = accounts::ensure_staff(pool, &email, "correct horse battery staple 9").await.unwrap().id;
    (id, email)
}

async fn subscribe(pool: &PgPool, user: Uuid, plan: &str, now: DateTime<Utc>) -> Subscription {
    let o = purchases::create_subscription(pool, user, plan, PaymentMethod::Sandbox).await.unwrap();
    let r = purchases::mark_paid_at(pool, o.id, PaymentMethod::Sandbox, &format!("SBX-{}", o.id), o.amount_micros, now).await.unwrap();
    assert_eq!(r, PaidOutcome::Applied);
    subscriptions::current(pool, user, now).await.unwrap().expect("subscribed")
}

/// One request of `micro_usd` at list price on `channel`, charged at the channel's rate and
/// written as the usage writer writes it (the statement trigger draws the allowance first).
async fn spend(pool: &PgPool, user: Uuid, channel: &str, micro_usd: i64) {
    sqlx::query(
        "INSERT INTO usage_records (id, created_at, user_id, channel, endpoint, requested_model, stream, status, outcome, cost_micro_usd, charge_micros) \
         SELECT $1, now(), $2, $3, 'messages', 'claude-sonnet-4-6', false, 200, 'ok', $4, $4 * rate_micros_per_usd / 1000000 \
         FROM channels WHERE code = $3",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(user)
    .bind(channel)
    .bind(micro_usd)
    .execute(pool)
    .await
    .unwrap();
}

async fn verify(pool: &PgPool, user: Uuid) {
    assert!(billing::verify(pool, user).await.unwrap(), "money invariants hold for {user}");
}

// ---------------------------------------------------------------------------------------------
// 1. Refunds after use
// ---------------------------------------------------------------------------------------------

#[sqlx::test(migrations = "../../migrations")]
async fn refund_after_spending_the_allowance_deducts_the_excess(pool: PgPool) {
    let t0 = at(T0);
    // the whole $150 on day one, on the Value channel (¥0.6 per $): the elapsed day's share is
    // $5, so $145 was used beyond it, worth ¥87.00 pay-as-you-go
    let user = customer(&pool, "0").await;
    subscribe(&pool, user, "pro", t0).await;
    spend(&pool, user, "value", 150_000_000).await;
    let q = refunds::quote(&pool, user, t0).await.unwrap().unwrap();
    assert_eq!(q.amount_micros, cny(385_700_000 - 87_000_000), "{q:?}");
    assert!(q.eligible && !q.negotiated);
    assert_eq!((q.days_amount_micros.micros(), q.deduction_micros.micros()), (385_700_000, 87_000_000));
    assert_eq!((q.allowance_used_micro_usd().micros(), q.elapsed_share_micro_usd.micros(), q.excess_micro_usd.micros()), (150_000_000, 5_000_000, 145_000_000));
    assert_eq!(
        q.explanation,
        "¥399.00 × 29 / 30 remaining days = ¥385.70, less ¥87.00 for $145.00 of allowance used beyond the elapsed days' share ($5.00 of $150.00) = ¥298.70"
    );

    // on two channels: $100 on Value (¥60) and $50 on High-Speed Stable (¥250); the excess is
    // priced at the average of what the allowance paid for, ¥310 / $150, rounded once to the fen:
    // 4 350 000 000 × 310 000 000 / (150 000 000 × 30) = 299 666 666.7 µ¥ → ¥299.67
    let mixed = customer(&pool, "0").await;
    subscribe(&pool, mixed, "pro", t0).await;
    spend(&pool, mixed, "value", 100_000_000).await;
    spend(&pool, mixed, "stable", 50_000_000).await;
    let q = refunds::quote(&pool, mixed, t0).await.unwrap().unwrap();
    assert_eq!(q.amount_micros, cny(385_700_000 - 299_670_000), "{q:?}");
    let uses: Vec<(&str, i64, i64)> = q.allowance_use.iter().map(|c| (c.channel.as_str(), c.used_micro_usd.micros(), c.payg_micros.micros())).collect();
    assert_eq!(uses, [("stable", 50_000_000, 250_000_000), ("value", 100_000_000, 60_000_000)]);
    // the request keeps the figures the customer saw
    let r = refunds::request(&pool, mixed, t0, "").await.unwrap();
    let stored = refunds::request_quote(&pool, r.id).await.unwrap().unwrap();
    assert_eq!((stored.days_amount_micros.micros(), stored.deduction_micros.micros(), r.amount_micros.micros()), (385_700_000, 299_670_000, 86_030_000));
    verify(&pool, mixed).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn refund_within_the_elapsed_share_of_the_allowance_keeps_the_days_based_amount(pool: PgPool) {
    let t0 = at(T0);
    // day 14 of 30: $70 of the $150 is the elapsed days' share
    let day14 = at("2026-12-07T16:00:00Z");
    let user = customer(&pool, "0").await;
    subscribe(&pool, user, "pro", t0).await;
    spend(&pool, user, "stable", 70_000_000).await;
    let q = refunds::quote(&pool, user, day14).await.unwrap().unwrap();
    assert_eq!((q.used_days, q.amount_micros.micros()), (14, 212_800_000));
    assert_eq!(q.explanation, "¥399.00 × 16 / 30 remaining days = ¥212.80");
}

#[sqlx::test(migrations = "../../migrations")]
async fn refund_never_goes_below_zero_when_the_excess_is_worth_more_than_the_unused_days(pool: PgPool) {
    let t0 = at(T0);
    // $150 on day one on High-Speed Stable: $145 × ¥5 = ¥725 > ¥385.70
    let user = customer(&pool, "0").await;
    subscribe(&pool, user, "pro", t0).await;
    spend(&pool, user, "stable", 150_000_000).await;
    let q = refunds::quote(&pool, user, t0).await.unwrap().unwrap();
    assert_eq!(q.amount_micros, cny(0), "{q:?}");
    assert!(!q.eligible, "nothing left to refund: {q:?}");
    assert!(matches!(refunds::request(&pool, user, t0, "").await, Err(BillingError::RefundNotEligible(_))));
}

#[sqlx::test(migrations = "../../migrations")]
async fn refund_requested_first_then_allowance_spent_while_waiting_is_deducted_at_approval(pool: PgPool) {
    let t0 = at(T0);
    let user = customer(&pool, "0").await;
    subscribe(&pool, user, "pro", t0).await;
    let r = refunds::request(&pool, user, t0, "").await.unwrap();
    assert_eq!(r.amount_micros, cny(385_700_000));
    // the customer spends the whole allowance before staff get to the request
    spend(&pool, user, "value", 150_000_000).await;
    // staff see what approval would pay now, with the allowance used
    let (pending, live) = refunds::list_pending(&pool).await.unwrap().pop().unwrap();
    assert_eq!(pending.id, r.id);
    assert_eq!((live.days_amount_micros.micros(), live.deduction_micros.micros(), live.amount_micros.micros()), (385_700_000, 87_000_000, 298_700_000));
    assert_eq!(live.allowance_used_micro_usd(), usd(150_000_000));
    let (boss, _) = staff_member(&pool).await;
    refunds::approve(&pool, boss, r.id, None, "ok").await.unwrap();
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(385_700_000 - 87_000_000));
    let fin = refunds::request_quote(&pool, r.id).await.unwrap().unwrap();
    assert_eq!(fin.deduction_micros, cny(87_000_000), "the final figures are kept on the request");
    let log = audit::list(&pool, 5).await.unwrap();
    let a = log.iter().find(|e| e.action == "refund.approve").unwrap();
    assert_eq!((a.details["deduction_micros"].as_i64(), a.details["allowance_used_micro_usd"].as_i64()), (Some(87_000_000), Some(150_000_000)));
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn second_no_questions_refund_of_the_same_plan_goes_to_staff_as_negotiated(pool: PgPool) {
    let t0 = at(T0);
    let user = customer(&pool, "100").await;
    let (boss, _) = staff_member(&pool).await;
    subscribe(&pool, user, "pro", t0).await;
    let r = refunds::request(&pool, user, t0, "").await.unwrap();
    refunds::approve(&pool, boss, r.id, None, "ok").await.unwrap();

    // buys Pro again with the refund (paid now) and asks again
    let t1 = Utc::now();
    let o = purchases::create_subscription(&pool, user, "pro", PaymentMethod::Balance).await.unwrap();
    purchases::pay_with_balance(&pool, user, o.id).await.unwrap();
    let q = refunds::quote(&pool, user, t1).await.unwrap().unwrap();
    assert!(q.eligible && q.negotiated && q.repeat, "{q:?}");
    assert!(q.window_ends_at.is_none());
    let r = refunds::request(&pool, user, t1, "again").await.unwrap();
    assert!(matches!(refunds::approve(&pool, boss, r.id, None, "").await, Err(BillingError::AmountRequired)));
    refunds::approve(&pool, boss, r.id, Some(cny(100_000_000)), "agreed").await.unwrap();

    // another plan still has its own no-questions refund
    let o = purchases::create_subscription(&pool, user, "starter", PaymentMethod::Balance).await.unwrap();
    purchases::pay_with_balance(&pool, user, o.id).await.unwrap();
    let q = refunds::quote(&pool, user, Utc::now()).await.unwrap().unwrap();
    assert!(q.eligible && !q.negotiated, "{q:?}");
    verify(&pool, user).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Staff mistakes that move money (the staff API over HTTP, and the core the console calls)
// ---------------------------------------------------------------------------------------------

struct StaffApi {
    base: String,
    token: String,
    staff_id: Uuid,
    http: reqwest::Client,
}

impl StaffApi {
    async fn start(pool: &PgPool) -> StaffApi {
        let (staff_id, email) = staff_member(pool).await;
        let token = admin_api::issue_token(pool, &email, None).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = admin_api::router(pool.clone(), Crypto::from_secret(SECRET), None, Default::default());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StaffApi { base, token, staff_id, http: client() }
    }

    async fn credit(&self, user: Uuid, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/users/{user}/credit", self.base)).bearer_auth(&self.token).json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

async fn wallet_rows(pool: &PgPool, user: Uuid) -> Vec<ledger::LedgerEntry> {
    ledger::entries(pool, user, 100).await.unwrap().into_iter().filter(|e| e.source == ledger::FundingSource::Wallet).collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_credit_retried_with_the_same_idempotency_key_applies_once(pool: PgPool) {
    let api = StaffApi::start(&pool).await;
    let user = customer(&pool, "0").await;
    let body = json!({"amount": "50", "note": "compensation for the outage of 2026-11-20"});
    let (s1, first) = api.credit(user, Some("retry-7f3a9c2e"), body.clone()).await;
    let (s2, again) = api.credit(user, Some("retry-7f3a9c2e"), body.clone()).await;
    assert_eq!((s1, s2), (200, 200), "{first} {again}");
    assert_eq!(first["entry"]["id"], again["entry"]["id"], "the original result, not a second credit");
    assert_eq!(wallet_rows(&pool, user).await.len(), 1);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(50_000_000));
    // the key in the body works as well as the header
    let (s, _) = api.credit(user, None, json!({"amount": "5", "note": "x", "idempotency_key": "body-key-0001"})).await;
    let (s_again, _) = api.credit(user, None, json!({"amount": "5", "note": "x", "idempotency_key": "body-key-0001"})).await;
    assert_eq!((s, s_again), (200, 200));
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(55_000_000));
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_credit_reusing_a_key_for_another_amount_or_user_is_refused(pool: PgPool) {
    let api = StaffApi::start(&pool).await;
    let user = customer(&pool, "0").await;
    let other = customer(&pool, "0").await;
    let (s, _) = api.credit(user, Some("key-0000-0001"), json!({"amount": "50", "note": "goodwill"})).await;
    assert_eq!(s, 200);
    let (s, v) = api.credit(user, Some("key-0000-0001"), json!({"amount": "500", "note": "goodwill"})).await;
    assert_eq!(s, 409, "{v}");
    let (s, v) = api.credit(other, Some("key-0000-0001"), json!({"amount": "50", "note": "goodwill"})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(50_000_000));
    assert_eq!(ledger::balance(&pool, other).await.unwrap(), cny(0));
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_credit_without_an_idempotency_key_is_refused(pool: PgPool) {
    let api = StaffApi::start(&pool).await;
    let user = customer(&pool, "0").await;
    let (s, v) = api.credit(user, None, json!({"amount": "50", "note": "goodwill"})).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0));
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_credit_of_an_absurd_amount_is_refused(pool: PgPool) {
    let api = StaffApi::start(&pool).await;
    let user = customer(&pool, "0").await;
    for amount in ["99999999999", "100000.01", "-99999999999"] {
        let (s, v) = api.credit(user, Some(&format!("absurd-{amount}")), json!({"amount": amount, "note": "typo", "confirm": true})).await;
        assert_eq!(s, 422, "{amount}: {v}");
    }
    assert!(wallet_rows(&pool, user).await.is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_credit_above_the_threshold_needs_an_explicit_confirmation(pool: PgPool) {
    let api = StaffApi::start(&pool).await;
    let user = customer(&pool, "0").await;
    let (s, v) = api.credit(user, Some("big-0000-0001"), json!({"amount": "5000", "note": "enterprise prepayment"})).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(v["error"]["type"], "confirmation_required", "{v}");
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0));
    // the same key, now confirmed: applied once
    let (s, v) = api.credit(user, Some("big-0000-0001"), json!({"amount": "5000", "note": "enterprise prepayment", "confirm": true})).await;
    assert_eq!(s, 200, "{v}");
    // ¥1,000 itself is not above the threshold
    let (s, _) = api.credit(user, Some("big-0000-0002"), json!({"amount": "1000", "note": "prepayment"})).await;
    assert_eq!(s, 200);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(6_000_000_000));
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_internal_note_never_reaches_the_customers_ledger(pool: PgPool) {
    let api = StaffApi::start(&pool).await;
    let user = customer(&pool, "0").await;
    // a credit without a staff note is refused
    let (s, v) = api.credit(user, Some("note-0000-0001"), json!({"amount": "20"})).await;
    assert_eq!(s, 422, "{v}");
    let internal = "customer threatened a chargeback; approved by Wang";
    let (s, v) = api
        .credit(user, Some("note-0000-0002"), json!({"amount": "20", "note": internal, "description": "Goodwill credit"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let rows = wallet_rows(&pool, user).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].note, "Goodwill credit");
    let log = audit::list(&pool, 10).await.unwrap();
    let entry = log.iter().find(|e| e.action == "balance.adjust").expect("audited");
    assert_eq!(entry.details["note"], internal);
    assert_eq!(entry.staff_id, Some(api.staff_id));
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_credit_submitted_twice_at_once_from_the_console_applies_once(pool: PgPool) {
    use cloudrouter_core::billing::adjustments::{self, Adjustment, StaffLimits};
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    let adj = Adjustment {
        user_id: user,
        amount_micros: cny(30_000_000),
        description: String::new(),
        staff_note: "double click".into(),
        idempotency_key: "form-3c1e0a9b-5d7f".into(),
        confirmed: false,
    };
    let limits = StaffLimits::default();
    let (a, b) = tokio::join!(adjustments::apply(&pool, &limits, boss, &adj), adjustments::apply(&pool, &limits, boss, &adj));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.entry, b.entry);
    assert!(a.replayed != b.replayed);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(30_000_000));
    assert_eq!((a.entry.memo.clone(), a.entry.note.as_str()), (Some(ledger::Memo::Staff { text: None }), ledger::STAFF_CREDIT), "a standard wording for the customer");
    assert_eq!(audit::list(&pool, 10).await.unwrap().iter().filter(|e| e.action == "balance.adjust").count(), 1);
    // another staff member cannot reuse the key
    let (other, _) = staff_member(&pool).await;
    assert!(matches!(adjustments::apply(&pool, &limits, other, &adj).await, Err(BillingError::IdempotencyKeyReused)));
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn refund_approval_submitted_twice_at_once_pays_once(pool: PgPool) {
    let t0 = at(T0);
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    subscribe(&pool, user, "pro", t0).await;
    let r = refunds::request(&pool, user, t0, "").await.unwrap();
    let (a, b) = tokio::join!(refunds::approve(&pool, boss, r.id, None, "ok"), refunds::approve(&pool, boss, r.id, None, "ok"));
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    assert_eq!(wallet_rows(&pool, user).await.iter().filter(|e| e.kind == ledger::LedgerKind::Refund).count(), 1);
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn bank_transfer_confirmed_twice_at_once_credits_once(pool: PgPool) {
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    let order = purchases::create_topup(&pool, user, cny(2_000_000_000), PaymentMethod::Bank).await.unwrap();
    let (a, b) = tokio::join!(purchases::confirm_bank_transfer(&pool, boss, order.id), purchases::confirm_bank_transfer(&pool, boss, order.id));
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| *o == PaidOutcome::AlreadyPaid);
    assert_eq!(outcomes, [PaidOutcome::Applied, PaidOutcome::AlreadyPaid]);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(2_000_000_000));
    assert_eq!(audit::list(&pool, 10).await.unwrap().iter().filter(|e| e.action == "order.confirm_bank_transfer").count(), 1);
    verify(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn trial_approval_submitted_twice_at_once_grants_once(pool: PgPool) {
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    let app = trials::apply(&pool, user, "Building a coding assistant").await.unwrap();
    let exp = Utc::now() + Duration::days(14);
    let (a, b) = tokio::join!(trials::approve(&pool, boss, app.id, cny(20_000_000), exp), trials::approve(&pool, boss, app.id, cny(20_000_000), exp));
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    assert_eq!(billing::funds(&pool, user, Utc::now()).await.unwrap().trial_micros, cny(20_000_000));
    verify(&pool, user).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Invoices of refunded orders
// ---------------------------------------------------------------------------------------------

fn personal() -> InvoiceDetails {
    InvoiceDetails::Personal { name: "Li Lei".into(), email: "li@example.com".into() }
}

#[sqlx::test(migrations = "../../migrations")]
async fn refunded_order_cannot_be_invoiced_and_its_pending_request_is_closed(pool: PgPool) {
    let t0 = at(T0);
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    let sub = subscribe(&pool, user, "pro", t0).await;
    let inv = invoices::request(&pool, user, sub.order_id, personal()).await.unwrap();
    let r = refunds::request(&pool, user, t0, "").await.unwrap();
    refunds::approve(&pool, boss, r.id, None, "ok").await.unwrap();

    let inv = invoices::get(&pool, inv.id).await.unwrap().unwrap();
    assert_eq!(inv.status, "rejected", "closed with the refund");
    assert!(inv.reject_reason.as_deref().unwrap_or("").contains("refunded"), "{inv:?}");
    assert!(invoices::queue(&pool).await.unwrap().is_empty());
    assert!(invoices::issue(&pool, boss, inv.id, "24442000000012345678", NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(), None).await.is_err());
    assert!(matches!(invoices::request(&pool, user, sub.order_id, personal()).await, Err(BillingError::OrderNotInvoiceable)));
}

#[sqlx::test(migrations = "../../migrations")]
async fn issuing_a_request_whose_order_was_refunded_meanwhile_is_refused(pool: PgPool) {
    let t0 = at(T0);
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    let sub = subscribe(&pool, user, "pro", t0).await;
    let inv = invoices::request(&pool, user, sub.order_id, personal()).await.unwrap();
    // an order refunded by a path that does not know about invoices (defence in depth)
    sqlx::query("UPDATE orders SET status = 'refunded' WHERE id = $1").bind(sub.order_id).execute(&pool).await.unwrap();
    let r = invoices::issue(&pool, boss, inv.id, "24442000000012345678", NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(), None).await;
    assert!(matches!(r, Err(BillingError::OrderNotInvoiceable)), "{r:?}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn refunding_an_invoiced_order_marks_the_invoice_for_reversal(pool: PgPool) {
    let t0 = at(T0);
    let user = customer(&pool, "0").await;
    let (boss, _) = staff_member(&pool).await;
    let sub = subscribe(&pool, user, "pro", t0).await;
    let inv = invoices::request(&pool, user, sub.order_id, personal()).await.unwrap();
    invoices::issue(&pool, boss, inv.id, "24442000000012345678", NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(), None).await.unwrap();
    let r = refunds::request(&pool, user, t0, "").await.unwrap();
    refunds::approve(&pool, boss, r.id, None, "ok").await.unwrap();
    let inv = invoices::get(&pool, inv.id).await.unwrap().unwrap();
    assert_eq!(inv.status, "reversal_due", "{inv:?}");
    assert_eq!(inv.reversal_amount_micros, Some(cny(385_700_000)), "the refunded amount is reversed");
    assert_eq!(invoices::reversals_due(&pool).await.unwrap().iter().map(|i| i.id).collect::<Vec<_>>(), [inv.id]);
    // staff record the red-letter invoice, once
    let on = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    assert!(matches!(invoices::record_reversal(&pool, boss, inv.id, " ", on).await, Err(BillingError::Invalid(_))));
    invoices::record_reversal(&pool, boss, inv.id, "24442000000087654321", on).await.unwrap();
    assert!(matches!(invoices::record_reversal(&pool, boss, inv.id, "24442000000087654321", on).await, Err(BillingError::NoReversalDue)));
    let inv = invoices::get(&pool, inv.id).await.unwrap().unwrap();
    assert_eq!((inv.status.as_str(), inv.reversal_number.as_deref(), inv.reversal_issued_on), ("reversed", Some("24442000000087654321"), Some(on)));
    assert!(invoices::reversals_due(&pool).await.unwrap().is_empty());
    let log = audit::list(&pool, 10).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "invoice.reverse").count(), 1);
    let approve = log.iter().find(|e| e.action == "refund.approve").unwrap();
    assert_eq!(approve.details["invoices_due_reversal"][0], inv.id.to_string());
}
