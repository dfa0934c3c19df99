//! `usage_records` is partitioned by UTC month (migration 0020). This keeps the months ahead
//! created and drops the months past retention; the hourly and daily rollups are not touched by
//! a dropped month, so charts and totals stay exact after the raw rows are gone.

use chrono::Utc;
use sqlx::PgPool;

/// Creates the partitions for this month and the next two (the migration made them up to then;
/// this keeps them ahead), and drops the months that ended more than `keep_months` months before
/// this month began (0 keeps every month). Returns the partitions dropped. Every instance may
/// run it; concurrent runs wait for each other in the database.
pub async fn maintain(pool: &PgPool, keep_months: u32) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT cr_usage_partitions($1, $2)")
        .bind(Utc::now())
        .bind(i32::try_from(keep_months).unwrap_or(i32::MAX))
        .fetch_all(pool)
        .await
}
