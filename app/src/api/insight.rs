//! Usage charts for the console: spend, tokens, requests and latency over a range, by model, key
//! or channel — for one customer, or (staff) for everyone and per upstream.

use crate::components::chart::{BarChartData, LineChartData};
#[cfg(feature = "ssr")]
use crate::components::chart::{Bar, Segment};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChartsView {
    pub range: String,
    pub by: String,
    pub spend: BarChartData,
    pub tokens: BarChartData,
    pub requests: BarChartData,
    pub latency: LineChartData,
    /// Cache reads ÷ input tokens of every kind over the range ("42.0%", or "—").
    pub cache_read_share: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamLine {
    pub name: String,
    pub requests: i64,
    pub success: String,
    pub share: String,
    pub p50: String,
    pub p95: String,
    pub cache_read_share: String,
}

/// Money staff must see: requests charged above their hold, and balances below zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MoneyWatch {
    pub overages: Vec<OverageLine>,
    pub debts: Vec<DebtLine>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverageLine {
    pub request_id: String,
    pub at: String,
    pub user_id: String,
    pub email: String,
    pub model: String,
    pub held: String,
    pub charged: String,
    pub above: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DebtLine {
    pub user_id: String,
    pub email: String,
    pub balance: String,
}

#[cfg(feature = "ssr")]
mod build {
    use super::*;
    use crate::ssr::{cny, usd};
    use cloudrouter_core::money::{MicroCny, MicroUsd};
    use chrono::{DateTime, Utc};
    use cloudrouter_core::insights::{GroupBy, LatencyPoint, Range, SeriesPoint};
    use std::collections::BTreeMap;

    pub fn range_days(r: &Range) -> &'static str {
        crate::i18n::t(match r {
            Range::Day => "the last 24 hours",
            Range::Week => "the last 7 days",
            Range::Month => "the last 30 days",
            Range::Quarter => "the last 90 days",
        })
    }

    pub fn label(r: &Range, t: DateTime<Utc>) -> String {
        let local = t.with_timezone(&crate::ssr::zone());
        match r {
            Range::Day => local.format("%H:00").to_string(),
            _ => local.format("%m-%d").to_string(),
        }
    }

    /// Every bucket of the range in time order (empty ones too), the groups in name order (so a
    /// group has the same colour in every chart), and each bucket's value per group.
    pub fn pivot(
        buckets: &[DateTime<Utc>],
        points: &[SeriesPoint],
        value: impl Fn(&SeriesPoint) -> i64,
        group_name: &dyn Fn(&str) -> String,
    ) -> (Vec<String>, BTreeMap<DateTime<Utc>, BTreeMap<String, i64>>) {
        let mut by_bucket: BTreeMap<DateTime<Utc>, BTreeMap<String, i64>> = buckets.iter().map(|b| (*b, BTreeMap::new())).collect();
        let mut groups = std::collections::BTreeSet::new();
        for p in points {
            let g = group_name(&p.group);
            *by_bucket.entry(p.bucket).or_default().entry(g.clone()).or_default() += value(p);
            groups.insert(g);
        }
        (groups.into_iter().collect(), by_bucket)
    }

    pub fn bars(
        title: &str,
        range: &Range,
        buckets: &[DateTime<Utc>],
        points: &[SeriesPoint],
        value: impl Fn(&SeriesPoint) -> i64,
        fmt: impl Fn(i64) -> String,
        group_name: &dyn Fn(&str) -> String,
    ) -> BarChartData {
        let (groups, mut values) = pivot(buckets, points, value, group_name);
        // The legend names only series with something to draw (a model whose requests all
        // failed spent nothing, and is not in the spend chart).
        let groups: Vec<String> = groups.into_iter().filter(|g| values.values().any(|row| row.get(g).is_some_and(|v| *v != 0))).collect();
        for row in values.values_mut() {
            row.retain(|g, _| groups.contains(g));
        }
        let total: i64 = values.values().flat_map(|m| m.values()).sum();
        BarChartData {
            title: title.to_string(),
            summary: crate::i18n::tf("{} in {}", &[&fmt(total), &range_days(range)]),
            bars: values
                .iter()
                .map(|(b, row)| {
                    Bar {
                        label: label(range, *b),
                        total_display: fmt(row.values().sum()),
                        segments: groups
                            .iter()
                            .enumerate()
                            .filter_map(|(i, g)| row.get(g).map(|v| Segment { series: i, value: *v, display: fmt(*v) }))
                            .collect(),
                    }
                })
                .collect(),
            legend: groups,
            colors: vec![],
        }
    }

    pub fn requests(range: &Range, buckets: &[DateTime<Utc>], points: &[SeriesPoint]) -> BarChartData {
        let mut by_bucket: BTreeMap<DateTime<Utc>, (i64, i64)> = buckets.iter().map(|b| (*b, (0, 0))).collect();
        for p in points {
            let e = by_bucket.entry(p.bucket).or_default();
            e.0 += p.requests;
            e.1 += p.errors;
        }
        let (req, err) = by_bucket.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        let rate = if req > 0 {
            crate::i18n::tf("{}% errors", &[&format!("{:.1}", err as f64 * 100.0 / req as f64)])
        } else {
            crate::i18n::t("no requests").to_string()
        };
        BarChartData {
            title: crate::i18n::t("Requests and errors").into(),
            summary: crate::i18n::tf("{} requests, {}, in {}", &[&req, &rate, &range_days(range)]),
            legend: if err > 0 { vec![crate::i18n::t("Succeeded").into(), crate::i18n::t("Failed").into()] } else { vec![crate::i18n::t("Succeeded").into()] },
            bars: by_bucket
                .iter()
                .map(|(b, (r, e))| Bar {
                    label: label(range, *b),
                    total_display: crate::i18n::tf("{} requests, {} failed", &[r, e]),
                    segments: vec![
                        Segment { series: 0, value: r - e, display: (r - e).to_string() },
                        Segment { series: 1, value: *e, display: e.to_string() },
                    ],
                })
                .collect(),
            // successes indigo, failures red
            colors: vec!["#6366f1".into(), "#ef4444".into()],
        }
    }

    pub fn latency(range: &Range, points: &[LatencyPoint]) -> LineChartData {
        let pick = |f: fn(&LatencyPoint) -> Option<i32>| points.iter().map(|p| f(p).map(i64::from)).collect::<Vec<_>>();
        let worst = points.iter().filter_map(|p| p.p95_ms).max();
        LineChartData {
            title: crate::i18n::t("Latency and time to first token").into(),
            summary: worst
                .map(|w| crate::i18n::tf("p95 at most {} ms in {}", &[&w, &range_days(range)]))
                .unwrap_or_else(|| crate::i18n::t("no requests").to_string()),
            legend: vec![crate::i18n::t("Latency p50").into(), crate::i18n::t("Latency p95").into(), crate::i18n::t("First token p50").into(), crate::i18n::t("First token p95").into()],
            labels: points.iter().map(|p| label(range, p.bucket)).collect(),
            series: vec![pick(|p| p.p50_ms), pick(|p| p.p95_ms), pick(|p| p.ttft_p50_ms), pick(|p| p.ttft_p95_ms)],
            unit: "ms".into(),
        }
    }

    pub fn group_by(by: &str) -> GroupBy {
        match by {
            "model" => GroupBy::Model,
            "key" => GroupBy::Key,
            "channel" => GroupBy::Channel,
            _ => GroupBy::None,
        }
    }

    pub fn charts(
        range: Range,
        range_code: &str,
        by: &str,
        points: &[SeriesPoint],
        lat: &[LatencyPoint],
        names: &dyn Fn(&str) -> String,
    ) -> ChartsView {
        // The latency series has every bucket of the range, with or without traffic.
        let buckets: Vec<DateTime<Utc>> = lat.iter().map(|p| p.bucket).collect();
        let read: i64 = points.iter().map(|p| p.cache_read_tokens).sum();
        let input: i64 = points.iter().map(|p| p.input_tokens + p.cache_write_tokens + p.cache_read_tokens).sum();
        ChartsView {
            cache_read_share: super::percent(cloudrouter_core::insights::cache_read_share(read, input)),
            range: range_code.to_string(),
            by: by.to_string(),
            spend: bars(crate::i18n::t("Spend"), &range, &buckets, points, |p| p.charge_micros.micros(), |v| cny(MicroCny::from_micros(v)), names),
            tokens: bars(
                crate::i18n::t("Tokens"),
                &range,
                &buckets,
                points,
                |p| p.input_tokens + p.output_tokens + p.cache_write_tokens + p.cache_read_tokens,
                |v| v.to_string(),
                names,
            ),
            requests: requests(&range, &buckets, points),
            latency: latency(&range, lat),
        }
        .with_list_price(points, &range)
    }

    impl ChartsView {
        /// The spend summary also says what it was worth at list price.
        fn with_list_price(mut self, points: &[SeriesPoint], range: &Range) -> Self {
            let cost: MicroUsd = points.iter().map(|p| p.cost_micro_usd).sum();
            let charge: MicroCny = points.iter().map(|p| p.charge_micros).sum();
            self.spend.summary = crate::i18n::tf("{} ({} at list price) in {}", &[&cny(charge), &usd(cost), &range_days(range)]);
            self
        }
    }
}

/// `range`: 24h | 7d | 30d | 90d; `by`: none | model | key | channel. `everyone` is for staff.
#[server(endpoint = "usage/charts")]
pub async fn usage_charts(range: String, by: String, everyone: bool) -> Result<ChartsView, ServerFnError> {
    use cloudrouter_core::{insights, keys};
    use crate::ssr::internal;
    let user = if everyone { crate::ssr::require_staff().await? } else { crate::ssr::require_user().await? };
    let pool = crate::ssr::pool()?;
    let r = insights::Range::parse(&range).unwrap_or(insights::Range::Month);
    let range_code = if insights::Range::parse(&range).is_some() { range.clone() } else { "30d".into() };
    let scope = insights::Scope { user_id: (!everyone).then_some(user.id), key_id: None };
    let now = chrono::Utc::now();
    let tz = crate::ssr::zone();
    let points = insights::series_in(&pool, &scope, r, build::group_by(&by), now, tz).await.map_err(internal)?;
    let lat = insights::latency_in(&pool, &scope, r, now, tz).await.map_err(internal)?;
    let key_names: std::collections::HashMap<String, String> = if by == "key" && !everyone {
        keys::list(&pool, user.id).await.map_err(internal)?.into_iter().map(|k| (k.id.to_string(), k.name)).collect()
    } else {
        Default::default()
    };
    let names = |g: &str| -> String {
        if g.is_empty() {
            crate::i18n::t("All").into()
        } else {
            // Channel codes read as the channels' names; model ids stay as they are.
            key_names.get(g).cloned().unwrap_or_else(|| crate::i18n::label(g))
        }
    };
    Ok(build::charts(r, &range_code, &by, &points, &lat, &names))
}

#[cfg(feature = "ssr")]
fn percent(share: Option<f64>) -> String {
    share.map(|s| format!("{:.1}%", s * 100.0)).unwrap_or_else(|| "—".into())
}

/// The upstream table of the Operations page: one line per upstream that served requests in the
/// range, and how many requests the gateway answered itself (a customer's 4xx such as 402 or
/// 404, or 529 when no upstream was available): those are no upstream's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpstreamTable {
    pub lines: Vec<UpstreamLine>,
    pub unrouted: i64,
}

