//! The status page's figures against known usage, the rollup against the raw records through
//! every kind of change, incidents, and the page cache.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use cloudrouter_core::insights::{hist_bucket, hist_bucket_value};
use cloudrouter_core::status::incidents::{self, IncidentError, NewIncident, NewUpdate};
use cloudrouter_core::status::{self, Condition, Impact, IncidentStatus, StatusBoard};
use cloudrouter_core::usage::{Outcome, UsageRecord};
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

mod common;

use common::records::{rec, user, write};

/// Thursday 2026-11-20 05:30 UTC, 13:30 in Shanghai.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 5, 30, 0).unwrap()
}

/// The median a histogram reports for an exact median of `ms`.
fn median(ms: i32) -> Option<i32> {
    Some(hist_bucket_value(hist_bucket(ms)))
}

/// Whether a record counts toward availability, and whether it failed: the definition in
/// docs/status.md, written independently of the SQL that applies it.
fn classify(r: &UsageRecord) -> (bool, bool) {
    let customer_refusal = (400..500).contains(&r.status) && !(r.status == 429 && r.outcome == Outcome::UpstreamError);
    let succeeded = r.status < 400 && matches!(r.outcome, Outcome::Ok | Outcome::ClientClosed);
    (!customer_refusal, !customer_refusal && !succeeded)
}

/// One hour of smart-channel traffic an hour ago, of every kind. Only the five messages answered
/// in full have real timings; every other record takes 1 ms (and a 1 ms first token when
/// streamed), so counting any of them in a median moves it to another bucket.
fn an_hour_of_everything(u: Uuid) -> Vec<UsageRecord> {
    let at = now() - Duration::hours(1);
    let r = |id: &str| rec(id, at, u).timing(1, None);
    let stream = |id: &str| rec(id, at, u).timing(1, Some(1));
    vec![
        // succeeded, in the latency histograms: JSON 100 and 200 ms, streams 1, 10 and 20 s with
        // first tokens at 0.4, 2 and 3 s
        r("ok-json-1").timing(100, None).build(),
        r("ok-json-2").timing(200, None).build(),
        r("ok-stream-1").timing(1_000, Some(400)).build(),
        r("ok-stream-2").timing(10_000, Some(2_000)).build(),
        r("ok-stream-3").timing(20_000, Some(3_000)).build(),
        // succeeded, no latency: the client left a working stream; token counting
        stream("left").outcome(Outcome::ClientClosed).build(),
        r("count-1").endpoint("count_tokens").build(),
        r("count-2").endpoint("count_tokens").build(),
        // failed
        r("capacity").status(529).outcome(Outcome::GatewayError).build(),
        r("upstream-503").status(503).build(),
        r("timeout").status(504).build(),
        r("pool-rate-limited").status(429).build(),
        stream("cut").outcome(Outcome::UpstreamCut).build(),
        stream("stalled").outcome(Outcome::IdleTimeout).build(),
        stream("error-event").outcome(Outcome::UpstreamError).build(),
        // not counted: the customer's own
        r("bad-request").status(400).build(),
        r("bad-key").status(401).outcome(Outcome::GatewayError).build(),
        r("no-balance").status(402).outcome(Outcome::GatewayError).build(),
        r("not-allowed").status(403).outcome(Outcome::GatewayError).build(),
        r("no-model").status(404).outcome(Outcome::GatewayError).build(),
        r("too-large").status(413).outcome(Outcome::GatewayError).build(),
        r("key-rate-limit").status(429).outcome(Outcome::GatewayError).build(),
    ]
}

