//! Faults the gateway must survive, each against real processes: the built `server` binary, a
//! Postgres server stopped and started under load, several instances on one database under a
//! burst, and an HTTP upstream that is slow. Each test prints its figures (`--nocapture`).

mod common;

use cloudrouter_core::billing::ledger;
use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::demo::{FakeBehavior, FakeUpstream, PinnedUsage};
use cloudrouter_core::keys::NewKey;
use cloudrouter_core::money::MicroCny;
use cloudrouter_core::upstreams::{self, NewUpstream};
use common::books::{assert_books, call, customer_key, customer_key_with, figures, lost, MODEL};
use common::postgres::PrivatePostgres;
use common::process::{database_url, temp_dir, ServerProcess, SECRET};
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The fake upstream every instance routes to (registered before the first instance starts, so
/// none adds the built-in demo upstream).
async fn upstream(pool: &PgPool, behavior: FakeBehavior) -> FakeUpstream {
    named_upstream(pool, "fake", behavior).await
}

async fn named_upstream(pool: &PgPool, name: &str, behavior: FakeBehavior) -> FakeUpstream {
    let fake = FakeUpstream::start(behavior).await.unwrap();
    upstreams::create(
        pool,
        &Crypto::from_secret(SECRET),
        NewUpstream {
            name: name.into(),
            base_url: fake.base_url.clone(),
            api_key: "sk-fake-upstream-credential".into(),
            channels: vec!["value".into(), "smart".into(), "stable".into()],
            priority: 0,
            weight: 1,
            concurrency_cap: None,
            enabled: true,
        },
    )
    .await
    .unwrap();
    fake
}

/// Refusals by "status error-type".
fn refusals(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut refused = BTreeMap::new();
    for s in seen.iter().filter(|s| s.status != 200) {
        *refused.entry(format!("{} {}", s.status, s.error.as_deref().unwrap())).or_default() += 1;
    }
    refused
}

/// What the client saw of one request.
#[derive(Debug)]
struct Seen {
    started: Duration,
    took: Duration,
    status: u16,
    request_id: Option<String>,
    /// the Anthropic error type of a refusal, or of an error event in a stream
    error: Option<String>,
}

/// One request (streamed when `stream`), read to its end, judged as the client sees it: a 200
/// is a whole answer (a stream ends with `message_stop`), anything else Anthropic's error JSON.
async fn attempt(c: &reqwest::Client, base: &str, key: &str, stream: bool, t0: Instant) -> Seen {
    let started = t0.elapsed();
    let r = call(c, base, key, MODEL, stream).await.unwrap_or_else(|e| panic!("no answer at all: {e}"));
    let status = r.status().as_u16();
    let request_id = r.headers().get("request-id").map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap();
    let error = if status != 200 {
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{status} is not Anthropic's error JSON: {body}"));
        assert_eq!(v["type"], "error", "{body}");
        Some(v["error"]["type"].as_str().unwrap_or_else(|| panic!("{body}")).to_string())
    } else if stream && !body.contains("event: message_stop") {
        Some(body.lines().find(|l| l.contains("\"type\":\"error\"")).map_or("cut".into(), |l| l.to_string()))
    } else {
        None
    };
    Seen { started, took: t0.elapsed() - started, status, request_id, error }
}

/// `clients` clients sending one request after another (every second one streaming) to `base`
/// until `end_at` after `t0`; each client's task returns what it saw.
fn load(base: &str, key: &str, clients: usize, t0: Instant, end_at: Duration) -> Vec<tokio::task::JoinHandle<Vec<Seen>>> {
    let c = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
    (0..clients)
        .map(|w| {
            let (c, base, key) = (c.clone(), base.to_string(), key.to_string());
            tokio::spawn(async move {
                let mut seen = vec![];
                while t0.elapsed() < end_at {
                    seen.push(attempt(&c, &base, &key, w % 2 == 1, t0).await);
                }
                seen
            })
        })
        .collect()
}

/// Postgres stopped (the hard way, as a crash) and started again under load from six clients,
/// half of them streaming. Every request ends within the configured timeouts with a whole
/// answer or Anthropic's 5xx JSON; every request started after Postgres is back is answered;
/// after the instance stops, every answered request has its one usage record and charge,
/// `balance = Σ ledger`, and no balance or key hold is left.
#[tokio::test]
async fn postgres_restarting_under_load_loses_no_record_and_answers_or_fails_cleanly() {
    let pg = std::sync::Arc::new(PrivatePostgres::start());
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE cloudrouter").execute(&admin).await.unwrap();
    admin.close().await;
    let url = pg.url("cloudrouter");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(3).connect(&url).await.unwrap();
    cloudrouter_core::db::migrate(&pool).await.unwrap();
    let usage = PinnedUsage { input_tokens: 20, output_tokens: 200, ..Default::default() };
    let _fake = upstream(&pool, FakeBehavior { usage: Some(usage), first_byte_delay: Duration::from_millis(30), event_delay: Duration::from_millis(5), ..Default::default() }).await;
    let email = "restart@example.com";
    let key = customer_key(&pool, email, "smart").await;
    let spool = temp_dir("pg-restart");
    let env = [("CLOUDROUTER_SPOOL_DIR", spool.to_str().unwrap()), ("CLOUDROUTER_UNREADY_DELAY_MS", "0"), ("RUST_LOG", "error")];
    let mut server = ServerProcess::ready(&url, &env).await;

    let (down_at, up_at, end_at) = (Duration::from_secs(2), Duration::from_secs(5), Duration::from_secs(10));
    let t0 = Instant::now();
    let workers = load(&server.base(), &key, 6, t0, end_at);
    tokio::time::sleep(down_at).await;
    tokio::task::spawn_blocking({
        let (started, pg) = (Instant::now(), pg.clone());
        move || {
            pg.stop();
            std::thread::sleep((up_at - down_at).saturating_sub(started.elapsed()));
            pg.start_server();
        }
    })
    .await
    .unwrap();
    let back_at = t0.elapsed();
    let mut seen = vec![];
    for w in workers {
        seen.extend(w.await.unwrap());
    }

    let answered: Vec<String> = seen.iter().filter(|s| s.status == 200).map(|s| s.request_id.clone().unwrap()).collect();
    let refused = refusals(&seen);
    let slowest = seen.iter().map(|s| s.took).max().unwrap();
    // recovered when the last refusal ended (0 if none ended after Postgres was back)
    let recovery = seen.iter().filter(|s| s.status != 200).map(|s| (s.started + s.took).saturating_sub(back_at)).max().unwrap_or_default();
    eprintln!("postgres down {down_at:?}..{back_at:?}; slowest request {slowest:?}");
    for s in &seen {
        assert!(s.status == 200 || s.status >= 500, "a refusal during the outage is a 5xx: {s:?}");
        assert!(s.status != 200 || s.error.is_none(), "an answer is whole: {s:?}");
        assert!(s.took < Duration::from_secs(15), "no request hangs past the timeouts: {s:?}");
    }
    let after: Vec<&Seen> = seen.iter().filter(|s| s.started > back_at + Duration::from_secs(2)).collect();
    assert!(!after.is_empty() && after.iter().all(|s| s.status == 200), "answered again once Postgres is back: {after:?}");

    let exited = server.stop().await;
    assert!(exited.is_some_and(|s| s.success()), "a clean stop: {exited:?}");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    figures("Postgres stopped 3 s under load", seen.len(), answered.len(), &refused, lost(&pool, &answered).await, recovery);
    assert_books(&pool, email, &answered).await;
    let held: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(amount_micros), 0)::BIGINT FROM balance_leases), (SELECT COALESCE(sum(amount_micros), 0)::BIGINT FROM key_leases)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, (0, 0), "no hold is left once the instance has stopped");
    pool.close().await;
    let _ = std::fs::remove_dir_all(&spool);
}

