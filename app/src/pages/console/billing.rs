//! Billing: the subscription and its allowance, trial credit, top-ups, orders, refunds,
//! and the balance with its ledger.

use crate::api::billing::{
    billing_overview, ApplyForTrial, BillingSummary, CancelOrder, CancelPlanChange, RefundRequestView, RefundView, RequestRefund, TopUp,
};
use crate::api::usage::{billing, BillingData};
use crate::components::form::{ActionError, ActionMessage};
use crate::components::loaded::Loaded;
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Billing() -> impl IntoView {
    let cancel_change = ServerAction::<CancelPlanChange>::new();
    let cancel_order = ServerAction::<CancelOrder>::new();
    let refund = ServerAction::<RequestRefund>::new();
    let trial = ServerAction::<ApplyForTrial>::new();
    let redeem = ServerAction::<crate::api::redeem::RedeemCode>::new();
    let overview = Resource::new(
        move || (cancel_change.version().get(), cancel_order.version().get(), refund.version().get(), trial.version().get(), redeem.version().get()),
        |_| billing_overview(),
    );
    let ledger = Resource::new(move || (refund.version().get(), redeem.version().get()), |_| billing());
    view! {
        <Title text=t("Billing") />
        <div class="flex flex-wrap items-baseline justify-between gap-3">
            <h1 class="page-title">{t("Billing")}</h1>
            <a href="/console/plans" class="link text-sm">{t("Compare plans →")}</a>
        </div>
        <div class="mt-4 space-y-2">
            <ActionMessage value=cancel_change.value() />
            <ActionMessage value=cancel_order.value() />
            <ActionMessage value=refund.value() />
            <ActionMessage value=trial.value() />
        </div>
        <Loaded resource=overview let:o>
            <PaymentReceived o=o.clone() />
            <Subscription o=o.clone() cancel_change />
            <div class="mt-6 grid gap-6 lg:grid-cols-2">
                <TopUpForm methods=o.methods.clone() />
                <Trial o=o.clone() trial />
            </div>
            <super::redeem::RedeemForm action=redeem />
            <Orders o=o.clone() cancel_order />
            {o.refund.clone().map(|r| view! { <Refund r refund /> })}
            <RefundRequests requests=o.refunds.clone() />
        </Loaded>
        <Loaded resource=ledger let:b>
            <BalanceAndLedger b />
        </Loaded>
    }
}

/// "Payment received" after paying an order (`?paid=<order id>`), said only when that order of
/// this customer really is paid.
#[component]
fn PaymentReceived(o: BillingSummary) -> impl IntoView {
    let paid = leptos_router::hooks::use_query_map().with_untracked(|q| q.get("paid"));
    paid.and_then(|id| o.orders.into_iter().find(|x| x.id == id && x.status == "paid")).map(|order| view! {
        <p role="status" class="alert-ok mt-4" data-testid="payment-received">
            {tf("Payment received: {} for order {}. Thank you!", &[&order.amount, &order.reference])}
        </p>
    })
}

#[component]
fn Subscription(o: BillingSummary, cancel_change: ServerAction<CancelPlanChange>) -> impl IntoView {
    match o.current {
        None => view! {
            <section class="card mt-6">
                <h2 class="section-title">{t("Subscription")}</h2>
                <p class="mt-2 text-sm text-slate-600 dark:text-slate-400">{t("You are on pay-as-you-go: every request is charged to your balance. ")}
                    <a class="link" href="/console/plans">{t("Choose a plan")}</a>{t(" for a monthly allowance.")}</p>
            </section>
        }.into_any(),
        Some(s) => view! {
            <section class="card mt-6" data-testid="subscription">
                <div class="flex flex-wrap items-baseline justify-between gap-2">
                    <h2 class="section-title">{tf("{} plan", &[&s.plan_name])}</h2>
                    <span class="text-sm text-slate-500">{tf("{} · {} per month", &[&s.cycle, &s.price])}</span>
                </div>
                <p class="mt-3 text-sm">{tf("Allowance: {} used of {} — {} left this cycle", &[&s.allowance_used, &s.allowance, &s.allowance_left])}</p>
                <div class="mt-2 h-2 w-full overflow-hidden rounded bg-slate-200 dark:bg-slate-800" role="progressbar"
                    aria-valuenow=s.used_percent aria-valuemin="0" aria-valuemax="100" aria-label=t("Allowance used")>
                    <div class="h-full bg-indigo-500" style=format!("width: {}%", s.used_percent)></div>
                </div>
                {s.pending_plan.map(|p| view! {
                    <div class="mt-4 flex flex-wrap items-center gap-3 text-sm" data-testid="pending-change">
                        <span>{tf("Changing to {} on {}.", &[&p, &s.cycle_end])}</span>
                        <ActionForm action=cancel_change>
                            <button type="submit" class="btn-ghost">{t("Keep my current plan")}</button>
                        </ActionForm>
                    </div>
                })}
            </section>
        }.into_any(),
    }
}