#[server(endpoint = "admin/operations")]
pub async fn upstream_lines(range: String) -> Result<UpstreamTable, ServerFnError> {
    use cloudrouter_core::{insights, upstreams};
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let r = insights::Range::parse(&range).unwrap_or(insights::Range::Day);
    let names: std::collections::HashMap<_, _> = upstreams::list(&pool)
        .await
        .map_err(crate::ssr::internal)?
        .into_iter()
        .map(|u| (u.id, crate::api::admin::upstream_name(&u.name, u.is_demo)))
        .collect();
    let stats = insights::upstream_stats(&pool, r, chrono::Utc::now()).await.map_err(crate::ssr::internal)?;
    let ms = |v: Option<i32>| v.map(|v| format!("{v} ms")).unwrap_or_else(|| "—".into());
    let unrouted = stats.iter().filter(|s| s.upstream_id.is_none()).map(|s| s.requests).sum();
    let lines = stats
        .into_iter()
        .filter_map(|s| {
            let id = s.upstream_id?;
            Some(UpstreamLine {
                name: names.get(&id).cloned().unwrap_or_else(|| id.to_string()),
                requests: s.requests,
                success: if s.requests > 0 { format!("{:.1}%", (s.requests - s.errors) as f64 * 100.0 / s.requests as f64) } else { "—".into() },
                share: format!("{:.1}%", s.share_percent),
                p50: ms(s.p50_ms),
                p95: ms(s.p95_ms),
                cache_read_share: percent(s.cache_read_share),
            })
        })
        .collect();
    Ok(UpstreamTable { lines, unrouted })
}

