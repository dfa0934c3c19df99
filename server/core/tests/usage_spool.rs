//! The usage writer's records are charged once however often they are written (a replayed spool,
//! a retry after a lost commit acknowledgement), and the spool a dead instance left is replayed
//! when the next writer starts. The process-level test (a real server killed with SIGKILL) is
//! `server/tests/operations.rs`.
mod common;

use chrono::Utc;
use cloudrouter_core::usage::{UsageRecord, UsageWriter, WriterConfig};
use common::*;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// A fresh spool directory, deleted when dropped.
struct SpoolDir(PathBuf);

impl SpoolDir {
    fn new() -> SpoolDir {
        SpoolDir(std::env::temp_dir().join(format!("cloudrouter-usage-spool-{}", Uuid::new_v4())))
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn writer(pool: &PgPool, spool: &Path) -> UsageWriter {
    let cfg = WriterConfig { spool_dir: spool.into(), flush_interval: Duration::from_millis(5), ..WriterConfig::default() };
    UsageWriter::start(pool.clone(), Uuid::new_v4(), cfg).await.unwrap()
}

fn record(id: &str, user: Uuid, key: Uuid, charge: i64) -> UsageRecord {
    records::rec(id, Utc::now(), user).key(Some(key)).charge(charge, charge).build()
}

/// A customer with ¥10 and a key; (user, key id).
async fn customer_with_key(pool: &PgPool) -> (Uuid, Uuid) {
    let user = customer(pool, "10").await;
    key(pool, user, "smart").await;
    let key_id = sqlx::query_scalar("SELECT id FROM api_keys WHERE user_id = $1").bind(user).fetch_one(pool).await.unwrap();
    (user, key_id)
}

/// The user's request ids, then (Σ charges of their records, Σ `usage` ledger debits, balance,
/// Σ wallet ledger, the key's spend).
async fn books(pool: &PgPool, user: Uuid, key: Uuid) -> (Vec<String>, [i64; 5]) {
    let ids = sqlx::query_scalar("SELECT id FROM usage_records WHERE user_id = $1 ORDER BY id").bind(user).fetch_all(pool).await.unwrap();
    let (charges, usage, balance, wallet, spent): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(charge_micros), 0)::BIGINT FROM usage_records WHERE user_id = $1), \
                (SELECT COALESCE(-sum(amount_micros), 0)::BIGINT FROM ledger_entries WHERE user_id = $1 AND kind = 'usage'), \
                (SELECT balance_micros FROM balances WHERE user_id = $1), \
                (SELECT COALESCE(sum(amount_micros), 0)::BIGINT FROM ledger_entries WHERE user_id = $1 AND source = 'wallet'), \
                (SELECT spent_micros FROM api_keys WHERE id = $2)",
    )
    .bind(user)
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap();
    (ids, [charges, usage, balance, wallet, spent])
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_record_written_again_is_neither_stored_nor_charged_again(pool: PgPool) {
    let spool = SpoolDir::new();
    let (user, key) = customer_with_key(&pool).await;
    let [r1, r2, r3] = [record("req_1", user, key, 1_000), record("req_2", user, key, 2_000), record("req_3", user, key, 4_000)];
    let first = writer(&pool, &spool.0).await;
    for r in [r1, r2.clone()] {
        first.send(r).await;
    }
    first.sync().await;
    // another writer (a replay, a retry: the same records, created_at included) with a record
    // stored already, one new one, and that one twice in the same batch
    let second = writer(&pool, &spool.0).await;
    for r in [r2, r3.clone(), r3] {
        second.send(r).await;
    }
    second.sync().await;
    let charged = 7_000;
    assert_eq!(books(&pool, user, key).await, (vec!["req_1".into(), "req_2".into(), "req_3".into()], [charged, charged, 10_000_000 - charged, 10_000_000 - charged, charged]));
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(std::fs::read_dir(&spool.0).unwrap().count(), 0, "every record committed: the spools are gone");
}

#[sqlx::test(migrations = "../../migrations")]
async fn a_spool_directory_that_cannot_be_made_stops_the_start(pool: PgPool) {
    let spool = SpoolDir::new();
    std::fs::create_dir_all(&spool.0).unwrap();
    std::fs::write(spool.0.join("a-file"), b"not a directory").unwrap();
    let cfg = WriterConfig { spool_dir: spool.0.join("a-file").join("spool"), ..WriterConfig::default() };
    let err = UsageWriter::start(pool, Uuid::new_v4(), cfg).await.err().expect("refused");
    assert!(err.to_string().contains("CLOUDROUTER_SPOOL_DIR"), "{err}");
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_spool_a_dead_instance_left_is_replayed_when_a_writer_starts(pool: PgPool) {
    let spool = SpoolDir::new();
    let (user, key) = customer_with_key(&pool).await;
    // a writer that flushes only when asked, and its segment's bytes
    let cfg = WriterConfig { spool_dir: spool.0.clone(), flush_interval: Duration::from_secs(3600), ..WriterConfig::default() };
    let live = UsageWriter::start(pool.clone(), Uuid::new_v4(), cfg).await.unwrap();
    let segment = || {
        let path = std::fs::read_dir(&spool.0).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "spool")).unwrap();
        std::fs::read(path).unwrap()
    };
    live.send(record("req_1", user, key, 1_000)).await;
    let mut dead_bytes = segment();
    live.sync().await;
    live.send(record("req_2", user, key, 2_000)).await;
    live.send(record("req_3", user, key, 4_000)).await;
    dead_bytes.extend(segment());

    // a dead instance's spool: a record committed before it died, one that was not, and one cut
    // in the middle (killed mid-write)
    let deployment: Uuid = sqlx::query_scalar("SELECT id FROM deployment").fetch_one(&pool).await.unwrap();
    let dead = spool.0.join(format!("{deployment}.{}.0.spool", Uuid::new_v4()));
    std::fs::write(&dead, &dead_bytes[..dead_bytes.len() - 10]).unwrap();

    let next = writer(&pool, &spool.0).await;
    assert_eq!(books(&pool, user, key).await, (vec!["req_1".into(), "req_2".into()], [3_000, 3_000, 10_000_000 - 3_000, 10_000_000 - 3_000, 3_000]));
    assert!(!dead.exists(), "a replayed spool is deleted");
    // the live writer still holds req_2 (replayed already: not charged again) and req_3
    live.shutdown().await;
    next.shutdown().await;
    assert_eq!(books(&pool, user, key).await, (vec!["req_1".into(), "req_2".into(), "req_3".into()], [7_000, 7_000, 10_000_000 - 7_000, 10_000_000 - 7_000, 7_000]));
}
