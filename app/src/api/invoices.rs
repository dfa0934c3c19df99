//! Invoice requests from paid orders, and their status. PDFs download from
//! `/console/invoices/{id}/pdf` (an axum route that checks the session).

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvoiceView {
    pub id: String,
    pub order_reference: String,
    pub amount: String,
    pub kind: String,
    pub title: String,
    pub status: String,
    pub number: Option<String>,
    pub issued_on: Option<String>,
    pub has_pdf: bool,
    pub reject_reason: Option<String>,
    pub created: String,
    /// The refunded amount a red-letter invoice reverses (the order was refunded after issue).
    pub reversal_amount: Option<String>,
    /// The red-letter invoice staff recorded: "No. …, date".
    pub reversal: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvoiceableOrder {
    pub id: String,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InvoicesData {
    pub invoices: Vec<InvoiceView>,
    pub orders: Vec<InvoiceableOrder>,
}

#[cfg(feature = "ssr")]
pub fn invoice_view(i: cloudrouter_core::billing::invoices::Invoice) -> InvoiceView {
    use cloudrouter_core::billing::invoices::InvoiceDetails;
    let title = match &i.details {
        InvoiceDetails::Personal { name, .. } => name.clone(),
        InvoiceDetails::VatSpecial { company, tax_id, .. } => format!("{company} ({tax_id})"),
    };
    InvoiceView {
        id: i.id.to_string(),
        order_reference: i.order_reference,
        amount: crate::ssr::cny(i.amount_micros),
        kind: if matches!(i.details, InvoiceDetails::Personal { .. }) { crate::i18n::t("Electronic general invoice").into() } else { crate::i18n::t("Special VAT invoice").into() },
        title,
        status: i.status,
        number: i.number,
        issued_on: i.issued_on.map(|d| d.to_string()),
        has_pdf: i.has_pdf,
        // a request closed by a refund carries the core's sentence; staff reasons stay as typed
        reject_reason: i.reject_reason.as_deref().map(crate::i18n::tr),
        created: crate::ssr::when(i.created_at),
        reversal_amount: i.reversal_amount_micros.map(crate::ssr::cny),
        reversal: i.reversal_number.map(|n| crate::i18n::tf("No. {}, {}", &[&n, &i.reversal_issued_on.map(|d| d.to_string()).unwrap_or_default()])),
    }
}

#[server(endpoint = "invoices")]
pub async fn invoices_page() -> Result<InvoicesData, ServerFnError> {
    use cloudrouter_core::billing::{invoices, orders};
    use crate::ssr::internal;
    let user = crate::ssr::require_user().await?;
    let pool = crate::ssr::pool()?;
    let list = invoices::list_for_user(&pool, user.id).await.map_err(internal)?;
    let taken: std::collections::HashSet<_> = list.iter().filter(|i| i.status != "rejected").map(|i| i.order_id).collect();
    let orders = orders::list(&pool, user.id).await.map_err(internal)?;
    Ok(InvoicesData {
        orders: orders
            .into_iter()
            .filter(|o| o.status == cloudrouter_core::billing::orders::OrderStatus::Paid && !taken.contains(&o.id))
            .map(|o| InvoiceableOrder {
                label: format!("{} · {} · {}", o.reference, crate::i18n::label(o.kind.as_str()), crate::ssr::cny(o.amount_micros)),
                id: o.id.to_string(),
            })
            .collect(),
        invoices: list.into_iter().map(invoice_view).collect(),
    })
}

/// `kind` is "personal" (name, email) or "vat" (the company fields).
#[server(endpoint = "invoices/request")]
#[allow(clippy::too_many_arguments)]
pub async fn request_invoice(
    order_id: String,
    kind: String,
    name: String,
    email: String,
    company: String,
    tax_id: String,
    address: String,
    phone: String,
    bank: String,
    account: String,
) -> Result<String, ServerFnError> {
    use cloudrouter_core::billing::invoices::{self, InvoiceDetails};
    let user = crate::ssr::require_user().await?;
    let order_id = crate::ssr::parse_uuid(&order_id, "No such order.")?;
    let t = |s: String| s.trim().to_string();
    let details = match kind.as_str() {
        "vat" => InvoiceDetails::VatSpecial {
            company: t(company),
            tax_id: t(tax_id).to_uppercase(),
            address: t(address),
            phone: t(phone),
            bank: t(bank),
            account: t(account),
            email: t(email),
        },
        _ => InvoiceDetails::Personal { name: t(name), email: t(email) },
    };
    invoices::request(&crate::ssr::pool()?, user.id, order_id, details).await.map_err(crate::ssr::billing_error)?;
    Ok(crate::i18n::t("Invoice requested. You'll find it here once issued.").into())
}
