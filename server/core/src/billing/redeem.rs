//! Redeem codes: staff generate a batch of one-time codes of one kind — balance (micro-CNY to the
//! wallet), trial credit (an amount usable for some days) or a plan for 1–12 months — and a
//! customer redeems a code once.
//!
//! * A code is 20 characters of the order-reference alphabet (no 0/O, 1/I/L; about 99 bits),
//!   shown in groups of four. Only its SHA-256 (of the normalised form: upper case, no dashes or
//!   spaces) and its first four characters are stored, so the full codes exist only in the answer
//!   to the generation (and the CSV staff download then).
//! * Exactly once: the redemption locks the customer's money (`balances`), then the code's row,
//!   and marks it used in the transaction that credits it; a second redeemer waits on the row and
//!   then finds it used.
//! * Guessing: every attempt is counted before it is checked (per account and per address, see
//!   [`throttle::REDEEM_ACCOUNT`] and [`throttle::REDEEM_ADDRESS`]); a successful one is given back.
//! * A trial code follows the trial rule (one trial per account, ever): it grants the trial of an
//!   account that has none (or approves its pending application) and is refused otherwise.
//! * A plan code follows the purchase rule (one active subscription): it is refused while the
//!   account has a plan, so the customer keeps the code for later. It starts a subscription whose
//!   first cycle lasts the code's months with that many months' allowance, paid by a ¥0 order of
//!   method `redeem_code`; afterwards it renews like a bought plan.
//! * Every redemption and every staff action writes its audit row (the redeemer's or the staff
//!   member's id) in its own transaction, and every balance change its ledger row.

use super::ledger::{LedgerKind, Memo};
use super::orders::{self, OrderKind, PaymentMethod, REF_ALPHABET};
use super::{audit, lock_user, plans, subscriptions, wallet_entry, BillingError};
use crate::money::MicroCny;
use crate::text_enum::text_enum;
use crate::throttle::{self, address_key};
use crate::util::sha256;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::net::IpAddr;
use uuid::Uuid;

/// Characters of a code (without dashes).
pub const CODE_LEN: usize = 20;
/// Characters staff see of a stored code.
pub const PREFIX_LEN: usize = 4;
pub const MAX_BATCH: u32 = 1000;
pub const MIN_AMOUNT: MicroCny = MicroCny::from_micros(10_000);
pub const MAX_AMOUNT: MicroCny = MicroCny::units(10_000);

text_enum! {
    /// What a batch's codes give.
    pub enum CodeKind {
        Balance = "balance",
        Trial = "trial",
        Plan = "plan",
    }
}

text_enum! {
    pub enum CodeState {
        Unused = "unused",
        Redeemed = "redeemed",
        Voided = "voided",
        /// Unused, and its batch's expiry has passed.
        Expired = "expired",
    }
}

/// A batch as staff ask for it; the fields another kind uses are ignored.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub kind: CodeKind,
    /// Balance and trial codes.
    pub amount_micros: Option<MicroCny>,
    /// Trial codes: days the credit lasts after the redemption.
    pub trial_days: Option<i32>,
    /// Plan codes.
    pub plan_code: Option<String>,
    pub plan_months: Option<i32>,
    pub count: u32,
    pub expires_at: Option<DateTime<Utc>>,
    pub note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct Batch {
    pub id: Uuid,
    pub kind: CodeKind,
    pub amount_micros: Option<MicroCny>,
    pub trial_days: Option<i32>,
    pub plan_code: Option<String>,
    pub plan_months: Option<i32>,
    pub note: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Empty if the staff account was deleted.
    pub created_by_email: String,
    pub total: i64,
    pub redeemed: i64,
    pub voided: i64,
}

