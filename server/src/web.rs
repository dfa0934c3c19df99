//! Assembles the one axum app: console pages and server functions, gateway, staff API, static
//! files, sessions and guards.

use crate::config::Config;
use crate::guard;
use app::ssr::ConsoleState;
use app::{shell, App};
use app::api::account::{ConfirmTwoFactor, RecoveryCodes};
use app::api::keys::{CreateKey, CreatedKey};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{middleware, Router};
use leptos::server_fn::ServerFn;
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use sqlx::PgPool;
use tower_sessions::{cookie::SameSite, Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;
use cloudrouter_core::net::TrustedProxies;

pub const SESSION_COOKIE: &str = "cloudrouter_session";

/// The most a console request may carry (forms and server function arguments). The invoice PDF
/// upload has its own, larger limit (`invoice_files`).
pub const CONSOLE_BODY_LIMIT: usize = 1 << 20;

/// Creates the session table if needed and returns the store.
pub async fn session_store(pool: &PgPool) -> Result<PostgresStore, sqlx::Error> {
    let store = PostgresStore::new(pool.clone());
    store.migrate().await?;
    Ok(store)
}

/// Housekeeping: expired sessions, spent sign-in throttles and links, and the monthly partitions
/// of usage records (the months ahead, and retention). Every instance runs it; each step is
/// idempotent.
pub fn spawn_housekeeping(pool: PgPool, store: PostgresStore, usage_retention_months: u32) {
    use tower_sessions::ExpiredDeletion;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = store.delete_expired().await {
                tracing::warn!(error = %e, "deleting expired sessions failed");
            }
            if let Err(e) = cloudrouter_core::throttle::prune(&pool).await {
                tracing::warn!(error = %e, "pruning sign-in throttles failed");
            }
            if let Err(e) = cloudrouter_core::email_links::prune(&pool).await {
                tracing::warn!(error = %e, "pruning ended sign-up and reset links failed");
            }
            match cloudrouter_core::usage::partitions::maintain(&pool, usage_retention_months).await {
                Ok(dropped) => {
                    for month in dropped {
                        tracing::info!(partition = %month, keep_months = usage_retention_months, "usage records past retention dropped");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "maintaining the monthly usage partitions failed"),
            }
        }
    });
}

/// The console's routes, listed once per process. Listing them renders the app with resource
/// loading suppressed by a process-wide flag (leptos_server's `SuppressResourceLoad`), and a
/// resource first polled meanwhile by another app in the same process waits forever
/// (leptos-rs/leptos#4773): a page of a console built later could then never answer. One app per
/// process, as in production, never meets it; the test binaries build many.
fn console_routes() -> Vec<leptos_axum::AxumRouteListing> {
    static ROUTES: std::sync::OnceLock<Vec<leptos_axum::AxumRouteListing>> = std::sync::OnceLock::new();
    ROUTES.get_or_init(|| generate_route_list(App)).clone()
}

/// The console: Leptos pages and server functions, plus `extra` cookie-authenticated routes
/// (file uploads and downloads), all behind the session, sign-in and CSRF guards.
pub fn console_router(leptos_options: LeptosOptions, state: ConsoleState, store: PostgresStore, config: &Config, trusted_proxies: TrustedProxies, extra: Router) -> Router {
    let routes = console_routes();
    let leptos_options_for_keys = leptos_options.clone();
    let state_pool = state.pool.clone();
    let context = {
        let state = state.clone();
        move || provide_context(state.clone())
    };
    let sessions = SessionManagerLayer::new(store)
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(config.secure_cookies())
        .with_expiry(Expiry::OnInactivity(time::Duration::days(7)));
    Router::new()
        .leptos_routes_with_context(&leptos_options, routes, context.clone(), {
            let options = leptos_options.clone();
            move || shell(options.clone())
        })
        .fallback(leptos_axum::file_and_error_handler_with_context(context, shell))
        .with_state(leptos_options)
        // 413 up front for a declared length; server_fn reads the rest under the same limit
        .layer(tower_http::limit::RequestBodyLimitLayer::new(CONSOLE_BODY_LIMIT))
        .layer(axum::extract::DefaultBodyLimit::max(CONSOLE_BODY_LIMIT))
        .merge(extra)
        .layer(middleware::from_fn(server_fn_status))
        .layer(middleware::from_fn(refuse_nul))
        .layer(middleware::from_fn_with_state(
            ShownOnce::new(&leptos_options_for_keys, &state, CreateKey::PATH, "/console/keys", "The key was created but could not be shown. Revoke it and create another."),
            shown_once_page::<CreatedKey>,
        ))
        .layer(middleware::from_fn_with_state(
            ShownOnce::new(&leptos_options_for_keys, &state, ConfirmTwoFactor::PATH, "/console/settings", "Two-factor sign-in is on, but the recovery codes could not be shown. Turn it off and on again for new ones."),
            shown_once_page::<RecoveryCodes>,
        ))
        .layer(middleware::from_fn_with_state(state_pool, guard::console_pages))
        .layer(sessions)
        .layer(middleware::from_fn(guard::csrf))
        .layer(middleware::from_fn_with_state(std::sync::Arc::new(trusted_proxies), crate::client_addr::layer))
}

