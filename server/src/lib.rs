//! The CloudRouter server: one axum app serving the console (Leptos SSR + hydration), the
//! Anthropic-compatible gateway and the staff automation API over one Postgres.

pub mod cli;
pub mod client_addr;
pub mod config;
pub mod guard;
pub mod invoice_files;
pub mod operations;
pub mod status_json;
pub mod usage_export;
pub mod web;

use crate::config::Config;
use cloudrouter_core::crypto::Crypto;
use cloudrouter_core::gateway::{self, Gateway, GatewayConfig};
use cloudrouter_core::{admin_api, alerts, mail};
use cloudrouter_core::billing::{self, payments::{self, Payments}};
use std::sync::Arc;
use cloudrouter_core::demo;
use leptos::prelude::LeptosOptions;
use sqlx::PgPool;
use std::future::IntoFuture;
use std::time::Duration;
use tokio::net::TcpListener;

/// Everything one instance serves, and the gateway handle to drain on shutdown.
pub struct Built {
    pub router: axum::Router,
    pub gateway: Gateway,
}

/// The whole app as one router (also used by the integration tests). On a database with no
/// upstream yet, registers the built-in demo upstream served by this same instance.
pub async fn build(pool: PgPool, config: &Config, leptos: LeptosOptions) -> Result<Built, Box<dyn std::error::Error>> {
    config.check_parsed()?;
    config.check_secret()?;
    let trusted_proxies = config.trusted_proxies()?;
    let mail_sender = config.mail()?;
    let alert_delivery = config.alert_delivery(app::api::mails::alert)?;
    let crypto = Crypto::from_secret(&config.secret);
    demo::ensure_demo_upstream(&pool, &crypto, &format!("http://{}/_demo", config.loopback_addr())).await?;
    // before the gateway starts: the request path caches its metric handles
    let metrics = cloudrouter_core::telemetry::install();
    let gateway_config = GatewayConfig { trusted_proxies: trusted_proxies.clone(), ..GatewayConfig::from_env()? };
    let gateway = Gateway::start(pool.clone(), crypto.clone(), gateway_config).await?;
    let store = web::session_store(&pool).await?;
    web::spawn_housekeeping(pool.clone(), store.clone(), config.usage_retention_months);
    let payments = Arc::new(Payments::from_env(&config.secret, &config.public_url)?);
    let staff_limits = billing::adjustments::StaffLimits::from_env()?;
    let outbox = mail::Outbox::new();
    mail::spawn_sender(pool.clone(), mail_sender, &outbox);
    alerts::delivery::spawn(pool.clone(), crypto.clone(), outbox.clone(), &gateway.alerts(), alert_delivery);
    let status = cloudrouter_core::status::StatusBoard::new(pool.clone(), cloudrouter_core::status::CACHE_TTL);
    let state = app::ssr::ConsoleState {
        pool: pool.clone(),
        crypto,
        gateway: gateway.clone(),
        payments: payments.clone(),
        sandbox: Arc::new(payments::SandboxProvider::new(&config.secret, &config.public_url)),
        public_base_url: config.public_url.clone(),
        staff_limits,
        hash_slots: cloudrouter_core::accounts::HashSlots::new(config.hash_slots),
        outbox,
        status: status.clone(),
    };
    spawn_billing_jobs(pool.clone());
    let router = axum::Router::new()
        .merge(operations::router(gateway.clone(), metrics, config.metrics_token.as_deref()))
        .merge(status_json::router(status))
        .merge(gateway.router())
        .nest("/_demo", demo::router({
            let gateway = gateway.clone();
            move || gateway.demo_mode()
        }))
        .nest("/api/admin/v1", admin_api::router(pool.clone(), state.crypto.clone(), Some(gateway.clone()), staff_limits))
        .nest("/api/payments", payments::router(pool.clone(), payments))
        .merge(web::console_router(leptos, state, store, config, trusted_proxies, invoice_files::router(pool.clone()).merge(usage_export::router(pool.clone()))));
    Ok(Built { router, gateway })
}

/// Serves until SIGINT/SIGTERM. Then `/readyz` answers 503 "draining" for
/// `CLOUDROUTER_UNREADY_DELAY_MS` while everything still serves; then it stops accepting, lets open requests and streams finish
/// for up to the grace period, and flushes every usage record before exiting.
pub async fn serve(pool: PgPool, config: Config, leptos: LeptosOptions) -> Result<(), Box<dyn std::error::Error>> {
    let Built { router, gateway } = build(pool, &config, leptos).await?;
    // TCP_NODELAY on every accepted socket: without it small SSE writes wait on delayed ACKs.
    let listener = gateway::nodelay(TcpListener::bind(config.addr).await?);
    tracing::info!(url = %config.public_url, "CloudRouter is listening");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    shutdown_signal().await;
    // unready first (readyz answers 503 "draining") while everything still serves, so that a load
    // balancer stops sending here before connections are refused
    gateway.start_draining();
    tracing::info!(delay_ms = config.unready_delay.as_millis() as u64, "shutting down: unready, then draining open requests");
    tokio::time::sleep(config.unready_delay).await;
    let _ = stop_tx.send(());
    // waits for open requests up to the grace period, cuts the streams still open (each settles
    // for what it read), then flushes every usage record
    gateway.shutdown().await;
    if tokio::time::timeout(Duration::from_secs(1), server).await.is_err() {
        tracing::warn!("closing the remaining connections");
    }
    tracing::info!("usage flushed; bye");
    Ok(())
}

/// Cycle boundaries (renewals, scheduled plan changes), stale orders and expired trials, once a
/// minute. Safe on every instance: the billing jobs lock what they process.
fn spawn_billing_jobs(pool: PgPool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = billing::run_jobs(&pool, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "billing jobs failed");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
