//! Redeem codes: the customer's redemption on the Billing page, and the staff functions
//! (generate, list, export, void), each starting with `require_staff`. The rules are in
//! `cloudrouter_core::billing::redeem`.

#[allow(unused_imports)]
use crate::i18n::{t, tf};
#[cfg(feature = "ssr")]
use crate::ssr::{billing_error, internal};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchView {
    pub id: String,
    /// What each code gives, in the reader's language.
    pub value: String,
    pub note: String,
    pub created: String,
    pub created_by: String,
    pub expires: String,
    pub total: i64,
    pub redeemed: i64,
    pub voided: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeView {
    pub id: String,
    /// "K7QM-…"
    pub code: String,
    pub state: String,
    pub redeemed_by: String,
    pub redeemed_at: String,
}

/// A new batch: the codes in full, shown once, and the CSV of that moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratedView {
    pub batch: BatchView,
    pub codes: Vec<String>,
    pub csv: String,
}

#[cfg(feature = "ssr")]
fn batch_view(b: &cloudrouter_core::billing::redeem::Batch) -> BatchView {
    use cloudrouter_core::billing::redeem::CodeKind;
    let amount = b.amount_micros.unwrap_or_default().glance();
    let value = match b.kind {
        CodeKind::Balance => tf("{} balance", &[&amount]),
        CodeKind::Trial => tf("{} trial credit for {} days", &[&amount, &b.trial_days.unwrap_or_default()]),
        CodeKind::Plan => tf("{} plan for {} months", &[&crate::i18n::tr(b.plan_code.as_deref().unwrap_or_default()), &b.plan_months.unwrap_or_default()]),
    };
    BatchView {
        id: b.id.to_string(),
        value,
        note: b.note.clone(),
        created: crate::ssr::when(b.created_at),
        created_by: b.created_by_email.clone(),
        expires: b.expires_at.map(crate::ssr::when).unwrap_or_else(|| t("No expiry").into()),
        total: b.total,
        redeemed: b.redeemed,
        voided: b.voided,
    }
}

/// A customer redeems a code; the answer says what it gave.
#[server(endpoint = "redeem")]
pub async fn redeem_code(code: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::redeem::{self, Redeemed, RedeemError};
    let user = crate::ssr::require_user().await?;
    let done = redeem::redeem(&crate::ssr::pool()?, user.id, crate::ssr::client_addr()?, &code).await.map_err(|e| match e {
        RedeemError::Billing(e) => billing_error(e),
        RedeemError::Throttled(secs) => {
            crate::ssr::set_status(http::StatusCode::TOO_MANY_REQUESTS);
            ServerFnError::new(tf("Too many attempts. Try again in {} minutes.", &[&((secs.max(1) + 59) / 60)]))
        }
        other => ServerFnError::new(crate::i18n::tr(&other.to_string())),
    })?;
    Ok(match done {
        Redeemed::Balance { amount } => tf("Code redeemed: {} added to your balance.", &[&amount.glance()]),
        Redeemed::Trial { amount, until } => tf("Code redeemed: {} trial credit, valid until {}.", &[&amount.glance(), &crate::ssr::when(until)]),
        Redeemed::Plan { plan, until, .. } => tf("Code redeemed: the {} plan until {}.", &[&crate::i18n::tr(&plan), &crate::ssr::when(until)]),
    })
}

#[server(endpoint = "admin/redeem/batches")]
pub async fn redeem_batches() -> Result<Vec<BatchView>, ServerFnError> {
    crate::ssr::require_staff().await?;
    let batches = cloudrouter_core::billing::redeem::batches(&crate::ssr::pool()?).await.map_err(internal)?;
    Ok(batches.iter().map(batch_view).collect())
}

