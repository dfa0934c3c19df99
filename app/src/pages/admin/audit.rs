//! Staff: the audit log, read as sentences, filtered by staff member, action, customer and days.

use crate::api::audit::{audit_log, ACTIONS};
use crate::components::loaded::Loaded;
use crate::i18n::t;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

#[component]
pub fn Audit() -> impl IntoView {
    let query = use_query_map();
    let get = move |k: &str| query.with(|q| q.get(k).unwrap_or_default());
    let log = Resource::new(
        move || (get("staff"), get("action"), get("customer"), get("from"), get("to")),
        |(staff, action, customer, from, to)| audit_log(staff, action, customer, from, to),
    );
    let action = get("action");
    view! {
        <Title text=t("Audit log") />
        <h1 class="page-title">{t("Audit log")}</h1>
        <form method="get" class="card mt-4 grid gap-3 sm:grid-cols-3 lg:grid-cols-6 lg:items-end" role="search" data-testid="audit-filter">
            <label class="text-xs">{t("Staff member")}<input name="staff" value=get("staff") class="input mt-1" placeholder=t("email or part of it") /></label>
            <label class="text-xs">{t("Action")}
                <select name="action" class="input mt-1">
                    <option value="">{t("Any action")}</option>
                    {ACTIONS.iter().map(|(code, words)| view! { <option value=*code selected={action == *code}>{t(words)}</option> }).collect_view()}
                </select>
            </label>
            <label class="text-xs">{t("Customer")}<input name="customer" value=get("customer") class="input mt-1" placeholder=t("email or part of it") /></label>
            <label class="text-xs">{t("From")}<input name="from" type="date" value=get("from") class="input mt-1" /></label>
            <label class="text-xs">{t("To")}<input name="to" type="date" value=get("to") class="input mt-1" /></label>
            <div class="flex gap-2">
                <button type="submit" class="btn-primary">{t("Filter")}</button>
                <a href="/console/admin/audit" class="btn-ghost">{t("Clear")}</a>
            </div>
        </form>
        <Loaded resource=log let:lines>
            {if lines.is_empty() {
                view! { <p class="mt-6 text-slate-500">{t("No staff actions match.")}</p> }.into_any()
            } else {
                view! {
                    <div class="card mt-6 overflow-x-auto p-0">
                        <table class="table">
                            <thead><tr><th>{t("When")}</th><th>{t("What happened")}</th></tr></thead>
                            <tbody>
                                {lines.into_iter().map(|l| view! {
                                    <tr data-testid="audit-row" data-action=l.action>
                                        <td class="whitespace-nowrap text-slate-500">{l.when}</td>
                                        <td data-testid="audit-sentence">{l.sentence}</td>
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
