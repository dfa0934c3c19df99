//! Usage: charts over a range (by model, key or channel), then the request log with filters,
//! cursor pages and CSV export of the same filter. Everything is driven by the query string, so
//! links and the back button work, with or without JavaScript.

use crate::api::insight::{usage_charts, ChartsView};
use crate::api::usage::{usage_log, LogPage, LogQuery};
use crate::components::chart::{BarChart, LineChart};
use crate::components::loaded::Loaded;
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

pub const RANGES: [(&str, &str); 4] = [("24h", "24 hours"), ("7d", "7 days"), ("30d", "30 days"), ("90d", "90 days")];
pub const GROUPS: [(&str, &str); 4] = [("none", "Total"), ("model", "By model"), ("key", "By key"), ("channel", "By channel")];

/// Links that switch one query parameter and keep the others; `name` is what screen readers call them.
#[component]
pub fn Tabs(
    param: &'static str,
    name: &'static str,
    options: &'static [(&'static str, &'static str)],
    current: String,
    base: String,
    keep: Vec<(String, String)>,
) -> impl IntoView {
    view! {
        <nav class="inline-flex flex-wrap gap-1 rounded-lg border border-slate-200 p-1 text-sm dark:border-slate-800" aria-label=name>
            {options.iter().map(|(code, label)| {
                let mut q: Vec<String> = keep.iter().filter(|(k, _)| k != param).map(|(k, v)| format!("{k}={v}")).collect();
                q.push(format!("{param}={code}"));
                let active = current == *code;
                view! {
                    <a href=format!("{base}?{}", q.join("&")) aria-current=active.then_some("page")
                        class="rounded-md px-3 py-1 text-slate-600 hover:bg-slate-100 aria-[current=page]:bg-indigo-600 aria-[current=page]:text-white dark:text-slate-300 dark:hover:bg-slate-800">
                        {t(label)}
                    </a>
                }
            }).collect_view()}
        </nav>
    }
}

#[component]
pub fn ChartGrid(c: ChartsView) -> impl IntoView {
    view! {
        <p class="muted mt-3 text-sm" data-testid="cache-read-share">
            {tf("Prompt cache: {} of input tokens were read from the cache in this range (a cache read costs a tenth of an input token).", &[&c.cache_read_share])}
        </p>
        <div class="mt-4 grid gap-4 xl:grid-cols-2">
            <BarChart data=c.spend testid="chart-spend" />
            <BarChart data=c.tokens testid="chart-tokens" />
            <BarChart data=c.requests testid="chart-requests" />
            <LineChart data=c.latency testid="chart-latency" />
        </div>
    }
}