/// One day of business on the Operations page (amounts in yuan to two decimals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BusinessLine {
    pub day: String,
    pub topups: i64,
    pub topup_amount: String,
    pub revenue: String,
    pub signups: i64,
}

/// Top-ups, revenue and sign-ups per day of the reader's zone, newest first, over the calendar
/// days the range touches (24 hours: yesterday and today), then their total.
#[server(endpoint = "admin/business")]
pub async fn business_days(range: String) -> Result<(Vec<BusinessLine>, BusinessLine), ServerFnError> {
    use cloudrouter_core::{insights, money::MicroCny, zone};
    crate::ssr::require_staff().await?;
    let (now, tz) = (chrono::Utc::now(), crate::ssr::zone());
    let r = insights::Range::parse(&range).unwrap_or(insights::Range::Day);
    let first = zone::date_of(r.bounds_in(now, tz).0, tz);
    let days = insights::business_days(&crate::ssr::pool()?, first, now, tz).await.map_err(crate::ssr::internal)?;
    let cny2 = crate::ssr::cny2;
    let sum = |f: fn(&insights::BusinessDay) -> MicroCny| days.iter().map(f).fold(MicroCny::ZERO, |a, b| a + b);
    let total = BusinessLine {
        day: crate::i18n::t("Total").into(),
        topups: days.iter().map(|d| d.topups).sum(),
        topup_amount: cny2(sum(|d| d.topup_micros)),
        revenue: cny2(sum(|d| d.revenue_micros)),
        signups: days.iter().map(|d| d.signups).sum(),
    };
    let lines = days
        .iter()
        .map(|d| BusinessLine {
            day: crate::ssr::day_label(d.day),
            topups: d.topups,
            topup_amount: cny2(d.topup_micros),
            revenue: cny2(d.revenue_micros),
            signups: d.signups,
        })
        .collect();
    Ok((lines, total))
}

