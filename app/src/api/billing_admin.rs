//! Staff side of billing: bank transfers, orders, refunds, invoices, trials, plans and
//! enquiries. Every function starts with `require_staff`.

#[allow(unused_imports)]
use crate::i18n::{label, t, tf};
#[cfg(feature = "ssr")]
use crate::ssr::billing_error;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueItem {
    pub id: String,
    pub who: String,
    pub what: String,
    pub amount: String,
    pub when: String,
    pub detail: String,
}

/// A refund request with what approval would pay now (days as of the request, allowance use as
/// of now).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundItem {
    pub item: QueueItem,
    pub negotiated: bool,
    /// (label, value) rows: days-based amount, allowance used, deduction, refund.
    pub figures: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuesView {
    pub transfers: Vec<QueueItem>,
    pub refunds: Vec<RefundItem>,
    pub invoices: Vec<crate::api::invoices::InvoiceView>,
    /// Issued invoices of refunded orders, waiting for their red-letter reversal.
    pub reversals: Vec<crate::api::invoices::InvoiceView>,
    pub trials: Vec<QueueItem>,
    pub enquiries: Vec<QueueItem>,
}

#[server(endpoint = "admin/billing")]
pub async fn billing_queues() -> Result<QueuesView, ServerFnError> {
    use cloudrouter_core::{accounts, billing};
    use crate::ssr::{cny, internal, usd, when};
    crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let mut emails = std::collections::HashMap::<uuid::Uuid, String>::new();
    let mut email = async |id: uuid::Uuid| -> String {
        if let Some(e) = emails.get(&id) {
            return e.clone();
        }
        let e = accounts::find_by_id(&pool, id).await.ok().flatten().map(|u| u.email).unwrap_or_else(|| id.to_string());
        emails.insert(id, e.clone());
        e
    };
    let mut transfers = vec![];
    for o in billing::orders::pending_bank_transfers(&pool).await.map_err(internal)? {
        transfers.push(QueueItem {
            id: o.id.to_string(),
            who: email(o.user_id).await,
            what: format!("{} {}", label(o.kind.as_str()), o.plan_code.clone().unwrap_or_default()),
            amount: cny(o.amount_micros),
            when: when(o.created_at),
            detail: o.reference.clone(),
        });
    }
    let mut refunds = vec![];
    for (r, q) in billing::refunds::list_pending(&pool).await.map_err(billing_error)? {
        let used = q.allowance_use.iter().map(|c| format!("{} {}", label(&c.channel), usd(c.used_micro_usd))).collect::<Vec<_>>().join(", ");
        let figures = vec![
            (t("Days-based amount").to_string(), tf("{} ({} of {} days left)", &[&cny(q.days_amount_micros), &q.remaining_days, &q.cycle_days])),
            (
                t("Allowance used").to_string(),
                tf("{} of {} (elapsed share {}){}", &[&usd(q.allowance_used_micro_usd()), &usd(q.allowance_micro_usd), &usd(q.elapsed_share_micro_usd), &if used.is_empty() { String::new() } else { format!(": {used}") }]),
            ),
            (t("Deduction").to_string(), tf("{} for {} beyond the share", &[&cny(q.deduction_micros), &usd(q.excess_micro_usd)])),
            (t("Refund if approved now").to_string(), cny(q.amount_micros)),
        ];
        refunds.push(RefundItem {
            item: QueueItem {
                id: r.id.to_string(),
                who: email(r.user_id).await,
                what: if q.repeat { t("Subscription refund (negotiated: no-questions refund of this plan already used)").into() } else { t("Subscription refund").into() },
                amount: cny(q.amount_micros),
                when: when(r.created_at),
                detail: r.reason.clone(),
            },
            negotiated: q.negotiated,
            figures,
        });
    }
    let trials = billing::trials::pending(&pool)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|a| QueueItem { id: a.id.to_string(), who: a.email, what: t("Trial credit").into(), amount: String::new(), when: when(a.created_at), detail: a.reason })
        .collect();
    let enquiries = billing::enquiries::list(&pool, false)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|e| QueueItem {
            id: e.id.to_string(),
            who: format!("{} <{}> {}", e.contact_name, e.email, e.phone),
            what: format!("{} ({})", e.company, label(&e.status)),
            amount: String::new(),
            when: when(e.created_at),
            detail: e.message,
        })
        .collect();
    Ok(QueuesView {
        transfers,
        refunds,
        invoices: billing::invoices::queue(&pool).await.map_err(internal)?.into_iter().map(crate::api::invoices::invoice_view).collect(),
        reversals: billing::invoices::reversals_due(&pool).await.map_err(internal)?.into_iter().map(crate::api::invoices::invoice_view).collect(),
        trials,
        enquiries,
    })
}