#[component]
pub fn Usage() -> impl IntoView {
    let query = use_query_map();
    let get = move |k: &str, d: &str| query.with(|q| q.get(k).filter(|v| !v.is_empty()).unwrap_or_else(|| d.to_string()));
    let range = move || get("range", "30d");
    let by = move || get("by", "model");
    let log_query = move || LogQuery {
        key: get("key", ""),
        model: get("model", ""),
        status: get("status", ""),
        from: get("from", ""),
        to: get("to", ""),
        request_id: get("request_id", ""),
        cursor: get("cursor", ""),
    };
    let charts = Resource::new(move || (range(), by()), |(r, b)| usage_charts(r, b, false));
    let log = Resource::new(log_query, usage_log);
    view! {
        <Title text=t("Usage") />
        <h1 class="page-title">{t("Usage")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
            {t("Metered from Anthropic's own usage figures. A failed request costs nothing; a stream cut short costs only what was delivered.")}
        </p>
        <div class="mt-4 flex flex-wrap gap-3">
            <Tabs param="range" name=t("Time range") options=&RANGES current=range() base="/console/usage".into() keep=vec![("by".into(), by())] />
            <Tabs param="by" name=t("Group by") options=&GROUPS current=by() base="/console/usage".into() keep=vec![("range".into(), range())] />
        </div>
        <Loaded resource=charts let:c>
            <ChartGrid c />
        </Loaded>
        <h2 class="section-title mt-10" id="log">{t("Request log")}</h2>
        <Loaded resource=log let:page>
            <LogView page q=log_query() />
        </Loaded>
    }
}

#[component]
fn LogView(page: LogPage, q: LogQuery) -> impl IntoView {
    let filter = q.to_query();
    let csv = format!("/console/usage.csv{}{}", if filter.is_empty() { "" } else { "?" }, filter);
    let next = page.next_cursor.clone().map(|c| format!("/console/usage?{}{}cursor={c}#log", filter, if filter.is_empty() { "" } else { "&" }));
    view! {
        <form method="get" action="/console/usage" class="card mt-3 grid gap-3 sm:grid-cols-3 lg:grid-cols-4 lg:items-end">
            <label class="text-xs">{t("Key")}
                <select name="key" class="input mt-1">
                    <option value="">{t("All keys")}</option>
                    {page.keys.iter().map(|(id, name)| view! { <option value=id.clone() selected=*id == q.key>{name.clone()}</option> }).collect_view()}
                </select>
            </label>
            <label class="text-xs">{t("Model")}<input name="model" value=q.model.clone() class="input mt-1" placeholder=t("any") /></label>
            <label class="text-xs">{t("Status")}
                <select name="status" class="input mt-1">
                    <option value="" selected=q.status.is_empty()>{t("Any")}</option>
                    <option value="ok" selected=q.status == "ok">{t("Succeeded")}</option>
                    <option value="error" selected=q.status == "error">{t("Failed")}</option>
                </select>
            </label>
            <label class="text-xs">{t("From")}<input type="date" name="from" value=q.from.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("To")}<input type="date" name="to" value=q.to.clone() class="input mt-1" /></label>
            <label class="text-xs sm:col-span-2">{t("Request ID")}<input name="request_id" value=q.request_id.clone() class="input mt-1 font-mono" placeholder="req_…" /></label>
            <div class="flex gap-2">
                <button type="submit" class="btn-primary">{t("Filter")}</button>
                <a href=csv class="btn-ghost" download>{t("CSV")}</a>
            </div>
        </form>
        {if page.rows.is_empty() {
            view! { <div class="card mt-3 text-sm text-slate-500">{t("No requests match.")}</div> }.into_any()
        } else {
            view! {
                // One line per request with what matters (time, key, model, status, charge); the rest
                // folds out below it. No sideways scrolling at laptop widths; stacked on phones.
                <div class="card mt-3 p-0" data-testid="usage-log">
                    <div class="hidden border-b border-slate-200 px-3 py-2 text-xs font-medium text-slate-500 md:grid md:grid-cols-[9.5rem_7rem_minmax(0,1fr)_minmax(0,14rem)_6rem] md:gap-3 dark:border-slate-800">
                        <span>{t("Time")}</span><span>{t("Key")}</span><span>{t("Model")}</span><span>{t("Status")}</span><span class="text-right">{t("Charge")}</span>
                    </div>
                    {page.rows.into_iter().map(|r| view! {
                        <details class="group border-b border-slate-100 last:border-b-0 dark:border-slate-800/60" data-testid="usage-row">
                            <summary class="grid cursor-pointer list-none grid-cols-2 gap-x-3 gap-y-1 px-3 py-2 text-sm hover:bg-slate-50 md:grid-cols-[9.5rem_7rem_minmax(0,1fr)_minmax(0,14rem)_6rem] md:items-baseline dark:hover:bg-slate-900">
                                <span class="text-slate-500" data-testid="usage-time">{r.time}</span>
                                <span class="truncate text-right md:text-left">{r.key}</span>
                                <span class="col-span-2 min-w-0 md:col-span-1">
                                    <code class="break-all text-xs" data-testid="usage-model">{r.requested_model.clone()}</code>
                                    {r.fallback.then(|| view! { <span class="block text-xs text-amber-600">{tf("served by {}", &[&r.served_model])}</span> })}
                                </span>
                                <span class=if r.failed { "text-red-700 dark:text-red-400" } else { "text-slate-700 dark:text-slate-300" } data-testid="usage-status">{r.status_text.clone()}</span>
                                <span class="text-right tabular-nums" data-testid="usage-charge">{r.charge}</span>
                            </summary>
                            <dl class="grid grid-cols-2 gap-x-4 gap-y-1 bg-slate-50 px-3 py-2 text-xs sm:grid-cols-4 dark:bg-slate-900/60" data-testid="usage-details">
                                <div><dt class="text-slate-500">{t("Request ID")}</dt><dd class="break-all font-mono" data-testid="usage-request-id">{r.request_id.clone()}</dd></div>
                                <div><dt class="text-slate-500">{t("Channel")}</dt><dd>{label(&r.channel)}</dd></div>
                                <div><dt class="text-slate-500">{t("Input")}" / "{t("Output")}</dt><dd class="tabular-nums">{format!("{} / {}", r.input_tokens, r.output_tokens)}</dd></div>
                                <div><dt class="text-slate-500">{t("Cache write / read")}</dt><dd class="tabular-nums">{format!("{} / {}", r.cache_write_tokens, r.cache_read_tokens)}</dd></div>
                                <div><dt class="text-slate-500">{t("List price")}</dt><dd class="tabular-nums">{r.cost_usd}</dd></div>
                                <div><dt class="text-slate-500">{t("Latency / TTFT")}</dt><dd class="tabular-nums">{format!("{} ms / {}", r.latency_ms, r.ttft_ms.map(|t| format!("{t} ms")).unwrap_or_else(|| "—".into()))}</dd></div>
                            </dl>
                        </details>
                    }).collect_view()}
                </div>
                {next.map(|href| view! { <a href=href class="btn-ghost mt-3" rel="next">{t("Older requests →")}</a> })}
            }.into_any()
        }}
    }
}
