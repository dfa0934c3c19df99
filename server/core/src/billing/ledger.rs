//! Balances and the append-only ledger. Every balance change is one ledger row written in the same
//! transaction, so a balance always equals the sum of its ledger (`balance_after_micros` is the
//! running balance).
//!
//! Funding sources: each ledger row names the source it moved, and each source has its own running
//! balance (`balance_after_micros`): `wallet` (micro-CNY, = `balances.balance_micros`), `trial`
//! (micro-CNY, the trial credit left) and `allowance` (micro-USD list price, the current plan
//! cycle's allowance left). Usage is drawn trial → allowance → wallet by the settlement path
//! (`usage` writer → trigger `usage_records_draw` + `cr_settle`, see `docs/billing.md`).
//!
//! Gateways hold part of a balance as leases while requests are in flight (see `gateway::leases`):
//! `available = balance − Σ leases`. A staff debit may not take the available amount below zero.

use super::orders::PaymentMethod;
use crate::money::{MicroCny, MicroUsd};
use crate::text_enum::text_enum;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

text_enum! {
    /// Why a ledger row moved money.
    pub enum LedgerKind {
        /// Money in (top-up, payment).
        Credit = "credit",
        /// Money out by staff.
        Debit = "debit",
        /// Money out for API usage (written by the gateway's settlement).
        Usage = "usage",
        /// Money back to the customer.
        Refund = "refund",
        /// Correction by staff, either sign.
        Adjustment = "adjustment",
        /// Money out of the wallet for a plan (subscription or renewal).
        Purchase = "purchase",
        /// Trial credit or a cycle's plan allowance granted (sources `trial`, `allowance`).
        Grant = "grant",
        /// Unused trial credit or allowance removed at expiry / the end of a cycle.
        Expiry = "expiry",
    }
}

text_enum! {
    /// Where the money of a ledger row came from or went to.
    pub enum FundingSource {
        /// The pay-as-you-go balance (micro-CNY).
        Wallet = "wallet",
        /// The current plan cycle's allowance (micro-USD list price).
        Allowance = "allowance",
        /// Approved trial credit (micro-CNY).
        Trial = "trial",
    }
}

impl FundingSource {
    /// The amount of a row of this source, in its unit: allowance rows are micro-USD of list
    /// price, the others micro-CNY.
    pub fn amount(self, micros: i64) -> Amount {
        match self {
            FundingSource::Allowance => Amount::Usd(MicroUsd::from_micros(micros)),
            FundingSource::Wallet | FundingSource::Trial => Amount::Cny(MicroCny::from_micros(micros)),
        }
    }
}

/// A ledger amount in the unit its source keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Cny(MicroCny),
    Usd(MicroUsd),
}

/// As its micro-units (the row's `source` names the unit).
impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.micros())
    }
}

impl Amount {
    pub fn micros(self) -> i64 {
        match self {
            Amount::Cny(a) => a.micros(),
            Amount::Usd(a) => a.micros(),
        }
    }

    /// "12.500000", without the unit.
    pub fn decimal(self) -> String {
        match self {
            Amount::Cny(a) => a.decimal(),
            Amount::Usd(a) => a.decimal(),
        }
    }

    /// "¥12.50" or "$3.00".
    pub fn short(self) -> String {
        match self {
            Amount::Cny(a) => a.short(),
            Amount::Usd(a) => a.short(),
        }
    }

    /// Two decimals, rounded: a balance at a glance.
    pub fn glance(self) -> String {
        match self {
            Amount::Cny(a) => a.glance(),
            Amount::Usd(a) => a.glance(),
        }
    }

    /// All six decimals with the symbol: for a tooltip.
    pub fn exact(self) -> String {
        match self {
            Amount::Cny(a) => a.exact(),
            Amount::Usd(a) => a.exact(),
        }
    }

    /// List-price dollars (a plan allowance row), not yuan.
    pub fn is_usd(self) -> bool {
        matches!(self, Amount::Usd(_))
    }
}

/// What a ledger row is for, stored as a code with typed values (`ledger_entries.memo`, JSONB) so
/// the console words it in the reader's language and rewording a sentence never orphans old rows.
/// `note` keeps the English wording ([`Memo::english`]) for exports and SQL readers. Rows the SQL
/// settlement writes (API usage) have no memo: their note is one of two fixed phrases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Memo {
    /// A top-up paid from outside; `order` is the order's reference.
    Topup { order: String, method: PaymentMethod },
    /// A plan order paid from outside, credited before its purchase row takes it.
    Payment { order: String, method: PaymentMethod },
    Subscription { plan: String, order: String },
    Renewal { plan: String, order: String },
    /// A refund of a plan order to the balance.
    Refund { order: String, plan: String },
    TrialGranted { until: DateTime<Utc> },
    TrialExpired,
    AllowanceGranted { plan: String, cycle_start: NaiveDate },
    /// The unused allowance at the end of a cycle.
    AllowanceLapsed,
    AllowanceRemoved { reason: EndReason },
    /// Balance from a redeem code, known by its visible prefix ("K7QM").
    Redeemed { prefix: String },
    /// A staff correction: the description staff wrote for the customer, or none (then the
    /// console's default wording for a credit or a debit).
    Staff { text: Option<String> },
}