#[sqlx::test(migrations = "../../migrations")]
async fn figures_follow_the_published_definition_exactly(pool: PgPool) {
    let u = user(&pool, "a@example.com").await;
    let mut rows = an_hour_of_everything(u);
    // yesterday in Shanghai (30 hours ago): one success, one failure; outside the 24 hours
    let yesterday = now() - Duration::hours(30);
    rows.push(rec("y-ok", yesterday, u).timing(100, None).build());
    rows.push(rec("y-502", yesterday, u).status(502).build());
    // 40 days ago: only the customer's own refusals on smart (no data), two successes on value
    let d40 = now() - Duration::days(40);
    rows.push(rec("d40-402", d40, u).status(402).outcome(Outcome::GatewayError).build());
    rows.push(rec("d40-429", d40, u).status(429).outcome(Outcome::GatewayError).build());
    rows.push(rec("d40-v1", d40, u).channel("value").build());
    rows.push(rec("d40-v2", d40, u).channel("value").build());
    // before the 90 days
    rows.push(rec("old", now() - Duration::days(95), u).status(500).build());
    write(&pool, &rows, 7).await;

    let report = status::report(&pool, now()).await.unwrap();
    assert_eq!(report.channels.iter().map(|c| c.code.as_str()).collect::<Vec<_>>(), ["value", "smart", "stable"]);
    let smart = &report.channels[1];

    // 8 succeeded, 7 failed, 7 not counted
    let day = &smart.last_24_hours;
    assert_eq!((day.requests, day.failures), (15, 7));
    assert_eq!(day.availability_percent, Some(53.333));
    assert_eq!(day.availability_text(2).as_deref(), Some("53.33"));
    assert_eq!(day.median_latency_ms, median(1_000), "the 3rd of 100, 200, 1000, 10000, 20000 ms");
    assert_eq!(day.median_ttft_ms, median(2_000), "the 2nd of 400, 2000, 3000 ms");

    let quarter = &smart.last_90_days;
    assert_eq!((quarter.requests, quarter.failures), (17, 8));
    assert_eq!(quarter.availability_text(2).as_deref(), Some("52.94"));
    assert_eq!(quarter.median_latency_ms, median(200), "the 3rd of 100, 100, 200, 1000, 10000, 20000 ms");

    assert_eq!(smart.days.len(), 90);
    assert_eq!(smart.days[0].date, NaiveDate::from_ymd_opt(2026, 8, 23).unwrap());
    let by_date: BTreeMap<NaiveDate, &status::Day> = smart.days.iter().map(|d| (d.date, d)).collect();
    let on = |m, d| by_date[&NaiveDate::from_ymd_opt(2026, m, d).unwrap()];
    assert_eq!(on(11, 20).figures, *day, "today is the last hour's traffic");
    assert_eq!((on(11, 19).figures.requests, on(11, 19).figures.failures), (2, 1));
    assert_eq!(on(11, 19).figures.availability_percent, Some(50.0));
    let no_data = &on(10, 11).figures;
    assert_eq!((no_data.requests, no_data.availability_percent, no_data.median_latency_ms), (0, None, None), "refusals only: no data, not 100 %");
    assert_eq!(smart.days.iter().filter(|d| d.figures.requests > 0).count(), 2);

    let value = &report.channels[0];
    assert_eq!(value.last_24_hours.availability_percent, None);
    assert_eq!(value.last_90_days.availability_text(2).as_deref(), Some("100.00"));
    assert_eq!(value.days.iter().find(|d| d.figures.requests > 0).map(|d| d.date), NaiveDate::from_ymd_opt(2026, 10, 11));
    let stable = &report.channels[2];
    assert!(stable.days.iter().all(|d| d.figures.availability_percent.is_none()));
    assert_eq!(report.condition, Condition::Operational);
}

/// Per (hour, channel): counted, failed, the latency and TTFT histograms, from the raw rows.
type Sums = BTreeMap<(DateTime<Utc>, String), (i64, i64, Vec<i64>, Vec<i64>)>;

async fn from_records(pool: &PgPool) -> Sums {
    let rows: Vec<UsageRecord> = sqlx::query_as(&format!("SELECT {} FROM usage_records", cloudrouter_core::usage::RECORD_COLUMNS))
        .fetch_all(pool)
        .await
        .unwrap();
    let mut sums = Sums::new();
    for r in rows {
        let (counted, failed) = classify(&r);
        if !counted {
            continue;
        }
        let hour = Utc.timestamp_opt(r.created_at.timestamp().div_euclid(3600) * 3600, 0).unwrap();
        let e = sums.entry((hour, r.channel.clone())).or_insert_with(|| (0, 0, vec![0; 32], vec![0; 32]));
        e.0 += 1;
        e.1 += failed as i64;
        if r.outcome == Outcome::Ok && r.status < 400 && r.endpoint == "messages" {
            e.2[hist_bucket(r.latency_ms)] += 1;
            if let Some(t) = r.ttft_ms {
                e.3[hist_bucket(t)] += 1;
            }
        }
    }
    sums
}

