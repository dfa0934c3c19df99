//! Staff: everything waiting for a person — bank transfers to confirm, refunds, invoices and
//! their red-letter reversals, trial applications and enterprise enquiries.

use crate::api::billing_admin::{
    billing_queues, ConfirmTransfer, DecideRefund, DecideTrial, QueueItem, QueuesView, RecordInvoiceReversal, RejectInvoice, SetEnquiryStatus,
};
use crate::components::form::ActionMessage;
use crate::components::loaded::Loaded;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn BillingQueue() -> impl IntoView {
    let confirm = ServerAction::<ConfirmTransfer>::new();
    let refund = ServerAction::<DecideRefund>::new();
    let invoice = ServerAction::<RejectInvoice>::new();
    let trial = ServerAction::<DecideTrial>::new();
    let enquiry = ServerAction::<SetEnquiryStatus>::new();
    let reversal = ServerAction::<RecordInvoiceReversal>::new();
    let data = Resource::new(
        move || {
            (confirm.version().get(), refund.version().get(), invoice.version().get(), trial.version().get(), enquiry.version().get(), reversal.version().get())
        },
        |_| billing_queues(),
    );
    view! {
        <Title text=t("Billing queue") />
        <h1 class="page-title">{t("Billing queue")}</h1>
        <div class="mt-4 space-y-2">
            <ActionMessage value=confirm.value() />
            <ActionMessage value=refund.value() />
            <ActionMessage value=invoice.value() />
            <ActionMessage value=trial.value() />
            <ActionMessage value=enquiry.value() />
            <ActionMessage value=reversal.value() />
        </div>
        <Loaded resource=data let:q>
            <Queues q confirm refund invoice trial enquiry reversal />
        </Loaded>
    }
}

#[component]
fn Section(title: &'static str, count: usize, children: Children) -> impl IntoView {
    view! {
        <section class="mt-8">
            <h2 class="section-title">{format!("{title} ({count})")}</h2>
            {if count == 0 { view! { <p class="mt-2 text-sm text-slate-500">{t("Nothing waiting.")}</p> }.into_any() } else { children().into_any() }}
        </section>
    }
}

#[component]
fn ItemHead(item: QueueItem) -> impl IntoView {
    view! {
        <p class="font-medium">{item.who}" · "{item.what}" "<span class="tabular-nums">{item.amount}</span></p>
        <p class="text-xs text-slate-500">{item.when}</p>
        <p class="mt-1 whitespace-pre-wrap text-sm">{item.detail}</p>
    }
}

