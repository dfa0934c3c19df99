//! Staff: channel rates and capacity, model list prices. Changes apply to new requests at once.

use crate::components::loaded::Loaded;
use crate::api::catalogue::{admin_catalogue, ClearBindings, UpdateChannel, UpdateModel};
use crate::components::form::ActionMessage;
use crate::i18n::{t, tf, tr};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Catalogue() -> impl IntoView {
    let channel = ServerAction::<UpdateChannel>::new();
    let model = ServerAction::<UpdateModel>::new();
    let clear = ServerAction::<ClearBindings>::new();
    let data = Resource::new(move || (channel.version().get(), model.version().get()), |_| admin_catalogue());
    view! {
        <Title text=t("Models & channels") />
        <h1 class="page-title">{t("Models & channels")}</h1>
        <div class="mt-4 space-y-2">
            <ActionMessage value=channel.value() />
            <ActionMessage value=model.value() />
            <ActionMessage value=clear.value() />
        </div>
        <Loaded resource=data let:c>
                        <h2 class="section-title mt-6">{t("Channels")}</h2>
                        <div class="mt-3 grid gap-4 md:grid-cols-3">
                            {c.channels.into_iter().map(|ch| view! {
                                <ActionForm action=channel attr:class="card space-y-3">
                                    <input type="hidden" name="code" value=ch.code.clone() />
                                    <p class="font-semibold">{tr(&ch.name)}</p>
                                    <label class="block text-sm">{t("¥ per $1 of list price")}
                                        <input name="rate" value=ch.rate_yuan.clone() class="input mt-1" aria-label=tf("{} rate", &[&tr(&ch.name)]) />
                                    </label>
                                    <label class="block text-sm">{t("Concurrent requests (all customers)")}
                                        <input name="capacity" type="number" value=ch.capacity class="input mt-1" />
                                    </label>
                                    <label class="block text-sm">{t("Wait for a busy conversation's upstream (ms)")}
                                        <input name="affinity_wait_ms" type="number" min="0" max="60000" value=ch.affinity_wait_ms class="input mt-1" />
                                        <span class="mt-1 block text-xs text-slate-500">{t("Cache first: wait this long for the upstream holding the conversation's prompt cache before moving it; 0 is availability first.")}</span>
                                    </label>
                                    <button type="submit" class="btn-ghost">{t("Save")}</button>
                                </ActionForm>
                            }).collect_view()}
                        </div>
                        <ActionForm action=clear attr:class="mt-3">
                            <input type="hidden" name="user_id" value="" />
                            <button type="submit" class="btn-ghost">{t("Clear all conversation bindings")}</button>
                        </ActionForm>
                        <h2 class="section-title mt-8">{t("Models (USD per million tokens)")}</h2>
                        <div class="mt-3 space-y-3">
                            {c.models.into_iter().map(|m| view! {
                                <ActionForm action=model attr:class="card grid gap-3 sm:grid-cols-4 lg:grid-cols-8 lg:items-end">
                                    <input type="hidden" name="id" value=m.id.clone() />
                                    <div class="sm:col-span-4 lg:col-span-2">
                                        <p class="font-medium">{m.display_name.clone()}</p>
                                        <code class="text-xs text-slate-500">{m.id.clone()}</code>
                                        {m.deprecated.clone().map(|d| view! { <p class="text-xs text-amber-600">{tf("retires {}", &[&d])}</p> })}
                                    </div>
                                    <PriceInput label=t("Input") name="input" value=m.input.clone() />
                                    <PriceInput label=t("Output") name="output" value=m.output.clone() />
                                    <PriceInput label=t("Write 5m") name="cache_write_5m" value=m.cache_write_5m.clone() />
                                    <PriceInput label=t("Write 1h") name="cache_write_1h" value=m.cache_write_1h.clone() />
                                    <PriceInput label=t("Read") name="cache_read" value=m.cache_read.clone() />
                                    <div class="flex items-center gap-3">
                                        <label class="flex items-center gap-1 text-sm"><input type="checkbox" name="enabled" value="on" checked=m.enabled />{t("Offered")}</label>
                                        <button type="submit" class="btn-ghost">{t("Save")}</button>
                                    </div>
                                    <ul class="text-xs text-slate-500 sm:col-span-4 lg:col-span-8">
                                        {m.extras.iter().map(|e| view! { <li>{e.clone()}</li> }).collect_view()}
                                    </ul>
                                </ActionForm>
                            }).collect_view()}
                        </div>
        </Loaded>
    }
}

#[component]
fn PriceInput(label: &'static str, name: &'static str, value: String) -> impl IntoView {
    view! {
        <label class="block text-xs text-slate-500">{label}
            <input name=name value=value.trim_start_matches('$').to_string() class="input mt-1 tabular-nums" />
        </label>
    }
}
