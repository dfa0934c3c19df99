//! Coding-plan windows against a real gateway and Postgres (migration 0026): a plan's 5-hour and
//! weekly caps on what its allowance pays. How a customer could get more than the plan gives, or
//! pay what they did not agree to, and what stops it:
//!  * go on past the cap on the allowance → refused with 429 naming the window and its reset;
//!  * spread requests over two instances and two keys at once → the caps hold exactly;
//!  * not opted in, yet charged to the wallet past the cap → the wallet is never touched;
//!  * opted in → past the cap the wallet pays, the allowance pays exactly the cap.
mod common;

use cloudrouter_core::billing::{orders::PaymentMethod, plans, purchases, windows};
use cloudrouter_core::demo::{FakeBehavior, FakeUpstream, PinnedUsage};
use cloudrouter_core::keys::NewKey;
use cloudrouter_core::money::MicroUsd;
use common::*;
use sqlx::PgPool;
use uuid::Uuid;

const SONNET: &str = "claude-sonnet-4-6";
/// list price of the pinned usage on Sonnet: 1,000 input tokens at $3/M and 100 output at $15/M
const COST: i64 = 4_500;
/// a cap of $0.06: a few requests' worth (each holds about $0.028 of worst case while it runs)
const CAP: i64 = 60_000;

struct Plan {
    user: Uuid,
    keys: Vec<String>,
    _up: FakeUpstream,
}

/// A customer with ¥100 on a Pro plan whose windows are `cap_5h` / `cap_week`, and two keys.
async fn subscriber(pool: &PgPool, cap_5h: Option<i64>, cap_week: Option<i64>) -> Plan {
    let usage = PinnedUsage { input_tokens: 1000, output_tokens: 100, ..Default::default() };
    let (up, _) = fake("a", pool, FakeBehavior { usage: Some(usage), ..Default::default() }, 0).await;
    let mut pro = plans::get(pool, "pro").await.unwrap().unwrap();
    pro.window_5h_micro_usd = cap_5h.map(MicroUsd::from_micros);
    pro.weekly_micro_usd = cap_week.map(MicroUsd::from_micros);
    plans::update(pool, &pro).await.unwrap();
    let user = customer(pool, "100").await;
    let o = purchases::create_subscription(pool, user, "pro", PaymentMethod::Sandbox).await.unwrap();
    purchases::mark_paid_at(pool, o.id, PaymentMethod::Sandbox, &format!("SBX-{}", o.id), o.amount_micros, chrono::Utc::now()).await.unwrap();
    // Smart: ¥1 per $1 of list price, one of the plan's channels
    let channel = "smart".to_string();
    assert!(pro.channels.is_empty() || pro.channels.contains(&channel));
    let mut keys = vec![];
    for name in ["laptop", "ci"] {
        keys.push(key_with(pool, user, NewKey { name: name.into(), channel: channel.clone(), allow_fallback: false, ..Default::default() }).await);
    }
    Plan { user, keys, _up: up }
}

async fn call(gw: &Gw, key: &str) -> reqwest::Response {
    post(&gw.base, key, &body(SONNET, false)).await
}

