//! Balance and the ledger behind it, with the running balance after each entry.

use crate::api::usage::{billing, BillingData};
use crate::components::loaded::Loaded;
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Billing() -> impl IntoView {
    let data = Resource::new(|| (), |_| billing());
    view! {
        <Title text="Plans & billing" />
        <h1 class="page-title">"Plans & billing"</h1>
        <Loaded resource=data let:b>
            <BalanceAndLedger b />
        </Loaded>
    }
}

/// Shared with the staff view of a customer.
#[component]
pub fn BalanceAndLedger(b: BillingData) -> impl IntoView {
    view! {
        <section class="card mt-6">
            <h2 class="section-title">"Pay-as-you-go balance"</h2>
            <p class="mt-2 text-3xl font-semibold tabular-nums" data-testid="billing-balance">{b.balance}</p>
            <p class="mt-1 text-sm text-slate-500">{format!("{} available · {} held by requests in flight", b.available, b.held)}</p>
        </section>
        <section class="mt-6">
            <h2 class="section-title">"Ledger"</h2>
            {if b.entries.is_empty() {
                view! { <div class="card mt-3 text-sm text-slate-500">"No entries yet."</div> }.into_any()
            } else {
                view! {
                    <div class="card mt-3 overflow-x-auto p-0">
                        <table class="table">
                            <thead><tr><th>"Time"</th><th>"Kind"</th><th>"Note"</th><th class="text-right">"Amount"</th><th class="text-right">"Balance"</th></tr></thead>
                            <tbody>
                                {b.entries.into_iter().map(|e| view! {
                                    <tr data-testid="ledger-row">
                                        <td class="whitespace-nowrap text-slate-500">{e.time}</td>
                                        <td class="capitalize">{e.kind}</td>
                                        <td>{e.note}</td>
                                        <td class="whitespace-nowrap text-right tabular-nums">{e.amount}</td>
                                        <td class="whitespace-nowrap text-right tabular-nums">{e.balance_after}</td>
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
