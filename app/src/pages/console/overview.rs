use crate::api::insight::usage_charts;
use crate::api::usage::{overview, OverviewData};
use crate::components::chart::BarChart;
use crate::components::loaded::Loaded;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Overview() -> impl IntoView {
    let data = Resource::new(|| (), |_| overview());
    let month = Resource::new(|| (), |_| usage_charts("30d".into(), "none".into(), false));
    view! {
        <Title text=t("Overview") />
        <h1 class="page-title">{t("Overview")}</h1>
        <Loaded resource=data let:o>
            <OverviewBody o />
        </Loaded>
        <div class="mt-6">
            <Loaded resource=month let:c>
                <BarChart data=c.spend testid="overview-spend" />
            </Loaded>
        </div>
    }
}

#[component]
fn Stat(
    label: &'static str,
    value: String,
    #[prop(optional)] sub: Option<String>,
    #[prop(optional)] testid: &'static str,
    /// The exact amount, shown on hover.
    #[prop(optional)] exact: Option<String>,
) -> impl IntoView {
    view! {
        <div class="card">
            <p class="text-sm text-slate-500">{label}</p>
            <p class="mt-1 text-2xl font-semibold tabular-nums" data-testid=testid title=exact>{value}</p>
            {sub.map(|s| view! { <p class="mt-1 text-xs text-slate-500">{s}</p> })}
        </div>
    }
}

#[component]
fn OverviewBody(o: OverviewData) -> impl IntoView {
    let error_rate = if o.requests_24h > 0 { tf("{}% errors", &[&format!("{:.1}", o.errors_24h as f64 * 100.0 / o.requests_24h as f64)]) } else { t("no requests yet").into() };
    view! {
        {o.demo.then(|| view! {
            <div class="alert-ok mt-4" role="note" data-testid="demo-notice">
                <strong>{t("Demo mode. ")}</strong>
                {t("Requests are answered by CloudRouter's built-in simulated Claude, not by Anthropic. Staff switch to real Claude by adding an upstream with its base URL and credential.")}
            </div>
        })}
        {o.sandbox_payments.then(|| view! {
            <div class="alert-ok mt-4" role="note" data-testid="sandbox-notice">
                <strong>{t("Sandbox payments are on: test money, demo only. ")}</strong>
                {t("Top-ups and plans can be paid in the sandbox without real money. It is for trying CloudRouter out; a deployment for real customers runs without it.")}
            </div>
        })}
        <div class="mt-6 grid gap-4 sm:grid-cols-2 lg:grid-cols-4">
            <Stat label=t("Plan allowance left") value=o.allowance_left.clone().unwrap_or_else(|| t("No plan").into())
                sub=if o.allowance_left.is_some() { t("list-price usage this cycle, drawn first").to_string() } else { t("pay-as-you-go from your balance").to_string() } testid="allowance" />
            <Stat label=t("Balance") value=o.balance.clone() exact=o.balance_exact.clone()
                sub=tf("{} held by requests in flight{}", &[&o.held, &o.trial.clone().map(|c| tf(" · {} trial credit", &[&c])).unwrap_or_default()]) testid="balance" />
            <Stat label=t("Spend, last 24 hours") value=o.spend_24h.clone() exact=o.spend_24h_exact.clone() sub=tf("{} in the last 30 days", &[&o.spend_30d]) testid="spend-24h" />
            <Stat label=t("Requests, last 24 hours") value=o.requests_24h.to_string() sub=tf("{} · {} active keys", &[&error_rate, &o.active_keys]) />

        </div>
        <section class="card mt-6 flex flex-wrap items-center justify-between gap-3">
            <div>
                <h2 class="section-title">{t("Get started")}</h2>
                <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{tf("Point the Anthropic SDK or Claude Code at {} with a CloudRouter key.", &[&o.base_url])}</p>
            </div>
            <a class="btn-primary" href="/console/quickstart">{t("Quick start")}</a>
        </section>
    }
}
