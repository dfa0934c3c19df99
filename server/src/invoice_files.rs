//! Invoice PDFs: staff upload one when issuing (a multipart form, which server functions do not
//! take), and customers download what was issued for them. Both go through the session.

use axum::{
    extract::{Multipart, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use cloudrouter_core::accounts::User;
use cloudrouter_core::billing::invoices;
use sqlx::PgPool;
use tower_sessions::Session;
use uuid::Uuid;

/// Largest PDF accepted for an invoice.
const MAX_PDF_BYTES: usize = 10 * 1024 * 1024;

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/console/invoices/{id}/pdf", get(download))
        .route("/console/admin/invoices/{id}/issue", post(issue))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PDF_BYTES + 64 * 1024))
        .with_state(pool)
}

async fn signed_in(pool: &PgPool, session: &Session) -> Option<User> {
    app::ssr::session_user(session, pool).await.ok().flatten()
}

async fn download(State(pool): State<PgPool>, session: Session, Path(id): Path<Uuid>) -> Response {
    let Some(user) = signed_in(&pool, &session).await else {
        return (StatusCode::UNAUTHORIZED, "Please sign in.").into_response();
    };
    // Staff may read any invoice; a customer only their own.
    let owner = (!user.acts_as_staff()).then_some(user.id);
    match invoices::pdf(&pool, owner, id).await {
        Ok(Some(bytes)) => (
            [(header::CONTENT_TYPE, "application/pdf".to_string()), (header::CONTENT_DISPOSITION, format!("attachment; filename=\"invoice-{id}.pdf\""))],
            bytes,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "No such invoice.").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading an invoice PDF failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Issues an invoice from the staff form. Whatever the outcome, the answer is the Billing queue
/// page: on success its plain URL, on a refusal the same page with the reason's code
/// (`?invoice=<id>&issue_error=<code>`), which the page shows in the staff member's language next
/// to that invoice's form (a plain form post, so with and without JavaScript alike).
async fn issue(State(pool): State<PgPool>, session: Session, Path(id): Path<Uuid>, mut form: Multipart) -> Response {
    let Some(staff) = signed_in(&pool, &session).await.filter(|u| u.acts_as_staff()) else {
        return Redirect::to("/console/admin/billing").into_response();
    };
    let refused = |code: &str| Redirect::to(&format!("/console/admin/billing?invoice={id}&issue_error={code}#invoice-{id}")).into_response();
    let (mut number, mut issued_on, mut pdf) = (String::new(), String::new(), None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            // a body cut off or over the size limit
            Err(_) => return refused("upload"),
        };
        match field.name() {
            Some("number") => number = field.text().await.unwrap_or_default().trim().to_string(),
            Some("issued_on") => issued_on = field.text().await.unwrap_or_default(),
            Some("pdf") => {
                let Ok(bytes) = field.bytes().await else { return refused("upload") };
                if !bytes.is_empty() {
                    if !bytes.starts_with(b"%PDF") {
                        return refused("pdf");
                    }
                    pdf = Some(bytes.to_vec());
                }
            }
            _ => {}
        }
    }
    if number.is_empty() || number.chars().count() > 64 {
        return refused("number");
    }
    let Some(date) = app::ssr::parse_day(&issued_on) else {
        return refused("date");
    };
    match invoices::issue(&pool, staff.id, id, &number, date, pdf).await {
        Ok(_) => Redirect::to("/console/admin/billing").into_response(),
        Err(cloudrouter_core::billing::BillingError::Db(e)) => {
            tracing::error!(error = %e, "issuing an invoice failed");
            refused("internal")
        }
        Err(cloudrouter_core::billing::BillingError::OrderNotInvoiceable) => refused("state"),
        Err(e) => {
            tracing::info!(error = %e, "an invoice issue was refused");
            refused("number")
        }
    }
}
