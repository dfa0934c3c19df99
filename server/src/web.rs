//! Assembles the one axum app: console pages and server functions, gateway, staff API, static
//! files, sessions and guards.

use crate::config::Config;
use crate::guard;
use app::ssr::ConsoleState;
use app::{shell, App};
use axum::{middleware, Router};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use sqlx::PgPool;
use tower_sessions::{cookie::SameSite, Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

pub const SESSION_COOKIE: &str = "cloudrouter_session";

/// Creates the session table if needed and returns the store.
pub async fn session_store(pool: &PgPool) -> Result<PostgresStore, sqlx::Error> {
    let store = PostgresStore::new(pool.clone());
    store.migrate().await?;
    Ok(store)
}

/// Housekeeping for the console's tables: expired sessions and old failed-login records.
/// Every instance runs it; the deletes are idempotent.
pub fn spawn_housekeeping(pool: PgPool, store: PostgresStore) {
    use tower_sessions::ExpiredDeletion;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            if let Err(e) = store.delete_expired().await {
                tracing::warn!(error = %e, "deleting expired sessions failed");
            }
            if let Err(e) = cloudrouter_core::accounts::prune_login_failures(&pool).await {
                tracing::warn!(error = %e, "pruning failed logins failed");
            }
        }
    });
}

/// The console: Leptos pages and server functions, plus `extra` cookie-authenticated routes
/// (file uploads and downloads), all behind the session, sign-in and CSRF guards.
pub fn console_router(leptos_options: LeptosOptions, state: ConsoleState, store: PostgresStore, config: &Config, extra: Router) -> Router {
    let routes = generate_route_list(App);
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
        .merge(extra)
        .layer(middleware::from_fn(guard::console_pages))
        .layer(sessions)
        .layer(middleware::from_fn(guard::csrf))
}
