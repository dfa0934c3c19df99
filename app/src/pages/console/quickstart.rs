//! Quick start: a first key, then copyable snippets for curl, the Python and TypeScript SDKs and
//! Claude Code, filled in with this console's own address (and the new key, once created).

use crate::api::billing::ApplyForTrial;
use crate::api::catalogue::public_catalogue;
use crate::api::keys::{keys_page, CreateKey};
use crate::api::readiness::{readiness, FundingView};
use crate::components::form::ActionError;
use crate::components::loaded::Loaded;
use crate::pages::landing::PriceTables;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

fn snippets(base: &str, key: &str) -> [(&'static str, String); 4] {
    [
        (
            "curl",
            format!(
                "curl {base}/v1/messages \\\n  -H \"x-api-key: {key}\" \\\n  -H \"anthropic-version: 2023-06-01\" \\\n  -H \"content-type: application/json\" \\\n  -d '{{\"model\": \"claude-sonnet-4-6\", \"max_tokens\": 1024, \"messages\": [{{\"role\": \"user\", \"content\": \"Hello, Claude\"}}]}}'"
            ),
        ),
        (
            "Python",
            format!(
                "# pip install anthropic\nimport anthropic\n\nclient = anthropic.Anthropic(base_url=\"{base}\", api_key=\"{key}\")\nmessage = client.messages.create(\n    model=\"claude-sonnet-4-6\",\n    max_tokens=1024,\n    messages=[{{\"role\": \"user\", \"content\": \"Hello, Claude\"}}],\n)\nprint(message.content[0].text)"
            ),
        ),
        (
            "TypeScript",
            format!(
                "// npm install @anthropic-ai/sdk\nimport Anthropic from \"@anthropic-ai/sdk\";\n\nconst client = new Anthropic({{ baseURL: \"{base}\", apiKey: \"{key}\" }});\nconst message = await client.messages.create({{\n  model: \"claude-sonnet-4-6\",\n  max_tokens: 1024,\n  messages: [{{ role: \"user\", content: \"Hello, Claude\" }}],\n}});\nconsole.log(message.content);"
            ),
        ),
        ("Claude Code", format!("export ANTHROPIC_BASE_URL={base}\nexport ANTHROPIC_API_KEY={key}\nclaude")),
    ]
}

#[component]
pub fn QuickStart() -> impl IntoView {
    let create = ServerAction::<CreateKey>::new();
    let page = Resource::new(|| (), |_| keys_page());
    let prices = Resource::new(|| (), |_| public_catalogue());
    let base = Resource::new(|| (), |_| crate::api::usage::overview());
    let apply = ServerAction::<ApplyForTrial>::new();
    let ready = Resource::new(move || apply.version().get(), |_| readiness());
    view! {
        <Title text=t("Quick start") />
        <h1 class="page-title">{t("Quick start")}</h1>
        <p class="mt-1 max-w-3xl text-sm text-slate-600 dark:text-slate-400">
            {t("CloudRouter speaks Anthropic's API: keep your code and your SDK, change the base URL and the key.")}
        </p>
        <section class="card mt-6 max-w-3xl" data-testid="readiness-step">
            <h2 class="section-title">{t("1. Give your account something to spend")}</h2>
            <Loaded resource=ready let:r>
                <Funding r apply />
            </Loaded>
        </section>
        <section class="card mt-6 max-w-3xl">
            <h2 class="section-title">{t("2. Create a key")}</h2>
            <Loaded resource=page let:p>
                <ActionForm action=create attr:class="mt-4 flex flex-wrap items-end gap-3">
                    <input type="hidden" name="spend_limit" value="" />
                    <input type="hidden" name="expires_in_days" value="" />
                    <input type="hidden" name="models" value="" />
                    <input type="hidden" name="rpm_limit" value="" />
                    <input type="hidden" name="concurrency_limit" value="" />
                    <label class="block flex-1 text-sm">{t("Name")}<input name="name" value=t("my first key") required class="input mt-1" /></label>
                    <label class="block text-sm">{t("Channel")}
                        <select name="channel" class="input mt-1">
                            {p.channels.into_iter().map(|c| view! { <option value=c.code>{c.label}</option> }).collect_view()}
                        </select>
                    </label>
                    <button type="submit" class="btn-primary">{t("Create key")}</button>
                </ActionForm>
                <p class="mt-2 text-xs text-slate-500">{p.funds.clone()}</p>
            </Loaded>
            {move || create.value().get().map(|r| match r {
                Ok(k) => view! {
                    <p role="status" class="alert-ok mt-3">{t("Key created. It is filled into the snippets below — copy it now, it will not be shown again.")}</p>
                    <code class="mt-2 block break-all font-mono text-sm select-all" data-testid="quickstart-key">{k.secret}</code>
                }.into_any(),
                Err(e) => view! { <p role="alert" class="alert-error mt-3">{crate::api::error_text(&e)}</p> }.into_any(),
            })}
        </section>
        <section class="mt-6 max-w-3xl">
            <h2 class="section-title">{t("3. Call Claude")}</h2>
            <Loaded resource=ready let:r>
                {(!r.ready).then(|| view! {
                    <p role="note" class="alert-warn mt-3" data-testid="snippet-warning">
                        {tf("Until step 1 is done these calls are refused with 402 (insufficient balance): the balance is {} and there is no plan or trial credit.", &[&r.balance])}
                    </p>
                })}
            </Loaded>
            <Loaded resource=base let:o>
                {move || {
                    let key = create.value().get().and_then(|r| r.ok()).map(|k| k.secret).unwrap_or_else(|| "YOUR_CLOUDROUTER_KEY".into());
                    snippets(&o.base_url, &key).into_iter().map(|(name, code)| view! { <CopyBlock name code /> }).collect_view()
                }}
            </Loaded>
        </section>
        <section class="mt-8">
            <h2 class="section-title">{t("4. Know what it costs")}</h2>
            <p class="mt-1 max-w-3xl text-sm text-slate-600 dark:text-slate-400">
                {t("A request costs its tokens at the model's list price in dollars, times your key's channel rate in yuan. Plans include an allowance drawn first; see Plans.")}
            </p>
            <Loaded resource=prices let:catalogue>
                <PriceTables catalogue />
            </Loaded>
        </section>
    }
}

/// Step 1: whether a call can be paid for, and if not, both ways to fix it — trial credit (staff
/// approve it) or a top-up — with the trial application's state once there is one.
#[component]
fn Funding(r: FundingView, apply: ServerAction<ApplyForTrial>) -> impl IntoView {
    if r.ready {
        return view! {
            <p class="mt-3 text-sm" data-testid="readiness" data-ready="true">
                <span class="font-medium text-emerald-700 dark:text-emerald-400">{t("Ready: calls can be paid for.")}</span>" "{r.funds.clone()}
            </p>
            {(r.trial_status.as_deref() == Some("approved")).then(|| view! {
                <p class="mt-1 text-sm text-slate-600 dark:text-slate-400" data-testid="trial-state">
                    {tf("Trial credit approved: {} of {} left, until {}.", &[&r.trial_remaining, &r.trial_amount, &r.trial_expires])}
                </p>
            })}
        }.into_any();
    }
    let trial = match r.trial_status.as_deref() {
        None => view! {
            <ActionForm action=apply attr:class="mt-2 space-y-2">
                <label class="block">
                    <span class="text-sm text-slate-700 dark:text-slate-300">{t("What will you use it for?")}</span>
                    <textarea name="reason" rows="2" required minlength="10" class="input mt-1"></textarea>
                </label>
                <ActionError value=Signal::derive(move || apply.value().get().map(|r| r.map(|_| ()))) />
                <button type="submit" class="btn-primary">{t("Apply for trial credit")}</button>
            </ActionForm>
        }.into_any(),
        Some("pending") => view! {
            <p class="mt-2 text-sm" data-testid="trial-state">{t("Applied: your trial application is waiting for our staff, usually within a working day. This page shows the credit once it is approved.")}</p>
        }.into_any(),
        Some("declined") => view! {
            <p class="mt-2 text-sm" data-testid="trial-state">{t("Your trial application was declined; top up to start.")}</p>
        }.into_any(),
        Some(_) => view! {
            <p class="mt-2 text-sm" data-testid="trial-state">{t("Your trial credit has expired; top up to continue.")}</p>
        }.into_any(),
    };
    view! {
        <p role="note" class="alert-warn mt-3" data-testid="readiness" data-ready="false">
            {tf("Your balance is {} and you have no plan or trial credit, so every call is refused with 402 (insufficient balance) until the account has funds. Either way below works:", &[&r.balance])}
        </p>
        <div class="mt-4 grid gap-4 sm:grid-cols-2">
            <div class="rounded-lg border border-slate-200 p-4 dark:border-slate-800">
                <h3 class="font-medium">{t("Apply for trial credit")}</h3>
                <p class="mt-1 text-xs text-slate-500">{t("Free credit for new accounts; our staff approve each application.")}</p>
                {trial}
            </div>
            <div class="rounded-lg border border-slate-200 p-4 dark:border-slate-800">
                <h3 class="font-medium">{t("Top up")}</h3>
                <p class="mt-1 text-xs text-slate-500">{t("Pay any amount into your balance; a call draws on it at once.")}</p>
                <a href="/console/billing#top-up" class="btn-ghost mt-3">{t("Top up your balance")}</a>
            </div>
        </div>
    }.into_any()
}

/// A snippet with a copy button (the code is selectable when JavaScript is off).
#[component]
fn CopyBlock(name: &'static str, code: String) -> impl IntoView {
    let copied = RwSignal::new(false);
    let text = code.clone();
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let clipboard = window().navigator().clipboard();
            let _ = clipboard.write_text(&text);
            copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = &text;
    };
    view! {
        <div class="card mt-3 p-0" data-testid="snippet">
            <div class="flex items-center justify-between border-b border-slate-200 px-4 py-2 text-sm dark:border-slate-800">
                <span class="font-medium">{name}</span>
                <button type="button" class="btn-ghost px-3 py-1" on:click=copy aria-label=tf("Copy the {} snippet", &[&name])>
                    {move || if copied.get() { t("Copied") } else { t("Copy") }}
                </button>
            </div>
            <pre class="overflow-x-auto rounded-b-xl bg-slate-900 p-4 text-xs text-slate-100"><code class="select-all">{code}</code></pre>
        </div>
    }
}