async fn from_rollup(pool: &PgPool) -> Sums {
    let rows: Vec<(DateTime<Utc>, String, i64, i64, Vec<i32>, Vec<i32>)> =
        sqlx::query_as("SELECT hour, channel, requests, failures, latency_hist, ttft_hist FROM status_hourly").fetch_all(pool).await.unwrap();
    let wide = |v: Vec<i32>| v.into_iter().map(i64::from).collect();
    rows.into_iter().map(|(h, c, n, f, l, t)| ((h, c), (n, f, wide(l), wide(t)))).collect()
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_rollup_equals_the_records_through_inserts_deletes_updates_and_a_rebuild(pool: PgPool) {
    let u = user(&pool, "a@example.com").await;
    let statuses = [200, 200, 200, 200, 400, 401, 402, 429, 429, 500, 502, 503, 504, 529];
    let outcomes = [Outcome::Ok, Outcome::UpstreamError, Outcome::GatewayError, Outcome::UpstreamCut, Outcome::ClientClosed, Outcome::IdleTimeout, Outcome::Shutdown];
    let mut rows = vec![];
    let mut x: u64 = 7;
    for i in 0..900 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let pick = |n: usize, shift: u32| ((x >> shift) % n as u64) as usize;
        let at = now() - Duration::minutes(pick(3000, 20) as i64);
        let stream = pick(2, 40) == 0;
        let r = rec(format!("r{i}"), at, u)
            .channel(["value", "smart", "stable"][pick(3, 33)])
            .status(statuses[pick(statuses.len(), 36)])
            .outcome(outcomes[pick(outcomes.len(), 44)])
            .endpoint(if pick(10, 50) == 0 { "count_tokens" } else { "messages" })
            .timing(pick(60_000, 8) as i32, stream.then(|| pick(5_000, 12) as i32));
        rows.push(r.build());
    }
    write(&pool, &rows, 64).await;
    let expected = from_records(&pool).await;
    assert!(expected.len() > 100, "{} hour-channel groups", expected.len());
    assert_eq!(from_rollup(&pool).await, expected, "after the writer's batches");

    sqlx::query("DELETE FROM usage_records WHERE id LIKE 'r1%'").execute(&pool).await.unwrap();
    sqlx::query("UPDATE usage_records SET status = 503, outcome = 'upstream_error' WHERE id LIKE 'r2%'").execute(&pool).await.unwrap();
    sqlx::query("UPDATE usage_records SET status = 402, outcome = 'gateway_error' WHERE id LIKE 'r3%'").execute(&pool).await.unwrap();
    sqlx::query("UPDATE usage_records SET created_at = created_at - interval '1 day' WHERE id LIKE 'r4%'").execute(&pool).await.unwrap();
    assert_eq!(from_rollup(&pool).await, from_records(&pool).await, "after deletes and updates");
    let empty: i64 = sqlx::query_scalar("SELECT count(*) FROM status_hourly WHERE requests = 0").fetch_one(&pool).await.unwrap();
    assert_eq!(empty, 0, "an hour with nothing counted left holds no row");

    sqlx::query("UPDATE status_hourly SET failures = failures + 1").execute(&pool).await.unwrap();
    sqlx::query("SELECT cr_usage_rollup_rebuild()").execute(&pool).await.unwrap();
    assert_eq!(from_rollup(&pool).await, from_records(&pool).await, "after the operator's rebuild");

    sqlx::query("TRUNCATE usage_records").execute(&pool).await.unwrap();
    assert!(from_rollup(&pool).await.is_empty());
}

async fn staff(pool: &PgPool) -> Uuid {
    user(pool, "ops@example.com").await
}

