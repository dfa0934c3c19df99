//! Plans, subscriptions, orders and payments, refunds, invoices and trials — the customer side.
//! The rules live in `cloudrouter_core::billing`; these functions check the caller and shape
//! the data for the pages.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    pub code: String,
    pub name: String,
    pub description: String,
    pub audience: String,
    pub price: Option<String>,
    /// What the price buys: "¥99.00 a month buys $30.00 of list-price usage."
    pub buys: Option<String>,
    /// The same allowance bought pay-as-you-go, on each of the plan's channels:
    /// "On Value (¥0.60 / $1) pay-as-you-go, the same costs ¥18.00."
    pub payg: Vec<String>,
    pub channels: String,
    pub limits: String,
    pub sla: bool,
    pub refund: String,
    pub purchasable: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionView {
    pub plan_code: String,
    pub plan_name: String,
    pub price: String,
    pub cycle: String,
    pub cycle_end: String,
    pub allowance: String,
    pub allowance_used: String,
    pub allowance_left: String,
    pub used_percent: u32,
    pub pending_plan: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderView {
    pub id: String,
    pub kind: String,
    pub plan: Option<String>,
    pub amount: String,
    pub status: String,
    pub method: String,
    pub reference: String,
    pub created: String,
    pub paid: Option<String>,
    pub invoice_status: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundView {
    pub plan_name: String,
    pub eligible: bool,
    pub negotiated: bool,
    /// The customer already had this plan's no-questions refund: this one is agreed with staff.
    pub repeat: bool,
    pub reason: Option<String>,
    pub amount: String,
    /// The days-based amount: "¥399.00 × 29 / 30 remaining days = ¥385.70".
    pub explanation: String,
    /// The allowance deduction, when there is one: "less ¥87.00 for $145.00 … = ¥298.70".
    pub deduction: Option<String>,
    /// "$150.00 of $150.00 used; the 1 day used so far accounts for $5.00."
    pub allowance: String,
    pub open_request: Option<String>,
}

/// One refund request as its customer follows it: asked, then decided with support's note.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundRequestView {
    pub requested: String,
    pub amount: String,
    /// pending | approved | rejected
    pub status: String,
    pub decided: Option<String>,
    /// What support wrote to the customer with the decision.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialView {
    pub status: String,
    pub amount: Option<String>,
    pub remaining: String,
    pub expires: Option<String>,
}

/// A way to pay that this deployment offers: (method code, label).
pub type PayMethod = (String, String);

/// The payment methods configured here (the sandbox only where it is on).
#[cfg(feature = "ssr")]
pub fn pay_methods(state: &crate::ssr::ConsoleState) -> Vec<PayMethod> {
    let label = |m: &str| match m {
        "alipay" => crate::i18n::t("Alipay"),
        "wechat" => crate::i18n::t("WeChat Pay"),
        "bank" => crate::i18n::t("Corporate bank transfer"),
        "sandbox" => crate::i18n::t("Sandbox payments: test money, demo only"),
        _ => "",
    };
    state
        .payments
        .methods()
        .into_iter()
        .filter(|m| !label(m.as_str()).is_empty())
        .map(|m| (m.to_string(), label(m.as_str()).to_string()))
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlansData {
    pub methods: Vec<PayMethod>,
    pub plans: Vec<PlanView>,
    pub current: Option<SubscriptionView>,
    pub balance: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BillingSummary {
    pub methods: Vec<PayMethod>,
    pub current: Option<SubscriptionView>,
    pub trial: Option<TrialView>,
    pub orders: Vec<OrderView>,
    pub refund: Option<RefundView>,
    pub refunds: Vec<RefundRequestView>,
}

#[cfg(feature = "ssr")]
pub mod convert {
    use super::*;
    use crate::ssr::{cny, usd, when};
    use cloudrouter_core::billing::{orders::Order, plans::Plan, subscriptions::Subscription};
    use cloudrouter_core::catalogue::Channel;

    /// Every plan, priced against today's channel rates.
    pub async fn plans(pool: &sqlx::PgPool) -> Result<Vec<PlanView>, ServerFnError> {
        let plans = cloudrouter_core::billing::plans::list(pool).await.map_err(crate::ssr::internal)?;
        let channels = cloudrouter_core::catalogue::list_channels(pool).await.map_err(crate::ssr::internal)?;
        Ok(plans.into_iter().map(|p| plan(p, &channels)).collect())
    }

    pub fn plan(p: Plan, channels: &[Channel]) -> PlanView {
        use crate::i18n::{tf, tr};
        let priced = p.purchasable && p.price_micros.is_positive();
        let allowance = p.allowance_micro_usd;
        let payg = if priced && allowance.is_positive() {
            p.channels
                .iter()
                .filter_map(|code| channels.iter().find(|c| &c.code == code))
                // the rate reads "¥0.60 / $1"
                .map(|c| tf("On {} ({}) pay-as-you-go, the same costs {}.", &[&tr(&c.name), &c.rate_micros_per_usd, &c.rate_micros_per_usd.charge(allowance).glance()]))
                .collect()
        } else {
            vec![]
        };
        let limits = [
            p.rpm_limit.map(|r| crate::i18n::tf("{} requests/min", &[&r])),
            p.concurrency_limit.map(|c| crate::i18n::tf("{} concurrent", &[&c])),
            p.tpm_limit.map(|n| crate::i18n::tf("{} tokens/min", &[&n])),
            p.window_5h_micro_usd.map(|c| crate::i18n::tf("{} per 5 hours", &[&usd(c)])),
            p.weekly_micro_usd.map(|c| crate::i18n::tf("{} per week", &[&usd(c)])),
        ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · ");
        PlanView {
            price: priced.then(|| crate::i18n::tf("{} / month", &[&p.price_micros.glance()])),
            buys: (priced && allowance.is_positive())
                .then(|| crate::i18n::tf("{} a month buys {} of list-price usage.", &[&p.price_micros.glance(), &usd(allowance)])),
            payg,
            channels: p.channels.iter().map(|c| crate::i18n::tr(c)).collect::<Vec<_>>().join(", "),
            limits: if limits.is_empty() { crate::i18n::t("Standard limits").into() } else { limits },
            refund: match p.refund_window_days {
                Some(d) => crate::i18n::tf("{}-day no-questions refund", &[&d]),
                None if p.purchasable => crate::i18n::t("Refund by negotiation").into(),
                None => String::new(),
            },
            name: crate::i18n::tr(&p.name),
            code: p.code,
            description: crate::i18n::tr(&p.description),
            audience: crate::i18n::tr(&p.audience),
            sla: p.sla,
            purchasable: p.purchasable,
        }
    }

    /// The caller's current subscription, with the plan it changes to named as people read it.
    pub async fn current(pool: &sqlx::PgPool, user_id: uuid::Uuid) -> Result<Option<SubscriptionView>, ServerFnError> {
        use cloudrouter_core::billing::{plans, subscriptions};
        let Some(s) = subscriptions::current(pool, user_id, chrono::Utc::now()).await.map_err(crate::ssr::internal)? else {
            return Ok(None);
        };
        let pending = match &s.pending_plan_code {
            Some(code) => Some(plans::get(pool, code).await.map_err(crate::ssr::internal)?.map_or_else(|| code.clone(), |p| crate::i18n::tr(&p.name))),
            None => None,
        };
        Ok(Some(SubscriptionView { pending_plan: pending, ..subscription(s) }))
    }

    fn subscription(s: Subscription) -> SubscriptionView {
        let left = s.allowance_left_micro_usd().max(cloudrouter_core::money::MicroUsd::ZERO);
        let (used, all) = (s.allowance_used_micro_usd.micros(), s.allowance_micro_usd.micros());
        SubscriptionView {
            used_percent: if all > 0 { ((used.min(all) * 100) / all) as u32 } else { 0 },
            cycle: format!("{} – {}", s.cycle_start.format("%Y-%m-%d"), s.cycle_end.format("%Y-%m-%d")),
            cycle_end: when(s.cycle_end),
            price: cny(s.price_micros),
            allowance: usd(s.allowance_micro_usd),
            allowance_used: usd(s.allowance_used_micro_usd),
            allowance_left: usd(left),
            pending_plan: None,
            plan_code: s.plan_code,
            plan_name: crate::i18n::tr(&s.plan_name),
        }
    }

    pub fn order(o: Order, invoice_status: Option<String>) -> OrderView {
        OrderView {
            id: o.id.to_string(),
            amount: cny(o.amount_micros),
            created: when(o.created_at),
            paid: o.paid_at.map(when),
            kind: o.kind.to_string(),
            plan: o.plan_name.map(|n| crate::i18n::tr(&n)).or(o.plan_code),
            status: o.status.to_string(),
            method: o.method.to_string(),
            reference: o.reference,
            invoice_status,
        }
    }
}

#[cfg(feature = "ssr")]
use crate::ssr::{billing_error, payment_method};

#[server(endpoint = "plans")]
pub async fn plans_page() -> Result<PlansData, ServerFnError> {
    use cloudrouter_core::billing::ledger;
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let pool = state.pool.clone();
    let plans = convert::plans(&pool).await?;
    let current = convert::current(&pool, user.id).await?;
    let balance = ledger::balance(&pool, user.id).await.map_err(crate::ssr::internal)?;
    Ok(PlansData {
        methods: pay_methods(&state),
        plans,
        current,
        balance: crate::ssr::cny(balance),
    })
}

/// The plans for the signed-out front page: prices, what they buy, and the same at pay-as-you-go.
#[server(endpoint = "plans/public")]
pub async fn public_plans() -> Result<Vec<PlanView>, ServerFnError> {
    convert::plans(&crate::ssr::pool()?).await
}

/// Starts a purchase: creates the order and answers where the browser goes to pay it.
#[server(endpoint = "plans/subscribe")]
pub async fn subscribe(plan: String, method: String) -> Result<(), ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let order = cloudrouter_core::billing::purchases::create_subscription(&crate::ssr::pool()?, user.id, &plan, payment_method(&method)?)
        .await
        .map_err(billing_error)?;
    leptos_axum::redirect(&format!("/console/pay/{}", order.id));
    Ok(())
}

#[server(endpoint = "plans/change")]
pub async fn change_plan(plan: String) -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let sub = cloudrouter_core::billing::subscriptions::schedule_change(&pool, user.id, &plan).await.map_err(billing_error)?;
    let name = cloudrouter_core::billing::plans::get(&pool, &plan).await.map_err(crate::ssr::internal)?.map_or(plan, |p| crate::i18n::tr(&p.name));
    Ok(crate::i18n::tf("Your plan changes to {} on {}.", &[&name, &crate::ssr::when(sub.cycle_end)]))
}

#[server(endpoint = "plans/change/cancel")]
pub async fn cancel_plan_change() -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    cloudrouter_core::billing::subscriptions::cancel_change(&crate::ssr::pool()?, user.id).await.map_err(billing_error)?;
    Ok(crate::i18n::t("The scheduled plan change is cancelled.").into())
}

/// Past a plan window's cap: go on at pay-as-you-go prices (`on`), or be refused until it resets.
#[server(endpoint = "plans/overflow")]
pub async fn set_plan_overflow(on: bool) -> Result<(), ServerFnError> {
    let user = crate::ssr::require_user().await?;
    cloudrouter_core::billing::windows::set_overflow_payg(&crate::ssr::pool()?, user.id, on).await.map_err(crate::ssr::internal)
}

#[server(endpoint = "topup")]
pub async fn top_up(amount: String, method: String) -> Result<(), ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let amount = cloudrouter_core::money::MicroCny::parse(&amount)
        .map_err(|_| ServerFnError::new(crate::i18n::t("Enter an amount in yuan, like 100 or 49.90.")))?;
    let order = cloudrouter_core::billing::purchases::create_topup(&crate::ssr::pool()?, user.id, amount, payment_method(&method)?)
        .await
        .map_err(billing_error)?;
    leptos_axum::redirect(&format!("/console/pay/{}", order.id));
    Ok(())
}

