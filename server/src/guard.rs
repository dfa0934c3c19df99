//! Request guards for the console: CSRF protection for state-changing requests, and the
//! signed-in check that turns a full page load of a console page into a redirect to sign-in.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use cloudrouter_core::accounts::Role;
use sqlx::PgPool;
use tower_sessions::Session;

/// Paths that authenticate with API keys or bearer tokens, not cookies: CSRF does not apply.
fn is_token_authenticated(path: &str) -> bool {
    path.starts_with("/v1/") || path.starts_with("/api/admin/v1/") || path.starts_with("/_demo/")
}

/// Refuses a cookie-authenticated, state-changing request that a browser says came from another
/// site. Browsers send `Origin` (or at least `Sec-Fetch-Site`) on every cross-site POST; together
/// with SameSite=Lax session cookies this closes CSRF without per-form tokens.
pub async fn csrf(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if safe || is_token_authenticated(req.uri().path()) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| *o != "null")
        .map(|o| o.split_once("://").map(|(_, rest)| rest).unwrap_or(o));
    let cross_site = match (origin_host, host) {
        (Some(origin), Some(host)) => origin != host,
        (Some(_), None) => true,
        (None, _) => headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site"),
    };
    if cross_site {
        return (StatusCode::FORBIDDEN, "Cross-site request refused.").into_response();
    }
    next.run(req).await
}

/// A full page load of a console page without a session goes to sign-in, and comes back after;
/// staff without two-factor sign-in go from the admin pages to Settings to set it up.
pub async fn console_pages(State(pool): State<PgPool>, session: Session, req: Request<Body>, next: Next) -> Response {
    let path = req.uri().path();
    let is_console = path == "/console" || path.starts_with("/console/");
    if is_console && req.method() == Method::GET {
        let user = match app::ssr::session_user(&session, &pool).await {
            Ok(user) => user,
            Err(e) => {
                tracing::error!(error = %e, "reading the session failed");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        // Staff without two-factor sign-in are sent to set it up before any admin page.
        let admin_page = path == "/console/admin" || path.starts_with("/console/admin/");
        if let Some(u) = &user {
            if admin_page && u.role == Role::Staff && !u.acts_as_staff() {
                return Redirect::to("/console/settings").into_response();
            }
        }
        if user.is_none() {
            let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/console");
            let mut login = String::from("/login?next=");
            for b in target.bytes() {
                // Percent-encode everything but unreserved characters and '/'.
                if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                    login.push(b as char);
                } else {
                    login.push_str(&format!("%{b:02X}"));
                }
            }
            return Redirect::to(&login).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::is_token_authenticated;

    #[test]
    fn only_api_paths_skip_csrf() {
        assert!(is_token_authenticated("/v1/messages"));
        assert!(is_token_authenticated("/api/admin/v1/users"));
        assert!(!is_token_authenticated("/api/login"));
        assert!(!is_token_authenticated("/console"));
    }
}
