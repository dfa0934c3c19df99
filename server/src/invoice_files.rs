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

async fn issue(State(pool): State<PgPool>, session: Session, Path(id): Path<Uuid>, mut form: Multipart) -> Response {
    let Some(staff) = signed_in(&pool, &session).await.filter(|u| u.acts_as_staff()) else {
        return (StatusCode::FORBIDDEN, "This action is for CloudRouter support staff only.").into_response();
    };
    let (mut number, mut issued_on, mut pdf) = (String::new(), String::new(), None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("number") => number = field.text().await.unwrap_or_default().trim().to_string(),
            Some("issued_on") => issued_on = field.text().await.unwrap_or_default(),
            Some("pdf") => {
                let bytes = field.bytes().await.unwrap_or_default();
                if !bytes.is_empty() {
                    if !bytes.starts_with(b"%PDF") {
                        return (StatusCode::BAD_REQUEST, "The file is not a PDF.").into_response();
                    }
                    pdf = Some(bytes.to_vec());
                }
            }
            _ => {}
        }
    }
    let Some(date) = app::ssr::parse_day(&issued_on) else {
        return (StatusCode::BAD_REQUEST, "Give the issue date as YYYY-MM-DD.").into_response();
    };
    if number.is_empty() || number.len() > 64 {
        return (StatusCode::BAD_REQUEST, "Give the invoice number (up to 64 characters).").into_response();
    }
    match invoices::issue(&pool, staff.id, id, &number, date, pdf).await {
        Ok(_) => Redirect::to("/console/admin/billing").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
