//! The core crate's codes in the reader's language: what a ledger row is for ([`memo`]), why a
//! refund is refused ([`ineligible`]), and the billing rules a request broke ([`billing_error`]).
//! The core returns codes with typed values, never sentences to be matched back: rewording a
//! message here changes old ledger rows too, and a missing translation fails the i18n test
//! (every wording below goes through `t` or `tf`).

use crate::i18n::{label, t, tf, tr};
use cloudrouter_core::billing::ledger::{EndReason, LedgerEntry, Memo};
use cloudrouter_core::billing::refunds::Ineligible;
use cloudrouter_core::billing::BillingError;

/// What a ledger row is for. Rows without a memo (API usage, written by the SQL settlement) carry
/// one of two fixed phrases.
pub fn memo(e: &LedgerEntry) -> String {
    let Some(m) = &e.memo else { return tr(&e.note) };
    match m {
        Memo::Topup { order, method } => tf("Top-up {} via {}", &[order, &label(method.as_str())]),
        Memo::Payment { order, method } => tf("Payment {} via {}", &[order, &label(method.as_str())]),
        Memo::Subscription { plan, order } => tf("{} plan subscription (order {})", &[&tr(plan), order]),
        Memo::Renewal { plan, order } => tf("{} plan renewal (order {})", &[&tr(plan), order]),
        Memo::Refund { order, plan } => tf("Refund of order {} ({} plan) to balance", &[order, &tr(plan)]),
        Memo::TrialGranted { until } => tf("Trial credit, valid until {}", &[&crate::ssr::when(*until)]),
        Memo::TrialExpired => t("Unused trial credit expired").into(),
        Memo::AllowanceGranted { plan, cycle_start } => {
            tf("{} plan allowance (USD list price) for the cycle starting {}", &[&tr(plan), cycle_start])
        }
        Memo::AllowanceLapsed => t("Unused plan allowance of the ended cycle").into(),
        Memo::AllowanceRemoved { reason } => tf("Plan allowance removed: {}", &[&end_reason(*reason)]),
        Memo::Redeemed { prefix } => tf("Redeem code {}…", &[prefix]),
        Memo::Staff { text: Some(text) } => text.clone(),
        Memo::Staff { text: None } if e.amount.micros() > 0 => t("Credit from CloudRouter support").into(),
        Memo::Staff { text: None } => t("Correction by CloudRouter support").into(),
    }
}

fn end_reason(r: EndReason) -> &'static str {
    match r {
        EndReason::Refunded => t("refunded"),
        EndReason::RenewalNotPaid => t("renewal not paid"),
        EndReason::RefundRequested => t("refund requested"),
        EndReason::PlanWithdrawn => t("plan no longer offered"),
    }
}

pub fn ineligible(r: &Ineligible) -> String {
    match r {
        Ineligible::Ended => t("the subscription has ended").into(),
        Ineligible::NotRefundable => t("the payment of this cycle is not refundable").into(),
        Ineligible::WindowClosed { days, plan, closed_at } => {
            tf("the {}-day refund window of the {} plan closed on {}", &[days, &tr(plan), &crate::ssr::when(*closed_at)])
        }
        Ineligible::NoDaysLeft => t("no unused days are left in this cycle").into(),
        Ineligible::NothingLeft => {
            t("the allowance used beyond the elapsed days is worth more than the unused days: nothing is left to refund").into()
        }
        Ineligible::Pending => t("a refund request is already pending").into(),
    }
}

