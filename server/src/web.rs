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

pub fn console_router(leptos_options: LeptosOptions, state: ConsoleState, store: PostgresStore, config: &Config) -> Router {
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
        .layer(middleware::from_fn(guard::console_pages))
        .layer(sessions)
        .layer(middleware::from_fn(guard::csrf))
}
