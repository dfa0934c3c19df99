//! Money and trust (issue #11), attacker's view: free balance from the sandbox, a payment through
//! one provider applied to an order created for another, and staff confirming what is not a
//! payable bank transfer. Real Postgres, a fresh database per test.
mod common;

use cloudrouter_core::billing::orders;
use cloudrouter_core::billing::purchases::{self, PaidOutcome};
use cloudrouter_core::billing::payments::{self, PaymentError, Payments, SandboxProvider};
use cloudrouter_core::billing::{self, audit, BillingError};
use cloudrouter_core::billing::ledger;
use common::*;
use sqlx::PgPool;
use uuid::Uuid;

async fn staff(pool: &PgPool) -> Uuid {
    cloudrouter_core::accounts::ensure_staff(pool, &format!("staff-{}@example.com", Uuid::new_v4()), "correct horse battery staple 9")
        .await
        .unwrap()
        .id
}

async fn status(pool: &PgPool, order: Uuid) -> String {
    orders::get_any(pool, order).await.unwrap().unwrap().status.to_string()
}

#[test]
fn sandbox_is_off_by_default() {
    // The test environment does not set CLOUDROUTER_SANDBOX_PAYMENTS.
    assert!(std::env::var_os("CLOUDROUTER_SANDBOX_PAYMENTS").is_none());
    let p = Payments::from_env(SECRET, "http://127.0.0.1:3000").unwrap();
    assert!(p.sandbox().is_none(), "no sandbox unless switched on");
    assert!(!p.methods().contains(&PaymentMethod::Sandbox));
}

#[sqlx::test(migrations = "../../migrations")]
async fn notification_for_another_method_is_refused(pool: PgPool) {
    let user = customer(&pool, "0").await;
    let sandbox = SandboxProvider::new(SECRET, "");
    let h = http::HeaderMap::new();
    let by_alipay = purchases::create_topup(&pool, user, cny(100_000_000_000), PaymentMethod::Alipay).await.unwrap();
    let by_bank = purchases::create_topup(&pool, user, cny(100_000_000_000), PaymentMethod::Bank).await.unwrap();
    let by_sandbox = purchases::create_topup(&pool, user, cny(5_000_000), PaymentMethod::Sandbox).await.unwrap();

    // A correctly signed sandbox notification naming an Alipay or bank order pays nothing.
    for o in [&by_alipay, &by_bank] {
        let r = payments::handle_notification(&pool, &sandbox, &h, sandbox.sign(o.id, o.amount_micros).as_bytes()).await;
        assert!(matches!(r, Err(PaymentError::Billing(BillingError::InvalidMethod))), "{r:?}");
        assert_eq!(status(&pool, o.id).await, "created");
    }
    // Nor does a verified Alipay or WeChat Pay payment naming an order of another method.
    for (order, method) in [(&by_sandbox, PaymentMethod::Alipay), (&by_alipay, PaymentMethod::Wechat), (&by_bank, PaymentMethod::Alipay)] {
        let r = purchases::mark_paid(&pool, order.id, method, "TRADE-1", order.amount_micros).await;
        assert!(matches!(r, Err(BillingError::InvalidMethod)), "{method} paid a {} order: {r:?}", order.method);
    }
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0));

    // The provider the order was created for is accepted.
    let r = payments::handle_notification(&pool, &sandbox, &h, sandbox.sign(by_sandbox.id, cny(5_000_000)).as_bytes()).await.unwrap();
    assert_eq!(r, PaidOutcome::Applied);
    assert_eq!(purchases::mark_paid(&pool, by_alipay.id, PaymentMethod::Alipay, "ALI-1", by_alipay.amount_micros).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(100_005_000_000));
    assert!(billing::verify(&pool, user).await.unwrap());
}