/// A billing rule the caller broke. Rules with values are worded here from their typed values;
/// a fixed rule is its own English sentence, looked up in the table (`fixed_rules_are_translated`
/// checks each one has its Chinese).
pub fn billing_error(e: &BillingError) -> String {
    match e {
        BillingError::OrderNotOpen(status) => tf("This order can no longer be changed (it is {}).", &[&label(status.as_str())]),
        BillingError::AmountMismatch { expected, paid } => {
            tf("The paid amount {} does not match the order amount {}.", &[&paid.short(), &expected.short()])
        }
        BillingError::InsufficientBalance { needed, available } => {
            tf("Insufficient balance: {} needed, {} available.", &[&needed.short(), &available.short()])
        }
        BillingError::RefundNotEligible(reason) => tf("This subscription is not eligible for a refund: {}", &[&ineligible(reason)]),
        BillingError::AdjustmentTooLarge(max) => tf("A staff adjustment may move at most {}.", &[&max.short()]),
        BillingError::ConfirmationRequired { amount, threshold } => {
            tf("{} is above {}: confirm the amount to apply it.", &[&amount.short(), &threshold.short()])
        }
        BillingError::MissingField(what) => tf("Please enter the {}.", &[&t(what)]),
        BillingError::TooLong { what, max } => tf("The {} is too long (at most {} characters).", &[&t(what), max]),
        BillingError::UnknownChannel(code) => tf("Unknown channel {}.", &[code]),
        other => tr(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::{provide_lang, Lang};
    use chrono::TimeZone;
    use cloudrouter_core::billing::ledger::Amount;
    use cloudrouter_core::billing::orders::PaymentMethod;
    use cloudrouter_core::money::{MicroCny, MicroUsd};
    use leptos::prelude::Owner;

    fn row(memo: Option<Memo>, amount: i64, note: &str) -> LedgerEntry {
        LedgerEntry {
            id: 1,
            user_id: uuid::Uuid::nil(),
            amount: Amount::Cny(MicroCny::from_micros(amount)),
            balance_after: Amount::Usd(MicroUsd::ZERO),
            kind: cloudrouter_core::billing::ledger::LedgerKind::Credit,
            source: cloudrouter_core::billing::ledger::FundingSource::Wallet,
            memo,
            note: note.into(),
            actor_id: None,
            request_count: 0,
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn memos_are_worded_from_their_values() {
        Owner::new().with(|| {
            provide_lang(Lang::Zh);
            let topup = Memo::Topup { order: "CR-7K3M9Q".into(), method: PaymentMethod::Alipay };
            assert_eq!(memo(&row(Some(topup), 1, "")), "充值 CR-7K3M9Q（支付宝）");
            let removed = Memo::AllowanceRemoved { reason: EndReason::RenewalNotPaid };
            assert_eq!(memo(&row(Some(removed), -1, "")), "套餐额度已清除：续费未支付");
            assert_eq!(memo(&row(Some(Memo::Staff { text: None }), -5, "")), "CloudRouter 客服更正");
            assert_eq!(memo(&row(Some(Memo::Staff { text: Some("Paid back in cash".into()) }), 5, "")), "Paid back in cash");
            assert_eq!(memo(&row(None, -5, "API usage")), "API 用量");
            let closed = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 2, 0, 0).unwrap();
            let r = Ineligible::WindowClosed { days: 7, plan: "Starter".into(), closed_at: closed };
            assert_eq!(ineligible(&r), format!("7 天退款期（Starter 套餐）已于 {} 结束", crate::ssr::when(closed)));
            let e = BillingError::ConfirmationRequired { amount: MicroCny::units(5000), threshold: MicroCny::units(1000) };
            assert_eq!(billing_error(&e), "¥5000.00 超过 ¥1000.00：请确认金额后再提交。");
            assert_eq!(label("reversal_due"), "待红冲");
            assert_eq!(label("created"), "待支付");
            assert_eq!(label("claude-sonnet-4-6"), "claude-sonnet-4-6");
        });
    }

    /// Each billing rule without values is shown through its English sentence: each must have
    /// its Chinese.
    #[test]
    fn fixed_rules_are_translated() {
        let fixed = [
            BillingError::UnknownPlan,
            BillingError::PlanNotPurchasable,
            BillingError::AlreadySubscribed,
            BillingError::NoSubscription,
            BillingError::SamePlan,
            BillingError::NoPendingChange,
            BillingError::OrderNotFound,
            BillingError::TopupOutOfRange,
            BillingError::InvalidMethod,
            BillingError::RefundPending,
            BillingError::RefundNotFound,
            BillingError::AlreadyDecided,
            BillingError::AmountRequired,
            BillingError::InvalidAmount,
            BillingError::InvoiceNotFound,
            BillingError::AlreadyInvoiced,
            BillingError::OrderNotInvoiceable,
            BillingError::TrialAlreadyApplied,
            BillingError::TrialNotFound,
            BillingError::UnknownUser,
            BillingError::ZeroAmount,
            BillingError::StaffNoteRequired,
            BillingError::IdempotencyKeyRequired,
            BillingError::IdempotencyKeyReused,
            BillingError::NoReversalDue,
        ];
        Owner::new().with(|| {
            provide_lang(Lang::Zh);
            for e in fixed {
                let en = e.to_string();
                assert_ne!(billing_error(&e), en, "no Chinese for {en:?}");
            }
        });
    }
}
