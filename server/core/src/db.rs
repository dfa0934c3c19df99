//! The one Postgres pool every part of CloudRouter shares, and the schema migrations.

use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

/// Connects with settings that suit both the console and the gateway: the gateway keeps its
/// hot path off the database, so a modest pool serves many requests.
pub async fn connect(database_url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
}

/// Applies the migrations in `migrations/` (embedded at build time). Safe to run from several
/// server instances at once: sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../../migrations").run(pool).await
}