impl Batch {
    /// What each code gives, in English (the CSV; the console words it from the fields).
    pub fn value(&self) -> String {
        let amount = self.amount_micros.unwrap_or_default().decimal();
        match self.kind {
            CodeKind::Balance => format!("{amount} CNY"),
            CodeKind::Trial => format!("{amount} CNY trial credit for {} days", self.trial_days.unwrap_or_default()),
            CodeKind::Plan => format!("{} plan for {} months", self.plan_code.as_deref().unwrap_or_default(), self.plan_months.unwrap_or_default()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, sqlx::FromRow)]
pub struct CodeRow {
    pub id: i64,
    pub prefix: String,
    pub state: CodeState,
    /// Empty while unused (or if the account was deleted).
    pub redeemed_by_email: String,
    pub redeemed_at: Option<DateTime<Utc>>,
    pub voided_at: Option<DateTime<Utc>>,
}

/// A new batch and its codes, readable (`K7QM-…`): the only time they exist in full.
#[derive(Debug, Clone)]
pub struct Generated {
    pub batch: Batch,
    pub codes: Vec<String>,
}

/// What a redemption gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Redeemed {
    Balance { amount: MicroCny },
    Trial { amount: MicroCny, until: DateTime<Utc> },
    Plan { plan: String, months: i32, until: DateTime<Utc> },
}

#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    /// Unknown, mistyped or malformed: one answer, so a guesser learns nothing.
    #[error("This code is not valid. Check it and try again.")]
    NotValid,
    #[error("This code has already been used.")]
    Used,
    #[error("This code has been withdrawn.")]
    Voided,
    #[error("This code has expired.")]
    Expired,
    #[error("Too many attempts. Try again in {0} seconds.")]
    Throttled(i64),
    #[error("You already have a plan. Plan codes can be redeemed while you have no active plan; keep the code for later.")]
    HasPlan,
    #[error("This account has already had trial credit, so a trial code cannot be added to it.")]
    HadTrial,
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl From<sqlx::Error> for RedeemError {
    fn from(e: sqlx::Error) -> Self {
        RedeemError::Billing(BillingError::Db(e))
    }
}

/// "K7QM-…" groups of four; the hash is taken of the ungrouped form.
fn grouped(code: &str) -> String {
    code.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("-")
}

/// A code as typed (any case, with or without dashes and spaces) in its stored form, if it can
/// be one.
pub fn normalise(input: &str) -> Option<String> {
    let code: String = input.chars().filter(|c| *c != '-' && !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| REF_ALPHABET.contains(&b))).then_some(code)
}

fn new_code() -> String {
    let mut rng = rand::thread_rng();
    (0..CODE_LEN).map(|_| REF_ALPHABET[rng.gen_range(0..REF_ALPHABET.len())] as char).collect()
}

const BATCH_COLS: &str = "b.id, b.kind, b.amount_micros, b.trial_days, b.plan_code, b.plan_months, b.note, b.expires_at, b.created_at, \
    COALESCE(u.email, '') AS created_by_email, \
    (SELECT count(*) FROM redeem_codes c WHERE c.batch_id = b.id) AS total, \
    (SELECT count(*) FROM redeem_codes c WHERE c.batch_id = b.id AND c.redeemed_at IS NOT NULL) AS redeemed, \
    (SELECT count(*) FROM redeem_codes c WHERE c.batch_id = b.id AND c.voided_at IS NOT NULL) AS voided";

fn invalid(m: &str) -> BillingError {
    BillingError::Invalid(m.into())
}

