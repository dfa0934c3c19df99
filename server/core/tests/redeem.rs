//! Redeem codes (issue #17), attacker's view: a code redeemed twice, two redemptions racing, voided
//! and expired codes, guessing beyond the throttle, plan and trial codes against the plan and
//! trial rules, what is stored of a code; after each, the books must balance. Real Postgres, a
//! fresh database per test.
mod common;

use cloudrouter_core::billing::redeem::{self, CodeKind, CodeState, NewBatch, Redeemed, RedeemError};
use cloudrouter_core::billing::{self, audit, subscriptions, trials};
use common::*;
use sqlx::PgPool;
use std::net::IpAddr;
use uuid::Uuid;

async fn staff(pool: &PgPool) -> Uuid {
    cloudrouter_core::accounts::ensure_staff(pool, &format!("staff-{}@example.com", Uuid::new_v4()), "correct horse battery staple 9")
        .await
        .unwrap()
        .id
}

fn balance_batch(yuan: i64, count: u32) -> NewBatch {
    NewBatch {
        kind: CodeKind::Balance,
        amount_micros: Some(MicroCny::units(yuan)),
        trial_days: None,
        plan_code: None,
        plan_months: None,
        count,
        expires_at: None,
        note: "spring campaign".into(),
    }
}

fn addr(n: u8) -> IpAddr {
    IpAddr::from([198, 51, 100, n])
}

async fn books_balance(pool: &PgPool, user: Uuid) {
    assert!(billing::verify(pool, user).await.unwrap(), "balances equal their ledger");
}

