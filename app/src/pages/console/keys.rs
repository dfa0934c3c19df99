//! API keys: create one (the secret is shown once), see each key's use and spend, revoke.

use crate::api::keys::{keys_page, CreateKey, CreatedKey, KeyView, RevokeKey};
use crate::components::form::{successes, ActionMessage, Field};
use crate::components::loaded::Loaded;
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Keys() -> impl IntoView {
    let create = ServerAction::<CreateKey>::new();
    let revoke = ServerAction::<RevokeKey>::new();
    let (created, revoked) = (successes(create.value()), successes(revoke.value()));
    let page = Resource::new(move || (created.get(), revoked.get()), |_| keys_page());
    // After a key is made, the form is empty again for the next one.
    let form = NodeRef::<leptos::html::Form>::new();
    Effect::new(move |_| {
        if created.get() > 0 {
            if let Some(f) = form.get_untracked() {
                f.reset();
            }
        }
    });
    view! {
        <Title text=t("API keys") />
        <h1 class="page-title">{t("API keys")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
            {t("Each key is bound to one channel, which sets its price per dollar of list price. Send it as ")}
            <code>"x-api-key"</code>{t(" or ")}<code>"Authorization: Bearer"</code>{t(".")}
        </p>
        <Loaded resource=page let:p>
                        <p class="mt-3 text-sm text-slate-600 dark:text-slate-400" data-testid="funds">{p.funds.clone()}</p>
                        {p.just_created.map(|k| view! { <SecretOnce k /> })}
                        <NewSecret create />
                        <div class="mt-6 grid gap-6 xl:grid-cols-3">
                            <section class="card xl:col-span-1">
                                <h2 class="section-title">{t("Create a key")}</h2>
                                <ActionForm action=create node_ref=form attr:class="mt-4 space-y-4">
                                    <Field label=t("Name") name="name" placeholder=t("e.g. laptop, CI, production") />
                                    <label class="block">
                                        <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Channel")}</span>
                                        <select name="channel" class="input mt-1">
                                            {p.channels.into_iter().map(|c| view! { <option value=c.code>{c.label}</option> }).collect_view()}
                                        </select>
                                    </label>
                                    <Field label=t("Spending limit (¥, optional)") name="spend_limit" required=false placeholder=t("no limit") />
                                    <Field label=t("Expires after (days, optional)") name="expires_in_days" kind="number" required=false placeholder=t("never") />
                                    <div class="grid grid-cols-2 gap-3">
                                        <Field label=t("Requests / minute") name="rpm_limit" kind="number" required=false placeholder=t("no limit") />
                                        <Field label=t("Concurrent requests") name="concurrency_limit" kind="number" required=false placeholder=t("no limit") />
                                        <Field label=t("Tokens / minute") name="tpm_limit" kind="number" required=false placeholder=t("no limit") />
                                        <label class="block">
                                            <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Clients")}</span>
                                            <select name="clients" class="input mt-1">
                                                <option value="any">{t("Any client")}</option>
                                                <option value="claude_code">{t("Claude Code only")}</option>
                                                <option value="sdk">{t("Official SDKs only")}</option>
                                            </select>
                                        </label>
                                    </div>
                                    <label class="block">
                                        <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("IP allow-list (optional)")}</span>
                                        <input name="ip_allow" class="input mt-1" placeholder=t("any address") />
                                        <span class="mt-1 block text-xs text-slate-500">{t("Addresses and CIDR blocks, IPv4 or IPv6, comma-separated (203.0.113.7, 10.0.0.0/8). Tokens per minute count input, cache writes and output. The client check reads request headers: a convenience, not a security boundary.")}</span>
                                    </label>
                                    <label class="block">
                                        <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Allowed models (optional)")}</span>
                                        <input name="models" list="model-ids" class="input mt-1" placeholder=t("all models") />
                                        <datalist id="model-ids">
                                            {p.models.into_iter().map(|m| view! { <option value=m /> }).collect_view()}
                                        </datalist>
                                        <span class="mt-1 block text-xs text-slate-500">{t("Comma-separated model IDs; leave empty to allow every model.")}</span>
                                    </label>
                                    <label class="flex items-start gap-2 text-sm">
                                        <input type="checkbox" name="allow_fallback" value="on" class="mt-1" />
                                        <span>{t("Allow fallback to another Claude model when the requested one is unavailable (the response says which model served).")}</span>
                                    </label>
                                    <button type="submit" class="btn-primary w-full">{t("Create key")}</button>
                                </ActionForm>
                            </section>
                            <section class="xl:col-span-2">
                                <ActionMessage value=revoke.value() />
                                <KeyTable keys=p.keys revoke />
                            </section>
                        </div>
        </Loaded>
    }
}

