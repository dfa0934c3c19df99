//! The staff audit log as sentences in the reader's language ("ops@x.com credited ¥50.00 to
//! a@b.com: …"), filtered by staff member, action, customer and days of the reader's zone.

#[allow(unused_imports)]
use crate::i18n::{label, t, tf, tr};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Every action the log records (code, what the filter calls it).
pub const ACTIONS: [(&str, &str); 27] = [
    ("balance.adjust", "Balance adjusted"),
    ("order.confirm_bank_transfer", "Bank transfer confirmed"),
    ("order.offer", "Custom plan set up"),
    ("refund.approve", "Refund approved"),
    ("refund.reject", "Refund rejected"),
    ("trial.approve", "Trial approved"),
    ("trial.decline", "Trial declined"),
    ("invoice.issue", "Invoice issued"),
    ("invoice.reject", "Invoice rejected"),
    ("invoice.reverse", "Red-letter invoice recorded"),
    ("enquiry.status", "Enquiry updated"),
    ("plan.update", "Plan changed"),
    ("channel.update", "Channel changed"),
    ("model.update", "Model prices changed"),
    ("upstream.add", "Upstream added"),
    ("upstream.update", "Upstream changed"),
    ("upstream.enable", "Upstream enabled"),
    ("upstream.disable", "Upstream disabled"),
    ("user.create", "Account created"),
    ("user.suspend", "Account suspended"),
    ("user.reinstate", "Account reinstated"),
    ("user.two_factor_off", "Two-factor sign-in turned off"),
    ("key.create", "Key created"),
    ("admin_token.revoke", "Staff API token revoked"),
    ("affinity.clear", "Conversation bindings cleared"),
    ("incident.open", "Incident posted"),
    ("incident.update", "Incident updated"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditLine {
    pub when: String,
    pub action: String,
    /// Who did what to whom, in the reader's language.
    pub sentence: String,
}

/// The log, newest first (at most 300 rows). `staff` and `customer` match a piece of an email;
/// `action` is a code of [`ACTIONS`]; `from` and `to` are days (`YYYY-MM-DD`, both included) of
/// the reader's zone. Blank filters select everything.
#[server(endpoint = "admin/audit")]
pub async fn audit_log(staff: String, action: String, customer: String, from: String, to: String) -> Result<Vec<AuditLine>, ServerFnError> {
    use cloudrouter_core::{billing::audit, zone};
    crate::ssr::require_staff().await?;
    let tz = crate::ssr::zone();
    let day = |s: &str| -> Result<Option<chrono::NaiveDate>, ServerFnError> {
        match s.trim() {
            "" => Ok(None),
            s => crate::ssr::parse_day(s).map(Some).ok_or_else(|| ServerFnError::new(t("Enter dates as YYYY-MM-DD."))),
        }
    };
    let query = audit::AuditQuery {
        staff,
        action,
        customer,
        from: day(&from)?.map(|d| zone::day_start(d, tz)),
        until: day(&to)?.map(|d| zone::day_start(d + chrono::Days::new(1), tz)),
    };
    let list = audit::search(&crate::ssr::pool()?, &query, 300).await.map_err(crate::ssr::internal)?;
    Ok(list.iter().map(|e| AuditLine { when: crate::ssr::when(e.at), action: e.action.clone(), sentence: sentence(e) }).collect())
}

/// One row as a sentence. Amounts read in yuan to two decimals; what a row lacks reads as such
/// rather than as an empty gap.
#[cfg(feature = "ssr")]
fn sentence(e: &cloudrouter_core::billing::audit::AuditEntry) -> String {
    use cloudrouter_core::money::{CnyPerUsd, MicroCny, MicroUsd};
    let d = &e.details;
    let text = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").trim().to_string();
    let int = |k: &str| d.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
    let yuan = |k: &str| MicroCny::from_micros(int(k)).glance();
    let staff = if e.staff_email.is_empty() { t("a deleted staff account").to_string() } else { e.staff_email.clone() };
    let customer = e.customer_email.clone().unwrap_or_else(|| t("a deleted account").to_string());
    let subject = tr(&e.subject.clone().unwrap_or_else(|| text("name")));
    let target_id = e.target.split_once(':').map_or("", |(_, id)| id);
    // a note or reason that was left blank reads as "no note"
    let note = |k: &str| Some(text(k)).filter(|n| !n.is_empty()).unwrap_or_else(|| t("no note given").to_string());
    match e.action.as_str() {
        "balance.adjust" if int("amount_micros") < 0 => {
            tf("{} debited {} from {}: {}", &[&staff, &MicroCny::from_micros(-int("amount_micros")).glance(), &customer, &note("note")])
        }
        "balance.adjust" => tf("{} credited {} to {}: {}", &[&staff, &yuan("amount_micros"), &customer, &note("note")]),
        "order.confirm_bank_transfer" => tf("{} confirmed a bank transfer of {} from {} (order {})", &[&staff, &yuan("amount_micros"), &customer, &text("reference")]),
        "order.offer" => tf("{} set up plan {} for {} at {}, paid by bank transfer", &[&staff, &text("plan"), &customer, &yuan("amount_micros")]),
        "refund.approve" => tf("{} refunded {} to {} (order {}): {}", &[&staff, &yuan("amount_micros"), &customer, &text("order"), &note("note")]),
        "refund.reject" => tf("{} rejected a refund request from {}: {}", &[&staff, &customer, &note("note")]),
        "trial.approve" => {
            let until = text("expires_at").parse::<chrono::DateTime<chrono::Utc>>().map(crate::ssr::when).unwrap_or_default();
            tf("{} granted {} a trial credit of {} until {}", &[&staff, &customer, &yuan("amount_micros"), &until])
        }
        "trial.decline" => tf("{} declined the trial application of {}: {}", &[&staff, &customer, &note("note")]),
        "invoice.issue" => tf("{} issued invoice No. {} to {}", &[&staff, &text("number"), &customer]),
        "invoice.reject" => tf("{} rejected an invoice request from {}: {}", &[&staff, &customer, &note("reason")]),
        "invoice.reverse" => tf("{} recorded red-letter invoice No. {} of {} for {}", &[&staff, &text("number"), &yuan("amount_micros"), &customer]),
        "enquiry.status" => tf("{} marked the enquiry from {} as {}", &[&staff, &subject, &label(&text("status"))]),
        "plan.update" => tf(
            "{} changed plan {}: {} a month with {} of allowance",
            &[&staff, &tr(&text("name")), &yuan("price_micros"), &MicroUsd::from_micros(int("allowance_micro_usd")).glance()],
        ),
        "channel.update" => tf(
            "{} set channel {} to {}, {} concurrent requests",
            &[&staff, &label(target_id), &CnyPerUsd::from_micros(int("rate_micros_per_usd")), &int("capacity")],
        ),
        "model.update" => tf("{} changed the prices of {}", &[&staff, &target_id]),
        "upstream.add" => tf("{} added upstream {}", &[&staff, &subject]),
        "upstream.enable" => tf("{} enabled upstream {}", &[&staff, &subject]),
        "upstream.disable" => tf("{} disabled upstream {}", &[&staff, &subject]),
        "upstream.update" if d.get("credential_replaced").and_then(|v| v.as_bool()) == Some(true) => {
            tf("{} changed the routing of upstream {} and replaced its key", &[&staff, &subject])
        }
        "upstream.update" => tf("{} changed the routing of upstream {}", &[&staff, &subject]),
        "user.create" => tf("{} created the account {}", &[&staff, &customer]),
        "user.suspend" => tf("{} suspended {}", &[&staff, &customer]),
        "user.reinstate" => tf("{} reinstated {}", &[&staff, &customer]),
        "user.two_factor_off" => tf("{} turned off two-factor sign-in for {}: {}", &[&staff, &customer, &note("note")]),
        "key.create" => tf("{} created key “{}” for {}", &[&staff, &text("name"), &customer]),
        "admin_token.revoke" => tf("{} revoked staff API token {} of {}", &[&staff, &text("prefix"), &text("owner")]),
        "affinity.clear" if e.customer_id.is_some() => tf("{} cleared the conversation bindings of {}", &[&staff, &customer]),
        "affinity.clear" => tf("{} cleared all conversation bindings", &[&staff]),
        "incident.open" => {
            let title = match crate::i18n::lang() {
                crate::i18n::Lang::Zh if !text("title_zh").is_empty() => text("title_zh"),
                _ if text("title_en").is_empty() => text("title_zh"),
                _ => text("title_en"),
            };
            tf("{} posted incident “{}”", &[&staff, &title])
        }
        "incident.update" => tf("{} posted an incident update: {}", &[&staff, &label(&text("status"))]),
        other => tf("{} did {} on {}", &[&staff, &other, &e.target]),
    }
}
