//! Settings → Time zone: the one zone every time in the console is shown in.

use crate::api::preferences::{time_zone_view, SetTimeZone};
use crate::components::form::ActionError;
use crate::components::loaded::Loaded;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

#[component]
pub fn TimeZoneSection() -> impl IntoView {
    let save = ServerAction::<SetTimeZone>::new();
    let data = Resource::new(|| (), |_| time_zone_view());
    let query = use_query_map();
    // The post comes back with `?saved=time-zone`, or with its error in the URL (read by `save`).
    let saved = move || query.with(|q| q.get("saved").as_deref() == Some("time-zone"));
    view! {
        <section class="card" id="time-zone">
            <h2 class="section-title">{t("Time zone")}</h2>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
                {t("Every time in the console — the request log, its date filter, charts, CSV exports and the ledger — is shown in this zone.")}
            </p>
            <Loaded resource=data let:d>
                // A plain form, as the language switch: the whole page reloads in the new zone.
                <form method="post" action=save_url() class="mt-4 space-y-4">
                    <label class="block">
                        <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Time zone")}</span>
                        <select name="zone" class="input mt-1" data-testid="time-zone-select">
                            <option value="" selected=d.chosen.is_empty()>{tf("Automatic: {}", &[&d.automatic])}</option>
                            {d.choices.iter().map(|z| view! { <option value=z.clone() selected=*z == d.chosen>{z.clone()}</option> }).collect_view()}
                        </select>
                    </label>
                    <ActionError value=save.value() />
                    {move || saved().then(|| view! { <p role="status" class="alert-ok">{t("Time zone saved.")}</p> })}
                    <button type="submit" class="btn-primary">{t("Save time zone")}</button>
                </form>
            </Loaded>
        </section>
    }
}

fn save_url() -> &'static str {
    <SetTimeZone as leptos::server_fn::ServerFn>::PATH
}