/// Generates a batch (staff; audited). See the module doc for what each kind gives.
pub async fn create_batch(pool: &PgPool, staff_id: Uuid, b: &NewBatch) -> Result<Generated, BillingError> {
    if !(1..=MAX_BATCH).contains(&b.count) {
        return Err(invalid("A batch has 1 to 1,000 codes."));
    }
    let note = b.note.trim();
    if note.chars().count() > 200 {
        return Err(BillingError::TooLong { what: "note", max: 200 });
    }
    if b.expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(invalid("The expiry must be in the future."));
    }
    let amount = || b.amount_micros.filter(|a| (MIN_AMOUNT..=MAX_AMOUNT).contains(a)).ok_or_else(|| invalid("The amount must be between ¥0.01 and ¥10,000."));
    let mut tx = pool.begin().await?;
    let (amount, trial_days, plan_code, plan_months) = match b.kind {
        CodeKind::Balance => (Some(amount()?), None, None, None),
        CodeKind::Trial => {
            let days = b.trial_days.filter(|d| (1..=365).contains(d)).ok_or_else(|| invalid("Trial credit lasts 1 to 365 days."))?;
            (Some(amount()?), Some(days), None, None)
        }
        CodeKind::Plan => {
            let code = b.plan_code.as_deref().unwrap_or_default();
            let plan = plans::get_tx(&mut tx, code).await?.ok_or(BillingError::UnknownPlan)?;
            if !plan.allowance_micro_usd.is_positive() {
                return Err(invalid("This plan has no allowance to give."));
            }
            let months = b.plan_months.filter(|m| (1..=12).contains(m)).ok_or_else(|| invalid("A plan code gives 1 to 12 months."))?;
            (None, None, Some(plan.code), Some(months))
        }
    };
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO redeem_batches (kind, amount_micros, trial_days, plan_code, plan_months, note, expires_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(b.kind)
    .bind(amount)
    .bind(trial_days)
    .bind(&plan_code)
    .bind(plan_months)
    .bind(note)
    .bind(b.expires_at)
    .bind(staff_id)
    .fetch_one(&mut *tx)
    .await?;
    let codes: Vec<String> = (0..b.count).map(|_| new_code()).collect();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| sha256(c.as_bytes()).to_vec()).collect();
    let prefixes: Vec<String> = codes.iter().map(|c| c[..PREFIX_LEN].to_string()).collect();
    sqlx::query("INSERT INTO redeem_codes (batch_id, code_hash, prefix) SELECT $1, h, p FROM unnest($2::bytea[], $3::text[]) AS t(h, p)")
        .bind(id)
        .bind(&hashes)
        .bind(&prefixes)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        staff_id,
        "redeem.generate",
        &format!("redeem_batch:{id}"),
        serde_json::json!({"kind": b.kind, "count": b.count, "amount_micros": amount, "trial_days": trial_days,
                           "plan": plan_code, "months": plan_months, "expires_at": b.expires_at, "note": note}),
    )
    .await?;
    let batch = sqlx::query_as::<_, Batch>(&format!("SELECT {BATCH_COLS} FROM redeem_batches b LEFT JOIN users u ON u.id = b.created_by WHERE b.id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Generated { batch, codes: codes.iter().map(|c| grouped(c)).collect() })
}

/// Batches, newest first.
pub async fn batches(pool: &PgPool) -> Result<Vec<Batch>, sqlx::Error> {
    sqlx::query_as::<_, Batch>(&format!(
        "SELECT {BATCH_COLS} FROM redeem_batches b LEFT JOIN users u ON u.id = b.created_by ORDER BY b.created_at DESC LIMIT 500"
    ))
    .fetch_all(pool)
    .await
}

pub async fn batch(pool: &PgPool, id: Uuid) -> Result<Option<Batch>, sqlx::Error> {
    sqlx::query_as::<_, Batch>(&format!("SELECT {BATCH_COLS} FROM redeem_batches b LEFT JOIN users u ON u.id = b.created_by WHERE b.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A batch's codes in the order they were made.
pub async fn codes(pool: &PgPool, batch_id: Uuid) -> Result<Vec<CodeRow>, sqlx::Error> {
    sqlx::query_as::<_, CodeRow>(
        "SELECT c.id, c.prefix, \
                CASE WHEN c.redeemed_at IS NOT NULL THEN 'redeemed' WHEN c.voided_at IS NOT NULL THEN 'voided' \
                     WHEN b.expires_at <= now() THEN 'expired' ELSE 'unused' END AS state, \
                COALESCE(u.email, '') AS redeemed_by_email, c.redeemed_at, c.voided_at \
         FROM redeem_codes c JOIN redeem_batches b ON b.id = c.batch_id LEFT JOIN users u ON u.id = c.redeemed_by \
         WHERE c.batch_id = $1 ORDER BY c.id",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await
}

/// Voids one unused code (staff; audited).
pub async fn void_code(pool: &PgPool, staff_id: Uuid, code_id: i64) -> Result<(), BillingError> {
    let mut tx = pool.begin().await?;
    let voided: Option<(Uuid, String)> = sqlx::query_as(
        "UPDATE redeem_codes SET voided_at = now(), voided_by = $2 WHERE id = $1 AND redeemed_at IS NULL AND voided_at IS NULL \
         RETURNING batch_id, prefix",
    )
    .bind(code_id)
    .bind(staff_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (batch_id, prefix) = voided.ok_or_else(|| invalid("Only an unused code can be voided."))?;
    audit::record(&mut tx, staff_id, "redeem.void", &format!("redeem_code:{code_id}"), serde_json::json!({"batch": batch_id, "prefix": prefix})).await?;
    tx.commit().await?;
    Ok(())
}

/// Voids every unused code of a batch (staff; audited). Returns how many.
pub async fn void_batch(pool: &PgPool, staff_id: Uuid, batch_id: Uuid) -> Result<u64, BillingError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("UPDATE redeem_codes SET voided_at = now(), voided_by = $2 WHERE batch_id = $1 AND redeemed_at IS NULL AND voided_at IS NULL")
        .bind(batch_id)
        .bind(staff_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(invalid("This batch has no unused codes."));
    }
    audit::record(&mut tx, staff_id, "redeem.void_batch", &format!("redeem_batch:{batch_id}"), serde_json::json!({"voided": n})).await?;
    tx.commit().await?;
    Ok(n)
}

/// The batch as CSV: code, kind, value, state, redeemed_by, redeemed_at. `full` gives the
/// readable codes (only at generation); otherwise a code is its prefix and "…".
pub fn csv(batch: &Batch, rows: &[CodeRow], full: Option<&[String]>) -> String {
    // a cell a spreadsheet would run as a formula is quoted as text
    fn cell(s: &str) -> String {
        let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
    }
    let mut out = String::from("code,kind,value,state,redeemed_by,redeemed_at\n");
    for (i, r) in rows.iter().enumerate() {
        let code = full.and_then(|f| f.get(i).cloned()).unwrap_or_else(|| format!("{}-…", r.prefix));
        let at = r.redeemed_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default();
        let line = [code, batch.kind.to_string(), batch.value(), r.state.to_string(), r.redeemed_by_email.clone(), at];
        out.push_str(&line.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// Redeems a code for `user_id`, asking from `addr` (throttled; see the module doc).
pub async fn redeem(pool: &PgPool, user_id: Uuid, addr: IpAddr, input: &str) -> Result<Redeemed, RedeemError> {
    let by_user = format!("redeem:user:{user_id}");
    let by_addr = format!("redeem:addr:{}", address_key(addr));
    if let Some(wait) = throttle::take_all(pool, &[(&by_user, throttle::REDEEM_ACCOUNT), (&by_addr, throttle::REDEEM_ADDRESS)]).await? {
        return Err(RedeemError::Throttled(wait));
    }
    let done = redeem_once(pool, user_id, input).await?;
    // the counters hold failures only
    throttle::give_back(pool, &by_user).await?;
    throttle::give_back(pool, &by_addr).await?;
    Ok(done)
}

async fn redeem_once(pool: &PgPool, user_id: Uuid, input: &str) -> Result<Redeemed, RedeemError> {
    let code = normalise(input).ok_or(RedeemError::NotValid)?;
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    type Row = (i64, Uuid, String, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let (code_id, batch_id, prefix, redeemed_at, voided_at): Row =
        sqlx::query_as("SELECT id, batch_id, prefix, redeemed_at, voided_at FROM redeem_codes WHERE code_hash = $1 FOR UPDATE")
            .bind(sha256(code.as_bytes()).as_slice())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(RedeemError::NotValid)?;
    if redeemed_at.is_some() {
        return Err(RedeemError::Used);
    }
    if voided_at.is_some() {
        return Err(RedeemError::Voided);
    }
    let b = sqlx::query_as::<_, Batch>(&format!("SELECT {BATCH_COLS} FROM redeem_batches b LEFT JOIN users u ON u.id = b.created_by WHERE b.id = $1"))
        .bind(batch_id)
        .fetch_one(&mut *tx)
        .await?;
    let now = Utc::now();
    if b.expires_at.is_some_and(|e| e <= now) {
        return Err(RedeemError::Expired);
    }
    let amount = b.amount_micros.unwrap_or_default();
    let redeemed = match b.kind {
        CodeKind::Balance => {
            wallet_entry(&mut tx, user_id, amount, LedgerKind::Credit, &Memo::Redeemed { prefix: prefix.clone() }, None).await?;
            Redeemed::Balance { amount }
        }
        CodeKind::Trial => {
            let until = now + Duration::days(i64::from(b.trial_days.unwrap_or(1)));
            grant_trial(&mut tx, user_id, amount, until, &prefix).await?;
            Redeemed::Trial { amount, until }
        }
        CodeKind::Plan => {
            if subscriptions::active_for_update(&mut tx, user_id).await?.is_some() {
                return Err(RedeemError::HasPlan);
            }
            let plan = plans::get_tx(&mut tx, b.plan_code.as_deref().unwrap_or_default()).await?.ok_or(BillingError::UnknownPlan)?;
            let months = b.plan_months.unwrap_or(1);
            let order = orders::insert_order(&mut tx, user_id, OrderKind::Subscription, Some(&plan), None, MicroCny::ZERO, PaymentMethod::RedeemCode, now).await?;
            let sub = subscriptions::activate(&mut tx, user_id, &plan, order.id, now, months as u32).await?;
            orders::record_payment(&mut tx, order.id, PaymentMethod::RedeemCode, None, now).await?;
            Redeemed::Plan { plan: plan.name, months, until: sub.cycle_end }
        }
    };
    sqlx::query("UPDATE redeem_codes SET redeemed_by = $2, redeemed_at = $3 WHERE id = $1").bind(code_id).bind(user_id).bind(now).execute(&mut *tx).await?;
    audit::record(
        &mut tx,
        user_id,
        "redeem.use",
        &format!("redeem_code:{code_id}"),
        serde_json::json!({"batch": batch_id, "prefix": prefix, "kind": b.kind, "amount_micros": b.amount_micros, "plan": b.plan_code, "months": b.plan_months}),
    )
    .await?;
    tx.commit().await?;
    Ok(redeemed)
}

/// A trial code's credit: the account's trial (one ever, see [`super::trials`]) is created
/// approved, or its pending application approved; any other trial refuses the code.
async fn grant_trial(tx: &mut sqlx::PgConnection, user_id: Uuid, amount: MicroCny, until: DateTime<Utc>, prefix: &str) -> Result<(), RedeemError> {
    let note = format!("Redeem code {prefix}…");
    let found: Option<(Uuid, String)> = sqlx::query_as("SELECT id, status FROM trial_applications WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    let id = match found {
        Some((id, status)) if status == "pending" => id,
        Some(_) => return Err(RedeemError::HadTrial),
        // the code is the application
        None => {
            sqlx::query_scalar("INSERT INTO trial_applications (user_id, email, reason) SELECT id, email, $2 FROM users WHERE id = $1 RETURNING id")
                .bind(user_id)
                .bind(&note)
                .fetch_one(&mut *tx)
                .await?
        }
    };
    super::trials::grant_pending(tx, id, user_id, amount, until, None, Some(&note)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_in_any_case_with_or_without_dashes() {
        let code = new_code();
        let shown = grouped(&code);
        assert_eq!(shown.len(), CODE_LEN + CODE_LEN / 4 - 1);
        assert_eq!(normalise(&shown).as_deref(), Some(code.as_str()));
        assert_eq!(normalise(&format!(" {} ", shown.to_lowercase().replace('-', " "))).as_deref(), Some(code.as_str()));
        assert_eq!(normalise(&code[1..]), None, "too short");
        assert_eq!(normalise(&format!("O{}", &code[1..])), None, "outside the alphabet");
    }

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        let b = Batch {
            id: Uuid::nil(), kind: CodeKind::Balance, amount_micros: Some(MicroCny::units(50)), trial_days: None, plan_code: None,
            plan_months: None, note: String::new(), expires_at: None, created_at: Utc::now(), created_by_email: String::new(),
            total: 1, redeemed: 1, voided: 0,
        };
        let row = CodeRow { id: 1, prefix: "K7QM".into(), state: CodeState::Redeemed, redeemed_by_email: "=x,\"y\"@example.com".into(), redeemed_at: None, voided_at: None };
        assert_eq!(
            csv(&b, &[row], None),
            "code,kind,value,state,redeemed_by,redeemed_at\nK7QM-…,balance,50.000000 CNY,redeemed,\"'=x,\"\"y\"\"@example.com\",\n"
        );
    }
}
