//! Staff: alerts (open first, then the latest resolved, and how their delivery goes), top-ups,
//! revenue and sign-ups per day, usage across all customers, each upstream's share of traffic,
//! success and latency, and the money to watch: requests charged above their hold and balances
//! below zero.

use crate::api::alerts::staff_alerts;
use crate::api::insight::{business_days, BusinessLine, mail_health, money_exceptions, upstream_lines, usage_charts};
use crate::components::loaded::Loaded;
use crate::pages::console::usage::{ChartGrid, Tabs, RANGES};
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

const GROUPS: [(&str, &str); 3] = [("channel", "By channel"), ("model", "By model"), ("none", "Total")];

#[component]
pub fn Operations() -> impl IntoView {
    let query = use_query_map();
    let get = move |k: &str, d: &str| query.with(|q| q.get(k).filter(|v| !v.is_empty()).unwrap_or_else(|| d.to_string()));
    let range = move || get("range", "24h");
    let by = move || get("by", "channel");
    let charts = Resource::new(move || (range(), by()), |(r, b)| usage_charts(r, b, true));
    let upstreams = Resource::new(range, upstream_lines);
    let business = Resource::new(range, business_days);
    let money = Resource::new(|| (), |_| money_exceptions());
    let mail = Resource::new(|| (), |_| mail_health());
    let alerts = Resource::new(|| (), |_| staff_alerts());
    view! {
        <Title text=t("Operations") />
        <h1 class="page-title">{t("Operations")}</h1>
        <div class="mt-4 flex flex-wrap gap-3">
            <Tabs param="range" name=t("Time range") options=&RANGES current=range() base="/console/admin/operations".into() keep=vec![("by".into(), by())] />
            <Tabs param="by" name=t("Group by") options=&GROUPS current=by() base="/console/admin/operations".into() keep=vec![("range".into(), range())] />
        </div>
        <h2 class="section-title mt-6">{t("Alerts")}</h2>
        <p class="muted mt-1 text-sm">{t("Each alert is sent once when it opens and once when its condition has stayed gone for a while, by mail and to the alert webhook.")}</p>
        <Loaded resource=alerts let:a>
            <p class="mt-3 text-sm" data-testid="ops-alert-delivery">
                {tf("Delivery: {} waiting · {} retrying · {} given up", &[&a.waiting, &a.retrying, &a.given_up])}
                {a.last_error.map(|e| view! { <span class="muted text-xs">" — "{e}</span> })}
            </p>
            <div class="card mt-3 overflow-x-auto p-0">
                <table class="table">
                    <thead><tr><th>{t("Status")}</th><th>{t("Alert")}</th><th>{t("Subject")}</th><th>{t("Opened")}</th><th>{t("Resolved")}</th><th>{t("Detail")}</th></tr></thead>
                    <tbody>
                        {a.alerts.is_empty().then(|| view! { <tr><td colspan="6" class="muted">{t("None")}</td></tr> })}
                        {a.alerts.into_iter().map(|l| view! {
                            <tr data-testid="ops-alert" data-open=l.open.to_string()>
                                <td>{if l.open { view! { <span class="badge">{t("open")}</span> }.into_any() } else { view! { <span class="muted">{t("resolved")}</span> }.into_any() }}</td>
                                <td>{l.what}</td>
                                <td>{l.subject}</td>
                                <td class="whitespace-nowrap">{l.opened}</td>
                                <td class="whitespace-nowrap">{l.resolved}</td>
                                <td class="text-xs">{l.detail}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </Loaded>
        <h2 class="section-title mt-8">{t("Business per day")}</h2>
        <p class="muted mt-1 text-sm">{t("Revenue is the money received for paid orders: top-ups, and plans paid by Alipay, WeChat Pay, bank transfer or the sandbox (a plan paid from the balance was counted when the balance was topped up).")}</p>
        <Loaded resource=business let:b>
            <div class="card mt-3 overflow-x-auto p-0">
                <table class="table">
                    <thead><tr><th>{t("Day")}</th><th class="text-right">{t("Top-ups")}</th><th class="text-right">{t("Topped up")}</th><th class="text-right">{t("Revenue")}</th><th class="text-right">{t("New sign-ups")}</th></tr></thead>
                    <tbody>
                        {b.0.into_iter().map(|d| view! { <BusinessRow d testid="ops-day" /> }).collect_view()}
                        <BusinessRow d=b.1 testid="ops-total" />
                    </tbody>
                </table>
            </div>
        </Loaded>
        <h2 class="section-title mt-8">{t("Upstreams")}</h2>
        <Loaded resource=upstreams let:table>
            <div class="card mt-3 overflow-x-auto p-0">
                <table class="table">
                    <thead><tr><th>{t("Upstream")}</th><th class="text-right">{t("Requests")}</th><th class="text-right">{t("Share")}</th><th class="text-right">{t("Success")}</th><th class="text-right">"p50"</th><th class="text-right">"p95"</th><th class="text-right">{t("Cache reads")}</th></tr></thead>
                    <tbody>
                        {table.lines.into_iter().map(|u| view! {
                            <tr data-testid="ops-upstream">
                                <td>{u.name}</td>
                                <td class="text-right tabular-nums">{u.requests}</td>
                                <td class="text-right tabular-nums">{u.share}</td>
                                <td class="text-right tabular-nums">{u.success}</td>
                                <td class="text-right tabular-nums">{u.p50}</td>
                                <td class="text-right tabular-nums">{u.p95}</td>
                                <td class="text-right tabular-nums" title=t("Cache read tokens ÷ input tokens of every kind")>{u.cache_read_share}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            {(table.unrouted > 0).then(|| view! {
                <p class="muted mt-2 text-sm" data-testid="ops-unrouted">
                    {tf("Not in this table: {} requests the gateway answered itself, before any upstream (a customer's own error such as 402 insufficient balance or 404 unknown model, or 529 when no upstream was available). The request log shows each.", &[&table.unrouted])}
                </p>
            })}
        </Loaded>
        <h2 class="section-title mt-8">{t("Charges above the hold")}</h2>
        <p class="muted mt-1 text-sm">{t("Requests whose usage cost more than was held before forwarding (documents or images fetched by URL, server tools). They are charged in full; only they can take a balance below zero.")}</p>
        <Loaded resource=money let:m>
            <div class="card mt-3 overflow-x-auto p-0">
                <table class="table">
                    <thead><tr><th>{t("Time")}</th><th>{t("Customer")}</th><th>{t("Request")}</th><th>{t("Model")}</th><th class="text-right">{t("Held")}</th><th class="text-right">{t("Charged")}</th><th class="text-right">{t("Above the hold")}</th></tr></thead>
                    <tbody>
                        {m.overages.is_empty().then(|| view! { <tr><td colspan="7" class="muted">{t("None")}</td></tr> })}
                        {m.overages.into_iter().map(|o| view! {
                            <tr data-testid="ops-overage">
                                <td class="whitespace-nowrap">{o.at}</td>
                                <td><a class="link" href=format!("/console/admin/users/{}", o.user_id)>{o.email}</a></td>
                                <td class="font-mono text-xs">{o.request_id}</td>
                                <td>{o.model}</td>
                                <td class="text-right tabular-nums">{o.held}</td>
                                <td class="text-right tabular-nums">{o.charged}</td>
                                <td class="text-right tabular-nums">{o.above}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
            <h3 class="mt-6 font-semibold">{t("Balances below zero")}</h3>
            <div class="card mt-3 overflow-x-auto p-0">
                <table class="table">
                    <thead><tr><th>{t("Customer")}</th><th class="text-right">{t("Balance")}</th></tr></thead>
                    <tbody>
                        {m.debts.is_empty().then(|| view! { <tr><td colspan="2" class="muted">{t("None")}</td></tr> })}
                        {m.debts.into_iter().map(|d| view! {
                            <tr data-testid="ops-debt">
                                <td><a class="link" href=format!("/console/admin/users/{}", d.user_id)>{d.email}</a></td>
                                <td class="text-right tabular-nums">{d.balance}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </Loaded>
        <h2 class="section-title mt-8">{t("Mail")}</h2>
        <p class="muted mt-1 text-sm">{t("Sign-up confirmations, password resets and notices in the last day. A mail that fails is retried for about two hours, then given up.")}</p>
        <Loaded resource=mail let:m>
            <p class="mt-3 text-sm" data-testid="ops-mail">
                {tf("{} sent · {} waiting · {} given up", &[&m.sent, &m.waiting, &m.given_up])}
            </p>
            {(!m.troubles.is_empty()).then(|| view! {
                <div class="card mt-3 overflow-x-auto p-0">
                    <table class="table">
                        <thead><tr><th>{t("Time")}</th><th>{t("Mail")}</th><th>{t("To")}</th><th class="text-right">{t("Attempts")}</th><th>{t("Last error")}</th></tr></thead>
                        <tbody>
                            {m.troubles.into_iter().map(|f| view! {
                                <tr data-testid="ops-mail-trouble">
                                    <td class="whitespace-nowrap">{f.at}</td>
                                    <td>{f.kind}</td>
                                    <td>{f.to}</td>
                                    <td class="text-right tabular-nums">{f.attempts}{f.given_up.then(|| t(" (given up)"))}</td>
                                    <td class="text-xs">{f.error}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            })}
        </Loaded>
        <h2 class="section-title mt-8">{t("All customers")}</h2>
        <Loaded resource=charts let:c>
            <ChartGrid c />
        </Loaded>
    }
}

#[component]
fn BusinessRow(d: BusinessLine, testid: &'static str) -> impl IntoView {
    view! {
        <tr data-testid=testid class=(testid == "ops-total").then_some("font-semibold")>
            <td class="whitespace-nowrap" data-testid="ops-day-label">{d.day}</td>
            <td class="text-right tabular-nums" data-testid="ops-day-topups">{d.topups}</td>
            <td class="text-right tabular-nums" data-testid="ops-day-topped-up">{d.topup_amount}</td>
            <td class="text-right tabular-nums" data-testid="ops-day-revenue">{d.revenue}</td>
            <td class="text-right tabular-nums" data-testid="ops-day-signups">{d.signups}</td>
        </tr>
    }
}
