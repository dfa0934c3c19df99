use crate::api::insight::usage_charts;
use crate::api::billing::SetPlanOverflow;
use crate::api::usage::{overview, OverviewData, PlanWindows};
use crate::components::form::{successes, ActionError};
use crate::components::chart::BarChart;
use crate::components::loaded::Loaded;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Overview() -> impl IntoView {
    let overflow = ServerAction::<SetPlanOverflow>::new();
    let changed = successes(overflow.value());
    let data = Resource::new(move || changed.get(), |_| overview());
    let month = Resource::new(|| (), |_| usage_charts("30d".into(), "none".into(), false));
    view! {
        <Title text=t("Overview") />
        <h1 class="page-title">{t("Overview")}</h1>
        <Loaded resource=data let:o>
            <OverviewBody o overflow />
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
fn OverviewBody(o: OverviewData, overflow: ServerAction<SetPlanOverflow>) -> impl IntoView {
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
        {o.windows.clone().map(|w| view! { <Windows w overflow /> })}
        <section class="card mt-6 flex flex-wrap items-center justify-between gap-3">
            <div>
                <h2 class="section-title">{t("Get started")}</h2>
                <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{tf("Point the Anthropic SDK or Claude Code at {} with a CloudRouter key.", &[&o.base_url])}</p>
            </div>
            <a class="btn-primary" href="/console/quickstart">{t("Quick start")}</a>
        </section>
    }
}

/// The plan's 5-hour and weekly windows: how much of each cap is used, when it resets, and what
/// happens past a cap (the customer's choice, a plain form that works without JavaScript).
#[component]
fn Windows(w: PlanWindows, overflow: ServerAction<SetPlanOverflow>) -> impl IntoView {
    let on = w.overflow_payg;
    view! {
        <section class="card mt-6" data-testid="plan-windows">
            <h2 class="section-title">{t("Plan usage windows")}</h2>
            <p class="muted mt-1 text-sm">{t("Your plan's allowance pays for at most this much list-price usage in each window. A window opens with your first request after the last one closed.")}</p>
            <ul class="mt-3 space-y-3">
                {w.lines.into_iter().map(|l| view! {
                    <li data-testid="plan-window">
                        <div class="flex flex-wrap justify-between gap-2 text-sm">
                            <span class="font-medium">{l.name}</span>
                            <span class="tabular-nums">{l.used}</span>
                            <span class="text-slate-500" data-testid="plan-window-resets">{l.resets}</span>
                        </div>
                        <div class="mt-1 h-2 rounded bg-slate-200 dark:bg-slate-700" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=l.percent>
                            <div class="h-2 rounded bg-sky-600" style=format!("width: {}%", l.percent)></div>
                        </div>
                    </li>
                }).collect_view()}
            </ul>
            <p class="mt-4 text-sm" data-testid="plan-overflow">
                {if on {
                    t("Past a cap: requests go on at pay-as-you-go prices, paid from trial credit and your balance.")
                } else {
                    t("Past a cap: requests are refused (429) until the window resets. Your balance is not used.")
                }}
            </p>
            <ActionForm action=overflow attr:class="mt-2">
                <input type="hidden" name="on" value=if on { "false" } else { "true" } />
                <button type="submit" class="btn-ghost" data-testid="plan-overflow-toggle">
                    {if on { t("Stop at the cap instead") } else { t("Continue pay-as-you-go past a cap") }}
                </button>
                <ActionError value=overflow.value() />
            </ActionForm>
        </section>
    }
}