/// Generates a batch. `amount` is yuan (balance, trial), `days` the trial's days, `plan` and
/// `months` a plan code's; `expires` an optional last day (YYYY-MM-DD, end of that day in the
/// staff member's zone).
#[server(endpoint = "admin/redeem/generate")]
#[allow(clippy::too_many_arguments)]
pub async fn generate_codes(kind: String, count: String, amount: String, days: String, plan: String, months: String, expires: String, note: String) -> Result<GeneratedView, ServerFnError> {
    use cloudrouter_core::billing::redeem::{self, CodeKind, NewBatch};
    use cloudrouter_core::money::MicroCny;
    let staff = crate::ssr::require_staff().await?;
    let kind: CodeKind = kind.parse().map_err(|_| ServerFnError::new(t("Choose what the codes give.")))?;
    let number = |s: &str, what: &'static str| -> Result<Option<i32>, ServerFnError> {
        match s.trim() {
            "" => Ok(None),
            s => s.parse().map(Some).map_err(|_| ServerFnError::new(tf("Enter the {} as a whole number.", &[&t(what)]))),
        }
    };
    let amount = match amount.trim() {
        "" => None,
        a => Some(MicroCny::parse(a).map_err(|_| ServerFnError::new(t("Enter an amount in yuan, like 100 or 49.90.")))?),
    };
    let expires_at = match expires.trim() {
        "" => None,
        d => {
            let next = crate::ssr::parse_day(d).and_then(|day| day.succ_opt()).ok_or_else(|| ServerFnError::new(t("Dates are YYYY-MM-DD.")))?;
            // the end of the day named, in the staff member's zone
            Some(cloudrouter_core::zone::day_start(next, crate::ssr::zone()))
        }
    };
    let batch = NewBatch {
        kind,
        amount_micros: amount,
        trial_days: number(&days, "days")?,
        plan_code: Some(plan.trim().to_string()).filter(|p| !p.is_empty()),
        plan_months: number(&months, "months")?,
        count: number(&count, "number of codes")?.unwrap_or(0).max(0) as u32,
        expires_at,
        note,
    };
    let pool = crate::ssr::pool()?;
    let g = redeem::create_batch(&pool, staff.id, &batch).await.map_err(billing_error)?;
    let rows = redeem::codes(&pool, g.batch.id).await.map_err(internal)?;
    let csv = redeem::csv(&g.batch, &rows, Some(&g.codes));
    Ok(GeneratedView { batch: batch_view(&g.batch), codes: g.codes, csv })
}

#[server(endpoint = "admin/redeem/codes")]
pub async fn redeem_batch_codes(batch: String) -> Result<(Vec<CodeView>, String), ServerFnError> {
    use cloudrouter_core::billing::redeem;
    crate::ssr::require_staff().await?;
    let id = crate::ssr::parse_uuid(&batch, "No such batch.")?;
    let pool = crate::ssr::pool()?;
    let b = redeem::batch(&pool, id).await.map_err(internal)?.ok_or_else(|| ServerFnError::new(t("No such batch.")))?;
    let rows = redeem::codes(&pool, id).await.map_err(internal)?;
    let csv = redeem::csv(&b, &rows, None);
    let views = rows
        .iter()
        .map(|r| CodeView {
            id: r.id.to_string(),
            code: format!("{}-…", r.prefix),
            state: r.state.to_string(),
            redeemed_by: r.redeemed_by_email.clone(),
            redeemed_at: r.redeemed_at.map(crate::ssr::when).unwrap_or_default(),
        })
        .collect();
    Ok((views, csv))
}

/// Voids one unused code (`code` set) or every unused code of `batch`.
#[server(endpoint = "admin/redeem/void")]
pub async fn void_codes(batch: String, code: String) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::redeem;
    let staff = crate::ssr::require_staff().await?;
    let pool = crate::ssr::pool()?;
    if code.trim().is_empty() {
        let id = crate::ssr::parse_uuid(&batch, "No such batch.")?;
        let n = redeem::void_batch(&pool, staff.id, id).await.map_err(billing_error)?;
        Ok(tf("{} unused codes voided.", &[&n]))
    } else {
        let id: i64 = code.trim().parse().map_err(|_| ServerFnError::new(t("No such code.")))?;
        redeem::void_code(&pool, staff.id, id).await.map_err(billing_error)?;
        Ok(t("The code is voided.").into())
    }
}