/// Top-up amounts offered beside the free amount (yuan).
const PRESETS: [&str; 5] = ["50", "100", "200", "500", "1000"];

#[component]
fn TopUpForm(methods: Vec<(String, String)>) -> impl IntoView {
    let top_up = ServerAction::<TopUp>::new();
    // A preset fills the amount: a link (`?amount=`) without JavaScript, the field itself with it.
    let query = leptos_router::hooks::use_query_map();
    let amount = RwSignal::new(query.with_untracked(|q| q.get("amount")).filter(|a| PRESETS.contains(&a.as_str())).unwrap_or_default());
    view! {
        <section id="top-up" class="card">
            <h2 class="section-title">{t("Top up your balance")}</h2>
            <ActionForm action=top_up attr:class="mt-4 space-y-4">
                <div>
                    <p class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Quick amounts")}</p>
                    <div class="mt-1 flex flex-wrap gap-2" data-testid="top-up-presets">
                        {PRESETS.iter().map(|p| {
                            let shown = if *p == "1000" { "¥1,000".to_string() } else { format!("¥{p}") };
                            view! {
                                <a href=format!("/console/billing?amount={p}#top-up") class="btn-ghost px-3 py-1"
                                    aria-pressed=move || if amount.get() == *p { "true" } else { "false" }
                                    on:click=move |ev| { ev.prevent_default(); amount.set(p.to_string()); }>{shown}</a>
                            }
                        }).collect_view()}
                    </div>
                </div>
                <label class="block">
                    <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Amount (¥)")}</span>
                    <input name="amount" required class="input mt-1" placeholder="100" inputmode="decimal" data-testid="top-up-amount"
                        prop:value=move || amount.get() on:input=move |ev| amount.set(event_target_value(&ev)) />
                </label>
                <label class="block">
                    <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("Pay with")}</span>
                    <select name="method" class="input mt-1">
                        {methods.into_iter().map(|(code, label)| view! { <option value=code>{label}</option> }).collect_view()}
                    </select>
                </label>
                <button type="submit" class="btn-primary w-full">{t("Continue to payment")}</button>
            </ActionForm>
            <div class="mt-3"><ActionError value=top_up.value() /></div>
        </section>
    }
}

#[component]
fn Trial(o: BillingSummary, trial: ServerAction<ApplyForTrial>) -> impl IntoView {
    view! {
        <section class="card">
            <h2 class="section-title">{t("Trial credit")}</h2>
            {match o.trial {
                Some(t) => view! {
                    <p class="mt-2 text-sm" data-testid="trial-status">
                        {match t.status.as_str() {
                            "pending" => crate::i18n::t("Your application is with support.").to_string(),
                            "approved" => tf("{} of {} left, until {}. Trial credit is used before your plan and balance.", &[&t.remaining, &t.amount.unwrap_or_default(), &t.expires.unwrap_or_default()]),
                            "declined" => crate::i18n::t("Your application was declined.").to_string(),
                            _ => crate::i18n::t("Your trial credit has expired.").to_string(),
                        }}
                    </p>
                }.into_any(),
                None => view! {
                    <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{t("New here? Apply for free trial credit and tell us what you'll build.")}</p>
                    <ActionForm action=trial attr:class="mt-3 space-y-3">
                        <label class="block">
                            <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("What will you use it for?")}</span>
                            <textarea name="reason" rows="3" required minlength="10" class="input mt-1"></textarea>
                        </label>
                        <button type="submit" class="btn-ghost w-full">{t("Apply for trial credit")}</button>
                    </ActionForm>
                }.into_any(),
            }}
        </section>
    }
}

