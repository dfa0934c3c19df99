//! Quick start: a first key, then copyable snippets for curl, the Python and TypeScript SDKs and
//! Claude Code, filled in with this console's own address (and the new key, once created).

use crate::api::catalogue::public_catalogue;
use crate::api::keys::{keys_page, CreateKey};
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
    view! {
        <Title text=t("Quick start") />
        <h1 class="page-title">{t("Quick start")}</h1>
        <p class="mt-1 max-w-3xl text-sm text-slate-600 dark:text-slate-400">
            {t("CloudRouter speaks Anthropic's API: keep your code and your SDK, change the base URL and the key.")}
        </p>
        <section class="card mt-6 max-w-3xl">
            <h2 class="section-title">{t("1. Create a key")}</h2>
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
            <h2 class="section-title">{t("2. Call Claude")}</h2>
            <Loaded resource=base let:o>
                {move || {
                    let key = create.value().get().and_then(|r| r.ok()).map(|k| k.secret).unwrap_or_else(|| "YOUR_CLOUDROUTER_KEY".into());
                    snippets(&o.base_url, &key).into_iter().map(|(name, code)| view! { <CopyBlock name code /> }).collect_view()
                }}
            </Loaded>
        </section>
        <section class="mt-8">
            <h2 class="section-title">{t("3. Know what it costs")}</h2>
            <p class="mt-1 max-w-3xl text-sm text-slate-600 dark:text-slate-400">
                {t("A request costs its tokens at the model's list price in dollars, times your key's channel rate in yuan. Plans include an allowance drawn first; see Plans.")}
            </p>
            <Loaded resource=prices let:catalogue>
                <PriceTables catalogue />
            </Loaded>
        </section>
    }
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
