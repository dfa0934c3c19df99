//! Server functions, grouped by area. Each checks who is calling before it touches data.

pub mod account;
pub mod admin;
pub mod alerts;
pub mod audit;
pub mod billing;
pub mod billing_admin;
pub mod catalogue;
pub mod insight;
pub mod invoices;
pub mod keys;
pub mod preferences;
pub mod redeem;
pub mod readiness;
#[cfg(feature = "ssr")]
pub mod mails;
pub mod status;
pub mod usage;

/// The readable part of a server function error, for showing in a form.
pub fn error_text(e: &leptos::prelude::ServerFnError) -> String {
    use leptos::prelude::ServerFnError;
    match e {
        // Server functions answer in the caller's language already.
        ServerFnError::ServerError(msg) => msg.clone(),
        ServerFnError::Request(_) => crate::i18n::t("Could not reach the server. Check your connection and try again.").into(),
        _ => crate::i18n::t("Something went wrong. Please try again.").into(),
    }
}
