//! The words of the mail the console sends, in the language of the request that asked for it
//! (alerts: in the recipient's saved language). Which mail goes to whom is decided in core
//! (`email_links`, `alerts::delivery`); this only writes them.

use crate::i18n::{t, tf};
use cloudrouter_core::mail::Mail;

fn link(base: &str, path: &str, token: &str) -> String {
    format!("{}{path}?token={token}", base.trim_end_matches('/'))
}

pub fn confirm_sign_up(base: &str, to: String, token: &str) -> Mail {
    Mail {
        kind: "signup",
        to,
        subject: t("Confirm your CloudRouter account").into(),
        body: tf(
            "Open this link within 24 hours to finish creating your CloudRouter account:\n\n{}\n\nIf you did not sign up, ignore this mail: no account is created without this link.",
            &[&link(base, "/signup/confirm", token)],
        ),
    }
}

pub fn already_registered(base: &str, to: String) -> Mail {
    Mail {
        kind: "signup_taken",
        to,
        subject: t("You already have a CloudRouter account").into(),
        body: tf(
            "Someone, perhaps you, tried to sign up for CloudRouter with this address. It already has an account: sign in at {}\n\nForgot your password? Reset it at {}\n\nIf it was not you, ignore this mail: nothing has changed.",
            &[&format!("{}/login", base.trim_end_matches('/')), &format!("{}/password/forgot", base.trim_end_matches('/'))],
        ),
    }
}

pub fn reset_password(base: &str, to: String, token: &str) -> Mail {
    Mail {
        kind: "reset",
        to,
        subject: t("Reset your CloudRouter password").into(),
        body: tf(
            "Open this link within an hour to choose a new password for your CloudRouter account:\n\n{}\n\nChanging it signs you out everywhere. If you did not ask for this, ignore this mail: your password stays as it is.",
            &[&link(base, "/password/reset", token)],
        ),
    }
}

pub fn two_factor_turned_off(to: String) -> Mail {
    Mail {
        kind: "two_factor_off",
        to,
        subject: t("Two-factor sign-in was turned off on your CloudRouter account").into(),
        body: t("CloudRouter support turned off two-factor sign-in on your account, as asked, and signed it out everywhere. Sign in with your password and turn it on again under Settings.\n\nIf you did not ask for this, reply to this mail or contact support at once.").into(),
    }
}

/// Support's decision on a refund request, with the note they wrote to the customer, in `locale`
/// (the account's saved language; English when unset): staff decide in their own language.
pub fn refund_decided(base: &str, to: String, locale: Option<&str>, r: &cloudrouter_core::billing::refunds::RefundRequest) -> Mail {
    in_language(locale, || {
        let billing = format!("{}/console/billing", base.trim_end_matches('/'));
        let amount = r.amount_micros.glance();
        let (subject, decision) = if r.status == "approved" {
            (t("Your CloudRouter refund is approved"), tf("Your refund request is approved: {} is back on your CloudRouter balance.", &[&amount]))
        } else {
            (t("Your CloudRouter refund request was declined"), tf("Your refund request of {} was declined.", &[&amount]))
        };
        Mail {
            kind: "refund_decided",
            to,
            subject: subject.into(),
            body: tf("{}\n\nNote from support: {}\n\nYour billing page shows this too: {}", &[&decision, &r.staff_note, &billing]),
        }
    })
}

/// Words for someone other than the caller: rendered in their saved language.
fn in_language<T>(locale: Option<&str>, words: impl FnOnce() -> T) -> T {
    use leptos::prelude::{provide_context, Owner};
    let lang = locale.and_then(crate::i18n::Lang::parse).unwrap_or_default();
    Owner::new().with(|| {
        provide_context(lang);
        words()
    })
}

/// An alert's mail (subject, body) in `locale` (the account's saved language; English when
/// unset); the alert sender calls it outside any request, so the language is provided here.
pub fn alert(notice: &cloudrouter_core::alerts::Notice, locale: Option<&str>) -> (String, String) {
    in_language(locale, || crate::api::alerts::words::mail(notice))
}
