//! The public status page (no sign-in): the headline, each channel's last 90 days as bars and
//! its last 24 hours in figures, the open incidents and those resolved lately. How the figures
//! are measured: docs/status.md; the same data as JSON: `/status.json`.

use crate::api::status::{public_status, ChannelView, IncidentView};
use crate::components::loaded::Loaded;
use crate::i18n::t;
use leptos::prelude::*;
use leptos_meta::Title;

/// Colours by condition ("operational", "degraded", "major_outage").
fn banner_class(condition: &str) -> &'static str {
    match condition {
        "operational" => "border-emerald-300 bg-emerald-50 text-emerald-900 dark:border-emerald-800 dark:bg-emerald-950 dark:text-emerald-100",
        "degraded" => "border-amber-300 bg-amber-50 text-amber-900 dark:border-amber-800 dark:bg-amber-950 dark:text-amber-100",
        _ => "border-red-300 bg-red-50 text-red-900 dark:border-red-800 dark:bg-red-950 dark:text-red-100",
    }
}

fn dot_class(condition: &str) -> &'static str {
    match condition {
        "operational" => "bg-emerald-500",
        "degraded" => "bg-amber-500",
        _ => "bg-red-600",
    }
}

/// A day's bar by level (see `DayView::level`).
fn bar_class(level: &str) -> &'static str {
    match level {
        "good" => "bg-emerald-500",
        "fair" => "bg-lime-400",
        "poor" => "bg-amber-500",
        "bad" => "bg-red-600",
        _ => "bg-slate-200 dark:bg-slate-700",
    }
}

#[component]
pub fn StatusPage() -> impl IntoView {
    let status = Resource::new(|| (), |_| public_status());
    view! {
        <Title text=t("Status") />
        <section class="mx-auto max-w-4xl px-4 py-10">
            <h1 class="page-title">{t("CloudRouter status")}</h1>
            <Loaded resource=status let:s>
                <p data-testid="status-headline" data-condition=s.condition.clone() class=format!("mt-6 rounded-lg border px-4 py-4 text-lg font-semibold {}", banner_class(&s.condition))>
                    {s.headline}
                </p>
                {(!s.open.is_empty()).then(|| view! {
                    <h2 class="section-title mt-8">{t("Current incidents")}</h2>
                    <div class="mt-3 space-y-3">{s.open.into_iter().map(|i| view! { <IncidentCard i /> }).collect_view()}</div>
                })}
                <h2 class="section-title mt-8">{t("Channels")}</h2>
                <div class="mt-3 space-y-4">{s.channels.into_iter().map(|c| view! { <ChannelCard c /> }).collect_view()}</div>
                <Legend />
                <h2 class="section-title mt-10">{t("Past incidents")}</h2>
                <p class="muted mt-1 text-sm">{t("Resolved in the last 14 days.")}</p>
                {if s.resolved.is_empty() {
                    view! { <p class="mt-3 text-sm text-slate-500" data-testid="no-past-incidents">{t("No incidents in the last 14 days.")}</p> }.into_any()
                } else {
                    view! { <div class="mt-3 space-y-3">{s.resolved.into_iter().map(|i| view! { <IncidentCard i /> }).collect_view()}</div> }.into_any()
                }}
                <HowWeMeasure updated=s.updated />
            </Loaded>
        </section>
    }
}

