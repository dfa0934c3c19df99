//! Customers, calls and the check of their books, shared by the tests that drive the gateway
//! from outside (over HTTP, in-process or as a real process).

use cloudrouter_core::accounts;
use cloudrouter_core::billing::ledger::{self, LedgerKind, Memo};
use cloudrouter_core::keys::{self, NewKey};
use cloudrouter_core::money::MicroCny;
use serde_json::json;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;

pub const MODEL: &str = "claude-haiku-4-5-20251001";

/// What [`customer_key`] credits.
pub const CREDIT: MicroCny = MicroCny::from_micros(10_000_000);

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A customer credited [`CREDIT`] with a key on `channel`.
pub async fn customer_key(pool: &PgPool, email: &str, channel: &str) -> String {
    customer_key_with(pool, email, CREDIT, NewKey { name: "ops".into(), channel: channel.into(), ..Default::default() }).await.1
}

/// A customer credited `credit` with the key `key`: the user id and the key's secret.
pub async fn customer_key_with(pool: &PgPool, email: &str, credit: MicroCny, key: NewKey) -> (uuid::Uuid, String) {
    let user = accounts::create_user(pool, email, super::PASSWORD).await.unwrap();
    ledger::adjust(pool, user.id, credit, LedgerKind::Credit, &Memo::Staff { text: Some("test credit".into()) }, None).await.unwrap();
    (user.id, keys::create(pool, user.id, key).await.unwrap().1)
}

/// A small message to `model` through the gateway at `base`, JSON or streamed.
pub async fn message_to(base: &str, key: &str, model: &str) -> reqwest::Response {
    call(&http(), base, key, model, false).await.unwrap()
}

pub async fn call(c: &reqwest::Client, base: &str, key: &str, model: &str, stream: bool) -> reqwest::Result<reqwest::Response> {
    c.post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": model, "max_tokens": 32, "stream": stream, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
}

/// `n` messages at once to `base`: the request ids of the answers, all 200.
pub async fn answered(base: &str, key: &str, n: usize) -> Vec<String> {
    let answers = futures::future::join_all((0..n).map(|_| message_to(base, key, MODEL))).await;
    answers
        .iter()
        .map(|r| {
            assert_eq!(r.status(), 200);
            r.headers()["request-id"].to_str().unwrap().to_string()
        })
        .collect()
}

/// The books of the customer of `email` (credited [`CREDIT`]) after the requests `ids` were
/// answered: each has exactly one usage record, charged; nothing else is charged; the usage
/// ledger rows add up to those charges (none missing, none taken twice), and
/// `balance = Σ wallet ledger = credit − charges`. Returns the number of usage records.
pub async fn assert_books(pool: &PgPool, email: &str, ids: &[String]) -> i64 {
    let user: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_one(pool).await.unwrap();
    let (records, answered, answered_charged, charged, charges): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT id) FILTER (WHERE id = ANY($2)), count(*) FILTER (WHERE id = ANY($2) AND charge_micros > 0), \
                count(*) FILTER (WHERE charge_micros > 0), COALESCE(sum(charge_micros), 0)::BIGINT \
           FROM usage_records WHERE user_id = $1",
    )
    .bind(user)
    .bind(ids)
    .fetch_one(pool)
    .await
    .unwrap();
    let n = ids.len() as i64;
    assert_eq!(answered, n, "{} of {n} answered requests have no usage record", n - answered);
    assert_eq!(answered_charged, n, "each answered request has one record, charged");
    assert_eq!(charged, n, "only answered requests are charged");
    let (balance, wallet, usage): (MicroCny, MicroCny, MicroCny) = sqlx::query_as(
        "SELECT balance_micros, \
                (SELECT COALESCE(sum(amount_micros), 0)::BIGINT FROM ledger_entries WHERE user_id = $1 AND source = 'wallet'), \
                (SELECT COALESCE(-sum(amount_micros), 0)::BIGINT FROM ledger_entries WHERE user_id = $1 AND kind = 'usage') \
           FROM balances WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap();
    let charges = MicroCny::from_micros(charges);
    assert_eq!(usage, charges, "the usage ledger charges each record once");
    assert_eq!((balance, wallet), (CREDIT - charges, CREDIT - charges), "balance = Σ ledger");
    records
}

/// One row of the fault table `bench/faults.sh` prints: the fault, requests sent, answered,
/// refusals by status and type, usage records lost, and the time to recover.
pub fn figures(fault: &str, requests: usize, answered: usize, refused: &BTreeMap<String, usize>, lost: i64, recovery: Duration) {
    let refused = if refused.is_empty() { "none".to_string() } else { refused.iter().map(|(k, n)| format!("{n}× {k}")).collect::<Vec<_>>().join(", ") };
    // on a line of its own: libtest has printed "test name ... " without a newline
    eprintln!("\nFAULT\t{fault}\t{requests}\t{answered}\t{refused}\t{lost}\t{:.1} s", recovery.as_secs_f64());
}

/// Answered request ids that have no usage record.
pub async fn lost(pool: &PgPool, answered: &[String]) -> i64 {
    let stored: i64 = sqlx::query_scalar("SELECT count(DISTINCT id) FROM usage_records WHERE id = ANY($1)").bind(answered).fetch_one(pool).await.unwrap();
    answered.len() as i64 - stored
}

