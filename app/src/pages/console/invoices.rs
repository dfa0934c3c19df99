use leptos::prelude::*;
use leptos_meta::Title;

/// Invoices are requested from paid orders (subscriptions, top-ups); balance credited by staff
/// is not an order and is not invoiced here.
#[component]
pub fn Invoices() -> impl IntoView {
    view! {
        <Title text="Invoices" />
        <h1 class="page-title">"Invoices"</h1>
        <div class="card mt-6 max-w-2xl text-sm text-slate-600 dark:text-slate-400">
            <p>"You have no paid orders to invoice yet."</p>
            <p class="mt-2">"Individuals receive an electronic general invoice; companies can request a special VAT invoice. For invoices on contracts or bank transfers, write to "
                <a class="link" href="mailto:support_cloudrouter@clouditera.com">"support_cloudrouter@clouditera.com"</a>"."</p>
        </div>
    }
}
