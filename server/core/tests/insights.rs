//! Usage insight: rollups against raw rows, buckets, percentiles, the usage log and CSV.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cloudrouter_core::insights::{self, Cursor, GroupBy, LogFilter, Range, Scope, SeriesPoint, StatusFilter};
use cloudrouter_core::pricing::TokenUsage;
use cloudrouter_core::money::{MicroCny, MicroUsd};
use cloudrouter_core::usage::{Outcome, UsageRecord};
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

mod common;

use common::records::{rec, user, write, MODELS};

const CHANNELS: [&str; 3] = ["value", "smart", "stable"];

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 5, 30, 0).unwrap()
}

struct Fixture {
    users: Vec<Uuid>,
    keys: Vec<Uuid>,
    upstreams: Vec<Uuid>,
    recs: Vec<UsageRecord>,
}

/// ~600 records over the last 100 hours plus a few 40 and 95 days back, two users, three keys.
async fn fixture(pool: &PgPool) -> Fixture {
    let users = vec![user(pool, "a@example.com").await, user(pool, "b@example.com").await];
    let keys = vec![Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let upstreams = vec![Uuid::new_v4(), Uuid::new_v4()];
    let mut g = Lcg(42);
    let mut recs = Vec::new();
    for i in 0..600i64 {
        let back = if i % 50 == 0 { Duration::days(40 + (i % 3) * 25) } else { Duration::seconds(g.next(100 * 3600) as i64) };
        let at = now() - back;
        let ui = g.next(2) as usize;
        let key = if ui == 0 { Some(keys[g.next(2) as usize]) } else if i % 7 == 0 { None } else { Some(keys[2]) };
        let model = MODELS[g.next(3) as usize];
        let served = (i % 11 == 0).then_some(MODELS[0]);
        let up = if i % 13 == 0 { None } else { Some(upstreams[g.next(2) as usize]) };
        let status = if i % 9 == 0 { 529 } else if i % 17 == 0 { 400 } else { 200 };
        let lat = 50 + g.next(20_000) as i32;
        let ttft = (i % 3 != 0).then(|| 10 + g.next(3_000) as i32);
        recs.push(
            rec(format!("req_{i:05}"), at, users[ui])
                .key(key)
                .channel(CHANNELS[g.next(3) as usize])
                .model(model)
                .served(served)
                .upstream(up)
                .status(status)
                .n(i)
                .timing(lat, ttft)
                .build(),
        );
    }
    write(pool, &recs, 37).await;
    Fixture { users, keys, upstreams, recs }
}

fn sum_point(bucket: DateTime<Utc>, group: String, rs: &[&UsageRecord]) -> SeriesPoint {
    SeriesPoint {
        bucket,
        group,
        requests: rs.len() as i64,
        errors: rs.iter().filter(|r| r.status >= 400).count() as i64,
        input_tokens: rs.iter().map(|r| r.tokens.input_tokens).sum(),
        output_tokens: rs.iter().map(|r| r.tokens.output_tokens).sum(),
        cache_write_tokens: rs.iter().map(|r| r.tokens.cache_write_5m_tokens + r.tokens.cache_write_1h_tokens).sum(),
        cache_read_tokens: rs.iter().map(|r| r.tokens.cache_read_tokens).sum(),
        cost_micro_usd: rs.iter().map(|r| r.cost_micro_usd).sum(),
        charge_micros: rs.iter().map(|r| r.charge_micros).sum(),
    }
}

/// The expected series computed from the records themselves.
fn expected(recs: &[UsageRecord], scope: &Scope, range: Range, group: GroupBy, now: DateTime<Utc>) -> Vec<SeriesPoint> {
    let buckets = range.buckets(now);
    let (start, end) = range.bounds(now);
    let mut m: BTreeMap<(DateTime<Utc>, String), Vec<&UsageRecord>> = BTreeMap::new();
    for r in recs {
        if r.created_at < start || r.created_at >= end {
            continue;
        }
        if scope.user_id.is_some_and(|u| u != r.user_id) || scope.key_id.is_some_and(|k| Some(k) != r.key_id) {
            continue;
        }
        let b = *buckets.iter().filter(|b| **b <= r.created_at).next_back().unwrap();
        let g = match group {
            GroupBy::None => String::new(),
            GroupBy::Model => r.served_model.clone().unwrap_or(r.requested_model.clone()),
            GroupBy::Key => r.key_id.map(|k| k.to_string()).unwrap_or_default(),
            GroupBy::Channel => r.channel.clone(),
            GroupBy::Upstream => r.upstream_id.map(|k| k.to_string()).unwrap_or_default(),
        };
        m.entry((b, g)).or_default().push(r);
    }
    if group == GroupBy::None {
        return buckets.iter().map(|b| sum_point(*b, String::new(), m.get(&(*b, String::new())).map(|v| v.as_slice()).unwrap_or(&[]))).collect();
    }
    m.into_iter().map(|((b, g), rs)| sum_point(b, g, &rs)).collect()
}

/// The rollups equal a GROUP BY over the raw rows, histograms included.
async fn assert_rollups_exact(pool: &PgPool) {
    let raw_user = "SELECT date_trunc('hour', created_at) h, user_id, key_id, channel, COALESCE(served_model, requested_model) m, upstream_id,
        count(*) requests, count(*) FILTER (WHERE status >= 400) errors, sum(input_tokens) i, sum(output_tokens) o,
        sum(cache_write_5m_tokens + cache_write_1h_tokens) cw, sum(cache_read_tokens) cr, sum(cost_micro_usd) c, sum(charge_micros) ch,
        sum(latency_ms) ls, count(ttft_ms) tc, COALESCE(sum(ttft_ms), 0) ts,
        cr_hist(array_agg(cr_ms_bucket(latency_ms))) lh, cr_hist(array_agg(cr_ms_bucket(ttft_ms)) FILTER (WHERE ttft_ms IS NOT NULL)) th
        FROM usage_records GROUP BY 1, 2, 3, 4, 5, 6";
    let roll_user = "SELECT hour, user_id, key_id, channel, model, upstream_id, requests, errors, input_tokens, output_tokens,
        cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros, latency_sum_ms, ttft_count, ttft_sum_ms, latency_hist, ttft_hist FROM usage_hourly";
    let raw_global = "SELECT date_trunc('hour', created_at) h, channel, COALESCE(served_model, requested_model) m, upstream_id,
        count(*) requests, count(*) FILTER (WHERE status >= 400) errors, sum(input_tokens) i, sum(output_tokens) o,
        sum(cache_write_5m_tokens + cache_write_1h_tokens) cw, sum(cache_read_tokens) cr, sum(cost_micro_usd) c, sum(charge_micros) ch,
        sum(latency_ms) ls, count(ttft_ms) tc, COALESCE(sum(ttft_ms), 0) ts,
        cr_hist(array_agg(cr_ms_bucket(latency_ms))) lh, cr_hist(array_agg(cr_ms_bucket(ttft_ms)) FILTER (WHERE ttft_ms IS NOT NULL)) th
        FROM usage_records GROUP BY 1, 2, 3, 4";
    let roll_global = "SELECT hour, channel, model, upstream_id, requests, errors, input_tokens, output_tokens,
        cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros, latency_sum_ms, ttft_count, ttft_sum_ms, latency_hist, ttft_hist FROM usage_hourly_global";
    let raw_daily = "SELECT date_bin('1 day', created_at, TIMESTAMPTZ '2000-01-01 00:00:00+08') d, user_id, key_id,
        count(*) requests, count(*) FILTER (WHERE status >= 400) errors, sum(input_tokens) i, sum(output_tokens) o,
        sum(cache_write_5m_tokens + cache_write_1h_tokens) cw, sum(cache_read_tokens) cr, sum(cost_micro_usd) c, sum(charge_micros) ch
        FROM usage_records GROUP BY 1, 2, 3";
    let roll_daily = "SELECT day, user_id, key_id, requests, errors, input_tokens, output_tokens,
        cache_write_tokens, cache_read_tokens, cost_micro_usd, charge_micros FROM usage_daily_key";
    for (a, b) in [
        (raw_user, roll_user),
        (roll_user, raw_user),
        (raw_global, roll_global),
        (roll_global, raw_global),
        (raw_daily, roll_daily),
        (roll_daily, raw_daily),
    ] {
        let diff: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM (({a}) EXCEPT ({b})) d")).fetch_one(pool).await.unwrap();
        assert_eq!(diff, 0, "rollup differs from raw rows");
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn series_match_raw_rows_for_every_range_group_and_scope(pool: PgPool) {
    let f = fixture(&pool).await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_records").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 600);
    assert_rollups_exact(&pool).await;
    let scopes = [
        Scope { user_id: None, key_id: None },
        Scope { user_id: Some(f.users[0]), key_id: None },
        Scope { user_id: Some(f.users[1]), key_id: None },
        Scope { user_id: Some(f.users[0]), key_id: Some(f.keys[1]) },
        Scope { user_id: None, key_id: Some(f.keys[2]) },
    ];
    for range in [Range::Day, Range::Week, Range::Month, Range::Quarter] {
        for group in [GroupBy::None, GroupBy::Model, GroupBy::Key, GroupBy::Channel, GroupBy::Upstream] {
            for scope in &scopes {
                let got = insights::series(&pool, scope, range, group, now()).await.unwrap();
                assert_eq!(got, expected(&f.recs, scope, range, group, now()), "{range:?} {group:?} {scope:?}");
            }
        }
    }
    // rows older than 90 Shanghai days are outside Quarter
    let q = insights::series(&pool, &Scope::default(), Range::Quarter, GroupBy::None, now()).await.unwrap();
    let total: i64 = q.iter().map(|p| p.requests).sum();
    let in_range = f.recs.iter().filter(|r| r.created_at >= Range::Quarter.bounds(now()).0).count() as i64;
    assert_eq!(total, in_range);
    assert!(in_range < 600 && in_range > 590);
    // upstream stats: requests per upstream, shares add up to 100
    let ups = insights::upstream_stats(&pool, Range::Month, now()).await.unwrap();
    let start = Range::Month.bounds(now()).0;
    for u in &ups {
        let exp = f.recs.iter().filter(|r| r.created_at >= start && r.upstream_id == u.upstream_id).count() as i64;
        let err = f.recs.iter().filter(|r| r.created_at >= start && r.upstream_id == u.upstream_id && r.status >= 400).count() as i64;
        assert_eq!((u.requests, u.errors), (exp, err));
        assert!(u.p50_ms.is_some() && u.p95_ms >= u.p50_ms);
    }
    assert_eq!(ups.len(), 3, "two upstreams and none");
    assert!(f.upstreams.iter().all(|id| ups.iter().any(|u| u.upstream_id == Some(*id))));
    assert!((ups.iter().map(|u| u.share_percent).sum::<f64>() - 100.0).abs() < 1e-9);
    assert!(ups.windows(2).all(|w| w[0].requests >= w[1].requests));
}

#[sqlx::test(migrations = "../../migrations")]
async fn rollups_stay_exact_through_delete_update_and_raw_batches(pool: PgPool) {
    let f = fixture(&pool).await;
    // a raw multi-row INSERT (not the writer) landing in existing rollup rows
    sqlx::query(
        "INSERT INTO usage_records (id, created_at, user_id, key_id, channel, endpoint, requested_model, stream, status, outcome, input_tokens, latency_ms, ttft_ms, cost_micro_usd)
         SELECT 'raw_' || i, $1::timestamptz - (i || ' minutes')::interval, $2, $3, 'smart', 'messages', 'claude-sonnet-4-6', true,
                CASE WHEN i % 4 = 0 THEN 500 ELSE 200 END, 'ok', i, 100 * i, 30 * i, i
         FROM generate_series(1, 300) i",
    )
    .bind(now())
    .bind(f.users[0])
    .bind(f.keys[0])
    .execute(&pool)
    .await
    .unwrap();
    assert_rollups_exact(&pool).await;
    sqlx::query("UPDATE usage_records SET status = 503, latency_ms = latency_ms + 1000, created_at = created_at - interval '3 hours' WHERE id LIKE 'req_001%'")
        .execute(&pool)
        .await
        .unwrap();
    assert_rollups_exact(&pool).await;
    sqlx::query("DELETE FROM usage_records WHERE id LIKE 'raw_1%' OR id LIKE 'req_002%'").execute(&pool).await.unwrap();
    assert_rollups_exact(&pool).await;
    // deleting a customer deletes their usage (0009's trigger) and their rollup rows
    sqlx::query("DELETE FROM users WHERE id = $1").bind(f.users[1]).execute(&pool).await.unwrap();
    assert_rollups_exact(&pool).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_hourly WHERE user_id = $1").bind(f.users[1]).fetch_one(&pool).await.unwrap();
    assert_eq!(left, 0);
    let zero: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM usage_hourly_global WHERE requests = 0) + (SELECT count(*) FROM usage_daily_key WHERE requests = 0)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(zero, 0, "emptied groups are removed");
    // rebuild gives the same
    sqlx::query("SELECT cr_usage_rollup_rebuild()").execute(&pool).await.unwrap();
    assert_rollups_exact(&pool).await;
    sqlx::query("TRUNCATE usage_records").execute(&pool).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT (SELECT count(*) FROM usage_hourly) + (SELECT count(*) FROM usage_hourly_global) + (SELECT count(*) FROM usage_daily_key)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[sqlx::test(migrations = "../../migrations")]
async fn totals_are_exact_for_any_since(pool: PgPool) {
    let f = fixture(&pool).await;
    for u in [None, Some(f.users[0]), Some(f.users[1])] {
        for since in [now() - Duration::hours(24), now() - Duration::minutes(24 * 60 + 17), now() - Duration::days(30) + Duration::seconds(1), now() - Duration::days(400)] {
            let got = insights::totals(&pool, u, since).await.unwrap();
            let rs: Vec<&UsageRecord> = f.recs.iter().filter(|r| r.created_at >= since && u.is_none_or(|u| u == r.user_id)).collect();
            let p = sum_point(since, String::new(), &rs);
            assert_eq!(
                (got.requests, got.errors, got.input_tokens, got.output_tokens, got.cache_tokens, got.cost_micro_usd, got.charge_micros),
                (p.requests, p.errors, p.input_tokens, p.output_tokens, p.cache_write_tokens + p.cache_read_tokens, p.cost_micro_usd, p.charge_micros),
                "{u:?} {since}"
            );
        }
    }
}

#[sqlx::test(migrations = "../../migrations")]
async fn daily_buckets_are_shanghai_days_and_zero_filled(pool: PgPool) {
    let u = user(&pool, "c@example.com").await;
    // 2026-11-19 15:59:59Z is 23:59:59 on the 19th in Shanghai; 16:00:00Z is the 20th
    let a = Utc.with_ymd_and_hms(2026, 11, 19, 15, 59, 59).unwrap();
    let b = Utc.with_ymd_and_hms(2026, 11, 19, 16, 0, 0).unwrap();
    let recs = vec![
        rec("r1", a, u).build(),
        rec("r2", b, u).n(2).build(),
        rec("r3", b + Duration::hours(7), u).status(500).n(3).build(),
    ];
    write(&pool, &recs, 10).await;
    let scope = Scope { user_id: Some(u), key_id: None };
    let w = insights::series(&pool, &scope, Range::Week, GroupBy::None, now()).await.unwrap();
    assert_eq!(w.len(), 7);
    let today = Utc.with_ymd_and_hms(2026, 11, 19, 16, 0, 0).unwrap();
    assert_eq!(w.last().unwrap().bucket, today);
    assert_eq!(w[0].bucket, today - Duration::days(6));
    assert_eq!((w[6].requests, w[6].errors), (2, 1));
    assert_eq!((w[5].bucket, w[5].requests), (today - Duration::days(1), 1));
    assert!(w[..5].iter().all(|p| p.requests == 0 && p.cost_micro_usd.micros() == 0));
    for (range, n) in [(Range::Day, 24), (Range::Month, 30), (Range::Quarter, 90)] {
        let s = insights::series(&pool, &Scope::default(), range, GroupBy::None, now()).await.unwrap();
        assert_eq!(s.len(), n);
        assert!(s.windows(2).all(|p| p[1].bucket - p[0].bucket == if n == 24 { Duration::hours(1) } else { Duration::days(1) }));
        let l = insights::latency(&pool, &Scope::default(), range, now()).await.unwrap();
        assert_eq!(l.len(), n);
        assert_eq!(l.iter().filter(|p| p.p50_ms.is_some()).count(), if n == 24 { 3 } else { 2 }, "{range:?}");
    }
    let d = insights::series(&pool, &Scope::default(), Range::Day, GroupBy::None, now()).await.unwrap();
    assert_eq!(d.last().unwrap().bucket, Utc.with_ymd_and_hms(2026, 11, 20, 5, 0, 0).unwrap());
    assert_eq!(d.iter().map(|p| p.requests).sum::<i64>(), 3, "the last 24 hours start at 06:00Z on the 19th");
    // the empty database's grouped series is empty, ungrouped is zero-filled
    let none = insights::series(&pool, &Scope { user_id: Some(Uuid::new_v4()), key_id: None }, Range::Month, GroupBy::Model, now()).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(Range::parse("24h"), Some(Range::Day));
    assert_eq!(Range::parse("7d"), Some(Range::Week));
    assert_eq!(Range::parse("30d"), Some(Range::Month));
    assert_eq!(Range::parse("90d"), Some(Range::Quarter));
    assert_eq!(Range::parse("1y"), None);
}

#[sqlx::test(migrations = "../../migrations")]
async fn percentiles_from_histogram_are_within_bucket_precision(pool: PgPool) {
    let u = user(&pool, "p@example.com").await;
    let mut g = Lcg(7);
    let mut recs = Vec::new();
    let at = now() - Duration::minutes(10);
    for i in 0..2000 {
        // log-uniform-ish latencies from 3 ms to 400 s
        let lat = (3.0 * (1.0 + g.next(1_000_000) as f64 / 1e6 * 11.8).exp()) as i32;
        let ttft = (i % 4 != 0).then(|| 5 + g.next(5000) as i32);
        recs.push(rec(format!("p{i}"), at, u).model(MODELS[i % 3]).timing(lat, ttft).build());
    }
    write(&pool, &recs, 500).await;
    let exact = |mut v: Vec<i32>, q: f64| {
        v.sort();
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[rank - 1]
    };
    let lats: Vec<i32> = recs.iter().map(|r| r.latency_ms).collect();
    let ttfts: Vec<i32> = recs.iter().filter_map(|r| r.ttft_ms).collect();
    let l = insights::latency(&pool, &Scope { user_id: Some(u), key_id: None }, Range::Day, now()).await.unwrap();
    let p = l.last().unwrap();
    let within = |est: i32, truth: i32| {
        // same bucket as the exact value, and the midpoint within 2^(1/4) (or 5 ms below 10 ms)
        assert_eq!(insights::hist_bucket(truth), insights::hist_bucket(est).min(insights::HIST_BUCKETS - 1), "est {est} truth {truth}");
        if truth >= 10 && truth < 327_680 {
            let r = est as f64 / truth as f64;
            assert!(r <= 2f64.powf(0.25) + 1e-3 && r >= 2f64.powf(-0.25) - 1e-3, "est {est} truth {truth}");
        }
    };
    within(p.p50_ms.unwrap(), exact(lats.clone(), 0.5));
    within(p.p95_ms.unwrap(), exact(lats.clone(), 0.95));
    within(p.ttft_p50_ms.unwrap(), exact(ttfts.clone(), 0.5));
    within(p.ttft_p95_ms.unwrap(), exact(ttfts.clone(), 0.95));
    assert!(l[..23].iter().all(|p| p.p50_ms.is_none() && p.ttft_p95_ms.is_none()));
    // SQL and Rust agree on bucket edges
    for ms in [0, 9, 10, 13, 14, 905, 906, 327_679, 327_680, 2_000_000] {
        let b: i32 = sqlx::query_scalar("SELECT cr_ms_bucket($1)").bind(ms).fetch_one(&pool).await.unwrap();
        assert_eq!(b as usize, insights::hist_bucket(ms), "{ms}");
    }
    assert_eq!(insights::hist_percentile(&[0; 32], 0.5), None);
}

async fn all_pages(pool: &PgPool, f: &LogFilter, size: i64) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    let mut cursor: Option<Cursor> = None;
    loop {
        let (rows, next) = insights::log_page(pool, f, cursor.as_ref(), size).await.unwrap();
        assert!(rows.len() as i64 <= size);
        out.extend(rows);
        match next {
            Some(c) => {
                // the cursor survives a round trip through its text form
                cursor = Some(Cursor::parse(c.as_str()).expect("cursor parses"));
            }
            None => break,
        }
    }
    out
}

#[sqlx::test(migrations = "../../migrations")]
async fn log_pages_return_every_row_once_with_filters(pool: PgPool) {
    let f = fixture(&pool).await;
    // 150 more rows sharing only five created_at values (ties)
    let t0 = now() - Duration::minutes(3);
    let ties: Vec<UsageRecord> = (0..150)
        .map(|i| {
            rec(format!("tie_{:03}", (i * 37) % 150), t0 - Duration::seconds(i as i64 % 5), f.users[0])
                .key(Some(f.keys[0]))
                .model(MODELS[i % 3])
                .status(if i % 6 == 0 { 500 } else { 200 })
                .build()
        })
        .collect();
    write(&pool, &ties, 40).await;
    let mut all = f.recs.clone();
    all.extend(ties);
    let filters = vec![
        LogFilter::default(),
        LogFilter { user_id: Some(f.users[0]), ..Default::default() },
        LogFilter { user_id: Some(f.users[0]), key_id: Some(f.keys[0]), ..Default::default() },
        LogFilter { key_id: Some(f.keys[2]), status: Some(StatusFilter::Error), ..Default::default() },
        LogFilter { user_id: Some(f.users[1]), model: Some(MODELS[0].into()), status: Some(StatusFilter::Ok), ..Default::default() },
        LogFilter { since: Some(now() - Duration::hours(30)), until: Some(t0 - Duration::seconds(2)), ..Default::default() },
        LogFilter { user_id: Some(f.users[0]), model: Some(MODELS[1].into()), since: Some(t0 - Duration::seconds(3)), ..Default::default() },
    ];
    for lf in &filters {
        let mut exp: Vec<&UsageRecord> = all
            .iter()
            .filter(|r| {
                lf.user_id.is_none_or(|u| u == r.user_id)
                    && lf.key_id.is_none_or(|k| Some(k) == r.key_id)
                    && lf.model.as_ref().is_none_or(|m| m == r.served_model.as_ref().unwrap_or(&r.requested_model))
                    && lf.status.is_none_or(|s| (s == StatusFilter::Error) == (r.status >= 400))
                    && lf.since.is_none_or(|s| r.created_at >= s)
                    && lf.until.is_none_or(|u| r.created_at < u)
            })
            .collect();
        exp.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let exp_ids: Vec<&str> = exp.iter().map(|r| r.id.as_str()).collect();
        assert!(!exp_ids.is_empty(), "{lf:?}");
        for size in [1, 7, 50, 1000] {
            if size == 1 && exp_ids.len() > 200 {
                continue;
            }
            let got = all_pages(&pool, lf, size).await;
            let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids, exp_ids, "{lf:?} page size {size}");
            assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "no row twice");
        }
        // the export stream walks the same rows
        let streamed: Vec<String> = insights::log_stream(&pool, lf).map(|r| r.unwrap().id).collect().await;
        assert_eq!(streamed, exp_ids);
    }
    assert!(Cursor::parse("not a cursor!").is_none());
    assert!(Cursor::parse("").is_none());
}