/// `n` requests at once, spread over the instances in turn.
async fn burst(servers: &[ServerProcess], key: &str, n: usize) -> Vec<Seen> {
    let c = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(n).timeout(Duration::from_secs(60)).build().unwrap();
    let t0 = Instant::now();
    let calls = (0..n).map(|i| {
        let (c, base) = (c.clone(), servers[i % servers.len()].base());
        async move { attempt(&c, &base, key, false, t0).await }
    });
    futures::future::join_all(calls).await
}

fn count(seen: &[Seen], status: u16) -> usize {
    seen.iter().filter(|s| s.status == status).count()
}

/// Three instances on one database, bursts of 300 requests spread over them, to an upstream slow
/// enough (400 ms) that every hold of a burst overlaps: the balance is never overspent, a key's
/// requests per minute and its concurrency hold across instances exactly, and every hold is
/// returned when the instances stop.
#[sqlx::test(migrations = false)]
async fn a_burst_of_hundreds_over_three_instances_keeps_balance_rate_and_concurrency_limits(pool: PgPool) {
    cloudrouter_core::db::migrate(&pool).await.unwrap();
    let usage = PinnedUsage { input_tokens: 10, output_tokens: 1000, ..Default::default() };
    let fake = upstream(&pool, FakeBehavior { usage: Some(usage), first_byte_delay: Duration::from_millis(400), ..Default::default() }).await;
    let db = database_url(&pool);
    let spools: Vec<_> = (0..3).map(|i| temp_dir(&format!("burst-{i}"))).collect();
    let mut servers = vec![];
    for s in &spools {
        servers.push(ServerProcess::ready(&db, &[("CLOUDROUTER_SPOOL_DIR", s.to_str().unwrap()), ("CLOUDROUTER_UNREADY_DELAY_MS", "0"), ("RUST_LOG", "error")]).await);
    }
    let smart = |name: &str| NewKey { name: name.into(), channel: "smart".into(), ..Default::default() };

    // the balance: ¥0.30; each request costs ¥0.00501 (haiku 4.5 on smart: 10 in at $1/M, 1000 out at $5/M)
    let (poor, key) = customer_key_with(&pool, "poor@example.com", MicroCny::from_micros(300_000), smart("poor")).await;
    let mut all = vec![];
    let statuses = burst(&servers, &key, 300).await;
    let ok = count(&statuses, 200);
    assert_eq!(ok + count(&statuses, 402), 300, "{statuses:?}");
    assert!(ok >= 1, "{statuses:?}");

    // 40 requests a minute: exactly 40 pass in one minute (80 at most if the burst straddles two)
    let (rich, key) = customer_key_with(&pool, "rate@example.com", MicroCny::units(100), NewKey { rpm_limit: Some(40), ..smart("rpm") }).await;
    let minute = || chrono::Utc::now().timestamp() / 60;
    let before = minute();
    all.extend(statuses);
    let statuses = burst(&servers, &key, 300).await;
    let one_minute = before == minute();
    let ok = count(&statuses, 200);
    assert_eq!(ok + count(&statuses, 429), 300, "{statuses:?}");
    if one_minute {
        assert_eq!(ok, 40);
    } else {
        assert!((40..=80).contains(&ok), "{ok}");
    }

    // four at once: the upstream never sees a fifth of this key's requests
    let (_, key) = customer_key_with(&pool, "busy@example.com", MicroCny::units(100), NewKey { concurrency_limit: Some(4), ..smart("concurrency") }).await;
    all.extend(statuses);
    fake.take_peak_in_flight();
    let statuses = burst(&servers, &key, 300).await;
    let peak = fake.take_peak_in_flight();
    let ok = count(&statuses, 200);
    assert_eq!(ok + count(&statuses, 429), 300, "{statuses:?}");
    assert!(ok >= 4, "{ok}");
    assert!(peak <= 4, "the upstream saw {peak} at once");
    all.extend(statuses);

    for s in &mut servers {
        let exited = s.stop().await;
        assert!(exited.is_some_and(|s| s.success()), "a clean stop: {exited:?}");
    }
    let answered: Vec<String> = all.iter().filter(|s| s.status == 200).map(|s| s.request_id.clone().unwrap()).collect();
    figures("3 instances, 3 bursts of 300 (balance, rpm, concurrency)", all.len(), answered.len(), &refusals(&all), lost(&pool, &answered).await, Duration::ZERO);
    let charge = MicroCny::from_micros(10 + 1000 * 5);
    let poor_ok = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM usage_records WHERE user_id = $1 AND status = 200").bind(poor).fetch_one(&pool).await.unwrap();
    let balance = ledger::balance(&pool, poor).await.unwrap();
    assert_eq!(balance, MicroCny::from_micros(300_000 - poor_ok * charge.micros()), "each answer charged once");
    assert!(!balance.is_negative(), "never overspent: {balance}");
    for user in [poor, rich] {
        assert!(ledger::verify(&pool, user).await.unwrap(), "balance = Σ ledger");
    }
    let held: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(amount_micros), 0)::BIGINT FROM balance_leases), (SELECT COALESCE(sum(amount_micros), 0)::BIGINT FROM key_leases), \
                (SELECT COALESCE(sum(slots), 0)::BIGINT FROM slot_leases)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, (0, 0, 0), "every hold and slot returned at stop");
    for s in spools {
        let _ = std::fs::remove_dir_all(s);
    }
}