/// (allowance used, 5-hour window used, weekly used, wallet), micro-units
async fn books(pool: &PgPool, user: Uuid) -> (i64, i64, i64, i64) {
    sqlx::query_as(
        "SELECT s.allowance_used_micro_usd, s.window_5h_used_micro_usd, s.week_used_micro_usd, b.balance_micros \
           FROM subscriptions s JOIN balances b ON b.user_id = s.user_id WHERE s.user_id = $1 AND s.status = 'active'",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The micro-dollars of "$0.0402" after `marker` in `text`.
fn dollars_after(text: &str, marker: &str) -> i64 {
    let rest = &text[text.find(marker).unwrap_or_else(|| panic!("{marker} in {text}")) + marker.len()..];
    let amount: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    MicroUsd::parse(amount.trim_end_matches('.')).unwrap().micros()
}

#[sqlx::test(migrations = "../../migrations")]
async fn past_the_5_hour_cap_requests_are_refused_until_it_resets_and_the_wallet_is_never_touched(pool: PgPool) {
    let p = subscriber(&pool, Some(CAP), None).await;
    let gw = Gw::start(&pool, fast_config()).await;
    let mut ok = 0;
    let refusal = loop {
        let r = call(&gw, &p.keys[0]).await;
        if r.status() != 200 {
            break r;
        }
        ok += 1;
        assert!(ok < 20, "the cap never refused");
    };
    let retry_after: i64 = refusal.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    let (status, kind, message, _) = error_of(refusal).await;
    assert_eq!((status, kind.as_str()), (429, "rate_limit_error"), "{message}");
    gw.sync().await;
    let (allowance, window, _, wallet) = books(&pool, p.user).await;
    assert_eq!((allowance, window), (ok * COST, ok * COST), "the allowance paid every request admitted, and the window counts it");
    // admitted exactly while the request's worst case (its hold) fitted in the room left
    let need = dollars_after(&message, "may need up to $");
    assert!(window - COST + need <= CAP && window + need > CAP, "{ok} admitted, each holding {need}: {message}");
    assert_eq!(wallet, 100_000_000, "not opted in: the wallet pays nothing");
    let start: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT window_5h_start FROM subscriptions WHERE user_id = $1").bind(p.user).fetch_one(&pool).await.unwrap();
    let resets = start + chrono::Duration::hours(5);
    assert!(message.contains("Pro plan's 5-hour usage limit ($0.06 of list price) is reached"), "{message}");
    assert_eq!(dollars_after(&message, "is reached: $"), window, "{message}");
    assert!(message.contains(&format!("It resets at {}", resets.format("%Y-%m-%d %H:%M UTC"))), "{message}");
    assert!((retry_after - (resets - chrono::Utc::now()).num_seconds()).abs() <= 2, "retry-after {retry_after}");

    // the console reads the same window
    let st = windows::status(&pool, p.user).await.unwrap().unwrap();
    assert_eq!(st.windows.len(), 1);
    assert_eq!((st.windows[0].used.micros(), st.windows[0].resets_at), (window, Some(resets)));

    // five hours later the window has closed: its whole cap is free again
    sqlx::query("UPDATE subscriptions SET window_5h_start = window_5h_start - interval '5 hours' WHERE user_id = $1")
        .bind(p.user)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(call(&gw, &p.keys[1]).await.status(), 200);
    gw.sync().await;
    let (allowance2, window2, _, wallet2) = books(&pool, p.user).await;
    assert_eq!((allowance2, window2, wallet2), (allowance + COST, COST, 100_000_000), "a new window opened with this request");
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_weekly_cap_holds_exactly_across_two_instances_and_two_keys(pool: PgPool) {
    let p = subscriber(&pool, None, Some(CAP)).await;
    let a = Gw::start(&pool, fast_config()).await;
    let b = Gw::start(&pool, fast_config()).await;
    // the plan allows 20 at once; each holds about $0.04 of worst case, so the room admits two
    let calls = (0..16).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        call(gw, &p.keys[i / 2 % 2])
    });
    let answers = futures::future::join_all(calls).await;
    let mut ok = 0;
    for r in answers {
        match r.status().as_u16() {
            200 => ok += 1,
            _ => {
                let (status, kind, message, _) = error_of(r).await;
                assert_eq!((status, kind.as_str()), (429, "rate_limit_error"), "{message}");
                assert!(message.contains("weekly usage limit"), "{message}");
            }
        }
    }
    a.sync().await;
    b.sync().await;
    let (allowance, _, week, wallet) = books(&pool, p.user).await;
    assert!(ok >= 1 && ok < 16, "{ok} admitted");
    assert_eq!((allowance, week), (ok * COST, ok * COST));
    assert!(week <= CAP, "the weekly cap holds across instances: {week}");
    assert_eq!(wallet, 100_000_000, "not opted in: the wallet pays nothing");
    a.stop().await;
    b.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn opted_in_past_the_cap_the_wallet_pays_and_the_allowance_pays_exactly_the_cap(pool: PgPool) {
    let p = subscriber(&pool, Some(CAP), None).await;
    windows::set_overflow_payg(&pool, p.user, true).await.unwrap();
    let gw = Gw::start(&pool, fast_config()).await;
    let n = 15; // $0.0675 of list price: $0.0075 past the cap
    for _ in 0..n {
        assert_eq!(call(&gw, &p.keys[0]).await.status(), 200);
    }
    gw.sync().await;
    let (allowance, window, _, wallet) = books(&pool, p.user).await;
    assert_eq!((allowance, window), (CAP, CAP), "the allowance pays exactly the cap");
    // Smart charges ¥1 per $1 of list price: the wallet pays the ¥0.0075 past the cap
    assert_eq!(wallet, 100_000_000 - (n * COST - CAP));
    let ledger: i64 = sqlx::query_scalar("SELECT COALESCE(sum(amount_micros), 0)::bigint FROM ledger_entries WHERE user_id = $1 AND source = 'wallet' AND kind = 'usage'")
        .bind(p.user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ledger, -(n * COST - CAP), "the wallet's ledger says the same");

    // opting out again: refused at once, on a key the gateway has cached
    windows::set_overflow_payg(&pool, p.user, false).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(call(&gw, &p.keys[0]).await.status(), 429);
    gw.stop().await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_plan_without_windows_is_unchanged(pool: PgPool) {
    let p = subscriber(&pool, None, None).await;
    let gw = Gw::start(&pool, fast_config()).await;
    for _ in 0..15 {
        assert_eq!(call(&gw, &p.keys[0]).await.status(), 200);
    }
    gw.sync().await;
    let (allowance, window, week, wallet) = books(&pool, p.user).await;
    assert_eq!((allowance, window, week, wallet), (15 * COST, 0, 0, 100_000_000));
    assert_eq!(windows::status(&pool, p.user).await.unwrap(), None);
    gw.stop().await;
}