#[sqlx::test(migrations = "../../migrations")]
async fn log_stream_crosses_pages(pool: PgPool) {
    let u = user(&pool, "s@example.com").await;
    sqlx::query(
        "INSERT INTO usage_records (id, created_at, user_id, channel, endpoint, requested_model, stream, status, outcome)
         SELECT 's' || lpad(i::text, 5, '0'), $1::timestamptz - ((i / 3) || ' seconds')::interval, $2, 'smart', 'messages', 'claude-sonnet-4-6', false, 200, 'ok'
         FROM generate_series(1, 2500) i",
    )
    .bind(now())
    .bind(u)
    .execute(&pool)
    .await
    .unwrap();
    let f = LogFilter { user_id: Some(u), ..Default::default() };
    let ids: Vec<String> = insights::log_stream(&pool, &f).map(|r| r.unwrap().id).collect().await;
    assert_eq!(ids.len(), 2500);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 2500);
    let (page, next) = insights::log_page(&pool, &f, None, 5000).await.unwrap();
    assert_eq!(page.len(), 1000, "limit clamped");
    assert!(next.is_some());
    let t = insights::totals(&pool, Some(u), now() - Duration::hours(1)).await.unwrap();
    assert_eq!(t.requests, 2500);
}

#[test]
fn csv_lines_quote_per_rfc4180() {
    let row = UsageRecord {
        id: "req_1".into(),
        created_at: Utc.with_ymd_and_hms(2026, 11, 20, 5, 30, 0).unwrap(),
        user_id: Uuid::nil(),
        key_id: Some(Uuid::nil()),
        channel: "smart".into(),
        endpoint: "messages".into(),
        requested_model: "claude-sonnet-4-6".into(),
        served_model: None,
        upstream_id: None,
        stream: true,
        status: 529,
        error_type: Some("overloaded_error".into()),
        outcome: Outcome::UpstreamError,
        attempts: 2,
        tokens: TokenUsage { input_tokens: 10, output_tokens: 20, cache_write_5m_tokens: 1, cache_write_1h_tokens: 2, cache_read_tokens: 3 },
        server_tools: cloudrouter_core::pricing::ServerToolUse { web_search_requests: 4, web_fetch_requests: 0 },
        cost_micro_usd: MicroUsd::from_micros(1_234),
        charge_micros: MicroCny::from_micros(1_500_000),
        held_micros: MicroCny::from_micros(1_500_000),
        latency_ms: 812,
        ttft_ms: None,
        affinity: false,
        off_plan: false,
    };
    let header = insights::csv_header();
    assert!(header.ends_with("\r\n"));
    let line = insights::csv_line(&row, "prod, \"main\"\nkey", cloudrouter_core::zone::SHANGHAI);
    assert!(line.ends_with("\r\n"));
    assert_eq!(
        line,
        "req_1,2026-11-20T13:30:00.000+08:00,00000000-0000-0000-0000-000000000000,\"prod, \"\"main\"\"\nkey\",smart,messages,claude-sonnet-4-6,,true,529,upstream_error,overloaded_error,2,10,20,1,2,3,4,0,0.001234,1.500000,812,\r\n"
    );
    assert_eq!(header.trim_end().split(',').count(), 24);
    assert_eq!(insights::csv_line(&row, "plain", cloudrouter_core::zone::SHANGHAI).matches(',').count(), 23);
    // a formula-looking key name is neutralised
    assert!(insights::csv_line(&row, "=HYPERLINK(\"x\")", cloudrouter_core::zone::SHANGHAI).contains(",\"'=HYPERLINK(\"\"x\"\")\","));
}