async fn generate(pool: &PgPool, b: NewBatch) -> (Uuid, Vec<String>) {
    let s = staff(pool).await;
    let g = redeem::create_batch(pool, s, &b).await.unwrap();
    (g.batch.id, g.codes)
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_code_credits_once_and_is_refused_the_second_time(pool: PgPool) {
    let (batch, codes) = generate(&pool, balance_batch(50, 2)).await;
    let user = customer(&pool, "1").await;
    // typed as a person would: lower case, spaces instead of dashes
    let typed = codes[0].to_lowercase().replace('-', " ");
    assert_eq!(redeem::redeem(&pool, user, addr(1), &typed).await.unwrap(), Redeemed::Balance { amount: MicroCny::units(50) });
    assert_eq!(billing::ledger::balance(&pool, user).await.unwrap(), MicroCny::units(51));
    books_balance(&pool, user).await;

    let again = redeem::redeem(&pool, user, addr(1), &codes[0]).await;
    assert!(matches!(again, Err(RedeemError::Used)), "{again:?}");
    let other = customer(&pool, "0").await;
    assert!(matches!(redeem::redeem(&pool, other, addr(2), &codes[0]).await, Err(RedeemError::Used)));
    assert_eq!(billing::ledger::balance(&pool, user).await.unwrap(), MicroCny::units(51));
    assert_eq!(billing::ledger::balance(&pool, other).await.unwrap(), MicroCny::ZERO);
    books_balance(&pool, user).await;

    let rows = redeem::codes(&pool, batch).await.unwrap();
    assert_eq!(rows[0].state, CodeState::Redeemed);
    assert!(rows[0].redeemed_by_email.starts_with('c'), "{:?}", rows[0]);
    assert!(rows[0].redeemed_at.is_some());
    assert_eq!(rows[1].state, CodeState::Unused);
    let uses: Vec<_> = audit::list(&pool, 100).await.unwrap().into_iter().filter(|a| a.action == "redeem.use").collect();
    assert_eq!(uses.len(), 1, "the redemption is audited once");
    assert_eq!(uses[0].staff_id, Some(user), "the audit row names the redeemer");
}

#[sqlx::test(migrations = "../../migrations")]
async fn two_redemptions_racing_for_one_code_credit_once(pool: PgPool) {
    let (a, b) = (customer(&pool, "0").await, customer(&pool, "0").await);
    // two customers, and one customer in two tabs
    for (x, y) in [(a, b), (a, a)] {
        let (_, codes) = generate(&pool, balance_batch(20, 1)).await;
        let (r1, r2) = tokio::join!(redeem::redeem(&pool, x, addr(1), &codes[0]), redeem::redeem(&pool, y, addr(2), &codes[0]));
        assert_eq!([&r1, &r2].iter().filter(|r| r.is_ok()).count(), 1, "{r1:?} {r2:?}");
        assert!([&r1, &r2].iter().any(|r| matches!(r, Err(RedeemError::Used))), "the loser is told the code is used: {r1:?} {r2:?}");
    }
    let total = billing::ledger::balance(&pool, a).await.unwrap().micros() + billing::ledger::balance(&pool, b).await.unwrap().micros();
    assert_eq!(total, MicroCny::units(40).micros(), "two codes, two credits");
    books_balance(&pool, a).await;
    books_balance(&pool, b).await;

    // eight customers at once for one code, a few times (without the code's row lock this fails
    // in most rounds)
    let many: Vec<_> = futures::future::join_all((0..8).map(|_| customer(&pool, "0"))).await;
    for round in 0..4 {
        let (_, codes) = generate(&pool, balance_batch(20, 1)).await;
        let results = futures::future::join_all(many.iter().enumerate().map(|(i, u)| redeem::redeem(&pool, *u, addr(10 + i as u8), &codes[0]))).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: {results:?}");
    }
    let mut total = 0;
    for u in &many {
        total += billing::ledger::balance(&pool, *u).await.unwrap().micros();
        books_balance(&pool, *u).await;
    }
    assert_eq!(total, MicroCny::units(80).micros(), "four codes, four credits");
}

#[sqlx::test(migrations = "../../migrations")]
async fn voided_and_expired_codes_are_refused(pool: PgPool) {
    let s = staff(&pool).await;
    let g = redeem::create_batch(&pool, s, &balance_batch(10, 3)).await.unwrap();
    let user = customer(&pool, "0").await;
    let rows = redeem::codes(&pool, g.batch.id).await.unwrap();
    redeem::void_code(&pool, s, rows[0].id).await.unwrap();
    assert!(matches!(redeem::redeem(&pool, user, addr(1), &g.codes[0]).await, Err(RedeemError::Voided)));
    // a used code cannot be voided, and the batch voids only what is unused
    redeem::redeem(&pool, user, addr(1), &g.codes[1]).await.unwrap();
    assert!(redeem::void_code(&pool, s, rows[1].id).await.is_err());
    assert_eq!(redeem::void_batch(&pool, s, g.batch.id).await.unwrap(), 1);
    assert!(matches!(redeem::redeem(&pool, user, addr(1), &g.codes[2]).await, Err(RedeemError::Voided)));
    let states: Vec<_> = redeem::codes(&pool, g.batch.id).await.unwrap().into_iter().map(|r| r.state).collect();
    assert_eq!(states, [CodeState::Voided, CodeState::Redeemed, CodeState::Voided]);
    let actions: Vec<_> = audit::list(&pool, 100).await.unwrap().into_iter().map(|a| a.action).collect();
    for a in ["redeem.generate", "redeem.void", "redeem.void_batch", "redeem.use"] {
        assert!(actions.iter().any(|x| x == a), "{a} audited: {actions:?}");
    }

    let mut b = balance_batch(10, 1);
    b.expires_at = Some(chrono::Utc::now() + chrono::Duration::days(1));
    let g = redeem::create_batch(&pool, s, &b).await.unwrap();
    sqlx::query("UPDATE redeem_batches SET expires_at = now() - interval '1 second' WHERE id = $1").bind(g.batch.id).execute(&pool).await.unwrap();
    assert!(matches!(redeem::redeem(&pool, user, addr(1), &g.codes[0]).await, Err(RedeemError::Expired)));
    assert_eq!(redeem::codes(&pool, g.batch.id).await.unwrap()[0].state, CodeState::Expired);
    assert_eq!(billing::ledger::balance(&pool, user).await.unwrap(), MicroCny::units(10));
    books_balance(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn guessing_stops_at_the_throttle_even_with_a_right_code(pool: PgPool) {
    let (_, codes) = generate(&pool, balance_batch(10, 2)).await;
    let user = customer(&pool, "0").await;
    // successes are not failures: a few real redemptions do not eat into the allowance
    redeem::redeem(&pool, user, addr(1), &codes[1]).await.unwrap();
    for i in 0..10 {
        let r = redeem::redeem(&pool, user, addr(1), &format!("AAAA-BBBB-CCCC-DDDD-EE{:02}", i + 20)).await;
        assert!(matches!(r, Err(RedeemError::NotValid)), "guess {i}: {r:?}");
    }
    // the eleventh attempt is not even checked, whatever it is
    assert!(matches!(redeem::redeem(&pool, user, addr(1), &codes[0]).await, Err(RedeemError::Throttled(w)) if w > 0));
    // another address does not help the account
    assert!(matches!(redeem::redeem(&pool, user, addr(9), &codes[0]).await, Err(RedeemError::Throttled(_))));
    // nor do other accounts help one address: 30 failures an hour from it
    let mut refused = false;
    for n in 0..40 {
        let other = customer(&pool, "0").await;
        match redeem::redeem(&pool, other, addr(2), "2222-3333-4444-5555-6666").await {
            Err(RedeemError::NotValid) => assert!(n < 30, "attempt {n} from one address was checked"),
            Err(RedeemError::Throttled(_)) => {
                refused = true;
                break;
            }
            r => panic!("{r:?}"),
        }
    }
    assert!(refused, "the address is throttled");
    assert_eq!(billing::ledger::balance(&pool, user).await.unwrap(), MicroCny::units(10));
    books_balance(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_plan_code_starts_a_plan_and_is_refused_while_one_is_active(pool: PgPool) {
    let mut b = balance_batch(0, 2);
    b.kind = CodeKind::Plan;
    b.plan_code = Some("pro".into());
    b.plan_months = Some(3);
    let (batch, codes) = generate(&pool, b).await;
    let user = customer(&pool, "5").await;
    let Redeemed::Plan { months, until, .. } = redeem::redeem(&pool, user, addr(1), &codes[0]).await.unwrap() else { panic!() };
    assert_eq!(months, 3);
    let sub = subscriptions::current(&pool, user, chrono::Utc::now()).await.unwrap().expect("a plan");
    let pro = billing::plans::get(&pool, "pro").await.unwrap().unwrap();
    assert_eq!(sub.plan_code, "pro");
    assert_eq!(sub.cycle_end, until);
    assert!(sub.cycle_end - sub.cycle_start >= chrono::Duration::days(89), "three months: {sub:?}");
    assert_eq!(sub.allowance_micro_usd, pro.allowance_micro_usd.checked_mul(3).unwrap(), "three months' allowance");
    assert_eq!(billing::ledger::balance(&pool, user).await.unwrap(), MicroCny::units(5), "the plan cost nothing");
    books_balance(&pool, user).await;

    // One active plan at a time (as for a purchase): the second code is refused and stays usable.
    let r = redeem::redeem(&pool, user, addr(1), &codes[1]).await;
    assert!(matches!(r, Err(RedeemError::HasPlan)), "{r:?}");
    assert_eq!(redeem::codes(&pool, batch).await.unwrap()[1].state, CodeState::Unused);
    books_balance(&pool, user).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_trial_code_gives_the_one_trial_of_an_account(pool: PgPool) {
    let mut b = balance_batch(30, 3);
    b.kind = CodeKind::Trial;
    b.trial_days = Some(14);
    let (_, codes) = generate(&pool, b).await;
    let fresh = customer(&pool, "0").await;
    assert!(matches!(redeem::redeem(&pool, fresh, addr(1), &codes[0]).await.unwrap(), Redeemed::Trial { .. }));
    let funds = billing::funds(&pool, fresh, chrono::Utc::now()).await.unwrap();
    assert_eq!(funds.trial_micros, MicroCny::units(30));
    books_balance(&pool, fresh).await;
    // the trial is one per account: a second trial code is refused
    assert!(matches!(redeem::redeem(&pool, fresh, addr(1), &codes[1]).await, Err(RedeemError::HadTrial)));

    // a pending application is approved by the code
    let applied = customer(&pool, "0").await;
    trials::apply(&pool, applied, "I would like to try Claude for my project.").await.unwrap();
    redeem::redeem(&pool, applied, addr(1), &codes[1]).await.unwrap();
    assert_eq!(trials::mine(&pool, applied).await.unwrap().unwrap().status, "approved");
    assert_eq!(billing::funds(&pool, applied, chrono::Utc::now()).await.unwrap().trial_micros, MicroCny::units(30));
    books_balance(&pool, applied).await;
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_leaked_table_holds_no_usable_code(pool: PgPool) {
    let (batch, codes) = generate(&pool, balance_batch(10, 5)).await;
    let stored: Vec<(Vec<u8>, String)> = sqlx::query_as("SELECT code_hash, prefix FROM redeem_codes WHERE batch_id = $1").bind(batch).fetch_all(&pool).await.unwrap();
    let dump = format!("{stored:?}");
    for (code, (_, prefix)) in codes.iter().zip(&stored) {
        let bare = code.replace('-', "");
        assert_eq!(bare.len(), redeem::CODE_LEN);
        assert!(!dump.contains(&bare) && !dump.contains(&bare[4..]), "only the hash and the prefix are kept");
        assert_eq!(prefix.len(), 4);
        assert!(bare.starts_with(prefix.as_str()));
    }
    // the CSV of a later export shows prefixes only
    let b = redeem::batch(&pool, batch).await.unwrap().unwrap();
    let csv = redeem::csv(&b, &redeem::codes(&pool, batch).await.unwrap(), None);
    assert!(codes.iter().all(|c| !csv.contains(c.as_str())), "{csv}");
    assert_eq!(csv.lines().count(), 6);
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_cannot_make_unbounded_or_inconsistent_batches(pool: PgPool) {
    let s = staff(&pool).await;
    for (yuan, count) in [(0, 1), (10_001, 1), (10, 0), (10, 1001)] {
        assert!(redeem::create_batch(&pool, s, &balance_batch(yuan, count)).await.is_err(), "¥{yuan} × {count}");
    }
    let mut b = balance_batch(10, 1);
    b.kind = CodeKind::Plan;
    b.plan_code = Some("payg".into());
    b.plan_months = Some(1);
    assert!(redeem::create_batch(&pool, s, &b).await.is_err(), "a plan without allowance");
    b.plan_code = Some("pro".into());
    b.plan_months = Some(13);
    assert!(redeem::create_batch(&pool, s, &b).await.is_err(), "13 months");
    let mut b = balance_batch(10, 1);
    b.expires_at = Some(chrono::Utc::now() - chrono::Duration::minutes(1));
    assert!(redeem::create_batch(&pool, s, &b).await.is_err(), "already expired");
    assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM redeem_batches").fetch_one(&pool).await.unwrap(), 0);
    // a plan code's ¥0 order method cannot be chosen by a customer
    let user = customer(&pool, "100").await;
    let r = billing::purchases::create_subscription(&pool, user, "pro", PaymentMethod::RedeemCode).await;
    assert!(matches!(r, Err(billing::BillingError::InvalidMethod)), "{r:?}");
    let r = billing::purchases::create_topup(&pool, user, MicroCny::units(10), PaymentMethod::RedeemCode).await;
    assert!(matches!(r, Err(billing::BillingError::InvalidMethod)), "{r:?}");
}
