//! The usage log: one row per request, newest first. Never the prompt or the reply.

use crate::api::usage::usage_log;
use crate::components::loaded::Loaded;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Usage() -> impl IntoView {
    let rows = Resource::new(|| (), |_| usage_log());
    view! {
        <Title text="Usage" />
        <h1 class="page-title">"Usage"</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
            "Every request, metered from Anthropic's own usage figures. A failed request costs nothing; a stream cut short costs only what was delivered."
        </p>
        <Loaded resource=rows let:rows>
            {if rows.is_empty() {
                view! { <div class="card mt-6 text-sm text-slate-500">"No requests yet."</div> }.into_any()
            } else {
                view! {
                        <div class="card mt-6 overflow-x-auto p-0">
                            <table class="table whitespace-nowrap">
                                <thead><tr>
                                    <th>"Time"</th><th>"Key"</th><th>"Model"</th><th>"Channel"</th>
                                    <th class="text-right">"Input"</th><th class="text-right">"Output"</th>
                                    <th class="text-right">"Cache write / read"</th>
                                    <th class="text-right">"List price"</th><th class="text-right">"Charge"</th>
                                    <th>"Status"</th><th class="text-right">"Latency / TTFT"</th>
                                </tr></thead>
                                <tbody>
                                    {rows.into_iter().map(|r| view! {
                                        <tr data-testid="usage-row">
                                            <td class="text-slate-500">{r.time}</td>
                                            <td>{r.key}</td>
                                            <td>
                                                <code class="text-xs">{r.requested_model.clone()}</code>
                                                {r.fallback.then(|| view! { <span class="block text-xs text-amber-600">{format!("served by {}", r.served_model)}</span> })}
                                            </td>
                                            <td class="capitalize">{r.channel}</td>
                                            <td class="text-right tabular-nums">{r.input_tokens}</td>
                                            <td class="text-right tabular-nums">{r.output_tokens}</td>
                                            <td class="text-right tabular-nums">{format!("{} / {}", r.cache_write_tokens, r.cache_read_tokens)}</td>
                                            <td class="text-right tabular-nums">{r.cost_usd}</td>
                                            <td class="text-right tabular-nums" data-testid="usage-charge">{r.charge}</td>
                                            <td>{format!("{} {}", r.status, r.outcome)}</td>
                                            <td class="text-right tabular-nums">{format!("{} ms / {}", r.latency_ms, r.ttft_ms.map(|t| format!("{t} ms")).unwrap_or_else(|| "—".into()))}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
                }.into_any()
            }}
        </Loaded>
    }
}