#[component]
fn Queues(
    q: QueuesView,
    confirm: ServerAction<ConfirmTransfer>,
    refund: ServerAction<DecideRefund>,
    invoice: ServerAction<RejectInvoice>,
    trial: ServerAction<DecideTrial>,
    enquiry: ServerAction<SetEnquiryStatus>,
    reversal: ServerAction<RecordInvoiceReversal>,
) -> impl IntoView {
    view! {
        <Section title=t("Bank transfers awaiting confirmation") count=q.transfers.len()>
            {q.transfers.into_iter().map(|it| { let id = it.id.clone(); view! {
                <div class="card mt-3 flex flex-wrap items-center justify-between gap-3" data-testid="transfer">
                    <div><ItemHead item=it /></div>
                    <ActionForm action=confirm>
                        <input type="hidden" name="id" value=id />
                        <button type="submit" class="btn-primary">{t("Confirm receipt")}</button>
                    </ActionForm>
                </div>
            }}).collect_view()}
        </Section>
        <Section title=t("Refund requests") count=q.refunds.len()>
            {q.refunds.into_iter().map(|r| { let id = r.item.id.clone(); view! {
                <div class="card mt-3" data-testid="refund-request">
                    <ItemHead item=r.item />
                    <dl class="mt-2 grid gap-x-4 text-sm sm:grid-cols-2" data-testid="refund-figures">
                        {r.figures.into_iter().map(|(k, v)| view! { <div><dt class="inline text-slate-500">{k}": "</dt><dd class="inline tabular-nums">{v}</dd></div> }).collect_view()}
                    </dl>
                    <ActionForm action=refund attr:class="mt-3 grid gap-2 sm:grid-cols-4 sm:items-end">
                        <input type="hidden" name="id" value=id />
                        <label class="text-xs">
                            {if r.negotiated { t("Amount (negotiated: required)") } else { t("Amount (blank: as shown above)") }}
                            <input name="amount" required=r.negotiated class="input mt-1" placeholder=t("as quoted") />
                        </label>
                        <label class="text-xs sm:col-span-2">{t("Note to the customer")}<input name="note" required class="input mt-1" /></label>
                        <div class="flex gap-2">
                            <button type="submit" name="approve" value="true" class="btn-primary">{t("Approve")}</button>
                            <button type="submit" name="approve" value="false" class="btn-danger">{t("Reject")}</button>
                        </div>
                    </ActionForm>
                </div>
            }}).collect_view()}
        </Section>
        <Section title=t("Invoice requests") count=q.invoices.len()>
            {q.invoices.into_iter().map(|i| { let id = i.id.clone(); let refused = issue_error(&id); let anchor = format!("invoice-{id}"); view! {
                <div class="card mt-3" data-testid="invoice-request" id=anchor>
                    <p class="font-medium">{i.kind.clone()}" · "{i.title.clone()}" · "<span class="tabular-nums">{i.amount.clone()}</span></p>
                    <p class="text-xs text-slate-500">{tf("Order {} · requested {}", &[&i.order_reference, &i.created])}</p>
                    <form method="post" enctype="multipart/form-data" action=format!("/console/admin/invoices/{}/issue", id) class="mt-3 grid gap-2 sm:grid-cols-4 sm:items-end">
                        <label class="text-xs">{t("Invoice number")}<input name="number" required class="input mt-1" /></label>
                        <label class="text-xs">{t("Issue date")}<input name="issued_on" type="date" required class="input mt-1" /></label>
                        <label class="text-xs">{t("PDF (optional)")}<input name="pdf" type="file" accept="application/pdf" class="mt-1 block text-xs" /></label>
                        <button type="submit" class="btn-primary">{t("Issue")}</button>
                        {refused.map(|text| view! { <p role="alert" class="alert-error sm:col-span-4" data-testid="issue-error">{text}</p> })}
                    </form>
                    <ActionForm action=invoice attr:class="mt-2 flex flex-wrap items-end gap-2">
                        <input type="hidden" name="id" value=id.clone() />
                        <label class="flex-1 text-xs">{t("Reason to reject")}<input name="reason" required class="input mt-1" /></label>
                        <button type="submit" class="btn-danger">{t("Reject")}</button>
                    </ActionForm>
                </div>
            }}).collect_view()}
        </Section>
        <Section title=t("Red-letter reversals due (refunded after invoicing)") count=q.reversals.len()>
            {q.reversals.into_iter().map(|i| { let id = i.id.clone(); view! {
                <div class="card mt-3" data-testid="invoice-reversal">
                    <p class="font-medium">{i.kind.clone()}" · "{i.title.clone()}" · "<span class="tabular-nums">{i.amount.clone()}</span></p>
                    <p class="text-xs text-slate-500">
                        {tf("Order {} · invoice No. {}, {} · refunded {}: issue a red-letter invoice for that amount", &[&i.order_reference, &i.number.clone().unwrap_or_default(), &i.issued_on.clone().unwrap_or_default(), &i.reversal_amount.clone().unwrap_or_default()])}
                    </p>
                    <ActionForm action=reversal attr:class="mt-3 grid gap-2 sm:grid-cols-3 sm:items-end">
                        <input type="hidden" name="id" value=id />
                        <label class="text-xs">{t("Red-letter invoice number")}<input name="number" required class="input mt-1" /></label>
                        <label class="text-xs">{t("Issue date")}<input name="issued_on" type="date" required class="input mt-1" /></label>
                        <button type="submit" class="btn-primary">{t("Record reversal")}</button>
                    </ActionForm>
                </div>
            }}).collect_view()}
        </Section>
        <Section title=t("Trial applications") count=q.trials.len()>
            {q.trials.into_iter().map(|it| { let id = it.id.clone(); view! {
                <div class="card mt-3" data-testid="trial-application">
                    <ItemHead item=it />
                    <ActionForm action=trial attr:class="mt-3 grid gap-2 sm:grid-cols-5 sm:items-end">
                        <input type="hidden" name="id" value=id />
                        <label class="text-xs">{t("Amount (¥)")}<input name="amount" class="input mt-1" value="20" /></label>
                        <label class="text-xs">{t("Expires in (days)")}<input name="days" type="number" class="input mt-1" value="14" /></label>
                        <label class="text-xs sm:col-span-2">{t("Note")}<input name="note" class="input mt-1" /></label>
                        <div class="flex gap-2">
                            <button type="submit" name="approve" value="true" class="btn-primary">{t("Approve")}</button>
                            <button type="submit" name="approve" value="false" class="btn-danger">{t("Decline")}</button>
                        </div>
                    </ActionForm>
                </div>
            }}).collect_view()}
        </Section>
        <Section title=t("Enterprise enquiries") count=q.enquiries.len()>
            {q.enquiries.into_iter().map(|e| { let id = e.id.clone(); view! {
                <div class="card mt-3">
                    <ItemHead item=e />
                    <ActionForm action=enquiry attr:class="mt-3 flex gap-2">
                        <input type="hidden" name="id" value=id />
                        <button type="submit" name="status" value="contacted" class="btn-ghost">{t("Mark contacted")}</button>
                        <button type="submit" name="status" value="closed" class="btn-ghost">{t("Close")}</button>
                    </ActionForm>
                </div>
            }}).collect_view()}
        </Section>
    }
}

/// Why issuing invoice `id` was just refused, from the page's query string (the upload route
/// answers a refusal with `?invoice=<id>&issue_error=<code>`).
fn issue_error(id: &str) -> Option<&'static str> {
    let query = leptos_router::hooks::use_query_map();
    query.with_untracked(|q| {
        if q.get("invoice").as_deref() != Some(id) {
            return None;
        }
        Some(t(match q.get("issue_error").as_deref()? {
            "pdf" => "The file is not a PDF. Choose the invoice's PDF file (or none).",
            "date" => "Give the issue date.",
            "number" => "Give the invoice number (up to 64 characters).",
            "state" => "This invoice can no longer be issued: it was decided already, or its order was refunded.",
            "upload" => "The upload did not arrive whole (a PDF may be at most 10 MB). Try again.",
            _ => "Something went wrong on our side. Please try again.",
        }))
    })
}