#[sqlx::test(migrations = "../../migrations")]
async fn staff_cannot_confirm_an_order_that_is_not_a_payable_bank_transfer(pool: PgPool) {
    let user = customer(&pool, "0").await;
    let boss = staff(&pool).await;

    let cancelled = purchases::create_topup(&pool, user, cny(50_000_000), PaymentMethod::Bank).await.unwrap();
    orders::cancel(&pool, user, cancelled.id).await.unwrap();
    let expired = purchases::create_topup(&pool, user, cny(60_000_000), PaymentMethod::Bank).await.unwrap();
    orders::expire_stale(&pool, expired.expires_at).await.unwrap();
    assert_eq!(status(&pool, expired.id).await, "expired");
    let cancelled_online = purchases::create_topup(&pool, user, cny(70_000_000), PaymentMethod::Alipay).await.unwrap();
    orders::cancel(&pool, user, cancelled_online.id).await.unwrap();
    let open_online = purchases::create_topup(&pool, user, cny(80_000_000), PaymentMethod::Wechat).await.unwrap();

    for o in [&cancelled, &expired] {
        let r = purchases::confirm_bank_transfer(&pool, boss, o.id).await;
        assert!(matches!(r, Err(BillingError::OrderNotOpen(_))), "{r:?}");
    }
    for o in [&cancelled_online, &open_online] {
        let r = purchases::confirm_bank_transfer(&pool, boss, o.id).await;
        assert!(matches!(r, Err(BillingError::InvalidMethod)), "{r:?}");
    }
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(0), "no money from confirmations that were refused");
    for o in [&cancelled, &expired, &cancelled_online, &open_online] {
        assert_ne!(status(&pool, o.id).await, "paid");
    }
    assert!(audit::list(&pool, 10).await.unwrap().is_empty(), "nothing confirmed, nothing audited");

    // A payable bank transfer is confirmed once; confirming it again changes nothing.
    let open = purchases::create_topup(&pool, user, cny(90_000_000), PaymentMethod::Bank).await.unwrap();
    assert_eq!(purchases::confirm_bank_transfer(&pool, boss, open.id).await.unwrap(), PaidOutcome::Applied);
    assert_eq!(purchases::confirm_bank_transfer(&pool, boss, open.id).await.unwrap(), PaidOutcome::AlreadyPaid);
    assert_eq!(ledger::balance(&pool, user).await.unwrap(), cny(90_000_000));
    assert_eq!(audit::list(&pool, 10).await.unwrap().len(), 1);
}

#[test]
fn sandbox_with_a_public_console_or_real_providers_is_refused() {
    let on = payments::SandboxSwitch { on: true, allow_public: false };
    let allowed = payments::SandboxSwitch { on: true, allow_public: true };
    // On a local console with no real provider, the demo may have it.
    assert!(Payments::new().with_sandbox(on, SECRET, "http://127.0.0.1:3000").unwrap().sandbox().is_some());
    // A public console refuses it unless staff allow it explicitly.
    let r = Payments::new().with_sandbox(on, SECRET, "https://console.example.com");
    assert!(matches!(&r, Err(PaymentError::Config(m)) if m.contains("CLOUDROUTER_SANDBOX_PAYMENTS_ALLOW_PUBLIC")), "{:?}", r.err());
    assert!(Payments::new().with_sandbox(allowed, SECRET, "https://console.example.com").unwrap().sandbox().is_some());
    // So do real payment providers, even on a local console.
    let (_, sk, pk) = rsa_pair();
    let alipay = payments::AlipayProvider::new("2021000000000000", &sk, &pk, "https://openapi.alipay.com/gateway.do").unwrap();
    let r = Payments::new().with(alipay).with_sandbox(on, SECRET, "http://127.0.0.1:3000");
    assert!(matches!(&r, Err(PaymentError::Config(m)) if m.contains("alipay")), "{:?}", r.err());
    // Off is off, whatever else is configured.
    assert!(Payments::new().with_sandbox(payments::SandboxSwitch::default(), SECRET, "http://127.0.0.1:3000").unwrap().sandbox().is_none());
}

