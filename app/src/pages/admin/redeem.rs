//! Staff: redeem codes. Generate a batch (its codes are shown in full only in the answer, with
//! the CSV of that moment), see each batch's codes (used by whom and when, unused, voided),
//! export a batch as CSV (prefixes only) and void unused codes. Every action is audited.

use crate::api::redeem::{redeem_batch_codes, redeem_batches, GenerateCodes, VoidCodes};
use crate::components::form::{successes, ActionMessage, Field};
use crate::components::loaded::Loaded;
use crate::i18n::{label, t};
use leptos::prelude::*;
use leptos_meta::Title;

/// A CSV as a link target that downloads it (no script needed).
fn csv_href(csv: &str) -> String {
    let mut out = String::from("data:text/csv;charset=utf-8,");
    for b in csv.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[component]
pub fn RedeemAdmin() -> impl IntoView {
    let generate = ServerAction::<GenerateCodes>::new();
    let void = ServerAction::<VoidCodes>::new();
    let generated = successes(generate.value());
    let voided = successes(void.value());
    let batches = Resource::new(move || (generated.get(), voided.get()), |_| redeem_batches());
    // the batch whose codes are shown
    let open = RwSignal::new(None::<String>);
    let codes = Resource::new(move || (open.get(), voided.get()), |(id, _)| async move {
        match id {
            Some(id) => redeem_batch_codes(id).await.map(Some),
            None => Ok(None),
        }
    });
    view! {
        <Title text=t("Redeem codes") />
        <h1 class="page-title">{t("Redeem codes")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">
            {t("Customers redeem a code once on their Billing page. Only a hash and the first four characters of each code are kept: the full codes are shown once, right after you generate them, and are in the CSV you download then.")}
        </p>
        <section class="card mt-6 max-w-3xl">
            <h2 class="section-title">{t("Generate a batch")}</h2>
            <ActionForm action=generate attr:class="mt-4 grid gap-4 sm:grid-cols-3">
                <label class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Each code gives")}
                    <select name="kind" class="input mt-1">
                        <option value="balance">{t("Balance")}</option>
                        <option value="trial">{t("Trial credit")}</option>
                        <option value="plan">{t("A plan")}</option>
                    </select>
                </label>
                <Field label=t("Number of codes") name="count" kind="number" value="10" />
                <Field label=t("Amount (¥)") name="amount" required=false hint=t("Balance and trial credit.") />
                <Field label=t("Trial credit lasts (days)") name="days" kind="number" required=false value="30" />
                <Field label=t("Plan code") name="plan" required=false placeholder="pro" />
                <Field label=t("Months of the plan") name="months" kind="number" required=false value="1" />
                <Field label=t("Last day to redeem") name="expires" kind="date" required=false hint=t("Optional.") />
                <div class="sm:col-span-2"><Field label=t("Internal note") name="note" required=false /></div>
                <div class="sm:col-span-3"><button type="submit" class="btn-primary">{t("Generate")}</button></div>
            </ActionForm>
            <div class="mt-4">
                {move || generate.value().get().map(|r| match r {
                    Ok(g) => view! {
                        <div class="alert-ok" role="status" data-testid="generated">
                            <p class="font-medium">{t("Copy or download these codes now: they are not shown again.")}</p>
                            <a class="btn-ghost mt-2 inline-block" download="redeem-codes.csv" href=csv_href(&g.csv)>{t("Download CSV with the codes")}</a>
                            <pre class="mt-2 max-h-64 overflow-auto font-mono text-sm" data-testid="new-codes">{g.codes.join("\n")}</pre>
                        </div>
                    }.into_any(),
                    Err(e) => view! { <p role="alert" class="alert-error">{crate::api::error_text(&e)}</p> }.into_any(),
                })}
            </div>
        </section>
        <div class="mt-4"><ActionMessage value=void.value() /></div>
        <h2 class="section-title mt-8">{t("Batches")}</h2>
        <Loaded resource=batches let:list>
            {if list.is_empty() {
                view! { <p class="mt-3 text-sm text-slate-500">{t("None")}</p> }.into_any()
            } else {
                view! {
                    <div class="card mt-3 overflow-x-auto p-0">
                        <table class="table">
                            <thead><tr><th>{t("Created")}</th><th>{t("Each code gives")}</th><th>{t("Used")}</th><th>{t("Voided")}</th><th>{t("Expires")}</th><th>{t("Note")}</th><th></th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|b| {
                                    let id = b.id.clone();
                                    view! {
                                        <tr data-testid="redeem-batch">
                                            <td class="whitespace-nowrap text-slate-500" title=b.created_by.clone()>{b.created}</td>
                                            <td>{b.value}</td>
                                            <td class="tabular-nums" data-testid="batch-used">{format!("{} / {}", b.redeemed, b.total)}</td>
                                            <td class="tabular-nums">{b.voided}</td>
                                            <td class="whitespace-nowrap">{b.expires}</td>
                                            <td>{b.note}</td>
                                            <td class="whitespace-nowrap">
                                                <button type="button" class="link" on:click=move |_| open.set(Some(id.clone()))>{t("Show codes")}</button>
                                                <ActionForm action=void attr:class="inline">
                                                    <input type="hidden" name="batch" value=b.id.clone() />
                                                    <input type="hidden" name="code" value="" />
                                                    <button type="submit" class="link ml-3">{t("Void unused")}</button>
                                                </ActionForm>
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            }}
        </Loaded>
        <Loaded resource=codes let:shown>
            {shown.map(|(rows, csv)| view! {
                <section class="mt-6" data-testid="batch-codes">
                    <div class="flex items-baseline justify-between">
                        <h2 class="section-title">{t("Codes of the batch")}</h2>
                        <a class="link text-sm" download="redeem-batch.csv" href=csv_href(&csv)>{t("Export CSV")}</a>
                    </div>
                    <div class="card mt-3 overflow-x-auto p-0">
                        <table class="table">
                            <thead><tr><th>{t("Redeem code")}</th><th>{t("Status")}</th><th>{t("Redeemed by")}</th><th>{t("Redeemed at")}</th><th></th></tr></thead>
                            <tbody>
                                {rows.into_iter().map(|c| view! {
                                    <tr data-testid="redeem-code">
                                        <td class="font-mono">{c.code}</td>
                                        <td data-testid="code-state">{label(&c.state)}</td>
                                        <td>{c.redeemed_by}</td>
                                        <td class="whitespace-nowrap">{c.redeemed_at}</td>
                                        <td>{(c.state == "unused").then(|| view! {
                                            <ActionForm action=void attr:class="inline">
                                                <input type="hidden" name="batch" value="" />
                                                <input type="hidden" name="code" value=c.id.clone() />
                                                <button type="submit" class="link">{t("Void")}</button>
                                            </ActionForm>
                                        })}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                </section>
            })}
        </Loaded>
    }
}