text_enum! {
    /// Why a subscription ended before its time (and its allowance was removed).
    pub enum EndReason {
        Refunded = "refunded",
        RenewalNotPaid = "renewal_not_paid",
        RefundRequested = "refund_requested",
        PlanWithdrawn = "plan_withdrawn",
    }
}

impl EndReason {
    pub fn english(self) -> &'static str {
        match self {
            EndReason::Refunded => "refunded",
            EndReason::RenewalNotPaid => "renewal not paid",
            EndReason::RefundRequested => "refund requested",
            EndReason::PlanWithdrawn => "plan no longer offered",
        }
    }
}

impl PaymentMethod {
    pub fn english(self) -> &'static str {
        match self {
            PaymentMethod::Alipay => "Alipay",
            PaymentMethod::Wechat => "WeChat Pay",
            PaymentMethod::Bank => "bank transfer",
            PaymentMethod::Sandbox => "sandbox payment",
            PaymentMethod::Balance => "balance",
            PaymentMethod::RedeemCode => "redeem code",
        }
    }
}

impl Memo {
    /// The row's English note. `positive` says whether the row credits (for a staff row
    /// without text).
    pub fn english(&self, positive: bool) -> String {
        match self {
            Memo::Topup { order, method } => format!("Top-up {order} via {}", method.english()),
            Memo::Payment { order, method } => format!("Payment {order} via {}", method.english()),
            Memo::Subscription { plan, order } => format!("{plan} plan subscription (order {order})"),
            Memo::Renewal { plan, order } => format!("{plan} plan renewal (order {order})"),
            Memo::Refund { order, plan } => format!("Refund of order {order} ({plan} plan) to balance"),
            Memo::TrialGranted { until } => format!("Trial credit, valid until {}", until.format("%Y-%m-%d %H:%M UTC")),
            Memo::TrialExpired => "Unused trial credit expired".into(),
            Memo::AllowanceGranted { plan, cycle_start } => {
                format!("{plan} plan allowance (USD list price) for the cycle starting {cycle_start}")
            }
            Memo::AllowanceLapsed => "Unused plan allowance of the ended cycle".into(),
            Memo::AllowanceRemoved { reason } => format!("Plan allowance removed: {}", reason.english()),
            Memo::Redeemed { prefix } => format!("Redeem code {prefix}…"),
            Memo::Staff { text: Some(t) } => t.clone(),
            Memo::Staff { text: None } if positive => STAFF_CREDIT.into(),
            Memo::Staff { text: None } => STAFF_DEBIT.into(),
        }
    }
}

/// The wording of a staff row the staff left without a description.
pub const STAFF_CREDIT: &str = "Credit from CloudRouter support";
pub const STAFF_DEBIT: &str = "Correction by CloudRouter support";

/// As JSON (the staff API) the row keeps its columns' names: `amount_micros`,
/// `balance_after_micros` (integers in the unit of `source`), `kind`, `source`, `memo`, `note`…
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    pub id: i64,
    pub user_id: Uuid,
    /// Signed: positive credits, negative debits; in the unit of `source`.
    #[serde(rename = "amount_micros")]
    pub amount: Amount,
    /// Running balance of `source` after this row.
    #[serde(rename = "balance_after_micros")]
    pub balance_after: Amount,
    pub kind: LedgerKind,
    pub source: FundingSource,
    /// What the row is for (none on API usage rows).
    pub memo: Option<Memo>,
    /// The English wording of `memo`, or the usage rows' fixed phrase.
    pub note: String,
    pub actor_id: Option<Uuid>,
    /// For usage rows: how many requests this settlement covers.
    pub request_count: i32,
    pub created_at: DateTime<Utc>,
}

