//! Staff: channel rates and capacity, model list prices. Changes apply to new requests at once.

use crate::components::loaded::Loaded;
use crate::api::catalogue::{admin_catalogue, ClearBindings, ModelPrice, UpdateChannel, UpdateModel};
use crate::components::form::{submitted_row, ActionMessage, RowMessage, UnplacedMessage};
use crate::i18n::{t, tf, tr};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Catalogue() -> impl IntoView {
    let channel = ServerAction::<UpdateChannel>::new();
    let model = ServerAction::<UpdateModel>::new();
    let clear = ServerAction::<ClearBindings>::new();
    let channel_row = submitted_row(channel, |i| i.code.clone());
    let model_row = submitted_row(model, |i| i.id.clone());
    let data = Resource::new(move || (channel.version().get(), model.version().get()), |_| admin_catalogue());
    view! {
        <Title text=t("Models & channels") />
        <h1 class="page-title">{t("Models & channels")}</h1>
        <div class="mt-4 space-y-2">
            <UnplacedMessage value=channel.value() row=channel_row />
            <UnplacedMessage value=model.value() row=model_row />
        </div>
        <Loaded resource=data let:c>
            <h2 class="section-title mt-6">{t("Channels")}</h2>
            <div class="mt-3 grid gap-4 md:grid-cols-3">
                {c.channels.into_iter().map(|ch| view! {
                    <ActionForm action=channel attr:class="card space-y-3" attr:data-testid="channel-row">
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
                        <RowMessage value=channel.value() row=channel_row id=ch.code />
                    </ActionForm>
                }).collect_view()}
            </div>
            <ActionForm action=clear attr:class="mt-3">
                <input type="hidden" name="user_id" value="" />
                <button type="submit" class="btn-ghost">{t("Clear all conversation bindings")}</button>
            </ActionForm>
            <div class="mt-2"><ActionMessage value=clear.value() /></div>
            <h2 class="section-title mt-8">{t("Models (USD per million tokens)")}</h2>
            {
                // offered models first; those retired or no longer offered folded below
                let (current, folded): (Vec<_>, Vec<_>) = c.models.into_iter().partition(|m| m.enabled && !m.retired);
                let folded_count = folded.len();
                view! {
                    <div class="mt-3 space-y-3" data-testid="current-models">
                        {current.into_iter().map(|m| view! { <ModelRow m model row=model_row /> }).collect_view()}
                    </div>
                    {(folded_count > 0).then(|| view! {
                        <details class="mt-6" data-testid="retired-models">
                            <summary class="cursor-pointer font-semibold">{tf("Retired or not offered ({})", &[&folded_count])}</summary>
                            <div class="mt-3 space-y-3">
                                {folded.into_iter().map(|m| view! { <ModelRow m model row=model_row /> }).collect_view()}
                            </div>
                        </details>
                    })}
                }
            }
        </Loaded>
    }
}

/// One model's list prices, with the outcome of saving them beside it.
#[component]
fn ModelRow(m: ModelPrice, model: ServerAction<UpdateModel>, row: Signal<Option<String>>) -> impl IntoView {
    let id = m.id.clone();
    view! {
        <ActionForm action=model attr:class="card grid gap-3 sm:grid-cols-4 lg:grid-cols-8 lg:items-end" attr:data-testid="model-row" attr:data-model=id>
            <input type="hidden" name="id" value=m.id.clone() />
            <div class="sm:col-span-4 lg:col-span-2">
                <p class="font-medium">{m.display_name.clone()}</p>
                <code class="text-xs text-slate-500">{m.id.clone()}</code>
                {m.deprecated.clone().map(|d| view! {
                    <p class="text-xs text-amber-600">{if m.retired { tf("retired {}", &[&d]) } else { tf("retires {}", &[&d]) }}</p>
                })}
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
            <RowMessage value=model.value() row id=m.id />
        </ActionForm>
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
