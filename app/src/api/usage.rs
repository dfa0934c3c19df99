//! What a customer spends: overview figures, the usage log, and the balance with its ledger.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OverviewData {
    pub base_url: String,
    pub balance: String,
    pub held: String,
    /// Plan allowance left this cycle (list-price dollars), if subscribed.
    pub allowance_left: Option<String>,
    /// Unexpired trial credit, if any.
    pub trial: Option<String>,
    pub active_keys: usize,
    pub requests_24h: i64,
    pub errors_24h: i64,
    pub spend_24h: String,
    pub spend_30d: String,
    /// The exact amounts of the figures above, for their tooltips.
    pub balance_exact: String,
    pub spend_24h_exact: String,
    pub spend_30d_exact: String,
    /// True while the only upstream is the built-in simulated Claude.
    pub demo: bool,
    /// Sandbox payments are on: balance can be had for test money.
    pub sandbox_payments: bool,
    /// The plan's 5-hour and weekly windows, when it has any.
    pub windows: Option<PlanWindows>,
}

/// A plan's usage windows as the Overview shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanWindows {
    pub lines: Vec<WindowLine>,
    /// Past a cap, requests go on pay-as-you-go (else they are refused until it resets).
    pub overflow_payg: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowLine {
    /// "5-hour window" / "Weekly window", translated
    pub name: String,
    /// "$0.02 of $0.06 used"
    pub used: String,
    pub percent: u32,
    /// "resets 30 Nov 18:40" in the reader's zone, or that it opens with the next request
    pub resets: String,
}

#[server(endpoint = "overview")]
pub async fn overview() -> Result<OverviewData, ServerFnError> {
    use crate::ssr::{cny, cny2, internal};
    use cloudrouter_core::billing::ledger;
    use cloudrouter_core::{insights, keys, upstreams};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let pool = &state.pool;
    let now = chrono::Utc::now();
    let balance = ledger::balance_info(pool, user.id).await.map_err(internal)?;
    let funds = cloudrouter_core::billing::funds(pool, user.id, now).await.map_err(internal)?;
    let subscribed = cloudrouter_core::billing::subscriptions::current(pool, user.id, now).await.map_err(internal)?.is_some();
    let day = insights::totals(pool, Some(user.id), now - chrono::Duration::hours(24)).await.map_err(internal)?;
    let month = insights::totals(pool, Some(user.id), now - chrono::Duration::days(30)).await.map_err(internal)?;
    let keys = keys::list(pool, user.id).await.map_err(internal)?;
    let ups = upstreams::list(pool).await.map_err(internal)?;
    Ok(OverviewData {
        base_url: state.public_base_url.clone(),
        balance: cny2(balance.balance_micros),
        balance_exact: balance.balance_micros.exact(),
        held: cny2(balance.held_micros),
        allowance_left: subscribed.then(|| crate::ssr::usd(funds.allowance_left_micro_usd)),
        trial: funds.trial_micros.is_positive().then(|| cny(funds.trial_micros)),
        active_keys: keys.iter().filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|t| t > now)).count(),
        requests_24h: day.requests,
        errors_24h: day.errors,
        spend_24h: cny2(day.charge_micros),
        spend_30d: cny2(month.charge_micros),
        spend_24h_exact: day.charge_micros.exact(),
        spend_30d_exact: month.charge_micros.exact(),
        demo: ups.iter().any(|u| u.enabled) && ups.iter().filter(|u| u.enabled).all(|u| u.is_demo),
        sandbox_payments: state.payments.sandbox().is_some(),
        windows: plan_windows(pool, &user).await?,
    })
}