/// SIGTERM while twelve streams are open (each ~1.5 s long): `/readyz` turns 503 at once, new
/// connections are refused after the unready delay, every open stream still finishes whole
/// within the grace period, and every one of them is flushed to its usage record and charge
/// before the process exits.
#[sqlx::test(migrations = false)]
async fn sigterm_lets_open_streams_finish_and_flushes_their_records(pool: PgPool) {
    cloudrouter_core::db::migrate(&pool).await.unwrap();
    let _fake = upstream(&pool, FakeBehavior { event_delay: Duration::from_millis(150), ..Default::default() }).await;
    let email = "streams@example.com";
    let key = customer_key(&pool, email, "smart").await;
    let spool = temp_dir("sigterm-streams");
    let env = [
        ("CLOUDROUTER_SPOOL_DIR", spool.to_str().unwrap()),
        ("CLOUDROUTER_UNREADY_DELAY_MS", "300"),
        ("CLOUDROUTER_SHUTDOWN_GRACE_MS", "20000"),
        // records wait in memory (and the spool) until shutdown flushes them
        ("CLOUDROUTER_USAGE_FLUSH_MS", "600000"),
        ("RUST_LOG", "error"),
    ];
    let mut server = ServerProcess::ready(&database_url(&pool), &env).await;
    let c = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
    let t0 = Instant::now();
    let streams: Vec<_> = (0..12)
        .map(|_| {
            let (c, base, key) = (c.clone(), server.base(), key.clone());
            tokio::spawn(async move { attempt(&c, &base, &key, true, t0).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.sigterm();
    let term = t0.elapsed();
    let mut seen = vec![];
    for s in streams {
        seen.push(s.await.unwrap());
    }
    let refused_new = common::process::probe(server.addr, "/healthz").await.is_none();
    let exited = server.exited(Duration::from_secs(30)).await;
    assert!(exited.is_some_and(|s| s.success()), "a clean exit: {exited:?}");
    let answered: Vec<String> = seen.iter().filter(|s| s.status == 200 && s.error.is_none()).map(|s| s.request_id.clone().unwrap()).collect();
    let last_end = seen.iter().map(|s| s.started + s.took).max().unwrap();
    figures("SIGTERM with 12 open streams", seen.len(), answered.len(), &refusals(&seen), lost(&pool, &answered).await, last_end.saturating_sub(term));
    assert!(seen.iter().all(|s| s.started < term), "every stream opened before the SIGTERM");
    assert_eq!(answered.len(), 12, "every open stream finished whole: {seen:?}");
    assert!(refused_new, "new connections are refused once the streams are done");
    assert_books(&pool, email, &answered).await;
    let _ = std::fs::remove_dir_all(&spool);
}

/// A 529 storm on every upstream for 3 s under load from four clients: each client request costs
/// the upstreams at most `CLOUDROUTER_MAX_ATTEMPTS` attempts and, once their circuits open, far
/// fewer (the breakers shield the accounts from a retry storm); every refusal is Anthropic's 529
/// `overloaded_error`; when the storm ends, requests are answered
/// again within the circuits' cool-down.
#[sqlx::test(migrations = false)]
async fn a_529_storm_on_every_upstream_is_refused_cleanly_shielded_by_the_breakers_and_recovers(pool: PgPool) {
    cloudrouter_core::db::migrate(&pool).await.unwrap();
    let storm = FakeBehavior { fail_status: Some(529), first_byte_delay: Duration::from_millis(5), ..Default::default() };
    let upstreams = [named_upstream(&pool, "a", storm.clone()).await, named_upstream(&pool, "b", storm.clone()).await];
    let key = customer_key(&pool, "storm@example.com", "smart").await;
    let spool = temp_dir("storm");
    let env = [
        ("CLOUDROUTER_SPOOL_DIR", spool.to_str().unwrap()),
        ("CLOUDROUTER_BREAKER_FAILURES", "5"),
        ("CLOUDROUTER_BREAKER_OPEN_MS", "1000"),
        ("CLOUDROUTER_MAX_ATTEMPTS", "3"),
        ("RUST_LOG", "error"),
    ];
    let mut server = ServerProcess::ready(&database_url(&pool), &env).await;
    let (storm_for, end_at) = (Duration::from_secs(3), Duration::from_secs(6));
    let t0 = Instant::now();
    let workers = load(&server.base(), &key, 4, t0, end_at);
    tokio::time::sleep(storm_for).await;
    let during_storm: u64 = upstreams.iter().map(FakeUpstream::requests).sum();
    for u in &upstreams {
        u.set(FakeBehavior::default());
    }
    let calm_at = t0.elapsed();
    let mut seen = vec![];
    for w in workers {
        seen.extend(w.await.unwrap());
    }
    let in_storm = seen.iter().filter(|s| s.started + s.took <= calm_at).count() as u64;
    let answered: Vec<String> = seen.iter().filter(|s| s.status == 200).map(|s| s.request_id.clone().unwrap()).collect();
    let recovery = seen.iter().filter(|s| s.status != 200).map(|s| (s.started + s.took).saturating_sub(calm_at)).max().unwrap_or_default();
    eprintln!("529 storm: {in_storm} client requests during the storm cost the upstreams {during_storm} attempts");
    assert!(server.stop().await.is_some_and(|s| s.success()), "a clean stop");
    figures("529 storm on every upstream, 3 s", seen.len(), answered.len(), &refusals(&seen), lost(&pool, &answered).await, recovery);
    for s in seen.iter().filter(|s| s.status != 200) {
        assert_eq!((s.status, s.error.as_deref()), (529, Some("overloaded_error")), "{s:?}");
    }
    assert!(in_storm >= 20, "load during the storm: {in_storm}");
    assert!(during_storm <= 3 * in_storm, "at most 3 attempts per request: {during_storm} for {in_storm}");
    assert!(during_storm < in_storm, "the open circuits shield the upstreams: {during_storm} attempts for {in_storm} requests");
    assert!(recovery < Duration::from_millis(2500), "answered again within the cool-down: {recovery:?}");
    let after: Vec<&Seen> = seen.iter().filter(|s| s.started > calm_at + Duration::from_millis(2500)).collect();
    assert!(!after.is_empty() && after.iter().all(|s| s.status == 200), "{after:?}");
    let _ = std::fs::remove_dir_all(&spool);
}
