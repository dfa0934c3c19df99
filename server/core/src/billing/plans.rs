//! Plans: data that staff edit. A subscription keeps a snapshot of the plan it was bought with,
//! so editing a plan never changes what a customer already bought (it applies from the next
//! purchase or renewal).

use super::BillingError;
use crate::money::{MicroCny, MicroUsd};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Plan {
    /// starter | pro | ultra | payg | enterprise (staff may add more)
    pub code: String,
    pub name: String,
    pub description: String,
    /// Who it is for (FAQ Q4), e.g. "Personal learning / light usage".
    pub audience: String,
    /// Micro-CNY per monthly cycle; 0 for pay-as-you-go; enterprise is priced by contract.
    pub price_micros: MicroCny,
    /// Usage included per cycle, in micro-USD of list price.
    pub allowance_micro_usd: MicroUsd,
    pub channels: Vec<String>,
    pub rpm_limit: Option<i32>,
    pub concurrency_limit: Option<i32>,
    /// Tokens per minute across the plan's channels (input, cache writes and output; see
    /// README "Per-key controls"); older snapshots have none.
    #[serde(default)]
    pub tpm_limit: Option<i32>,
    /// Caps of list-price usage the allowance pays per 5-hour window and per 7-day window
    /// (migration 0026; README "Plan windows"); older snapshots have none.
    #[serde(default)]
    pub window_5h_micro_usd: Option<MicroUsd>,
    #[serde(default)]
    pub weekly_micro_usd: Option<MicroUsd>,
    pub sla: bool,
    /// Days after purchase with a no-questions refund; None = by negotiation.
    pub refund_window_days: Option<i32>,
    /// false for enterprise and pay-as-you-go.
    pub purchasable: bool,
    pub sort: i32,
}

const COLS: &str = "code, name, description, audience, price_micros, allowance_micro_usd, channels, rpm_limit, \
                    concurrency_limit, tpm_limit, window_5h_micro_usd, weekly_micro_usd, sla, refund_window_days, purchasable, sort";

pub async fn list(pool: &PgPool) -> Result<Vec<Plan>, sqlx::Error> {
    sqlx::query_as::<_, Plan>(&format!("SELECT {COLS} FROM plans ORDER BY sort, code")).fetch_all(pool).await
}

pub async fn get(pool: &PgPool, code: &str) -> Result<Option<Plan>, sqlx::Error> {
    sqlx::query_as::<_, Plan>(&format!("SELECT {COLS} FROM plans WHERE code = $1"))
        .bind(code)
        .fetch_optional(pool)
        .await
}

pub(crate) async fn get_tx(tx: &mut sqlx::PgConnection, code: &str) -> Result<Option<Plan>, sqlx::Error> {
    sqlx::query_as::<_, Plan>(&format!("SELECT {COLS} FROM plans WHERE code = $1"))
        .bind(code)
        .fetch_optional(&mut *tx)
        .await
}

impl Plan {
    pub fn validate(&self) -> Result<(), BillingError> {
        let bad = |m: &str| Err(BillingError::Invalid(m.to_string()));
        if self.name.trim().is_empty() {
            return bad("The plan needs a name.");
        }
        if self.price_micros.is_negative() || self.allowance_micro_usd.is_negative() {
            return bad("Price and allowance must not be negative.");
        }
        if self.purchasable && self.price_micros.is_zero() {
            return bad("A plan that can be bought online needs a price.");
        }
        if [self.rpm_limit, self.concurrency_limit, self.tpm_limit].iter().any(|l| l.is_some_and(|v| v <= 0)) {
            return bad("Limits must be positive (or empty for none).");
        }
        if [self.window_5h_micro_usd, self.weekly_micro_usd].iter().any(|c| c.is_some_and(|v| !v.is_positive())) {
            return bad("Window caps must be positive (or empty for none).");
        }
        if self.refund_window_days.is_some_and(|d| d < 0) {
            return bad("The refund window must not be negative.");
        }
        Ok(())
    }
}

/// Creates or updates a plan (staff). Existing subscriptions keep their snapshot.
pub async fn update(pool: &PgPool, plan: &Plan) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    upsert(&mut tx, plan).await?;
    tx.commit().await?;
    Ok(())
}

/// [`update`] with an audit row naming the staff member.
pub async fn update_by(pool: &PgPool, staff_id: Uuid, plan: &Plan) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    upsert(&mut tx, plan).await?;
    super::audit::record(&mut tx, staff_id, "plan.update", &format!("plan:{}", plan.code), serde_json::to_value(plan).unwrap_or_default())
        .await?;
    tx.commit().await?;
    Ok(())
}

async fn upsert(tx: &mut sqlx::PgConnection, p: &Plan) -> Result<(), BillingError> {
    p.validate()?;
    let unknown: Option<String> = sqlx::query_scalar(
        "SELECT c FROM unnest($1::text[]) c WHERE NOT EXISTS (SELECT 1 FROM channels WHERE code = c) LIMIT 1",
    )
    .bind(&p.channels)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(c) = unknown {
        return Err(BillingError::UnknownChannel(c));
    }
    sqlx::query(
        "INSERT INTO plans (code, name, description, audience, price_micros, allowance_micro_usd, channels, rpm_limit, \
         concurrency_limit, sla, refund_window_days, purchasable, sort, tpm_limit, window_5h_micro_usd, weekly_micro_usd) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) \
         ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, audience = EXCLUDED.audience, \
         price_micros = EXCLUDED.price_micros, allowance_micro_usd = EXCLUDED.allowance_micro_usd, channels = EXCLUDED.channels, \
         rpm_limit = EXCLUDED.rpm_limit, concurrency_limit = EXCLUDED.concurrency_limit, tpm_limit = EXCLUDED.tpm_limit, \
         window_5h_micro_usd = EXCLUDED.window_5h_micro_usd, weekly_micro_usd = EXCLUDED.weekly_micro_usd, sla = EXCLUDED.sla, \
         refund_window_days = EXCLUDED.refund_window_days, purchasable = EXCLUDED.purchasable, sort = EXCLUDED.sort, updated_at = now()",
    )
    .bind(&p.code)
    .bind(&p.name)
    .bind(&p.description)
    .bind(&p.audience)
    .bind(p.price_micros)
    .bind(p.allowance_micro_usd)
    .bind(&p.channels)
    .bind(p.rpm_limit)
    .bind(p.concurrency_limit)
    .bind(p.sla)
    .bind(p.refund_window_days)
    .bind(p.purchasable)
    .bind(p.sort)
    .bind(p.tpm_limit)
    .bind(p.window_5h_micro_usd)
    .bind(p.weekly_micro_usd)
    .execute(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("23514") => BillingError::Invalid("Invalid plan code.".into()),
        _ => BillingError::Db(e),
    })?;
    Ok(())
}