#[component]
fn Orders(o: BillingSummary, cancel_order: ServerAction<CancelOrder>) -> impl IntoView {
    (!o.orders.is_empty()).then(|| view! {
        <section class="mt-6">
            <h2 class="section-title">{t("Orders")}</h2>
            <div class="card mt-3 overflow-x-auto p-0">
                <table class="table table-stack">
                    <thead><tr><th>{t("Reference")}</th><th>{t("What")}</th><th class="text-right">{t("Amount")}</th><th>{t("Method")}</th><th>{t("Status")}</th><th></th></tr></thead>
                    <tbody>
                        {o.orders.into_iter().map(|order| {
                            let open = order.status == "created";
                            view! {
                                <tr data-testid="order-row">
                                    <td class="font-mono text-xs" data-label=t("Reference")>{order.reference.clone()}<span class="block text-slate-500">{order.created.clone()}</span></td>
                                    <td class="capitalize" data-label=t("What")>{label(&order.kind)}{order.plan.clone().map(|p| format!(" · {p}"))}</td>
                                    <td class="text-right tabular-nums" data-label=t("Amount")>{order.amount.clone()}</td>
                                    <td class="capitalize" data-label=t("Method")>{label(&order.method)}</td>
                                    <td class="capitalize" data-label=t("Status")>{label(&order.status)}{order.invoice_status.clone().map(|s| tf(" · invoice {}", &[&label(&s)]))}</td>
                                    <td class="whitespace-nowrap">
                                        {open.then(|| view! {
                                            <a class="link mr-3" href=format!("/console/pay/{}", order.id)>{t("Pay")}</a>
                                            <ActionForm action=cancel_order attr:class="inline">
                                                <input type="hidden" name="id" value=order.id.clone() />
                                                <button type="submit" class="text-sm text-red-600 hover:underline">{t("Cancel")}</button>
                                            </ActionForm>
                                        })}
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </section>
    })
}

/// The rule, said on the page as in docs/billing.md.
const REFUND_RULE: &str = "How the amount is worked out: the unused days of this cycle are refunded (today counts as used). If more of the plan allowance was used than the days so far account for (allowance × used days ÷ cycle days), the use beyond that share is charged at the pay-as-you-go rates of the channels it was used on and deducted, rounded once to the fen. A refund never goes below ¥0. Each plan has one no-questions refund per customer; a later refund of the same plan is agreed with support.";

#[component]
fn Refund(r: RefundView, refund: ServerAction<RequestRefund>) -> impl IntoView {
    let figures = view! {
        <dl class="mt-3 space-y-1 text-sm" data-testid="refund-figures">
            <div><dt class="inline text-slate-500">{t("Unused days: ")}</dt><dd class="inline font-medium" data-testid="refund-explanation">{r.explanation.clone()}</dd></div>
            <div><dt class="inline text-slate-500">{t("Plan allowance: ")}</dt><dd class="inline">{r.allowance.clone()}</dd></div>
            {r.deduction.clone().map(|d| view! {
                <div><dt class="inline text-slate-500">{t("Deduction: ")}</dt><dd class="inline font-medium" data-testid="refund-deduction">{d}</dd></div>
            })}
        </dl>
    };
    view! {
        <section class="card mt-6" data-testid="refund">
            <h2 class="section-title">{tf("Refund your {} plan", &[&r.plan_name])}</h2>
            {if let Some(open) = r.open_request.clone() {
                view! { <p class="mt-2 text-sm">{open}{t(" — waiting for support.")}</p> }.into_any()
            } else if !r.eligible {
                view! {
                    <p class="mt-2 text-sm text-slate-600 dark:text-slate-400">{r.reason.clone().unwrap_or_default()}</p>
                    {figures}
                }.into_any()
            } else {
                view! {
                    <p class="mt-2 text-sm">
                        {if r.repeat {
                            t("You have had the no-questions refund of this plan before, so this one is agreed with support; they set the amount. Our proposal:")
                        } else if r.negotiated {
                            t("Ultra refunds are agreed with support; they set the amount. Our pro-rated proposal: ")
                        } else {
                            t("No questions asked. Your refund:")
                        }}
                    </p>
                    {figures}
                    <ActionForm action=refund attr:class="mt-3 flex flex-wrap items-end gap-3">
                        <label class="block flex-1">
                            <span class="text-sm text-slate-600 dark:text-slate-400">{t("Reason (optional)")}</span>
                            <input name="reason" class="input mt-1" />
                        </label>
                        <button type="submit" class="btn-danger">{tf("Request refund of {}", &[&r.amount])}</button>
                    </ActionForm>
                }.into_any()
            }}
            <p class="mt-3 text-xs text-slate-500" data-testid="refund-rule">{t(REFUND_RULE)}</p>
        </section>
    }
}

/// The customer's refund requests with support's decision and note (also mailed to them).
#[component]
fn RefundRequests(requests: Vec<RefundRequestView>) -> impl IntoView {
    (!requests.is_empty()).then(|| view! {
        <section class="mt-6">
            <h2 class="section-title">{t("Refund requests")}</h2>
            <ul class="card mt-3 space-y-3 text-sm">
                {requests.into_iter().map(|r| view! {
                    <li data-testid="my-refund">
                        <p>
                            <span class="font-medium">{tf("{} requested on {}", &[&r.amount, &r.requested])}</span>
                            " · "
                            <span data-testid="refund-status">{match (r.status.as_str(), r.decided.clone()) {
                                ("approved", Some(on)) => tf("approved on {}: the amount is back on your balance", &[&on]),
                                ("rejected", Some(on)) => tf("declined on {}", &[&on]),
                                _ => t("waiting for support").into(),
                            }}</span>
                        </p>
                        {r.note.map(|n| view! {
                            <p class="mt-1 text-slate-600 dark:text-slate-400" data-testid="refund-note">{t("Note from support: ")}<q>{n}</q></p>
                        })}
                    </li>
                }).collect_view()}
            </ul>
        </section>
    })
}

/// Shared with the staff view of a customer.
#[component]
pub fn BalanceAndLedger(b: BillingData) -> impl IntoView {
    view! {
        <section class="card mt-6">
            <h2 class="section-title">{t("Pay-as-you-go balance")}</h2>
            <p class="mt-2 text-3xl font-semibold tabular-nums" data-testid="billing-balance" title=b.balance_exact.clone()>{b.balance}</p>
            <p class="mt-1 text-sm text-slate-500">{tf("{} available · {} held by requests in flight", &[&b.available, &b.held])}</p>
        </section>
        <section class="mt-6">
            <h2 class="section-title">{t("Ledger")}</h2>
            {if b.entries.is_empty() {
                view! { <div class="card mt-3 text-sm text-slate-500">{t("No entries yet.")}</div> }.into_any()
            } else {
                view! {
                    // one card per row on phones (`table-stack`)
                    <div class="card mt-3 overflow-x-auto p-0">
                        <table class="table table-stack">
                            <thead><tr><th>{t("Time")}</th><th>{t("Kind")}</th><th>{t("Note")}</th><th class="text-right">{t("Amount (¥)")}</th><th class="text-right">{t("Balance (¥)")}</th><th class="text-right">{t("Plan allowance ($)")}</th></tr></thead>
                            <tbody>
                                {b.entries.into_iter().map(|e| view! {
                                    <tr data-testid="ledger-row">
                                        <td class="whitespace-nowrap text-slate-500" data-label=t("Time")>{e.time}</td>
                                        <td class="capitalize" data-label=t("Kind")>{label(&e.kind)}{(e.source != "wallet").then(|| format!(" · {}", label(&e.source)))}</td>
                                        <td data-label=t("Note")>{e.note}</td>
                                        {if e.usd {
                                            // list-price dollars of a plan allowance: their own column
                                            view! {
                                                <td class="text-right text-slate-400 max-md:hidden">"—"</td>
                                                <td class="text-right text-slate-400 max-md:hidden">"—"</td>
                                                <td class="whitespace-nowrap text-right tabular-nums" data-label=t("Plan allowance ($)") data-testid="ledger-usd" title=e.amount_exact.clone()>{e.amount.clone()}</td>
                                            }.into_any()
                                        } else {
                                            view! {
                                                <td class="whitespace-nowrap text-right tabular-nums" data-label=t("Amount (¥)") data-testid="ledger-amount" title=e.amount_exact.clone()>
                                                    {e.amount.clone()}
                                                    // a plan paid from outside: what was paid, not a change of the balance
                                                    {e.paid_with.clone().map(|m| view! { <span class="block text-xs text-slate-500" data-testid="ledger-paid-with">{tf("paid with {}", &[&m])}</span> })}
                                                </td>
                                                <td class="whitespace-nowrap text-right tabular-nums" data-label=t("Balance (¥)") data-testid="ledger-balance" title=e.balance_exact.clone()>{e.balance_after.clone()}</td>
                                                <td class="text-right text-slate-400 max-md:hidden">"—"</td>
                                            }.into_any()
                                        }}
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                }.into_any()
            }}
        </section>
    }
}