/// The secret of a key just created, or why creation failed.
#[component]
fn NewSecret(create: ServerAction<CreateKey>) -> impl IntoView {
    move || match create.value().get() {
        Some(Ok(k)) => Some(view! { <SecretOnce k /> }.into_any()),
        Some(Err(e)) => Some(view! { <p role="alert" class="alert-error mt-4">{crate::api::error_text(&e)}</p> }.into_any()),
        None => None,
    }
}

#[component]
fn SecretOnce(k: CreatedKey) -> impl IntoView {
    view! {
        <div role="status" class="alert-ok mt-4" data-testid="new-key">
            <p class="font-medium">{tf("Key “{}” created. Copy it now: it will not be shown again.", &[&k.name])}</p>
            <div class="mt-2 flex flex-wrap items-center gap-2">
                <code class="block min-w-0 flex-1 break-all rounded bg-white px-3 py-2 font-mono text-sm text-slate-900 select-all dark:bg-slate-900 dark:text-slate-100" data-testid="new-key-secret">{k.secret.clone()}</code>
                <CopyButton text=k.secret />
            </div>
            <p class="mt-2 text-sm font-semibold" data-testid="shown-once">{t("You will not see this secret again: we keep only a hash of it. If you lose it, revoke the key and create another.")}</p>
        </div>
    }
}

#[component]
fn KeyTable(keys: Vec<KeyView>, revoke: ServerAction<RevokeKey>) -> impl IntoView {
    if keys.is_empty() {
        return view! { <div class="card text-sm text-slate-500">{t("No keys yet. Create one to start calling the API.")}</div> }.into_any();
    }
    view! {
        // One card per key on phones (`table-stack`).
        <div class="card overflow-x-auto p-0">
            <table class="table table-stack">
                <thead><tr>
                    <th>{t("Name")}</th><th>{t("Key")}</th><th>{t("Channel")}</th><th>{t("Last used")}</th><th class="text-right">{t("Spent")}</th><th>{t("Status")}</th><th></th>
                </tr></thead>
                <tbody>
                    {keys.into_iter().map(|k| {
                        let status = if k.revoked { t("Revoked") } else if k.expired { t("Expired") } else { t("Active") };
                        let active = !k.revoked && !k.expired;
                        view! {
                            <tr data-testid="key-row">
                                <td data-label=t("Name")>
                                    <span class="font-medium">{k.name.clone()}</span>
                                    <span class="block text-xs text-slate-500">{k.models.clone()}{k.allow_fallback.then_some(t(" · fallback allowed"))}{k.limits.clone().map(|l| format!(" · {l}"))}</span>
                                </td>
                                <td data-label=t("Key")><code class="font-mono text-xs">{format!("{}…", k.prefix)}</code></td>
                                <td class="capitalize" data-label=t("Channel")>{label(&k.channel)}</td>
                                <td class="whitespace-nowrap text-slate-500" data-label=t("Last used")>{k.last_used.clone().unwrap_or_else(|| t("never").into())}</td>
                                <td class="whitespace-nowrap text-right tabular-nums" data-label=t("Spent")>
                                    {k.spent.clone()}
                                    {k.spend_limit.clone().map(|l| view! { <span class="block text-xs text-slate-500">{tf("of {}", &[&l])}</span> })}
                                </td>
                                <td data-label=t("Status")>
                                    {status}
                                    {k.expires.clone().filter(|_| active).map(|e| view! { <span class="block text-xs text-slate-500">{tf("until {}", &[&e])}</span> })}
                                </td>
                                <td>
                                    {active.then(|| view! {
                                        // Revoking is asked twice: the first button opens the confirmation (no script needed).
                                        <details class="relative" data-testid="revoke">
                                            <summary class="btn-danger cursor-pointer list-none" aria-label=tf("Revoke {}", &[&k.name])>{t("Revoke")}</summary>
                                            <div class="mt-2 w-64 rounded-lg border border-red-200 bg-white p-3 text-sm shadow-lg dark:border-red-900 dark:bg-slate-900">
                                                <p>{tf("Revoke “{}”? Calls with it stop at once; this cannot be undone.", &[&k.name])}</p>
                                                <ActionForm action=revoke attr:class="mt-2">
                                                    <input type="hidden" name="id" value=k.id.clone() />
                                                    <button type="submit" class="btn-danger w-full">{t("Yes, revoke it")}</button>
                                                </ActionForm>
                                            </div>
                                        </details>
                                    })}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }.into_any()
}

/// Copies `text` to the clipboard (the text itself stays selectable when JavaScript is off).
#[component]
fn CopyButton(text: String) -> impl IntoView {
    let copied = RwSignal::new(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let _ = window().navigator().clipboard().write_text(&text);
            copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = &text;
    };
    view! {
        <button type="button" class="btn-ghost" on:click=copy data-testid="copy-secret">
            {move || if copied.get() { t("Copied") } else { t("Copy") }}
        </button>
    }
}
