//! Staff: the upstream Claude accounts, their live health, adding one, enabling and disabling.

use crate::components::loaded::Loaded;
use crate::api::admin::{list_upstreams, AddUpstream, SetUpstreamEnabled, UpdateUpstream, UpstreamView};
use crate::components::form::{ActionMessage, Field};
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Upstreams() -> impl IntoView {
    let add = ServerAction::<AddUpstream>::new();
    let toggle = ServerAction::<SetUpstreamEnabled>::new();
    let update = ServerAction::<UpdateUpstream>::new();
    let list = Resource::new(move || (add.version().get(), toggle.version().get(), update.version().get()), |_| list_upstreams());
    view! {
        <Title text=t("Upstreams") />
        <h1 class="page-title">{t("Upstreams")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
            {t("Claude accounts the gateway routes to, by priority then weight, skipping any whose circuit is open. Credentials are encrypted at rest and never shown again.")}
        </p>
        <div class="mt-4 space-y-2"><ActionMessage value=toggle.value() /><ActionMessage value=update.value() /></div>
        <Loaded resource=list let:list>
                        <div class="card mt-4 overflow-x-auto p-0">
                            <table class="table">
                                <thead><tr>
                                    <th>{t("Name")}</th><th>{t("Channels")}</th><th class="text-right">{t("Priority / weight")}</th>
                                    <th>{t("Circuit")}</th><th class="text-right">{t("Success (recent)")}</th><th class="text-right">{t("Latency")}</th><th></th>
                                </tr></thead>
                                <tbody>
                                    {list.into_iter().map(|u| {
                                        let toggle_id = u.id.clone();
                                        view! {
                                        <tr data-testid="upstream-row">
                                            <td>
                                                <span class="font-medium">{u.name.clone()}</span>
                                                {u.is_demo.then(|| view! { <span class="badge ml-2">{t("Demo")}</span> })}
                                                <span class="block text-xs text-slate-500">{u.base_url.clone()}{t(" · key ")}{u.credential_hint.clone()}</span>
                                                {u.last_error.clone().map(|e| view! { <span class="block text-xs text-red-600">{e}</span> })}
                                                <EditUpstream u=u.clone() action=update />
                                            </td>
                                            <td>{u.channels.split(", ").map(label).collect::<Vec<_>>().join(", ")}</td>
                                            <td class="text-right tabular-nums">{format!("{} / {}", u.priority, u.weight)}{u.concurrency_cap.map(|c| tf(" · cap {}", &[&c]))}</td>
                                            <td class="capitalize">{u.circuit.clone()}</td>
                                            <td class="text-right tabular-nums">{u.success_rate.clone().unwrap_or_else(|| "—".into())}</td>
                                            <td class="text-right tabular-nums">{u.latency.clone().unwrap_or_else(|| "—".into())}</td>
                                            <td>
                                                <ActionForm action=toggle>
                                                    <input type="hidden" name="id" value=toggle_id />
                                                    <input type="hidden" name="enabled" value=(!u.enabled).to_string() />
                                                    <button type="submit" class=if u.enabled { "btn-danger" } else { "btn-ghost" }>
                                                        {if u.enabled { t("Disable") } else { t("Enable") }}
                                                    </button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                        </div>
        </Loaded>
        <section class="card mt-6 max-w-2xl">
            <h2 class="section-title">{t("Add an upstream")}</h2>
            <ActionForm action=add attr:class="mt-4 grid gap-4 sm:grid-cols-2">
                <Field label=t("Name") name="name" placeholder="anthropic-main" />
                <Field label=t("Base URL") name="base_url" kind="url" placeholder="https://api.anthropic.com" />
                <Field label=t("API key") name="api_key" kind="password" autocomplete="off" />
                <Field label=t("Channels") name="channels" value="value, smart, stable" hint=t("Comma-separated: value, smart, stable") />
                <Field label=t("Priority") name="priority" kind="number" value="0" hint=t("Lower is tried first") />
                <Field label=t("Weight") name="weight" kind="number" value="1" />
                <Field label=t("Concurrency cap (optional)") name="concurrency_cap" kind="number" required=false />
                <div class="flex items-end"><button type="submit" class="btn-primary w-full">{t("Add upstream")}</button></div>
            </ActionForm>
            <div class="mt-3"><ActionMessage value=add.value() /></div>
        </section>
    }
}

/// Routing fields and an optional new credential, folded away under each upstream.
#[component]
fn EditUpstream(u: UpstreamView, action: ServerAction<UpdateUpstream>) -> impl IntoView {
    let cap = u.concurrency_cap.map(|c| c.to_string()).unwrap_or_default();
    view! {
        <details class="mt-2 text-sm">
            <summary class="cursor-pointer text-indigo-600 dark:text-indigo-400">{t("Edit")}</summary>
            <ActionForm action attr:class="mt-2 grid gap-2 sm:grid-cols-2">
                <input type="hidden" name="id" value=u.id />
                <label class="text-xs">{t("Channels")}<input name="channels" value=u.channels class="input mt-1" /></label>
                <label class="text-xs">{t("Priority")}<input name="priority" type="number" value=u.priority class="input mt-1" /></label>
                <label class="text-xs">{t("Weight")}<input name="weight" type="number" value=u.weight class="input mt-1" /></label>
                <label class="text-xs">{t("Concurrency cap")}<input name="concurrency_cap" type="number" value=cap class="input mt-1" /></label>
                <label class="text-xs sm:col-span-2">{t("New API key (blank keeps the current one)")}<input name="api_key" type="password" autocomplete="off" class="input mt-1" /></label>
                <button type="submit" class="btn-ghost sm:col-span-2">{t("Save")}</button>
            </ActionForm>
        </details>
    }
}