#[server(endpoint = "admin/transfers/confirm")]
pub async fn confirm_transfer(id: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such order.")?;
    cloudrouter_core::billing::purchases::confirm_bank_transfer(&crate::ssr::pool()?, staff.id, id).await.map_err(billing_error)?;
    Ok(t("Transfer confirmed; the order is paid.").into())
}

#[server(endpoint = "admin/refunds/decide")]
pub async fn decide_refund(id: String, approve: bool, amount: String, note: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::refunds;
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such refund request.")?;
    let pool = crate::ssr::pool()?;
    if note.trim().is_empty() {
        return Err(ServerFnError::new(t("Write a note for the customer.")));
    }
    if approve {
        let amount = match amount.trim() {
            "" => None,
            a => Some(cloudrouter_core::money::MicroCny::parse(a).map_err(|_| ServerFnError::new(t("Enter the refund amount in yuan.")))?),
        };
        let decided = refunds::approve(&pool, staff.id, id, amount, note.trim()).await.map_err(billing_error)?;
        tell_customer(&decided).await?;
        Ok(t("Refund approved.").into())
    } else {
        let decided = refunds::reject(&pool, staff.id, id, note.trim()).await.map_err(billing_error)?;
        tell_customer(&decided).await?;
        Ok(t("Refund rejected.").into())
    }
}

/// Mails a refund's decision and its note to the customer, in their language, through the
/// account mail (SMTP where configured); their Billing page shows the same.
#[cfg(feature = "ssr")]
async fn tell_customer(r: &cloudrouter_core::billing::refunds::RefundRequest) -> Result<(), ServerFnError> {
    let state = crate::ssr::state()?;
    let Some(user) = cloudrouter_core::accounts::find_by_id(&state.pool, r.user_id).await.map_err(crate::ssr::internal)? else {
        return Ok(());
    };
    let mail = super::mails::refund_decided(&state.public_base_url, user.email, user.locale.as_deref(), r);
    state.outbox.queue(&state.pool, &mail).await.map_err(crate::ssr::internal)
}

#[server(endpoint = "admin/invoices/reject")]
pub async fn reject_invoice(id: String, reason: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such invoice.")?;
    if reason.trim().is_empty() {
        return Err(ServerFnError::new(t("Give the customer a reason.")));
    }
    cloudrouter_core::billing::invoices::reject(&crate::ssr::pool()?, staff.id, id, reason.trim()).await.map_err(billing_error)?;
    Ok(t("Invoice request rejected.").into())
}

/// Records the red-letter invoice that reverses an invoice of a refunded order.
#[server(endpoint = "admin/invoices/reverse")]
pub async fn record_invoice_reversal(id: String, number: String, issued_on: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such invoice.")?;
    let on = crate::ssr::parse_day(&issued_on).ok_or_else(|| ServerFnError::new(t("Enter the date of the red-letter invoice.")))?;
    cloudrouter_core::billing::invoices::record_reversal(&crate::ssr::pool()?, staff.id, id, &number, on).await.map_err(billing_error)?;
    Ok(t("Reversal recorded.").into())
}

#[server(endpoint = "admin/trials/decide")]
pub async fn decide_trial(id: String, approve: bool, amount: String, days: String, note: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::trials;
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such trial application.")?;
    let pool = crate::ssr::pool()?;
    if approve {
        let micros = cloudrouter_core::money::MicroCny::parse(&amount)
            .ok()
            .filter(|m| m.is_positive())
            .ok_or_else(|| ServerFnError::new(t("Enter the trial amount in yuan.")))?;
        let days: i64 = days.trim().parse().ok().filter(|d| (1..=365).contains(d)).ok_or_else(|| ServerFnError::new(t("Expiry must be 1 to 365 days.")))?;
        trials::approve(&pool, staff.id, id, micros, chrono::Utc::now() + chrono::Duration::days(days)).await.map_err(billing_error)?;
        Ok(t("Trial approved.").into())
    } else {
        trials::decline(&pool, staff.id, id, note.trim()).await.map_err(billing_error)?;
        Ok(t("Trial declined.").into())
    }
}

#[server(endpoint = "admin/enquiries/status")]
pub async fn set_enquiry_status(id: String, status: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&id, "No such enquiry.")?;
    cloudrouter_core::billing::enquiries::set_status(&crate::ssr::pool()?, staff.id, id, &status, "").await.map_err(billing_error)?;
    Ok(tf("Enquiry marked {}.", &[&label(&status)]))
}

/// Custom terms for one customer (after an enterprise enquiry): an order on `plan` that the
/// customer pays by bank transfer; its subscription renews on that plan even if it is not for sale.
#[server(endpoint = "admin/user/offer-plan")]
pub async fn offer_plan(id: String, plan: String) -> Result<String, ServerFnError> {
    let staff = crate::ssr::require_staff().await?;
    let user_id = crate::ssr::parse_uuid(&id, "No such user.")?;
    let o = cloudrouter_core::billing::purchases::offer_subscription(&crate::ssr::pool()?, staff.id, user_id, plan.trim())
        .await
        .map_err(billing_error)?;
    Ok(tf(
        "Order {} created: the customer pays {} by bank transfer with that reference (it is on their Billing page); confirm receipt in the billing queue.",
        &[&o.reference, &crate::ssr::cny(o.amount_micros)],
    ))
}