#[cfg(feature = "ssr")]
async fn plan_windows(pool: &sqlx::PgPool, user: &cloudrouter_core::accounts::User) -> Result<Option<PlanWindows>, ServerFnError> {
    use crate::i18n::{t, tf};
    use cloudrouter_core::billing::windows::{self, Window};
    let Some(st) = windows::status(pool, user.id).await.map_err(crate::ssr::internal)? else { return Ok(None) };
    let zone = crate::ssr::zone_for(user);
    let lines = st
        .windows
        .iter()
        .map(|w| WindowLine {
            name: match w.window {
                Window::FiveHours => t("5-hour window"),
                Window::Week => t("Weekly window"),
            }
            .to_string(),
            used: tf("{} of {} used", &[&crate::ssr::usd(w.used), &crate::ssr::usd(w.cap)]),
            percent: (w.used.micros().saturating_mul(100) / w.cap.micros().max(1)).clamp(0, 100) as u32,
            resets: match w.resets_at {
                Some(r) => tf("resets {}", &[&crate::ssr::when_in(r, zone)]),
                None => t("opens with your next request").to_string(),
            },
        })
        .collect();
    Ok(Some(PlanWindows { lines, overflow_payg: st.overflow_payg }))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageLine {
    pub time: String,
    pub key: String,
    pub requested_model: String,
    pub served_model: String,
    pub fallback: bool,
    pub channel: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_write_tokens: i64,
    pub cache_read_tokens: i64,
    pub cost_usd: String,
    pub charge: String,
    pub status: i32,
    pub outcome: String,
    /// The answer in words, in the reader's language: "200 OK", "402 insufficient balance",
    /// "404 unknown model gpt-4o", "529 no upstream available".
    pub status_text: String,
    /// The status was an error (4xx/5xx).
    pub failed: bool,
    /// The `request-id` of the answer, as the customer quotes it to support.
    pub request_id: String,
    pub latency_ms: i32,
    pub ttft_ms: Option<i32>,
}

/// A request's answer in words (see [`UsageLine::status_text`]).
#[cfg(feature = "ssr")]
pub fn status_text(status: i32, error_type: Option<&str>, outcome: &str, requested_model: &str) -> String {
    use crate::i18n::{label, t, tf};
    let words = match (status, error_type) {
        (s, _) if s < 400 && outcome == "ok" => t("OK").to_string(),
        (s, _) if s < 400 => label(outcome),
        (400, _) => t("invalid request").into(),
        (401, _) => t("invalid API key").into(),
        (402, _) => t("insufficient balance").into(),
        (403, _) => t("not allowed for this key").into(),
        (404, _) => tf("unknown model {}", &[&requested_model]),
        (413, _) => t("request too large").into(),
        (429, _) => t("rate limited").into(),
        (529, _) | (503, _) => t("no upstream available").into(),
        (_, Some("overloaded_error")) => t("Claude overloaded").into(),
        _ => label(outcome),
    };
    format!("{status} {words}")
}

/// The usage log's filter, as it travels in the page's query string.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogQuery {
    pub key: String,
    pub model: String,
    /// "", "ok" or "error".
    pub status: String,
    /// Calendar dates in the caller's time zone, "YYYY-MM-DD", inclusive.
    pub from: String,
    pub to: String,
    /// One request by the `request-id` its answer carried.
    pub request_id: String,
    pub cursor: String,
}