/// server_fn answers every server function error with 500; only those that went through
/// `app::ssr::internal` (which marks them) are ours. The others are the caller's: a validation
/// message, or arguments that do not decode (a missing field, `maybe` for a boolean), so 400.
async fn server_fn_status(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let ours = res.headers_mut().remove(app::ssr::INTERNAL_ERROR_HEADER).is_some();
    if !ours && res.status() == StatusCode::INTERNAL_SERVER_ERROR && res.headers().contains_key(leptos::server_fn::error::SERVER_FN_ERROR_HEADER) {
        *res.status_mut() = StatusCode::BAD_REQUEST;
    }
    res
}

/// Text with a NUL character never reaches a server function or a page: nobody types one, and
/// Postgres cannot store it (the insert would fail as our error, not the caller's).
async fn refuse_nul(req: Request, next: Next) -> Response {
    let refused = || (StatusCode::BAD_REQUEST, "Text must not contain NUL characters.").into_response();
    if req.uri().query().is_some_and(|q| q.contains("%00")) {
        return refused();
    }
    if req.method() != Method::POST || !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, CONSOLE_BODY_LIMIT).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "The request is too large.").into_response();
    };
    if bytes.contains(&0) || bytes.windows(3).any(|w| w == b"%00") || bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
        return refused();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// What a plain form post (JavaScript off) creates and may show only once — a new key's secret,
/// new recovery codes — is shown in the answer to that very post: the form's page rendered with
/// the value in context. Leptos answers such a post with a redirect, and the value would have to
/// wait somewhere (the session) for the next page load; it waits nowhere. A failed post keeps
/// Leptos's redirect, which carries the error in the URL.
#[derive(Clone)]
struct ShownOnce<T> {
    options: LeptosOptions,
    state: ConsoleState,
    /// The server function's path, and the page that shows its answer.
    path: &'static str,
    page: &'static str,
    /// Said (translated) when the answer cannot be read.
    lost: &'static str,
    shows: std::marker::PhantomData<fn() -> T>,
}

impl<T> ShownOnce<T> {
    fn new(options: &LeptosOptions, state: &ConsoleState, path: &'static str, page: &'static str, lost: &'static str) -> ShownOnce<T> {
        ShownOnce { options: options.clone(), state: state.clone(), path, page, lost, shows: std::marker::PhantomData }
    }
}

async fn shown_once_page<T>(State(shown): State<ShownOnce<T>>, req: Request, next: Next) -> Response
where
    T: serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    let plain_form = req.method() == Method::POST
        && req.uri().path() == shown.path
        && req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
    if !plain_form {
        return next.run(req).await;
    }
    let mut headers = req.headers().clone();
    let extensions = req.extensions().clone();
    let res = next.run(req).await;
    if !res.status().is_redirection() || res.headers().contains_key(leptos::server_fn::error::SERVER_FN_ERROR_HEADER) {
        return res;
    }
    // The redirect still carries the server function's JSON answer as its body.
    let created = match axum::body::to_bytes(res.into_body(), 64 << 10).await.map(|b| serde_json::from_slice::<T>(&b)) {
        Ok(Ok(created)) => created,
        _ => {
            tracing::error!(path = shown.path, "a value to show once was made but its answer could not be read");
            let accept_language = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
            let text = Owner::new().with(|| {
                provide_context(app::i18n::Lang::from_tag(accept_language));
                app::i18n::t(shown.lost)
            });
            return (StatusCode::INTERNAL_SERVER_ERROR, text).into_response();
        }
    };
    headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_LENGTH);
    let mut page = Request::new(Body::empty());
    *page.uri_mut() = axum::http::Uri::from_static(shown.page);
    *page.headers_mut() = headers;
    *page.extensions_mut() = extensions;
    let ShownOnce { options, state, .. } = shown;
    let render = leptos_axum::render_app_async_with_context(
        {
            let options = options.clone();
            move || {
                provide_context(options.clone());
                provide_context(state.clone());
                provide_context(created.clone());
            }
        },
        move || shell(options.clone()),
    );
    let mut res = render(page).await;
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