#[server(endpoint = "admin/plans")]
pub async fn admin_plans() -> Result<Vec<cloudrouter_plan::PlanForm>, ServerFnError> {
    crate::ssr::require_staff().await?;
    let plans = cloudrouter_core::billing::plans::list(&crate::ssr::pool()?).await.map_err(crate::ssr::internal)?;
    Ok(plans.into_iter().map(cloudrouter_plan::form).collect())
}

/// Plan fields as the staff form shows them (money as decimal strings).
pub mod cloudrouter_plan {
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct PlanForm {
        pub code: String,
        pub name: String,
        pub price_yuan: String,
        pub allowance_usd: String,
        pub channels: String,
        pub rpm_limit: String,
        pub concurrency_limit: String,
        pub tpm_limit: String,
        /// caps of the 5-hour and weekly windows, decimal dollars ("" = none)
        pub window_5h_usd: String,
        pub weekly_usd: String,
        pub purchasable: bool,
    }

    #[cfg(feature = "ssr")]
    pub fn form(p: cloudrouter_core::billing::plans::Plan) -> PlanForm {
        PlanForm {
            price_yuan: p.price_micros.decimal(),
            allowance_usd: p.allowance_micro_usd.decimal(),
            channels: p.channels.join(", "),
            rpm_limit: p.rpm_limit.map(|v| v.to_string()).unwrap_or_default(),
            concurrency_limit: p.concurrency_limit.map(|v| v.to_string()).unwrap_or_default(),
            tpm_limit: p.tpm_limit.map(|v| v.to_string()).unwrap_or_default(),
            window_5h_usd: p.window_5h_micro_usd.map(|v| v.decimal()).unwrap_or_default(),
            weekly_usd: p.weekly_micro_usd.map(|v| v.decimal()).unwrap_or_default(),
            purchasable: p.purchasable,
            code: p.code,
            name: p.name,
        }
    }
}

/// Edits a plan for future purchases; subscriptions already bought keep their terms.
#[server(endpoint = "admin/plans/update")]
pub async fn update_plan(
    code: String,
    price_yuan: String,
    allowance_usd: String,
    channels: String,
    rpm_limit: String,
    concurrency_limit: String,
    // a form without the field keeps the plan's
    tpm_limit: Option<String>,
    window_5h_usd: Option<String>,
    weekly_usd: Option<String>,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::plans;
    use cloudrouter_core::money::{MicroCny, MicroUsd};
    let staff = crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    let mut plan = plans::get(&pool, &code).await.map_err(crate::ssr::internal)?.ok_or_else(|| ServerFnError::new(t("No such plan.")))?;
    let amount = |s: &str, what: &'static str| {
        cloudrouter_core::money::parse_decimal(s).ok().filter(|v| *v >= 0).ok_or_else(|| ServerFnError::new(tf("{} must be a non-negative amount.", &[&t(what)])))
    };
    let limit = |s: &str| -> Result<Option<i32>, ServerFnError> {
        match s.trim() {
            "" => Ok(None),
            s => s.parse().ok().filter(|v: &i32| *v > 0).map(Some).ok_or_else(|| ServerFnError::new(t("Limits must be positive whole numbers."))),
        }
    };
    plan.price_micros = MicroCny::from_micros(amount(&price_yuan, "The price")?);
    plan.allowance_micro_usd = MicroUsd::from_micros(amount(&allowance_usd, "The allowance")?);
    plan.channels = channels.split([',', ' ']).map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect();
    plan.rpm_limit = limit(&rpm_limit)?;
    plan.concurrency_limit = limit(&concurrency_limit)?;
    if let Some(tpm) = tpm_limit {
        plan.tpm_limit = limit(&tpm)?;
    }
    let cap = |s: &str| -> Result<Option<MicroUsd>, ServerFnError> {
        match s.trim() {
            "" => Ok(None),
            s => cloudrouter_core::money::parse_decimal(s)
                .ok()
                .filter(|v| *v > 0)
                .map(|v| Some(MicroUsd::from_micros(v)))
                .ok_or_else(|| ServerFnError::new(t("Window caps must be positive dollar amounts (or empty for none)."))),
        }
    };
    if let Some(c) = window_5h_usd {
        plan.window_5h_micro_usd = cap(&c)?;
    }
    if let Some(c) = weekly_usd {
        plan.weekly_micro_usd = cap(&c)?;
    }
    plans::update_by(&pool, staff.id, &plan).await.map_err(billing_error)?;
    Ok(tf("Plan {} saved. It applies to new purchases and renewals.", &[&crate::i18n::tr(&plan.name)]))
}
