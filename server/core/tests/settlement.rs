//! One usage flush settles many customers at once (`cr_write_usage` → `cr_settle`), each exactly
//! as if alone: the charges of their stored records, split over trial credit and wallet, the part
//! above the hold on its own ledger row, the leases of this instance consumed, balance = Σ ledger.
//! A real writer and Postgres; the records of five customers interleaved in one batch.
mod common;

use chrono::Utc;
use cloudrouter_core::billing::{ledger, trials};
use cloudrouter_core::usage::{UsageRecord, UsageWriter, WriterConfig};
use common::*;
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

fn record(n: usize, user: Uuid, charge: i64, held: i64, off_plan: bool) -> UsageRecord {
    // nothing charged: an upstream error
    let status = if charge > 0 { 200 } else { 529 };
    records::rec(format!("req_settle_{n}"), Utc::now(), user).status(status).charge(charge, held).off_plan(off_plan).build()
}

/// The user's ledger rows after `after` (id order): (source, amount, balance after, note, requests).
async fn ledger_rows(pool: &PgPool, user: Uuid, after: i64) -> Vec<(String, i64, i64, String, i32)> {
    sqlx::query_as(
        "SELECT source, amount_micros, balance_after_micros, note, request_count FROM ledger_entries \
          WHERE user_id = $1 AND id > $2 ORDER BY id",
    )
    .bind(user)
    .bind(after)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn lease(pool: &PgPool, instance: Uuid, user: Uuid, off_plan: bool) -> i64 {
    sqlx::query_scalar("SELECT amount_micros FROM balance_leases WHERE instance_id = $1 AND user_id = $2 AND off_plan = $3")
        .bind(instance)
        .bind(user)
        .bind(off_plan)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../../migrations")]
async fn one_flush_settles_each_customer_exactly_as_if_alone(pool: PgPool) {
    let instance = Uuid::new_v4();
    sqlx::query("INSERT INTO gateway_instances (id) VALUES ($1)").bind(instance).execute(&pool).await.unwrap();
    // within the hold; above the hold; trial credit then wallet; off-plan and plan leases; nothing charged
    let within = customer(&pool, "10").await;
    let above = customer(&pool, "10").await;
    let trial = customer(&pool, "10").await;
    let leased = customer(&pool, "10").await;
    let nothing = customer(&pool, "10").await;
    let staff = customer(&pool, "0").await;
    let app = trials::apply(&pool, trial, "Evaluating Claude for our support bot").await.unwrap();
    trials::approve(&pool, staff, app.id, cny(20_000), Utc::now() + chrono::Duration::days(7)).await.unwrap();
    for (off_plan, amount) in [(false, 50_000), (true, 30_000)] {
        sqlx::query("INSERT INTO balance_leases (instance_id, user_id, off_plan, amount_micros) VALUES ($1, $2, $3, $4)")
            .bind(instance)
            .bind(leased)
            .bind(off_plan)
            .bind(amount)
            .execute(&pool)
            .await
            .unwrap();
    }
    let last_id: i64 = sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM ledger_entries").fetch_one(&pool).await.unwrap();

    let batch = [
        record(1, within, 1_000, 1_000, false),
        record(2, above, 1_000, 1_000, false),
        record(3, trial, 50_000, 50_000, false),
        record(4, leased, 7_000, 7_000, false),
        record(5, nothing, 0, 3_000, false),
        record(6, within, 2_500, 3_000, false),
        record(7, above, 3_000, 1_000, false),
        record(8, leased, 4_000, 4_000, true),
        record(9, leased, 60_000, 60_000, false),
    ];
    let spool = std::env::temp_dir().join(format!("cloudrouter-settlement-{}", Uuid::new_v4()));
    let cfg = WriterConfig { spool_dir: spool.clone(), flush_interval: Duration::from_secs(3600), ..WriterConfig::default() };
    let writer = UsageWriter::start(pool.clone(), instance, cfg).await.unwrap();
    for r in batch {
        writer.send(r).await;
    }
    writer.sync().await;
    writer.shutdown().await;
    let _ = std::fs::remove_dir_all(&spool);

    let start = 10_000_000;
    let usage = |amount: i64, after: i64, requests: i32| ("wallet".to_string(), -amount, after, "API usage".to_string(), requests);
    assert_eq!(ledger_rows(&pool, within, last_id).await, [usage(3_500, start - 3_500, 2)], "within the hold: one row");
    assert_eq!(
        ledger_rows(&pool, above, last_id).await,
        [usage(2_000, start - 2_000, 2), ("wallet".into(), -2_000, start - 4_000, "API usage above the hold".into(), 0)],
        "the part above the hold on its own row; the requests counted on the first"
    );
    assert_eq!(
        ledger_rows(&pool, trial, last_id).await,
        [("trial".into(), -20_000, 0, "API usage from trial credit".into(), 1), usage(30_000, start - 30_000, 1)],
        "trial credit first, the wallet the rest"
    );
    assert_eq!(ledger_rows(&pool, leased, last_id).await, [usage(71_000, start - 71_000, 3)]);
    assert_eq!(ledger_rows(&pool, nothing, last_id).await, [], "nothing charged, no row");
    assert_eq!(lease(&pool, instance, leased, false).await, 0, "the plan lease: 50,000 − 67,000, not below 0");
    assert_eq!(lease(&pool, instance, leased, true).await, 26_000, "the off-plan lease: 30,000 − 4,000");
    for (user, balance) in [(within, start - 3_500), (above, start - 4_000), (trial, start - 30_000), (leased, start - 71_000), (nothing, start)] {
        let b: i64 = sqlx::query_scalar("SELECT balance_micros FROM balances WHERE user_id = $1").bind(user).fetch_one(&pool).await.unwrap();
        assert_eq!(b, balance);
        assert!(ledger::verify(&pool, user).await.unwrap(), "balance = Σ ledger");
    }
    let stage: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_settle_stage").fetch_one(&pool).await.unwrap();
    assert_eq!(stage, 0, "the staging rows of the flush are gone");
}