/// Timing harness of `bench/usage_queries.sh` (needs BENCH_DATABASE_URL, a database the script
/// filled). Prints a markdown table: 1 warm-up + 5 runs per query, median and max in ms.
#[tokio::test]
#[ignore]
async fn bench_page_queries() {
    let Ok(url) = std::env::var("BENCH_DATABASE_URL") else {
        eprintln!("BENCH_DATABASE_URL not set");
        return;
    };
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT max(created_at) FROM usage_records").fetch_one(&pool).await.unwrap();
    let users: Vec<(Uuid, i64)> = sqlx::query_as("SELECT user_id, sum(requests)::int8 FROM usage_hourly GROUP BY 1 ORDER BY 2 DESC").fetch_all(&pool).await.unwrap();
    let (heavy, heavy_n) = users[0];
    let (typical, typical_n) = users[users.len() / 2];
    let key: Uuid = sqlx::query_scalar("SELECT key_id FROM usage_hourly WHERE user_id = $1 LIMIT 1").bind(heavy).fetch_one(&pool).await.unwrap();
    println!("| query | median ms | max ms | result rows |");
    println!("|---|---|---|---|");
    macro_rules! time {
        ($name:expr, $e:expr) => {{
            let _ = $e;
            let mut ms = Vec::new();
            let mut n = 0usize;
            for _ in 0..5 {
                let s = std::time::Instant::now();
                n = $e;
                ms.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!("| {} | {:.1} | {:.1} | {} |", $name, ms[2], ms[4], n);
        }};
    }
    let h = Scope { user_id: Some(heavy), key_id: None };
    let ty = Scope { user_id: Some(typical), key_id: None };
    let all = Scope::default();
    for r in [Range::Day, Range::Week, Range::Month, Range::Quarter] {
        time!(format!("series heavy customer ({heavy_n} records) {}", r.as_str()), insights::series(&pool, &h, r, GroupBy::None, now).await.unwrap().len());
    }
    time!("series heavy customer 90d by model", insights::series(&pool, &h, Range::Quarter, GroupBy::Model, now).await.unwrap().len());
    time!("series heavy customer 90d by key", insights::series(&pool, &h, Range::Quarter, GroupBy::Key, now).await.unwrap().len());
    time!("series heavy customer 30d one key", insights::series(&pool, &Scope { user_id: Some(heavy), key_id: Some(key) }, Range::Month, GroupBy::None, now).await.unwrap().len());
    time!(format!("series typical customer ({typical_n} records) 30d"), insights::series(&pool, &ty, Range::Month, GroupBy::None, now).await.unwrap().len());
    for r in [Range::Day, Range::Week, Range::Month, Range::Quarter] {
        time!(format!("series all customers {}", r.as_str()), insights::series(&pool, &all, r, GroupBy::None, now).await.unwrap().len());
    }
    time!("series all customers 90d by model", insights::series(&pool, &all, Range::Quarter, GroupBy::Model, now).await.unwrap().len());
    time!("series all customers 90d by channel", insights::series(&pool, &all, Range::Quarter, GroupBy::Channel, now).await.unwrap().len());
    for r in [Range::Day, Range::Month, Range::Quarter] {
        time!(format!("series all customers {} by key", r.as_str()), insights::series(&pool, &all, r, GroupBy::Key, now).await.unwrap().len());
    }
    time!("latency heavy customer 24h", insights::latency(&pool, &h, Range::Day, now).await.unwrap().len());
    time!("latency heavy customer 30d", insights::latency(&pool, &h, Range::Month, now).await.unwrap().len());
    time!("latency heavy customer 90d", insights::latency(&pool, &h, Range::Quarter, now).await.unwrap().len());
    time!("latency all customers 30d", insights::latency(&pool, &all, Range::Month, now).await.unwrap().len());
    time!("latency all customers 90d", insights::latency(&pool, &all, Range::Quarter, now).await.unwrap().len());
    time!("upstream stats 24h", insights::upstream_stats(&pool, Range::Day, now).await.unwrap().len());
    time!("upstream stats 90d", insights::upstream_stats(&pool, Range::Quarter, now).await.unwrap().len());
    let mid = now - Duration::days(30) + Duration::minutes(17);
    time!("totals heavy customer since 30d (partial hour)", { insights::totals(&pool, Some(heavy), mid).await.unwrap(); 1 });
    time!("totals all customers since 30d (partial hour)", { insights::totals(&pool, None, mid).await.unwrap(); 1 });
    let lf = LogFilter { user_id: Some(heavy), ..Default::default() };
    time!("log first page heavy customer (50)", insights::log_page(&pool, &lf, None, 50).await.unwrap().0.len());
    let (_, c1) = insights::log_page(&pool, &lf, None, 50).await.unwrap();
    let (_, c2) = insights::log_page(&pool, &lf, c1.as_ref(), 50).await.unwrap();
    time!("log third page via cursor (50)", insights::log_page(&pool, &lf, c2.as_ref(), 50).await.unwrap().0.len());
    let lf2 = LogFilter { user_id: Some(heavy), model: Some("claude-opus-4-8".into()), status: Some(StatusFilter::Error), since: Some(now - Duration::days(7)), ..Default::default() };
    time!("log filtered page (model + errors + 7d, 50)", insights::log_page(&pool, &lf2, None, 50).await.unwrap().0.len());
    let lf3 = LogFilter { key_id: Some(key), status: Some(StatusFilter::Ok), ..Default::default() };
    time!("log filtered page (key + ok, 50)", insights::log_page(&pool, &lf3, None, 50).await.unwrap().0.len());
    time!("log first page all customers (50)", insights::log_page(&pool, &LogFilter::default(), None, 50).await.unwrap().0.len());
    let lf4 = LogFilter { user_id: Some(typical), since: Some(now - Duration::days(1)), ..Default::default() };
    time!("CSV export typical customer last 24h (stream + format)", {
        let mut n = 0usize;
        let mut s = Box::pin(insights::log_stream(&pool, &lf4));
        while let Some(r) = s.next().await {
            n += insights::csv_line(&r.unwrap(), "key", cloudrouter_core::zone::SHANGHAI).len().min(1);
        }
        n
    });
}

/// Every row of usage_records and which partition holds it.
async fn partitions_of(pool: &PgPool) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>("SELECT id, tableoid::regclass::text FROM usage_records").fetch_all(pool).await.unwrap().into_iter().collect()
}