impl<'r> sqlx::FromRow<'r, PgRow> for LedgerEntry {
    fn from_row(r: &'r PgRow) -> Result<LedgerEntry, sqlx::Error> {
        let source: FundingSource = r.try_get("source")?;
        Ok(LedgerEntry {
            id: r.try_get("id")?,
            user_id: r.try_get("user_id")?,
            amount: source.amount(r.try_get("amount_micros")?),
            balance_after: source.amount(r.try_get("balance_after_micros")?),
            kind: r.try_get("kind")?,
            source,
            memo: r.try_get::<Option<sqlx::types::Json<Memo>>, _>("memo")?.map(|m| m.0),
            note: r.try_get("note")?,
            actor_id: r.try_get("actor_id")?,
            request_count: r.try_get("request_count")?,
            created_at: r.try_get("created_at")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("amount must not be zero")]
    ZeroAmount,
    #[error("insufficient balance: available {}", available.exact())]
    Insufficient { available: MicroCny },
    #[error("unknown user")]
    UnknownUser,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Balance and the part of it held by in-flight requests.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct BalanceInfo {
    pub balance_micros: MicroCny,
    pub held_micros: MicroCny,
    pub available_micros: MicroCny,
}

const ENTRY_COLS: &str =
    "id, user_id, amount_micros, balance_after_micros, kind, source, memo, note, actor_id, request_count, created_at";

/// The user's balance in micro-CNY (0 if never funded).
pub async fn balance(pool: &PgPool, user_id: Uuid) -> Result<MicroCny, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, MicroCny>("SELECT balance_micros FROM balances WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .unwrap_or_default())
}

/// Holds are backed by trial credit and plan allowance first, so `held_micros` is only the part
/// of the gateways' holds that may fall on the wallet (`cr_wallet_held`).
pub async fn balance_info(pool: &PgPool, user_id: Uuid) -> Result<BalanceInfo, sqlx::Error> {
    let (b, on_wallet): (MicroCny, MicroCny) = sqlx::query_as(
        "SELECT COALESCE((SELECT balance_micros FROM balances WHERE user_id = $1), 0), cr_wallet_held($1)",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(BalanceInfo { balance_micros: b, held_micros: on_wallet, available_micros: b - on_wallet })
}

/// Changes a balance by `amount` (negative = debit) and appends the ledger row, in one
/// transaction. A debit that would take the available balance below zero is refused.
pub async fn adjust(
    pool: &PgPool,
    user_id: Uuid,
    amount: MicroCny,
    kind: LedgerKind,
    memo: &Memo,
    actor_id: Option<Uuid>,
) -> Result<LedgerEntry, LedgerError> {
    let mut tx = pool.begin().await?;
    let entry = adjust_in(&mut tx, user_id, amount, kind, memo, actor_id).await?;
    tx.commit().await?;
    Ok(entry)
}

/// [`adjust`] inside the caller's transaction (which may then record more in the same one).
pub async fn adjust_in(
    tx: &mut PgConnection,
    user_id: Uuid,
    amount: MicroCny,
    kind: LedgerKind,
    memo: &Memo,
    actor_id: Option<Uuid>,
) -> Result<LedgerEntry, LedgerError> {
    if amount.is_zero() {
        return Err(LedgerError::ZeroAmount);
    }
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Err(LedgerError::UnknownUser);
    }
    sqlx::query("INSERT INTO balances (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let bal: MicroCny = sqlx::query_scalar("SELECT balance_micros FROM balances WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
    let new_balance = bal.checked_add(amount).ok_or(LedgerError::Insufficient { available: bal })?;
    if amount.is_negative() {
        // holds are backed by trial credit and plan allowance first, then the wallet
        let held: MicroCny = sqlx::query_scalar("SELECT cr_wallet_held($1)")
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        if new_balance < held {
            return Err(LedgerError::Insufficient { available: bal - held });
        }
    }
    sqlx::query("UPDATE balances SET balance_micros = $2, updated_at = now() WHERE user_id = $1")
        .bind(user_id)
        .bind(new_balance)
        .execute(&mut *tx)
        .await?;
    Ok(sqlx::query_as::<_, LedgerEntry>(&format!(
        "INSERT INTO ledger_entries (user_id, amount_micros, balance_after_micros, kind, source, memo, note, actor_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {ENTRY_COLS}"
    ))
    .bind(user_id)
    .bind(amount)
    .bind(new_balance)
    .bind(kind)
    .bind(FundingSource::Wallet)
    .bind(sqlx::types::Json(memo))
    .bind(memo.english(amount.is_positive()))
    .bind(actor_id)
    .fetch_one(&mut *tx)
    .await?)
}

/// One ledger row by id.
pub async fn entry(tx: &mut PgConnection, id: i64) -> Result<LedgerEntry, sqlx::Error> {
    sqlx::query_as::<_, LedgerEntry>(&format!("SELECT {ENTRY_COLS} FROM ledger_entries WHERE id = $1")).bind(id).fetch_one(&mut *tx).await
}

/// The user's most recent ledger rows, newest first, each with its running balance.
pub async fn entries(pool: &PgPool, user_id: Uuid, limit: i64) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    sqlx::query_as::<_, LedgerEntry>(&format!(
        "SELECT {ENTRY_COLS} FROM ledger_entries WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(user_id)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await
}

/// Checks the invariant for one user: balance = Σ wallet ledger rows and every running balance (of
/// every source) is consistent. `billing::verify` also checks the trial and allowance pots.
pub async fn verify(pool: &PgPool, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let ok: bool = sqlx::query_scalar(
        "SELECT COALESCE((SELECT balance_micros FROM balances WHERE user_id = $1), 0) = \
                COALESCE((SELECT sum(amount_micros) FROM ledger_entries WHERE user_id = $1 AND source = 'wallet'), 0) \
            AND NOT EXISTS (SELECT 1 FROM (SELECT balance_after_micros, \
                   sum(amount_micros) OVER (PARTITION BY source ORDER BY id) AS running FROM ledger_entries WHERE user_id = $1) r \
                WHERE r.balance_after_micros <> r.running)",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(ok)
}