#[server(endpoint = "billing/overview")]
pub async fn billing_overview() -> Result<BillingSummary, ServerFnError> {
    use cloudrouter_core::billing::{invoices, orders, refunds, trials};
    use crate::ssr::{cny, internal, when};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let pool = state.pool.clone();
    let now = chrono::Utc::now();
    let current = convert::current(&pool, user.id).await?;
    let invoiced: std::collections::HashMap<_, _> =
        invoices::list_for_user(&pool, user.id).await.map_err(internal)?.into_iter().map(|i| (i.order_id, i.status)).collect();
    let orders = orders::list(&pool, user.id).await.map_err(internal)?;
    let requests = refunds::list_for_user(&pool, user.id).await.map_err(internal)?;
    let quote = refunds::quote(&pool, user.id, now).await.map_err(internal)?;
    let open = requests.iter().find(|r| r.status == "pending").map(|r| crate::i18n::tf("Requested {} for {}", &[&when(r.created_at), &cny(r.amount_micros)]));
    let trial = trials::mine(&pool, user.id).await.map_err(internal)?;
    Ok(BillingSummary {
        methods: pay_methods(&state),
        current,
        trial: trial.map(|t| TrialView {
            status: t.status,
            amount: t.amount_micros.map(cny),
            remaining: cny(t.remaining_micros),
            expires: t.expires_at.map(when),
        }),
        orders: orders.into_iter().map(|o| { let inv = invoiced.get(&o.id).cloned(); convert::order(o, inv) }).collect(),
        refund: quote.map(|q| RefundView { open_request: open, ..refund_view(q) }),
        refunds: requests
            .into_iter()
            .map(|r| RefundRequestView {
                requested: when(r.created_at),
                amount: cny(r.amount_micros),
                decided: r.decided_at.map(when),
                note: Some(r.staff_note).filter(|n| !n.trim().is_empty()),
                status: r.status,
            })
            .collect(),
    })
}

