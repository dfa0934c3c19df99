//! The signed-out front page: what CloudRouter is, its channels and model prices, and the plans.

use crate::api::billing::{public_plans, PlanView};
use crate::api::catalogue::{public_catalogue, CatalogueView};
use crate::i18n::{t, tr};
use crate::pages::console::plans::PlanPrice;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Landing() -> impl IntoView {
    let catalogue = Resource::new(|| (), |_| public_catalogue());
    let plans = Resource::new(|| (), |_| public_plans());
    view! {
        <Title text="" />
        <section class="mx-auto max-w-6xl px-4 pb-12 pt-16 md:pt-24">
            <p class="badge">{t("Claude Opus · Sonnet · Haiku")}</p>
            <h1 class="mt-4 max-w-3xl text-4xl font-semibold tracking-tight md:text-5xl">
                {t("One reliable, cheaper way to call Claude.")}
            </h1>
            <p class="mt-4 max-w-2xl text-lg text-slate-600 dark:text-slate-300">
                {t("CloudRouter speaks Anthropic's API exactly. Point the official SDKs or Claude Code at us, keep your code, and pay from ¥0.60 / $1 of list price — with routing, retries and automatic failover across a pool of genuine Claude accounts.")}
            </p>
            <div class="mt-8 flex flex-wrap gap-3">
                <a href="/signup" class="btn-primary">{t("Create an account")}</a>
                <a href="#pricing" class="btn-ghost">{t("See prices")}</a>
            </div>
            <div class="mt-12 grid gap-4 md:grid-cols-3">
                <Feature title=t("Genuine Claude, always") text=t("Requests only ever reach Claude models. If a model fails, we fall back within the Claude pool — and every response and usage record says which model really served.") />
                <Feature title=t("Drop-in compatible") text=t("POST /v1/messages with JSON or streaming, count_tokens and models. Tools, images, thinking, prompt caching and beta headers pass through untouched.") />
                <Feature title=t("Exact, transparent billing") text=t("Every request is metered from Anthropic's own usage figures, priced at list price, and charged at your channel's rate. A failed request costs nothing.") />
            </div>
        </section>

        <section id="pricing" class="border-t border-slate-200 bg-white py-16 dark:border-slate-800 dark:bg-slate-900">
            <div class="mx-auto max-w-6xl px-4">
                <h2 class="text-2xl font-semibold tracking-tight">{t("Channels")}</h2>
                <p class="mt-2 max-w-2xl text-slate-600 dark:text-slate-400">
                    {t("Usage is priced at the model's official list price in US dollars, then charged in yuan at your key's channel rate. Dearer channels get more stable upstreams and more concurrency.")}
                </p>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        catalogue.await.map(|c| view! { <PriceTables catalogue=c /> })
                    })}
                </Suspense>

                <h2 class="mt-16 text-2xl font-semibold tracking-tight">{t("Plans")}</h2>
                <p class="mt-2 max-w-2xl text-slate-600 dark:text-slate-400">
                    {t("Subscribe for a monthly allowance, keep a pay-as-you-go balance, or both: usage draws on the plan first and the balance after.")}
                </p>
                <Suspense fallback=|| ()>
                    {move || Suspend::new(async move {
                        plans.await.map(|plans| view! {
                            <div class="mt-6 grid gap-4 sm:grid-cols-2 lg:grid-cols-5">
                                {plans.into_iter().map(|p| view! { <Plan p /> }).collect_view()}
                            </div>
                        })
                    })}
                </Suspense>
            </div>
        </section>
    }
}

#[component]
fn Feature(title: &'static str, text: &'static str) -> impl IntoView {
    view! {
        <div class="card">
            <h3 class="font-semibold">{title}</h3>
            <p class="mt-2 text-sm text-slate-600 dark:text-slate-400">{text}</p>
        </div>
    }
}

#[component]
fn Plan(p: PlanView) -> impl IntoView {
    let note = if p.sla { t("Enterprise SLA").to_string() } else { p.refund.clone() };
    view! {
        <div class="card" data-testid="plan-card">
            <h3 class="font-semibold">{p.name.clone()}</h3>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{p.audience.clone()}</p>
            <PlanPrice p=p.clone() />
            {(!note.is_empty()).then(|| view! { <p class="mt-3 text-xs font-medium text-indigo-600 dark:text-indigo-400">{note}</p> })}
        </div>
    }
}

#[component]
pub fn PriceTables(catalogue: CatalogueView) -> impl IntoView {
    view! {
        <div class="mt-6 grid gap-4 md:grid-cols-3">
            {catalogue.channels.into_iter().map(|ch| view! {
                <div class="card" data-testid="channel">
                    <h3 class="font-semibold">{tr(&ch.name)}</h3>
                    <p class="mt-1 text-3xl font-semibold" data-testid="channel-rate">{ch.rate}<span class="text-base font-normal text-slate-500">" / $1"</span></p>
                    <p class="mt-2 text-sm text-slate-600 dark:text-slate-400">{tr(&ch.description)}</p>
                </div>
            }).collect_view()}
        </div>
        <div class="mt-8 overflow-x-auto">
            <table class="table">
                <caption class="sr-only">{t("Model list prices")}</caption>
                <thead>
                    <tr>
                        <th scope="col">{t("Model")}</th>
                        <th scope="col" class="text-right">{t("Input / MTok")}</th>
                        <th scope="col" class="text-right">{t("Output / MTok")}</th>
                        <th scope="col" class="text-right">{t("Cache write 5m / 1h")}</th>
                        <th scope="col" class="text-right">{t("Cache read")}</th>
                    </tr>
                </thead>
                <tbody>
                    {catalogue.models.into_iter().map(|m| view! {
                        <tr>
                            <td><span class="font-medium">{m.display_name}</span><br /><code class="text-xs text-slate-500">{m.id}</code></td>
                            <td class="text-right tabular-nums">{m.input}</td>
                            <td class="text-right tabular-nums">{m.output}</td>
                            <td class="text-right tabular-nums">{m.cache_write_5m}" / "{m.cache_write_1h}</td>
                            <td class="text-right tabular-nums">{m.cache_read}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
            <p class="mt-2 text-xs text-slate-500">{t("List prices in US dollars per million tokens, as Anthropic publishes them.")}</p>
        </div>
    }
}