/// How sign-up and reset mail is going (the last day), for the Operations page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MailWatch {
    pub sent: i64,
    pub waiting: i64,
    pub given_up: i64,
    /// The latest mails that failed at least once.
    pub troubles: Vec<MailTrouble>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MailTrouble {
    pub at: String,
    pub kind: String,
    pub to: String,
    pub attempts: i32,
    pub error: String,
    pub given_up: bool,
}

#[server(endpoint = "admin/mail_health")]
pub async fn mail_health() -> Result<MailWatch, ServerFnError> {
    crate::ssr::require_staff().await?;
    let h = cloudrouter_core::mail::health(&crate::ssr::pool()?).await.map_err(crate::ssr::internal)?;
    Ok(MailWatch {
        sent: h.sent,
        waiting: h.waiting,
        given_up: h.given_up,
        troubles: h
            .troubles
            .into_iter()
            .map(|m| MailTrouble {
                at: m.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                kind: m.kind,
                to: m.to_addr,
                attempts: m.attempts,
                error: m.last_error,
                given_up: m.given_up,
            })
            .collect(),
    })
}

#[server(endpoint = "admin/money_exceptions")]
pub async fn money_exceptions() -> Result<MoneyWatch, ServerFnError> {
    use cloudrouter_core::insights;
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let overages = insights::recent_overages(&pool, 50).await.map_err(crate::ssr::internal)?;
    let debts = insights::debts(&pool).await.map_err(crate::ssr::internal)?;
    Ok(MoneyWatch {
        overages: overages
            .into_iter()
            .map(|o| OverageLine {
                request_id: o.request_id,
                at: o.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                user_id: o.user_id.to_string(),
                email: o.email,
                model: o.served_model.unwrap_or_default(),
                held: o.held_micros.exact(),
                charged: o.charge_micros.exact(),
                above: (o.charge_micros - o.held_micros).exact(),
            })
            .collect(),
        debts: debts
            .into_iter()
            .map(|d| DebtLine { user_id: d.user_id.to_string(), email: d.email, balance: d.balance_micros.exact() })
            .collect(),
    })
}