fn new_incident(title_en: &str, title_zh: &str, impact: Impact, channels: &[&str]) -> NewIncident {
    NewIncident {
        title_en: title_en.into(),
        title_zh: title_zh.into(),
        impact,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        status: IncidentStatus::Investigating,
        message_en: "We are looking into it.".into(),
        message_zh: String::new(),
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn incidents_set_the_conditions_and_move_from_open_to_resolved(pool: PgPool) {
    let staff = staff(&pool).await;
    let open = |n: NewIncident| {
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            let id = incidents::open(&mut tx, staff, &n).await.unwrap();
            tx.commit().await.unwrap();
            id
        }
    };
    let slow = open(new_incident("Slow answers on Value", "经济渠道响应变慢", Impact::Minor, &["value", " value"])).await;
    let down = open(new_incident("", "高速稳定渠道不可用", Impact::Major, &["stable", "smart"])).await;

    let report = status::report(&pool, Utc::now()).await.unwrap();
    assert_eq!(report.condition, Condition::MajorOutage);
    let conditions: Vec<_> = report.channels.iter().map(|c| (c.code.as_str(), c.condition)).collect();
    assert_eq!(conditions, [("value", Condition::Degraded), ("smart", Condition::MajorOutage), ("stable", Condition::MajorOutage)]);
    assert_eq!(report.open_incidents.iter().map(|i| i.id).collect::<Vec<_>>(), [down, slow], "newest first");
    let d = &report.open_incidents[0];
    assert_eq!((d.title.en.as_str(), d.title.zh.as_str()), ("高速稳定渠道不可用", "高速稳定渠道不可用"), "one language stands for both");
    assert_eq!(d.channels, ["smart", "stable"], "in the channels' order, each once");
    assert_eq!(report.open_incidents[1].channels, ["value"]);
    assert_eq!(d.updates[0].message.zh, "We are looking into it.");

    let mut tx = pool.begin().await.unwrap();
    let update = |status, impact, en: &str| NewUpdate { status, impact, message_en: en.into(), message_zh: format!("中文：{en}") };
    incidents::update(&mut tx, staff, down, &update(IncidentStatus::Identified, Impact::Minor, "A bad deploy; rolling back.")).await.unwrap();
    incidents::update(&mut tx, staff, slow, &update(IncidentStatus::Resolved, Impact::Minor, "Fixed.")).await.unwrap();
    tx.commit().await.unwrap();

    let report = status::report(&pool, Utc::now()).await.unwrap();
    assert_eq!(report.condition, Condition::Degraded);
    let conditions: Vec<_> = report.channels.iter().map(|c| c.condition).collect();
    assert_eq!(conditions, [Condition::Operational, Condition::Degraded, Condition::Degraded]);
    assert_eq!(report.open_incidents.len(), 1);
    let d = &report.open_incidents[0];
    assert_eq!((d.status, d.impact, d.updates.len()), (IncidentStatus::Identified, Impact::Minor, 2));
    assert_eq!(d.updates[0].message.zh, "中文：A bad deploy; rolling back.", "newest update first");
    let r = &report.resolved_incidents;
    assert_eq!((r.len(), r[0].id, r[0].status), (1, slow, IncidentStatus::Resolved));
    let resolved_at = r[0].resolved_at.expect("resolved time");

    // a later note keeps the time it was resolved; a week past the window it leaves the page
    let mut tx = pool.begin().await.unwrap();
    incidents::update(&mut tx, staff, slow, &update(IncidentStatus::Resolved, Impact::Minor, "Post-mortem: a full disk.")).await.unwrap();
    tx.commit().await.unwrap();
    let later = status::report(&pool, Utc::now()).await.unwrap();
    assert_eq!(later.resolved_incidents[0].resolved_at, Some(resolved_at));
    let past = status::report(&pool, Utc::now() + Duration::days(status::RESOLVED_SHOWN_DAYS + 1)).await.unwrap();
    assert!(past.resolved_incidents.is_empty());
}

#[sqlx::test(migrations = "../../migrations")]
async fn incidents_refuse_what_the_page_could_not_show(pool: PgPool) {
    let staff = staff(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    let mut refused = vec![];
    let mut silent = new_incident("t", "", Impact::Minor, &[]);
    silent.message_en = "  ".into();
    for n in [
        new_incident(" ", "", Impact::Minor, &[]),
        new_incident(&"x".repeat(201), "", Impact::Minor, &[]),
        new_incident("t", "", Impact::Minor, &["value", "turbo"]),
        silent,
    ] {
        refused.push(incidents::open(&mut tx, staff, &n).await.unwrap_err().to_string());
    }
    assert_eq!(
        refused,
        [
            "a title is required (English, Chinese or both)",
            "the title is longer than 200 characters",
            "unknown channel: turbo",
            "a message is required (English, Chinese or both)"
        ]
    );
    let nobody = NewUpdate { status: IncidentStatus::Monitoring, impact: Impact::Minor, message_en: "m".into(), message_zh: String::new() };
    assert!(matches!(incidents::update(&mut tx, staff, Uuid::new_v4(), &nobody).await.unwrap_err(), IncidentError::NotFound));
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_board_serves_one_computation_until_it_expires_or_is_forgotten(pool: PgPool) {
    let board = StatusBoard::new(pool.clone(), std::time::Duration::from_secs(60));
    let first = board.current().await.unwrap();
    let staff = staff(&pool).await;
    let mut tx = pool.begin().await.unwrap();
    incidents::open(&mut tx, staff, &new_incident("Down", "", Impact::Major, &[])).await.unwrap();
    tx.commit().await.unwrap();
    let cached = board.current().await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &cached), "within the TTL the same page is served");
    assert!(cached.open_incidents.is_empty());
    board.forget().await;
    let fresh = board.current().await.unwrap();
    assert_eq!((fresh.open_incidents.len(), fresh.condition), (1, Condition::MajorOutage), "an incident with no channel is the service's");
    assert!(fresh.channels.iter().all(|c| c.condition == Condition::Operational));

    let expiring = StatusBoard::new(pool.clone(), std::time::Duration::ZERO);
    let a = expiring.current().await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &expiring.current().await.unwrap()));
}