/// The quote in the caller's language, said again from its figures rather than from the core
/// crate's English sentence.
#[cfg(feature = "ssr")]
fn refund_view(q: cloudrouter_core::billing::refunds::RefundQuote) -> RefundView {
    use crate::i18n::{t, tf, tr};
    use crate::ssr::{cny, usd};
    let suggested = if q.negotiated { t(" (suggested; the final amount is agreed with our team)") } else { "" };
    let days = tf("{} × {} / {} remaining days = {}", &[&cny(q.paid_micros), &q.remaining_days, &q.cycle_days, &cny(q.days_amount_micros)]);
    let deduction = q.deduction_micros.is_positive().then(|| {
        tf(
            "less {} for {} of allowance used beyond the elapsed days' share ({} of {}) = {}",
            &[&cny(q.deduction_micros), &usd(q.excess_micro_usd), &usd(q.elapsed_share_micro_usd), &usd(q.allowance_micro_usd), &cny(q.amount_micros)],
        )
    });
    RefundView {
        plan_name: tr(&q.plan_name),
        eligible: q.eligible,
        negotiated: q.negotiated,
        repeat: q.repeat,
        reason: q.reason.as_ref().map(crate::core_words::ineligible),
        amount: cny(q.amount_micros),
        explanation: format!("{days}{}", if deduction.is_some() { "" } else { suggested }),
        deduction: deduction.map(|d| format!("{d}{suggested}")),
        allowance: tf(
            "{} of {} used; the {} days used so far account for {}.",
            &[&usd(q.allowance_used_micro_usd()), &usd(q.allowance_micro_usd), &q.used_days, &usd(q.elapsed_share_micro_usd)],
        ),
        open_request: None,
    }
}