impl LogQuery {
    /// The query string for this filter (without the cursor), for links and the CSV export.
    pub fn to_query(&self) -> String {
        [("key", &self.key), ("model", &self.model), ("status", &self.status), ("from", &self.from), ("to", &self.to), ("request_id", &self.request_id)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// A query-string value, percent-encoded.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogPage {
    pub rows: Vec<UsageLine>,
    pub next_cursor: Option<String>,
    /// (id, name) of the customer's keys, for the filter.
    pub keys: Vec<(String, String)>,
}

#[cfg(feature = "ssr")]
pub mod log_filter {
    use super::LogQuery;
    use cloudrouter_core::zone::Tz;
    use leptos::prelude::ServerFnError;

    /// The moment day `d` starts in `tz` (the zone the log shows its times in).
    fn day_start(d: &str, tz: Tz, next: bool) -> Result<Option<chrono::DateTime<chrono::Utc>>, ServerFnError> {
        if d.trim().is_empty() {
            return Ok(None);
        }
        let date = crate::ssr::parse_day(d).ok_or_else(|| ServerFnError::new(crate::i18n::t("Dates are YYYY-MM-DD.")))?;
        let date = if next { date.succ_opt().unwrap_or(date) } else { date };
        Ok(Some(cloudrouter_core::zone::day_start(date, tz)))
    }

    /// The core filter for a customer (or for staff, with `user_id` None); dates are `tz`'s days.
    pub fn build(q: &LogQuery, user_id: Option<uuid::Uuid>, tz: Tz) -> Result<cloudrouter_core::insights::LogFilter, ServerFnError> {
        use cloudrouter_core::insights::{LogFilter, StatusFilter};
        let key_id = match q.key.trim() {
            "" => None,
            k => Some(crate::ssr::parse_uuid(k, "No such key.")?),
        };
        let status = match q.status.as_str() {
            "ok" => Some(StatusFilter::Ok),
            "error" => Some(StatusFilter::Error),
            _ => None,
        };
        let request_id = q.request_id.trim();
        if request_id.len() > 128 {
            return Err(ServerFnError::new(crate::i18n::t("That is not a request id.")));
        }
        Ok(LogFilter {
            user_id,
            key_id,
            model: Some(q.model.trim().to_string()).filter(|m| !m.is_empty()),
            status,
            since: day_start(&q.from, tz, false)?,
            until: day_start(&q.to, tz, true)?,
            request_id: Some(request_id.to_string()).filter(|r| !r.is_empty()),
        })
    }
}

#[cfg(feature = "ssr")]
pub fn usage_line(r: cloudrouter_core::usage::UsageRecord, key_name: String) -> UsageLine {
    use crate::ssr::{cny, usd, when};
    let served = r.served_model.clone().unwrap_or_default();
    // A model name the gateway could not record as asked reads "(unknown)" in the reader's language.
    let requested_model = if r.requested_model == "(unknown)" { crate::i18n::t("(unknown)").to_string() } else { r.requested_model.clone() };
    let status_text = status_text(r.status, r.error_type.as_deref(), r.outcome.as_str(), &requested_model);
    UsageLine {
        status_text,
        time: when(r.created_at),
        key: key_name,
        fallback: !served.is_empty() && served != r.requested_model,
        requested_model,
        served_model: served,
        channel: r.channel,
        input_tokens: r.tokens.input_tokens,
        output_tokens: r.tokens.output_tokens,
        cache_write_tokens: r.tokens.cache_write_5m_tokens + r.tokens.cache_write_1h_tokens,
        cache_read_tokens: r.tokens.cache_read_tokens,
        cost_usd: usd(r.cost_micro_usd),
        charge: cny(r.charge_micros),
        failed: r.status >= 400,
        request_id: r.id.clone(),
        status: r.status,
        outcome: r.outcome.to_string(),
        latency_ms: r.latency_ms,
        ttft_ms: r.ttft_ms,
    }
}

#[server(endpoint = "usage/log")]
pub async fn usage_log(q: LogQuery) -> Result<LogPage, ServerFnError> {
    use cloudrouter_core::{insights, keys};
    use crate::ssr::internal;
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let key_list = keys::list(&pool, user.id).await.map_err(internal)?;
    let names: std::collections::HashMap<_, _> = key_list.iter().map(|k| (k.id, k.name.clone())).collect();
    // Staff looking up a request id search everyone's requests; customers only ever their own.
    let everyone = user.acts_as_staff() && !q.request_id.trim().is_empty();
    let filter = log_filter::build(&q, (!everyone).then_some(user.id), crate::ssr::zone())?;
    let cursor = match q.cursor.trim() {
        "" => None,
        c => Some(insights::Cursor::parse(c).ok_or_else(|| ServerFnError::new(crate::i18n::t("That page link is no longer valid; start from the first page.")))?),
    };
    let (rows, next) = insights::log_page(&pool, &filter, cursor.as_ref(), 50).await.map_err(internal)?;
    Ok(LogPage {
        rows: rows
            .into_iter()
            .map(|r| {
                let name = r.key_id.and_then(|id| names.get(&id).cloned()).unwrap_or_else(|| "—".into());
                usage_line(r, name)
            })
            .collect(),
        next_cursor: next.map(|c| c.to_string()),
        keys: key_list.into_iter().map(|k| (k.id.to_string(), k.name)).collect(),
    })
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerLine {
    pub time: String,
    /// Codes: the kind ("usage", "refund") and where the money is ("wallet", "trial", "allowance").
    pub kind: String,
    pub source: String,
    pub amount: String,
    pub balance_after: String,
    /// Exact amounts (all six decimals), for tooltips.
    pub amount_exact: String,
    pub balance_exact: String,
    /// A plan allowance row: list-price dollars, shown in its own column, never under ¥.
    pub usd: bool,
    /// A plan paid from outside (Alipay, WeChat Pay, a transfer…), in the reader's words: `amount`
    /// is what was paid, and the balance did not change.
    pub paid_with: Option<String>,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BillingData {
    pub balance: String,
    pub balance_exact: String,
    pub held: String,
    pub available: String,
    pub entries: Vec<LedgerLine>,
}

/// The ledger as a person reads it. The books write a plan paid from outside as two rows, the
/// payment credited and the purchase taking it (every balance change is a row); read as two lines,
/// they show a balance the customer never had. Here the pair is one line: the plan, what was
/// paid and how, and the balance as it stayed.
#[cfg(feature = "ssr")]
pub fn ledger_lines(entries: Vec<cloudrouter_core::billing::ledger::LedgerEntry>) -> Vec<LedgerLine> {
    use cloudrouter_core::billing::ledger::Memo;
    let mut lines = Vec::with_capacity(entries.len());
    // newest first: a purchase comes just before the payment it took, in the same transaction
    let mut rows = entries.into_iter().peekable();
    while let Some(e) = rows.next() {
        let paid_with = match (&e.memo, rows.peek().and_then(|p| p.memo.as_ref())) {
            (Some(Memo::Subscription { order, .. } | Memo::Renewal { order, .. }), Some(Memo::Payment { order: paid, method })) if order == paid => {
                Some(*method)
            }
            _ => None,
        };
        if paid_with.is_some() {
            rows.next();
        }
        lines.push(ledger_line(e, paid_with));
    }
    lines
}

#[cfg(feature = "ssr")]
fn ledger_line(e: cloudrouter_core::billing::ledger::LedgerEntry, paid_with: Option<cloudrouter_core::billing::orders::PaymentMethod>) -> LedgerLine {
    use crate::ssr::when;
    use cloudrouter_core::billing::ledger::Amount;
    // what an outside payment paid: the purchase row's debit, as a price
    let amount = match (paid_with, e.amount) {
        (Some(_), Amount::Cny(debit)) => Amount::Cny(-debit),
        (_, a) => a,
    };
    LedgerLine {
        time: when(e.created_at),
        // plan allowance rows count list-price dollars, the others yuan
        amount: amount.short(),
        balance_after: e.balance_after.glance(),
        amount_exact: amount.exact(),
        balance_exact: e.balance_after.exact(),
        usd: amount.is_usd(),
        paid_with: paid_with.map(|m| crate::i18n::label(m.as_str())),
        note: crate::core_words::memo(&e),
        kind: e.kind.to_string(),
        source: e.source.to_string(),
    }
}

#[cfg(feature = "ssr")]
pub async fn billing_for(user_id: uuid::Uuid) -> Result<BillingData, ServerFnError> {
    use crate::ssr::{cny2, internal};
    use cloudrouter_core::billing::ledger;
    let pool = crate::ssr::pool()?;
    let info = ledger::balance_info(&pool, user_id).await.map_err(internal)?;
    let entries = ledger::entries(&pool, user_id, 200).await.map_err(internal)?;
    Ok(BillingData {
        balance: cny2(info.balance_micros),
        balance_exact: info.balance_micros.exact(),
        held: cny2(info.held_micros),
        available: cny2(info.available_micros),
        entries: ledger_lines(entries),
    })
}

#[server(endpoint = "billing")]
pub async fn billing() -> Result<BillingData, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    billing_for(user.id).await
}

#[cfg(all(test, feature = "ssr"))]
mod tests {
    use super::ledger_lines;
    use cloudrouter_core::billing::ledger::{Amount, FundingSource, LedgerEntry, LedgerKind, Memo};
    use cloudrouter_core::billing::orders::PaymentMethod;
    use cloudrouter_core::money::MicroCny;

    fn row(id: i64, kind: LedgerKind, memo: Memo, amount: i64, after: i64) -> LedgerEntry {
        LedgerEntry {
            id,
            user_id: uuid::Uuid::nil(),
            amount: Amount::Cny(MicroCny::units(amount)),
            balance_after: Amount::Cny(MicroCny::units(after)),
            kind,
            source: FundingSource::Wallet,
            note: memo.english(amount > 0),
            memo: Some(memo),
            actor_id: None,
            request_count: 0,
            created_at: chrono::Utc::now(),
        }
    }

    /// A plan paid from outside is one line with the price and the balance as it stayed; a plan
    /// paid from the balance, and a payment whose purchase is not beside it, stay as they are.
    #[test]
    fn a_plan_paid_from_outside_is_one_line() {
        leptos::prelude::Owner::new().with(|| {
            let paid = |order: &str| Memo::Payment { order: order.into(), method: PaymentMethod::Alipay };
            let plan = |order: &str| Memo::Subscription { plan: "Pro".into(), order: order.into() };
            // newest first, as the ledger reads
            let lines = ledger_lines(vec![
                row(5, LedgerKind::Purchase, plan("CR-B"), -399, 1),
                row(4, LedgerKind::Purchase, plan("CR-A"), -399, 400),
                row(3, LedgerKind::Credit, paid("CR-A"), 399, 799),
                row(2, LedgerKind::Credit, paid("CR-C"), 399, 400),
                row(1, LedgerKind::Credit, Memo::Staff { text: None }, 1, 1),
            ]);
            let shown: Vec<_> = lines.iter().map(|l| (l.amount.as_str(), l.balance_after.as_str(), l.paid_with.as_deref())).collect();
            assert_eq!(
                shown,
                [
                    ("-¥399.00", "¥1.00", None),
                    ("¥399.00", "¥400.00", Some("Alipay")),
                    ("¥399.00", "¥400.00", None),
                    ("¥1.00", "¥1.00", None),
                ]
            );
            assert_eq!(lines[1].note, "Pro plan subscription (order CR-A)");
        });
    }
}
