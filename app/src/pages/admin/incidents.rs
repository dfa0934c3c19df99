//! Staff: post incidents on the public status page and update them until resolved. Every post
//! is audited; this instance's status page shows it at once, the others within 30 seconds.

use crate::api::status::{admin_incidents, IncidentView, OpenIncident, UpdateIncident};
use crate::components::form::{successes, ActionMessage, Field};
use crate::components::loaded::Loaded;
use crate::i18n::t;
use crate::pages::status::IncidentCard;
use leptos::prelude::*;
use leptos_meta::Title;

const STATUSES: [(&str, &str); 4] =
    [("investigating", "Investigating"), ("identified", "Identified"), ("monitoring", "Monitoring"), ("resolved", "Resolved")];
const IMPACTS: [(&str, &str); 2] = [("minor", "Minor: degraded"), ("major", "Major: outage")];

/// A labelled select of `options` (code, English words), `current` chosen.
#[component]
fn Choice(label: &'static str, name: &'static str, options: &'static [(&'static str, &'static str)], current: String) -> impl IntoView {
    view! {
        <label class="text-sm font-medium text-slate-700 dark:text-slate-300">{label}
            <select name=name class="input mt-1">
                {options.iter().map(|(code, words)| view! { <option value=*code selected={current == *code}>{t(words)}</option> }).collect_view()}
            </select>
        </label>
    }
}

/// The message of an update, in either language or both.
#[component]
fn Messages() -> impl IntoView {
    view! {
        <label class="text-sm font-medium text-slate-700 dark:text-slate-300 sm:col-span-2">{t("Message (English)")}
            <textarea name="message_en" rows="3" class="input mt-1"></textarea>
        </label>
        <label class="text-sm font-medium text-slate-700 dark:text-slate-300 sm:col-span-2">{t("Message (Chinese)")}
            <textarea name="message_zh" rows="3" class="input mt-1"></textarea>
        </label>
    }
}

#[component]
pub fn Incidents() -> impl IntoView {
    let open = ServerAction::<OpenIncident>::new();
    let update = ServerAction::<UpdateIncident>::new();
    // reloaded only after a post went through: a refused one keeps what was typed
    let opened = successes(open.value());
    let updated = successes(update.value());
    let list = Resource::new(move || (opened.get(), updated.get()), |_| admin_incidents());
    view! {
        <Title text=t("Incidents") />
        <h1 class="page-title">{t("Incidents")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
            {t("What you post here appears on the public status page, in the reader's language (a text written in one language shows in both). Every post is in the audit log.")}
            " "<a class="link" href="/status">{t("Open the status page")}</a>
        </p>
        // outside the list, which reloads after each post
        <div class="mt-4 space-y-2"><ActionMessage value=open.value() /><ActionMessage value=update.value() /></div>
        <Loaded resource=list let:page>
            <section class="card mt-6 max-w-3xl">
                <h2 class="section-title">{t("Post an incident")}</h2>
                <ActionForm action=open attr:class="mt-4 grid gap-4 sm:grid-cols-2">
                    <Field label=t("Title (English)") name="title_en" required=false />
                    <Field label=t("Title (Chinese)") name="title_zh" required=false />
                    <Choice label=t("Impact") name="impact" options=&IMPACTS current="minor".into() />
                    <Choice label=t("Status") name="status" options=&STATUSES current="investigating".into() />
                    <div class="sm:col-span-2">
                        <Field label=t("Affected channels") name="channels" required=false
                            value={page.channels.iter().map(|(code, _)| code.as_str()).collect::<Vec<_>>().join(", ")}
                            hint=t("Comma-separated channel codes; blank: none in particular.") />
                    </div>
                    <Messages />
                    <div class="sm:col-span-2"><button type="submit" class="btn-primary">{t("Post incident")}</button></div>
                </ActionForm>
            </section>
            <h2 class="section-title mt-8">{t("Open incidents")}</h2>
            {if page.open.is_empty() {
                view! { <p class="mt-3 text-sm text-slate-500">{t("None")}</p> }.into_any()
            } else {
                view! { <div class="mt-3 space-y-4">{page.open.into_iter().map(|i| view! { <Editable i update /> }).collect_view()}</div> }.into_any()
            }}
            <h2 class="section-title mt-8">{t("Resolved in the last 90 days")}</h2>
            <div class="mt-3 space-y-4">{page.resolved.into_iter().map(|i| view! { <Editable i update /> }).collect_view()}</div>
        </Loaded>
    }
}

/// An incident as the status page shows it, with the form for its next update.
#[component]
fn Editable(i: IncidentView, update: ServerAction<UpdateIncident>) -> impl IntoView {
    let (id, status, impact) = (i.id.clone(), i.status.clone(), i.impact.clone());
    view! {
        <div data-testid="admin-incident">
            <IncidentCard i />
            <details class="mt-2 text-sm">
                <summary class="cursor-pointer text-indigo-600 dark:text-indigo-400">{t("Post an update")}</summary>
                <ActionForm action=update attr:class="card mt-2 grid gap-4 sm:grid-cols-2">
                    <input type="hidden" name="id" value=id />
                    <Choice label=t("Status") name="status" options=&STATUSES current=status />
                    <Choice label=t("Impact") name="impact" options=&IMPACTS current=impact />
                    <Messages />
                    <div class="sm:col-span-2"><button type="submit" class="btn-primary">{t("Post update")}</button></div>
                </ActionForm>
            </details>
        </div>
    }
}