#[server(endpoint = "refunds/request")]
pub async fn request_refund(reason: String) -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let r = cloudrouter_core::billing::refunds::request(&crate::ssr::pool()?, user.id, chrono::Utc::now(), reason.trim()).await.map_err(billing_error)?;
    Ok(crate::i18n::tf("Refund of {} requested. Support will answer shortly.", &[&crate::ssr::cny(r.amount_micros)]))
}

#[server(endpoint = "trial/apply")]
pub async fn apply_for_trial(reason: String) -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    cloudrouter_core::billing::trials::apply(&crate::ssr::pool()?, user.id, reason.trim()).await.map_err(billing_error)?;
    Ok(crate::i18n::t("Thanks! Your trial application is with support.").into())
}

#[server(endpoint = "orders/cancel")]
pub async fn cancel_order(id: String) -> Result<String, ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let id = crate::ssr::parse_uuid(&id, "No such order.")?;
    cloudrouter_core::billing::orders::cancel(&crate::ssr::pool()?, user.id, id).await.map_err(billing_error)?;
    Ok(crate::i18n::t("Order cancelled.").into())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentView {
    pub order: OrderView,
    pub what: String,
    /// Where to go to pay (Alipay, WeChat Pay), if the method works by redirect.
    pub redirect: Option<String>,
    /// Bank transfer instructions: (label, value) rows.
    pub instructions: Vec<(String, String)>,
    pub sandbox: bool,
    pub can_pay_from_balance: bool,
    /// WeChat Pay: the QR code (SVG) to scan, or why it could not be had.
    pub wechat_qr: Option<Result<String, String>>,
}