#[component]
fn ChannelCard(c: ChannelView) -> impl IntoView {
    // phones show the last 30 days, wider screens all 90
    let recent_from = c.days.len().saturating_sub(30);
    view! {
        <div class="card" data-testid="status-channel" data-channel=c.code.clone()>
            <div class="flex flex-wrap items-center justify-between gap-2">
                <h3 class="font-semibold">{c.name}</h3>
                <span class="flex items-center gap-2 text-sm" data-testid="channel-condition">
                    <span class=format!("inline-block h-2.5 w-2.5 rounded-full {}", dot_class(&c.condition)) aria-hidden="true"></span>
                    {c.condition_text}
                </span>
            </div>
            <div class="mt-4 flex h-9 gap-px" role="list" aria-label=t("Daily availability")>
                {c.days.into_iter().enumerate().map(|(n, d)| {
                    let shown = if n < recent_from { "hidden sm:block" } else { "block" };
                    view! {
                        <div role="listitem" title=d.label.clone() aria-label=d.label data-level=d.level.clone()
                            class=format!("{shown} min-w-0 flex-1 rounded-sm {}", bar_class(&d.level))></div>
                    }
                }).collect_view()}
            </div>
            <div class="mt-1 flex justify-between text-xs text-slate-500">
                <span class="hidden sm:inline">{t("90 days ago")}</span>
                <span class="sm:hidden">{t("30 days ago")}</span>
                <span>{t("90 days:")}" "<span class="tabular-nums" data-testid="availability-90d">{c.availability_90d}</span></span>
                <span>{t("Today")}</span>
            </div>
            <dl class="mt-4 grid grid-cols-1 gap-3 text-sm sm:grid-cols-3">
                <div>
                    <dt class="text-slate-500">{t("Availability, last 24 hours")}</dt>
                    <dd class="text-lg font-semibold tabular-nums" data-testid="availability-24h">{c.availability_24h}</dd>
                </div>
                <div>
                    <dt class="text-slate-500">{t("Median latency, last 24 hours")}</dt>
                    <dd class="text-lg font-semibold tabular-nums" data-testid="latency-24h">{c.latency_24h}</dd>
                </div>
                <div>
                    <dt class="text-slate-500">{t("Median time to first token, last 24 hours")}</dt>
                    <dd class="text-lg font-semibold tabular-nums">{c.ttft_24h}</dd>
                </div>
            </dl>
        </div>
    }
}

#[component]
pub fn IncidentCard(i: IncidentView) -> impl IntoView {
    view! {
        <article class="card" data-testid="incident" data-status=i.status.clone()>
            <div class="flex flex-wrap items-baseline justify-between gap-2">
                <h3 class="font-semibold">{i.title}</h3>
                <span class="badge">{i.status_text}</span>
            </div>
            <p class="mt-1 text-xs text-slate-500">
                {i.impact_text}
                {(!i.channels.is_empty()).then(|| view! { " · "{t("Channels:")}" "{i.channels} })}
                " · "{t("Started")}" "{i.started}
                {i.resolved.map(|r| view! { " · "{t("Resolved")}" "{r} })}
            </p>
            <ol class="mt-3 space-y-2 border-l border-slate-200 pl-3 text-sm dark:border-slate-700">
                {i.updates.into_iter().map(|u| view! {
                    <li>
                        <span class="font-medium">{u.status_text}</span>" — "
                        <span class="whitespace-pre-line break-words">{u.message}</span>
                        <span class="block text-xs text-slate-500">{u.at}</span>
                    </li>
                }).collect_view()}
            </ol>
        </article>
    }
}

#[component]
fn Legend() -> impl IntoView {
    let item = |level: &'static str, text: &'static str| {
        view! {
            <span class="flex items-center gap-1">
                <span class=format!("inline-block h-3 w-3 rounded-sm {}", bar_class(level)) aria-hidden="true"></span>{t(text)}
            </span>
        }
    };
    view! {
        <p class="mt-3 flex flex-wrap gap-x-4 gap-y-1 text-xs text-slate-500">
            {item("good", "99.9% or more")}
            {item("fair", "99% to 99.9%")}
            {item("poor", "95% to 99%")}
            {item("bad", "below 95%")}
            {item("none", "no data")}
        </p>
    }
}

#[component]
fn HowWeMeasure(updated: String) -> impl IntoView {
    view! {
        <section class="mt-10 text-sm text-slate-600 dark:text-slate-400">
            <h2 class="section-title">{t("How we measure")}</h2>
            <p class="mt-2">{t("Availability is the share of requests that succeeded, among all requests except those refused for the customer's own reasons (an invalid request or key, insufficient balance, the key's own rate or concurrency limits). A request fails when it ends in a server error, a timeout, an overload, a rate limit of the whole upstream pool, or an answer that breaks off. A day with no such requests shows as no data.")}</p>
            <p class="mt-2">{t("Latency is the median time from receiving a request to its last byte, over requests answered in full; time to first token is the same for streamed answers. Both are measured in buckets of about ±19%. Days are China Standard Time (UTC+8); the 24 hours are the current hour and the 23 before it.")}</p>
            <p class="mt-2">
                {t("The same data as JSON: ")}<a class="link" href="/status.json">"/status.json"</a>
                " · "{t("Updated")}" "{updated}
            </p>
        </section>
    }
}
