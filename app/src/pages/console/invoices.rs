//! Invoices: request one for a paid order (personal electronic invoice or company special VAT
//! invoice), follow its status, download what was issued.

use crate::api::invoices::{invoices_page, InvoicesData, RequestInvoice};
use crate::components::form::{successes, ActionMessage, Field};
use crate::components::loaded::Loaded;
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Invoices() -> impl IntoView {
    let request = ServerAction::<RequestInvoice>::new();
    let requested = successes(request.value());
    let data = Resource::new(move || requested.get(), |_| invoices_page());
    view! {
        <Title text=t("Invoices") />
        <h1 class="page-title">{t("Invoices")}</h1>
        <div class="mt-4"><ActionMessage value=request.value() /></div>
        <Loaded resource=data let:d>
            <RequestForm d=d.clone() request />
            <InvoiceList d />
        </Loaded>
    }
}

#[component]
fn RequestForm(d: InvoicesData, request: ServerAction<RequestInvoice>) -> impl IntoView {
    if d.orders.is_empty() {
        return view! {
            <div class="card mt-6 max-w-2xl text-sm text-slate-600 dark:text-slate-400">
                {t("No paid order is waiting for an invoice. Invoices are issued for paid subscriptions and top-ups; each order is invoiced once.")}
            </div>
        }.into_any();
    }
    let kind = RwSignal::new("personal".to_string());
    view! {
        <section class="card mt-6 max-w-3xl">
            <h2 class="section-title">{t("Request an invoice")}</h2>
            <ActionForm action=request attr:class="mt-4 grid gap-4 sm:grid-cols-2">
                <label class="block sm:col-span-2">
                    <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Order")}</span>
                    <select name="order_id" class="input mt-1">
                        {d.orders.into_iter().map(|o| view! { <option value=o.id>{o.label}</option> }).collect_view()}
                    </select>
                </label>
                <fieldset class="sm:col-span-2">
                    <legend class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Invoice type")}</legend>
                    <div class="mt-2 flex flex-wrap gap-4 text-sm">
                        <label class="flex items-center gap-2"><input type="radio" name="kind" value="personal" checked on:change=move |_| kind.set("personal".into()) />{t("Electronic general invoice (individual)")}</label>
                        <label class="flex items-center gap-2"><input type="radio" name="kind" value="vat" on:change=move |_| kind.set("vat".into()) />{t("Special VAT invoice (company)")}</label>
                    </div>
                </fieldset>
                <Field label=t("Name (individual)") name="name" required=false />
                <Field label=t("Email for the invoice") name="email" kind="email" />
                <p class="text-xs text-slate-500 sm:col-span-2">{t("Companies: fill in all of the following, exactly as registered.")}</p>
                <Field label=t("Company name") name="company" required=false />
                <Field label=t("Taxpayer ID (unified social credit code)") name="tax_id" required=false placeholder=t("18 characters") />
                <Field label=t("Registered address") name="address" required=false />
                <Field label=t("Registered phone") name="phone" required=false />
                <Field label=t("Bank") name="bank" required=false />
                <Field label=t("Account number") name="account" required=false />
                <button type="submit" class="btn-primary sm:col-span-2">
                    {move || if kind.get() == "vat" { t("Request special VAT invoice") } else { t("Request electronic invoice") }}
                </button>
            </ActionForm>
        </section>
    }.into_any()
}

#[component]
fn InvoiceList(d: InvoicesData) -> impl IntoView {
    (!d.invoices.is_empty()).then(|| view! {
        <div class="card mt-6 overflow-x-auto p-0">
            <table class="table">
                <thead><tr><th>{t("Order")}</th><th>{t("Type")}</th><th>{t("Title")}</th><th class="text-right">{t("Amount")}</th><th>{t("Status")}</th><th></th></tr></thead>
                <tbody>
                    {d.invoices.into_iter().map(|i| view! {
                        <tr data-testid="invoice-row">
                            <td class="font-mono text-xs">{i.order_reference.clone()}<span class="block text-slate-500">{i.created.clone()}</span></td>
                            <td>{i.kind.clone()}</td>
                            <td>{i.title.clone()}</td>
                            <td class="text-right tabular-nums">{i.amount.clone()}</td>
                            <td class="capitalize" data-testid="invoice-status">
                                {label(&i.status)}
                                {i.number.clone().map(|n| view! { <span class="block text-xs text-slate-500">{tf("No. {}, {}", &[&n, &i.issued_on.clone().unwrap_or_default()])}</span> })}
                                {i.reject_reason.clone().map(|r| view! { <span class="block text-xs text-red-600">{r}</span> })}
                                {i.reversal_amount.clone().map(|a| view! {
                                    <span class="block text-xs text-slate-500">
                                        {match i.reversal.clone() {
                                            Some(r) => tf("Refunded: reversed by red-letter invoice {} for {}", &[&r, &a]),
                                            None => tf("Refunded: a red-letter invoice for {} will reverse it", &[&a]),
                                        }}
                                    </span>
                                })}
                            </td>
                            <td>{i.has_pdf.then(|| view! { <a class="link" href=format!("/console/invoices/{}/pdf", i.id)>{t("Download PDF")}</a> })}</td>
                        </tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    })
}