#[server(endpoint = "pay")]
pub async fn pay_page(id: String) -> Result<PaymentView, ServerFnError> {
    use cloudrouter_core::billing::orders::{OrderKind, OrderStatus, PaymentMethod};
    use cloudrouter_core::billing::{orders, payments::Checkout};
    use crate::i18n::{t, tf, tr};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let id = crate::ssr::parse_uuid(&id, "No such order.")?;
    let order = orders::get(&state.pool, user.id, id).await.map_err(crate::ssr::internal)?.ok_or_else(|| ServerFnError::new(crate::i18n::t("No such order.")))?;
    let balance = cloudrouter_core::billing::ledger::balance_info(&state.pool, user.id).await.map_err(crate::ssr::internal)?;
    let what = match (order.kind, &order.plan_name) {
        (OrderKind::Topup, _) => t("Balance top-up").to_string(),
        (_, Some(plan)) => tf("{} plan, one month", &[&tr(plan)]),
        _ => t("Order").to_string(),
    };
    let (mut redirect, mut instructions, mut wechat_qr) = (None, vec![], None);
    let open = order.status == OrderStatus::Created;
    if open && order.method == PaymentMethod::Wechat {
        if let Some(w) = state.payments.wechat() {
            wechat_qr = Some(match w.native_code_url(&order).await {
                Ok(code_url) => crate::ssr::qr_svg(&code_url),
                Err(e) => {
                    tracing::warn!(error = %e, "WeChat Pay did not give a QR code");
                    Err(t("WeChat Pay could not start this payment. Please try again or choose another method.").into())
                }
            });
        }
    } else if open && order.method != PaymentMethod::Sandbox {
        if let Some(provider) = state.payments.get(order.method) {
            match provider.checkout(&order, &format!("{}/console/billing", state.public_base_url)) {
                Checkout::Redirect(url) => redirect = Some(url),
                Checkout::Instructions { bank_name, account_name, account_number, reference, amount } => {
                    instructions = vec![
                        (t("Bank").into(), bank_name),
                        (t("Account name").into(), account_name),
                        (t("Account number").into(), account_number),
                        (t("Amount").into(), crate::ssr::cny(amount)),
                        (t("Reference (write it in the transfer note)").into(), reference),
                    ]
                }
            }
        }
    }
    Ok(PaymentView {
        sandbox: order.method == PaymentMethod::Sandbox,
        can_pay_from_balance: order.kind != OrderKind::Topup && open && balance.available_micros >= order.amount_micros,
        what,
        redirect,
        instructions,
        wechat_qr,
        order: convert::order(order, None),
    })
}

/// The demo's sandbox payment: the browser stands in for the provider, and the notification is
/// signed and verified exactly as a real one would be.
#[server(endpoint = "pay/sandbox")]
pub async fn pay_in_sandbox(id: String) -> Result<(), ServerFnError> {
    use cloudrouter_core::billing::{orders, payments};
    let user = crate::ssr::require_user().await?;
    let state = crate::ssr::state()?;
    let id = crate::ssr::parse_uuid(&id, "No such order.")?;
    let order = orders::get(&state.pool, user.id, id).await.map_err(crate::ssr::internal)?.ok_or_else(|| ServerFnError::new(crate::i18n::t("No such order.")))?;
    let provider = state.payments.sandbox().ok_or_else(|| ServerFnError::new(crate::i18n::t("Sandbox payments are switched off here.")))?;
    let body = state.sandbox.sign(order.id, order.amount_micros);
    payments::handle_notification(&state.pool, provider, &http::HeaderMap::new(), body.as_bytes())
        .await
        .map_err(|e| match e {
            payments::PaymentError::Billing(e) => billing_error(e),
            // The sandbox signs its own notifications: any other failure is ours.
            other => crate::ssr::internal(other),
        })?;
    // Billing confirms the payment ("Payment received") for the order named here.
    leptos_axum::redirect(&format!("/console/billing?paid={}", order.id));
    Ok(())
}

#[server(endpoint = "pay/balance")]
pub async fn pay_from_balance(id: String) -> Result<(), ServerFnError> {
    let user = crate::ssr::require_user().await?;
    let id = crate::ssr::parse_uuid(&id, "No such order.")?;
    cloudrouter_core::billing::purchases::pay_with_balance(&crate::ssr::pool()?, user.id, id).await.map_err(billing_error)?;
    leptos_axum::redirect(&format!("/console/billing?paid={id}"));
    Ok(())
}

#[server(endpoint = "enterprise/enquire")]
pub async fn enterprise_enquiry(
    company: String,
    contact_name: String,
    email: String,
    phone: String,
    monthly_spend: String,
    message: String,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::enquiries::{self, EnquiryForm};
    let user = crate::ssr::require_user().await?;
    // The expected spend is part of what the team reads first.
    let message = match monthly_spend.trim() {
        "" => message,
        spend => format!("Expected monthly spend: {spend}\n\n{message}"),
    };
    let form = EnquiryForm { company, contact_name, email, phone, message };
    enquiries::submit(&crate::ssr::pool()?, Some(user.id), &form).await.map_err(billing_error)?;
    Ok(crate::i18n::t("Thank you. Our enterprise team will contact you within one business day.").into())
}
