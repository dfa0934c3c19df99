//! Paying an order: a redirect to Alipay or WeChat Pay, bank transfer instructions with the
//! reference code, or — in the demo — the sandbox provider.

use crate::api::billing::{pay_page, PayFromBalance, PayInSandbox};
use crate::components::form::ActionError;
use crate::components::loaded::Loaded;
use crate::i18n::{label, t, tf};
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

#[component]
pub fn Pay() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let page = Resource::new(id, pay_page);
    let sandbox = ServerAction::<PayInSandbox>::new();
    let balance = ServerAction::<PayFromBalance>::new();
    view! {
        <Title text=t("Payment") />
        <a href="/console/billing" class="link text-sm">{t("← Billing")}</a>
        <Loaded resource=page let:p>
            <section class="card mt-4 max-w-xl">
                <h1 class="page-title">{p.what.clone()}</h1>
                <p class="mt-1 text-sm text-slate-500">{tf("Order {} · {}", &[&p.order.reference, &p.order.created])}</p>
                <p class="mt-4 text-3xl font-semibold tabular-nums" data-testid="pay-amount">{p.order.amount.clone()}</p>
                {if p.order.status != "created" {
                    view! { <p class="alert-ok mt-4" data-testid="order-status">{tf("This order is {}.", &[&label(&p.order.status)])}</p> }.into_any()
                } else {
                    let (sandbox_id, balance_id) = (p.order.id.clone(), p.order.id.clone());
                    view! {
                        {p.redirect.clone().map(|url| view! {
                            <a href=url class="btn-primary mt-6 w-full">{t("Pay with Alipay")}</a>
                        })}
                        {p.wechat_qr.clone().map(|qr| match qr {
                            Ok(svg) => view! {
                                <p class="mt-4 text-sm">{t("Scan with WeChat to pay. Once WeChat Pay confirms it, the order shows as paid under Billing.")}</p>
                                <div class="mt-3 inline-block rounded-lg bg-white p-3" data-testid="wechat-qr" inner_html=svg></div>
                            }.into_any(),
                            Err(e) => view! { <p role="alert" class="alert-error mt-4">{e}</p> }.into_any(),
                        })}
                        {(!p.instructions.is_empty()).then(|| view! {
                            <p class="mt-4 text-sm">{t("Transfer the exact amount from your company account, with the reference in the note. Support confirms receipt, usually within one business day.")}</p>
                            <dl class="mt-3 grid grid-cols-1 gap-2 text-sm sm:grid-cols-2" data-testid="bank-instructions">
                                {p.instructions.clone().into_iter().map(|(k, v)| view! {
                                    <div><dt class="text-slate-500">{k}</dt><dd class="font-mono font-medium">{v}</dd></div>
                                }).collect_view()}
                            </dl>
                        })}
                        {p.sandbox.then(|| view! {
                            <p class="mt-4 text-sm text-slate-600 dark:text-slate-400">{t("Sandbox payment: no money moves. The payment is confirmed through the same signed notification a real provider sends.")}</p>
                            <ActionForm action=sandbox attr:class="mt-3">
                                <input type="hidden" name="id" value=sandbox_id />
                                <button type="submit" class="btn-primary w-full">{tf("Pay {} in the sandbox", &[&p.order.amount])}</button>
                            </ActionForm>
                        })}
                        {p.can_pay_from_balance.then(|| view! {
                            <ActionForm action=balance attr:class="mt-3">
                                <input type="hidden" name="id" value=balance_id />
                                <button type="submit" class="btn-ghost w-full">{t("Pay from my balance")}</button>
                            </ActionForm>
                        })}
                    }.into_any()
                }}
                <div class="mt-3 space-y-2"><ActionError value=sandbox.value() /><ActionError value=balance.value() /></div>
            </section>
        </Loaded>
    }
}
