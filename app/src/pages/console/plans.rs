//! Plans side by side, with guidance on which fits, and the ways to buy or change one.

use crate::api::billing::{plans_page, ChangePlan, EnterpriseEnquiry, PlanView, PlansData, Subscribe};
use crate::components::form::{ActionError, ActionMessage, Field};
use crate::components::loaded::Loaded;
use crate::i18n::{t, tf};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn Plans() -> impl IntoView {
    let change = ServerAction::<ChangePlan>::new();
    let data = Resource::new(move || change.version().get(), |_| plans_page());
    view! {
        <Title text=t("Plans") />
        <h1 class="page-title">{t("Plans")}</h1>
        <p class="mt-1 max-w-3xl text-sm text-slate-600 dark:text-slate-400">
            {t("A plan includes a monthly allowance of list-price usage; beyond it, requests draw on your pay-as-you-go balance, so you never stop mid-task. You can use both at once. Plan changes take effect at the start of your next billing cycle.")}
            " "{t("The allowance pays for requests on the plan's channels, within its request rate and concurrency across all your keys; keys on other channels are pay-as-you-go from your balance.")}
        </p>
        <div class="mt-4"><ActionMessage value=change.value() /></div>
        <Loaded resource=data let:d>
            <PlanGrid d change />
        </Loaded>
        <EnquiryForm />
    }
}

#[component]
fn PlanGrid(d: PlansData, change: ServerAction<ChangePlan>) -> impl IntoView {
    let subscribe = ServerAction::<Subscribe>::new();
    let current = d.current.clone();
    view! {
        {current.clone().map(|c| view! {
            <div class="alert-ok mt-4" data-testid="current-plan">
                {tf("You are on {} until {} ({} of {} allowance left).", &[&c.plan_name, &c.cycle_end, &c.allowance_left, &c.allowance])}
                {c.pending_plan.map(|p| tf(" Changing to {} at the next cycle.", &[&p]))}
            </div>
        })}
        <div class="mt-2"><ActionError value=subscribe.value() /></div>
        <div class="mt-6 grid gap-4 md:grid-cols-2 xl:grid-cols-5">
            {d.plans.into_iter().map(|p| {
                let is_current = current.as_ref().is_some_and(|c| c.plan_code == p.code);
                let subscribed = current.is_some();
                let methods = d.methods.clone();
                view! { <PlanCard p is_current subscribed methods subscribe change /> }
            }).collect_view()}
        </div>
    }
}

#[component]
fn PlanCard(p: PlanView, is_current: bool, subscribed: bool, methods: Vec<(String, String)>, subscribe: ServerAction<Subscribe>, change: ServerAction<ChangePlan>) -> impl IntoView {
    let code = p.code.clone();
    let (switch_label, subscribe_label, method_label) =
        (tf("Switch to {} next cycle", &[&p.name]), tf("Subscribe to {}", &[&p.name]), tf("Payment method for {}", &[&p.name]));
    let action = if !p.purchasable {
        if p.code == "enterprise" {
            view! { <a href="#enterprise" class="btn-ghost w-full">{t("Talk to us")}</a> }.into_any()
        } else {
            view! { <a href="/console/billing#top-up" class="btn-ghost w-full">{t("Top up balance")}</a> }.into_any()
        }
    } else if is_current {
        view! { <p class="text-center text-sm font-medium text-emerald-600">{t("Your current plan")}</p> }.into_any()
    } else if subscribed {
        view! {
            <ActionForm action=change>
                <input type="hidden" name="plan" value=code.clone() />
                <button type="submit" class="btn-ghost w-full">{switch_label}</button>
            </ActionForm>
        }.into_any()
    } else {
        view! {
            <ActionForm action=subscribe attr:class="space-y-2">
                <input type="hidden" name="plan" value=code.clone() />
                <label class="block text-xs text-slate-500">{t("Pay with")}
                    <select name="method" class="input mt-1" aria-label=method_label>
                        {methods.into_iter().map(|(code, label)| view! { <option value=code>{label}</option> }).collect_view()}
                        <option value="balance">{t("Account balance")}</option>
                    </select>
                </label>
                <button type="submit" class="btn-primary w-full">{subscribe_label}</button>
            </ActionForm>
        }.into_any()
    };
    view! {
        <section class=move || if is_current { "card flex flex-col ring-2 ring-indigo-500" } else { "card flex flex-col" } data-testid="plan-card">
            <h2 class="text-lg font-semibold">{p.name.clone()}</h2>
            <p class="text-sm text-indigo-600 dark:text-indigo-400">{p.audience.clone()}</p>
            <PlanPrice p=p.clone() />
            <p class="mt-2 text-sm text-slate-600 dark:text-slate-400">{p.description.clone()}</p>
            <ul class="mt-3 flex-1 space-y-1 text-sm">
                <li>{tf("Channels: {}", &[&p.channels])}</li>
                <li>{p.limits.clone()}</li>
                {p.sla.then(|| view! { <li class="font-medium">{t("Enterprise SLA")}</li> })}
                {(!p.refund.is_empty()).then(|| view! { <li class="text-slate-500">{p.refund.clone()}</li> })}
            </ul>
            <div class="mt-4">{action}</div>
        </section>
    }
}

/// A plan's price, what it buys, and what the same usage costs pay-as-you-go on each of its
/// channels (also on the front page).
#[component]
pub fn PlanPrice(p: PlanView) -> impl IntoView {
    view! {
        <p class="mt-3 text-2xl font-semibold" data-testid="plan-price">
            {p.price.clone().unwrap_or_else(|| if p.code == "enterprise" { t("Custom").into() } else { t("Pay per use").into() })}
        </p>
        {p.buys.map(|b| view! { <p class="mt-2 text-sm font-medium" data-testid="plan-buys">{b}</p> })}
        {(!p.payg.is_empty()).then(|| view! {
            <ul class="mt-1 space-y-0.5 text-xs text-slate-500" data-testid="plan-payg">
                {p.payg.into_iter().map(|line| view! { <li>{line}</li> }).collect_view()}
            </ul>
        })}
    }
}

#[component]
fn EnquiryForm() -> impl IntoView {
    let enquire = ServerAction::<EnterpriseEnquiry>::new();
    view! {
        <section id="enterprise" class="card mt-8 max-w-3xl">
            <h2 class="section-title">{t("Enterprise enquiry")}</h2>
            <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{t("Large scale, private deployment, contracts and invoices on custom terms: tell us what you need.")}</p>
            <ActionForm action=enquire attr:class="mt-4 grid gap-4 sm:grid-cols-2">
                <Field label=t("Company") name="company" />
                <Field label=t("Contact name") name="contact_name" />
                <Field label=t("Email") name="email" kind="email" />
                <Field label=t("Phone (optional)") name="phone" required=false />
                <Field label=t("Expected monthly spend (optional)") name="monthly_spend" required=false placeholder=t("e.g. ¥50,000") />
                <label class="block sm:col-span-2">
                    <span class="text-sm font-medium text-slate-700 dark:text-slate-300">{t("What do you need?")}</span>
                    <textarea name="message" rows="4" required class="input mt-1"></textarea>
                </label>
                <button type="submit" class="btn-primary sm:col-span-2">{t("Send enquiry")}</button>
            </ActionForm>
            <div class="mt-3"><ActionMessage value=enquire.value() /></div>
        </section>
    }
}