/// The three rollups, as text: equal before and after means not one figure changed.
async fn rollups(pool: &PgPool) -> Vec<String> {
    let mut all = vec![];
    for table in ["usage_hourly", "usage_hourly_global", "usage_daily_key"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t ORDER BY 1")).fetch_all(pool).await.unwrap();
        assert!(!rows.is_empty(), "{table} has rows");
        all.extend(rows);
    }
    all
}

/// usage_records is partitioned by UTC month (migration 0020): a record lands in its month's
/// partition, one whose month has no partition yet waits in the default one and moves into its
/// month when maintenance creates it, and retention drops whole months past the limit while the
/// rollups (charts, totals) keep every figure.
#[sqlx::test(migrations = "../../migrations")]
async fn usage_records_are_kept_by_month_and_retention_keeps_the_rollups(pool: PgPool) {
    use chrono::Datelike;
    let u = user(&pool, "old@example.com").await;
    let today = Utc::now();
    let month_name = |at: DateTime<Utc>| format!("usage_records_{:04}m{:02}", at.year(), at.month());
    let ago = |days: i64| today - Duration::days(days);
    let recs: Vec<UsageRecord> = [("now", 0), ("two-months", 62), ("fourteen-months", 430), ("twenty-months", 610)]
        .iter()
        .flat_map(|(name, days)| (0..3).map(move |i| rec(format!("{name}-{i}"), ago(*days) - Duration::minutes(i), u).n(i + 1).build()))
        .collect();
    write(&pool, &recs, 5).await;
    let before = partitions_of(&pool).await;
    assert_eq!(before["now-0"], month_name(today), "this month's partition exists from the migration on");
    assert_eq!(before["fourteen-months-0"], "usage_records_default", "an old month waits in the default partition");
    assert_rollups_exact(&pool).await;
    let figures = rollups(&pool).await;

    // keeping everything: the months of the waiting rows are created and the rows move in
    let dropped = cloudrouter_core::usage::partitions::maintain(&pool, 0).await.unwrap();
    assert!(dropped.is_empty(), "{dropped:?}");
    let moved = partitions_of(&pool).await;
    for r in &recs {
        assert_eq!(moved[&r.id], month_name(r.created_at), "{} is in its month", r.id);
    }
    assert_rollups_exact(&pool).await;
    assert_eq!(rollups(&pool).await, figures, "moving rows between partitions changes no rollup");

    // 13 months kept: the fourteen- and twenty-month-old months go, the rollups stay
    let mut dropped = cloudrouter_core::usage::partitions::maintain(&pool, 13).await.unwrap();
    dropped.sort();
    let mut expected = vec![month_name(ago(610)), month_name(ago(430))];
    expected.sort();
    assert_eq!(dropped, expected);
    let kept = partitions_of(&pool).await;
    assert_eq!(kept.len(), 6, "{kept:?}");
    assert!(kept.keys().all(|id| id.starts_with("now") || id.starts_with("two-months")), "{kept:?}");
    assert_eq!(rollups(&pool).await, figures, "retention changes no rollup");
    assert!(cloudrouter_core::usage::partitions::maintain(&pool, 13).await.unwrap().is_empty(), "a second run has nothing to do");

    // the writer still stores and charges a record once: a duplicate of a kept one is skipped
    write(&pool, &recs[..1], 5).await;
    assert_eq!(partitions_of(&pool).await.len(), 6);
}
