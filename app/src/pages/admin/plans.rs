//! Staff: plan prices, allowances, channels and limits (for new purchases and renewals).

use crate::api::billing_admin::{admin_plans, cloudrouter_plan::PlanForm, UpdatePlan};
use crate::components::form::{submitted_row, RowMessage, UnplacedMessage};
use crate::components::loaded::Loaded;
use crate::i18n::{t, tf, tr};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn PlansAdmin() -> impl IntoView {
    let update = ServerAction::<UpdatePlan>::new();
    let row = submitted_row(update, |i| i.code.clone());
    let plans = Resource::new(move || update.version().get(), |_| admin_plans());
    view! {
        <Title text=t("Plans & prices") />
        <h1 class="page-title">{t("Plans & prices")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{t("Changes apply to new purchases and renewals; what customers already bought keeps its terms.")}</p>
        <div class="mt-4"><UnplacedMessage value=update.value() row /></div>
        <Loaded resource=plans let:list>
            {
                // the plans on sale first; pay-as-you-go, enterprise and custom terms folded below
                let (on_sale, others): (Vec<_>, Vec<_>) = list.into_iter().partition(|p| p.purchasable);
                let others_count = others.len();
                view! {
                    <div class="mt-4 space-y-3" data-testid="plans-on-sale">
                        {on_sale.into_iter().map(|p| view! { <PlanRow p update row /> }).collect_view()}
                    </div>
                    {(others_count > 0).then(|| view! {
                        <details class="mt-6" data-testid="plans-not-on-sale">
                            <summary class="cursor-pointer font-semibold">{tf("Not on sale: pay-as-you-go, enterprise and custom terms ({})", &[&others_count])}</summary>
                            <div class="mt-3 space-y-3">
                                {others.into_iter().map(|p| view! { <PlanRow p update row /> }).collect_view()}
                            </div>
                        </details>
                    })}
                }
            }
        </Loaded>
    }
}

/// One plan's terms, with the outcome of saving them beside it.
#[component]
fn PlanRow(p: PlanForm, update: ServerAction<UpdatePlan>, row: Signal<Option<String>>) -> impl IntoView {
    let code = p.code.clone();
    view! {
        <ActionForm action=update attr:class="card grid gap-3 sm:grid-cols-3 lg:grid-cols-5 xl:grid-cols-10 lg:items-end" attr:data-testid="plan-row" attr:data-plan=code>
            <input type="hidden" name="code" value=p.code.clone() />
            <p class="font-semibold lg:col-span-1">{tr(&p.name)}</p>
            <label class="text-xs">{t("Price ¥/month")}<input name="price_yuan" value=p.price_yuan.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("Allowance $/month")}<input name="allowance_usd" value=p.allowance_usd.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("Channels")}<input name="channels" value=p.channels.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("Requests/min")}<input name="rpm_limit" value=p.rpm_limit.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("Concurrent")}<input name="concurrency_limit" value=p.concurrency_limit.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("Tokens/min")}<input name="tpm_limit" value=p.tpm_limit.clone() class="input mt-1" /></label>
            <label class="text-xs">{t("$ per 5 hours")}<input name="window_5h_usd" value=p.window_5h_usd.clone() class="input mt-1" placeholder=t("no cap") /></label>
            <label class="text-xs">{t("$ per week")}<input name="weekly_usd" value=p.weekly_usd.clone() class="input mt-1" placeholder=t("no cap") /></label>
            <button type="submit" class="btn-ghost">{t("Save")}</button>
            <RowMessage value=update.value() row id=p.code />
        </ActionForm>
    }
}
