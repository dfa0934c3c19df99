//! The CloudRouter server: one axum app serving the console (Leptos SSR + hydration), the
//! Anthropic-compatible gateway and the staff automation API over one Postgres.

pub mod cli;
pub mod config;
pub mod guard;
pub mod web;

use crate::config::Config;
use leptos::prelude::LeptosOptions;
use sqlx::PgPool;
use tokio::net::TcpListener;

/// The whole app as one router, ready to serve (also used by the integration tests).
pub async fn build(pool: PgPool, config: &Config, leptos: LeptosOptions) -> Result<axum::Router, Box<dyn std::error::Error>> {
    let store = web::session_store(&pool).await?;
    let state = app::ssr::ConsoleState { pool: pool.clone(), public_base_url: config.public_url.clone() };
    Ok(web::console_router(leptos, state, store, config))
}

/// Serves until SIGINT/SIGTERM, then drains open requests.
pub async fn serve(pool: PgPool, config: Config, leptos: LeptosOptions) -> Result<(), Box<dyn std::error::Error>> {
    let router = build(pool, &config, leptos).await?;
    let listener = TcpListener::bind(config.addr).await?;
    tracing::info!(url = %config.public_url, "CloudRouter is listening");
    axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
