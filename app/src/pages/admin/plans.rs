//! Staff: plan prices, allowances, channels and limits (for new purchases and renewals), and the
//! audit log of staff actions.

use crate::api::billing_admin::{admin_plans, audit_log, UpdatePlan};
use crate::components::form::ActionMessage;
use crate::components::loaded::Loaded;
use crate::i18n::{label, t, tr};
use leptos::prelude::*;
use leptos_meta::Title;

#[component]
pub fn PlansAdmin() -> impl IntoView {
    let update = ServerAction::<UpdatePlan>::new();
    let plans = Resource::new(move || update.version().get(), |_| admin_plans());
    view! {
        <Title text=t("Plans & prices") />
        <h1 class="page-title">{t("Plans & prices")}</h1>
        <p class="mt-1 text-sm text-slate-600 dark:text-slate-400">{t("Changes apply to new purchases and renewals; what customers already bought keeps its terms.")}</p>
        <div class="mt-4"><ActionMessage value=update.value() /></div>
        <Loaded resource=plans let:list>
            <div class="mt-4 space-y-3">
                {list.into_iter().map(|p| view! {
                    <ActionForm action=update attr:class="card grid gap-3 sm:grid-cols-3 lg:grid-cols-7 lg:items-end">
                        <input type="hidden" name="code" value=p.code.clone() />
                        <p class="font-semibold lg:col-span-1">{tr(&p.name)}</p>
                        <label class="text-xs">{t("Price ¥/month")}<input name="price_yuan" value=p.price_yuan.clone() class="input mt-1" /></label>
                        <label class="text-xs">{t("Allowance $/month")}<input name="allowance_usd" value=p.allowance_usd.clone() class="input mt-1" /></label>
                        <label class="text-xs">{t("Channels")}<input name="channels" value=p.channels.clone() class="input mt-1" /></label>
                        <label class="text-xs">{t("Requests/min")}<input name="rpm_limit" value=p.rpm_limit.clone() class="input mt-1" /></label>
                        <label class="text-xs">{t("Concurrent")}<input name="concurrency_limit" value=p.concurrency_limit.clone() class="input mt-1" /></label>
                        <button type="submit" class="btn-ghost">{t("Save")}</button>
                    </ActionForm>
                }).collect_view()}
            </div>
        </Loaded>
    }
}

#[component]
pub fn Audit() -> impl IntoView {
    let log = Resource::new(|| (), |_| audit_log());
    view! {
        <Title text=t("Audit log") />
        <h1 class="page-title">{t("Audit log")}</h1>
        <Loaded resource=log let:lines>
            <div class="card mt-6 overflow-x-auto p-0">
                <table class="table">
                    <thead><tr><th>{t("When")}</th><th>{t("Staff")}</th><th>{t("Action")}</th><th>{t("Target")}</th><th>{t("Details")}</th></tr></thead>
                    <tbody>
                        {lines.into_iter().map(|l| view! {
                            <tr data-testid="audit-row">
                                <td class="whitespace-nowrap text-slate-500">{l.when}</td>
                                <td>{l.staff}</td>
                                <td><code class="text-xs">{label(&l.action)}</code></td>
                                <td class="font-mono text-xs">{l.target}</td>
                                <td class="max-w-md truncate font-mono text-xs">{l.details}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        </Loaded>
    }
}
