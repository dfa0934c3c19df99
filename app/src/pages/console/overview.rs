use crate::api::insight::usage_charts;
use crate::api::usage::{overview, OverviewData};
use crate::components::chart::BarChart;
use crate::components::loaded::Loaded;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Overview() -> impl IntoView {
    let data = Resource::new(|| (), |_| overview());
    let month = Resource::new(|| (), |_| usage_charts("30d".into(), "none".into(), false));
    view! {
        <Title text="Overview" />
        <h1 class="page-title">"Overview"</h1>
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
fn Stat(label: &'static str, value: String, #[prop(optional)] sub: Option<String>, #[prop(optional)] testid: &'static str) -> impl IntoView {
    view! {
        <div class="card">
            <p class="text-sm text-slate-500">{label}</p>
            <p class="mt-1 text-2xl font-semibold tabular-nums" data-testid=testid>{value}</p>
            {sub.map(|s| view! { <p class="mt-1 text-xs text-slate-500">{s}</p> })}
        </div>
    }
}

#[component]
fn OverviewBody(o: OverviewData) -> impl IntoView {
    let error_rate = if o.requests_24h > 0 { format!("{:.1}% errors", o.errors_24h as f64 * 100.0 / o.requests_24h as f64) } else { "no requests yet".into() };
    view! {
        {o.demo.then(|| view! {
            <div class="alert-ok mt-4" role="note" data-testid="demo-notice">
                <strong>"Demo mode. "</strong>
                "Requests are answered by CloudRouter's built-in simulated Claude, not by Anthropic. Staff switch to real Claude by adding an upstream with its base URL and credential."
            </div>
        })}
        <div class="mt-6 grid gap-4 sm:grid-cols-2 lg:grid-cols-4">
            <Stat label="Plan allowance left" value=o.allowance_left.clone().unwrap_or_else(|| "No plan".into())
                sub=if o.allowance_left.is_some() { "list-price usage this cycle, drawn first".to_string() } else { "pay-as-you-go from your balance".to_string() } testid="allowance" />
            <Stat label="Balance" value=o.balance.clone()
                sub=format!("{} held by requests in flight{}", o.held, o.trial.clone().map(|t| format!(" · {t} trial credit")).unwrap_or_default()) testid="balance" />
            <Stat label="Spend, last 24 hours" value=o.spend_24h.clone() sub=format!("{} in the last 30 days", o.spend_30d) />
            <Stat label="Requests, last 24 hours" value=o.requests_24h.to_string() sub=format!("{error_rate} · {} active keys", o.active_keys) />

        </div>
        <section class="card mt-6">
            <h2 class="section-title">"Get started"</h2>
            <ol class="mt-3 list-decimal space-y-2 pl-5 text-sm text-slate-700 dark:text-slate-300">
                <li><a class="link" href="/console/keys">"Create an API key"</a>" and pick its channel."</li>
                <li>"Point the Anthropic SDK or Claude Code at CloudRouter:"</li>
            </ol>
            <pre class="mt-3 overflow-x-auto rounded-lg bg-slate-900 p-4 text-xs text-slate-100"><code>{format!(
                "export ANTHROPIC_BASE_URL={base}\nexport ANTHROPIC_API_KEY=<your CloudRouter key>\n\ncurl {base}/v1/messages \\\n  -H \"x-api-key: $ANTHROPIC_API_KEY\" -H \"anthropic-version: 2023-06-01\" \\\n  -H \"content-type: application/json\" \\\n  -d '{{\"model\":\"claude-sonnet-4-6\",\"max_tokens\":256,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello, Claude\"}}]}}'",
                base = o.base_url
            )}</code></pre>
        </section>
    }
}
