//! Invoices (fapiao) for paid orders: an electronic general invoice for individuals, or a special
//! VAT invoice for companies (taxpayer ID = unified social credit code, GB 32100-2015). Staff issue
//! (number, date, optional PDF) or reject with a reason. An order is invoiced at most once: a
//! rejected request may be made again (a partial unique index enforces it).
//!
//! Only money kept is invoiced: a refunded order cannot be invoiced. When an order is refunded
//! ([`on_order_refunded`], in the refund's transaction) its open request is closed (rejected with
//! the reason) and an issued invoice becomes `reversal_due`: a red-letter invoice (红字发票) of
//! the refunded amount is owed, and staff record it with [`record_reversal`] → `reversed`.
//! States: requested → issued | rejected; issued → reversal_due → reversed.

use super::orders::OrderStatus;
use super::{audit, BillingError};
use crate::money::MicroCny;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The 31 characters of GB 32100-2015 (no I, O, S, V, Z), in value order.
const CREDIT_CHARS: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const CREDIT_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// The check character of the first 17 characters of a unified social credit code.
pub fn credit_code_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (i, b) in first17.bytes().enumerate() {
        let v = CREDIT_CHARS.iter().position(|c| *c == b)? as u32;
        sum += v * CREDIT_WEIGHTS[i];
    }
    let c = (31 - sum % 31) % 31;
    Some(CREDIT_CHARS[c as usize] as char)
}

/// Validates a unified social credit code: 18 characters from `0-9A-HJ-NPQRTUWXY`, the
/// administrative division code (characters 3–8) in digits, and the GB 32100-2015 check character.
pub fn validate_credit_code(code: &str) -> Result<(), String> {
    let code = code.trim();
    if code.len() != 18 || !code.is_ascii() {
        return Err("The taxpayer ID (unified social credit code) must be 18 characters.".into());
    }
    if !code.bytes().all(|b| CREDIT_CHARS.contains(&b)) {
        return Err("The taxpayer ID may only contain digits and capital letters other than I, O, S, V and Z.".into());
    }
    if !code[2..8].bytes().all(|b| b.is_ascii_digit()) {
        return Err("Characters 3 to 8 of the taxpayer ID must be digits (the administrative division code).".into());
    }
    let want = credit_code_check_char(&code[..17]).ok_or("The taxpayer ID is not valid.")?;
    if code.as_bytes()[17] as char != want {
        return Err("The taxpayer ID is not valid: its check character does not match.".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InvoiceDetails {
    /// Electronic general invoice for an individual.
    Personal { name: String, email: String },
    /// Special VAT invoice for a company.
    VatSpecial { company: String, tax_id: String, address: String, phone: String, bank: String, account: String, email: String },
}

fn check_email(e: &str) -> Result<(), BillingError> {
    let e = e.trim();
    match e.split_once('@') {
        Some((a, d)) if !a.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.') && e.len() <= 254 && !e.contains(' ') => Ok(()),
        _ => Err(BillingError::Invalid("Please enter a valid email address for the invoice.".into())),
    }
}

fn check_text(v: &str, what: &'static str, max: usize) -> Result<(), BillingError> {
    let n = v.trim().chars().count();
    if n == 0 {
        return Err(BillingError::MissingField(what));
    }
    if n > max {
        return Err(BillingError::TooLong { what, max });
    }
    Ok(())
}

impl InvoiceDetails {
    /// "personal" | "vat_special"
    pub fn kind(&self) -> &'static str {
        match self {
            InvoiceDetails::Personal { .. } => "personal",
            InvoiceDetails::VatSpecial { .. } => "vat_special",
        }
    }

    pub fn validate(&self) -> Result<(), BillingError> {
        match self {
            InvoiceDetails::Personal { name, email } => {
                check_text(name, "name", 100)?;
                check_email(email)
            }
            InvoiceDetails::VatSpecial { company, tax_id, address, phone, bank, account, email } => {
                check_text(company, "company name", 200)?;
                validate_credit_code(tax_id).map_err(BillingError::Invalid)?;
                check_text(address, "registered address", 300)?;
                let digits = phone.chars().filter(|c| c.is_ascii_digit()).count();
                if !(7..=20).contains(&digits) || !phone.trim().chars().all(|c| c.is_ascii_digit() || " -+()".contains(c)) {
                    return Err(BillingError::Invalid("Please enter a valid registered phone number.".into()));
                }
                check_text(bank, "bank name", 200)?;
                let acct: String = account.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
                if !(5..=40).contains(&acct.len()) || !acct.chars().all(|c| c.is_ascii_digit()) {
                    return Err(BillingError::Invalid("Please enter a valid bank account number (digits only).".into()));
                }
                check_email(email)
            }
        }
    }

    /// Trimmed copy (the tax ID upper-cased).
    pub fn normalized(&self) -> InvoiceDetails {
        let t = |s: &String| s.trim().to_string();
        match self {
            InvoiceDetails::Personal { name, email } => InvoiceDetails::Personal { name: t(name), email: t(email) },
            InvoiceDetails::VatSpecial { company, tax_id, address, phone, bank, account, email } => InvoiceDetails::VatSpecial {
                company: t(company),
                tax_id: tax_id.trim().to_ascii_uppercase(),
                address: t(address),
                phone: t(phone),
                bank: t(bank),
                account: t(account),
                email: t(email),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Invoice {
    pub id: Uuid,
    pub user_id: Uuid,
    pub order_id: Uuid,
    pub order_reference: String,
    pub amount_micros: MicroCny,
    /// personal | vat_special
    pub kind: String,
    pub details: InvoiceDetails,
    /// requested | issued | rejected | reversal_due | reversed
    pub status: String,
    pub number: Option<String>,
    pub issued_on: Option<NaiveDate>,
    pub has_pdf: bool,
    pub reject_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The refunded amount a red-letter invoice reverses (reversal_due, reversed).
    pub reversal_amount_micros: Option<MicroCny>,
    pub reversal_number: Option<String>,
    pub reversal_issued_on: Option<NaiveDate>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    user_id: Uuid,
    order_id: Uuid,
    order_reference: String,
    amount_micros: MicroCny,
    kind: String,
    details: serde_json::Value,
    status: String,
    number: Option<String>,
    issued_on: Option<NaiveDate>,
    has_pdf: bool,
    reject_reason: Option<String>,
    created_at: DateTime<Utc>,
    reversal_amount_micros: Option<MicroCny>,
    reversal_number: Option<String>,
    reversal_issued_on: Option<NaiveDate>,
}

impl TryFrom<Row> for Invoice {
    type Error = sqlx::Error;
    fn try_from(r: Row) -> Result<Invoice, sqlx::Error> {
        Ok(Invoice {
            id: r.id,
            user_id: r.user_id,
            order_id: r.order_id,
            order_reference: r.order_reference,
            amount_micros: r.amount_micros,
            kind: r.kind,
            details: serde_json::from_value(r.details).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            status: r.status,
            number: r.number,
            issued_on: r.issued_on,
            has_pdf: r.has_pdf,
            reject_reason: r.reject_reason,
            created_at: r.created_at,
            reversal_amount_micros: r.reversal_amount_micros,
            reversal_number: r.reversal_number,
            reversal_issued_on: r.reversal_issued_on,
        })
    }
}

const SELECT: &str = "SELECT i.id, i.user_id, i.order_id, o.reference AS order_reference, i.amount_micros, i.kind, i.details, i.status, \
    i.number, i.issued_on, (i.pdf IS NOT NULL) AS has_pdf, i.reject_reason, i.created_at, i.reversal_amount_micros, i.reversal_number, \
    i.reversal_issued_on FROM invoices i JOIN orders o ON o.id = i.order_id";

fn rows(v: Vec<Row>) -> Result<Vec<Invoice>, sqlx::Error> {
    v.into_iter().map(Invoice::try_from).collect()
}

/// Requests an invoice for one of the user's paid orders.
pub async fn request(pool: &PgPool, user_id: Uuid, order_id: Uuid, details: InvoiceDetails) -> Result<Invoice, BillingError> {
    let details = details.normalized();
    details.validate()?;
    let mut tx = pool.begin().await?;
    let (status, amount): (OrderStatus, MicroCny) = sqlx::query_as("SELECT status, amount_micros FROM orders WHERE id = $1 AND user_id = $2 FOR UPDATE")
        .bind(order_id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BillingError::OrderNotFound)?;
    if status != OrderStatus::Paid || !amount.is_positive() {
        return Err(BillingError::OrderNotInvoiceable);
    }
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM invoices WHERE order_id = $1 AND status <> 'rejected')")
        .bind(order_id)
        .fetch_one(&mut *tx)
        .await?;
    if taken {
        return Err(BillingError::AlreadyInvoiced);
    }
    let id: Uuid = sqlx::query_scalar("INSERT INTO invoices (user_id, order_id, amount_micros, kind, details) VALUES ($1, $2, $3, $4, $5) RETURNING id")
        .bind(user_id)
        .bind(order_id)
        .bind(amount)
        .bind(details.kind())
        .bind(serde_json::to_value(&details).unwrap_or_default())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| if super::is_unique_violation(&e) { BillingError::AlreadyInvoiced } else { e.into() })?;
    tx.commit().await?;
    get(pool, id).await?.ok_or(BillingError::InvoiceNotFound)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Invoice>, sqlx::Error> {
    sqlx::query_as::<_, Row>(&format!("{SELECT} WHERE i.id = $1")).bind(id).fetch_optional(pool).await?.map(Invoice::try_from).transpose()
}

pub async fn list_for_user(pool: &PgPool, user_id: Uuid) -> Result<Vec<Invoice>, sqlx::Error> {
    rows(sqlx::query_as::<_, Row>(&format!("{SELECT} WHERE i.user_id = $1 ORDER BY i.created_at DESC")).bind(user_id).fetch_all(pool).await?)
}

/// Requests waiting for staff, oldest first.
pub async fn queue(pool: &PgPool) -> Result<Vec<Invoice>, sqlx::Error> {
    rows(sqlx::query_as::<_, Row>(&format!("{SELECT} WHERE i.status = 'requested' ORDER BY i.created_at")).fetch_all(pool).await?)
}

/// Issued invoices of refunded orders waiting for their red-letter reversal, oldest first.
pub async fn reversals_due(pool: &PgPool) -> Result<Vec<Invoice>, sqlx::Error> {
    rows(sqlx::query_as::<_, Row>(&format!("{SELECT} WHERE i.status = 'reversal_due' ORDER BY i.created_at")).fetch_all(pool).await?)
}

/// What a refund did to the order's invoices.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RefundedInvoices {
    /// Open requests closed (rejected with the reason).
    pub closed: Vec<Uuid>,
    /// Issued invoices now due a red-letter reversal.
    pub due_reversal: Vec<Uuid>,
}

/// The reason a request of a refunded order is closed with (the customer reads it).
pub const REFUNDED_REASON: &str = "The order was refunded: only money kept can be invoiced.";

/// The order was refunded by `refunded_micros` (inside the refund's transaction, which holds the
/// order's lock): its open request is closed and its issued invoice is marked for reversal.
pub(crate) async fn on_order_refunded(
    tx: &mut PgConnection,
    order_id: Uuid,
    refunded_micros: MicroCny,
    now: DateTime<Utc>,
) -> Result<RefundedInvoices, sqlx::Error> {
    let closed = sqlx::query_scalar(
        "UPDATE invoices SET status = 'rejected', reject_reason = $2, decided_at = $3 WHERE order_id = $1 AND status = 'requested' RETURNING id",
    )
    .bind(order_id)
    .bind(REFUNDED_REASON)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let due_reversal = sqlx::query_scalar(
        "UPDATE invoices SET status = 'reversal_due', reversal_amount_micros = $2 WHERE order_id = $1 AND status = 'issued' RETURNING id",
    )
    .bind(order_id)
    .bind(refunded_micros)
    .fetch_all(&mut *tx)
    .await?;
    Ok(RefundedInvoices { closed, due_reversal })
}

/// Records the red-letter invoice that reverses an invoice of a refunded order (staff, audited).
pub async fn record_reversal(pool: &PgPool, staff_id: Uuid, id: Uuid, number: &str, issued_on: NaiveDate) -> Result<(), BillingError> {
    let number = check_number(number)?;
    let mut tx = pool.begin().await?;
    let (status, amount): (String, Option<MicroCny>) =
        sqlx::query_as("SELECT status, reversal_amount_micros FROM invoices WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(BillingError::InvoiceNotFound)?;
    if status != "reversal_due" {
        return Err(BillingError::NoReversalDue);
    }
    sqlx::query("UPDATE invoices SET status = 'reversed', reversal_number = $2, reversal_issued_on = $3, reversed_by = $4, reversed_at = now() WHERE id = $1")
        .bind(id)
        .bind(number)
        .bind(issued_on)
        .bind(staff_id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        staff_id,
        "invoice.reverse",
        &format!("invoice:{id}"),
        serde_json::json!({"number": number, "issued_on": issued_on, "amount_micros": amount}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn check_number(number: &str) -> Result<&str, BillingError> {
    let number = number.trim();
    if number.is_empty() || number.len() > 64 {
        return Err(BillingError::Invalid("Please enter the invoice number.".into()));
    }
    Ok(number)
}

/// Marks a requested invoice issued (staff).
pub async fn issue(
    pool: &PgPool,
    staff_id: Uuid,
    id: Uuid,
    number: &str,
    issued_on: NaiveDate,
    pdf: Option<Vec<u8>>,
) -> Result<(), BillingError> {
    let number = check_number(number)?;
    if pdf.as_ref().is_some_and(|p| !p.starts_with(b"%PDF")) {
        return Err(BillingError::Invalid("The file is not a PDF.".into()));
    }
    let mut tx = pool.begin().await?;
    // only money kept is invoiced: the order may have been refunded since it was asked for
    if lock_undecided(&mut tx, id).await? != "paid" {
        return Err(BillingError::OrderNotInvoiceable);
    }
    let has_pdf = pdf.is_some();
    sqlx::query("UPDATE invoices SET status = 'issued', number = $2, issued_on = $3, pdf = $4, decided_by = $5, decided_at = now() WHERE id = $1")
        .bind(id)
        .bind(number)
        .bind(issued_on)
        .bind(pdf)
        .bind(staff_id)
        .execute(&mut *tx)
        .await?;
    audit::record(&mut tx, staff_id, "invoice.issue", &format!("invoice:{id}"), serde_json::json!({"number": number, "issued_on": issued_on, "pdf": has_pdf}))
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Locks an invoice request that staff have not decided yet, and its order first (the lock order
/// of billing: orders → invoices); issue and reject both start here. Returns the order's status.
async fn lock_undecided(tx: &mut PgConnection, id: Uuid) -> Result<String, BillingError> {
    let order_id: Uuid = sqlx::query_scalar("SELECT order_id FROM invoices WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(BillingError::InvoiceNotFound)?;
    let order_status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1 FOR UPDATE").bind(order_id).fetch_one(&mut *tx).await?;
    let status: String = sqlx::query_scalar("SELECT status FROM invoices WHERE id = $1 FOR UPDATE").bind(id).fetch_one(&mut *tx).await?;
    if status != "requested" {
        return Err(BillingError::AlreadyDecided);
    }
    Ok(order_status)
}

/// Rejects a requested invoice with a reason (staff); the customer may request again.
pub async fn reject(pool: &PgPool, staff_id: Uuid, id: Uuid, reason: &str) -> Result<(), BillingError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(BillingError::Invalid("Please give the customer a reason.".into()));
    }
    let mut tx = pool.begin().await?;
    lock_undecided(&mut tx, id).await?;
    sqlx::query("UPDATE invoices SET status = 'rejected', reject_reason = $2, decided_by = $3, decided_at = now() WHERE id = $1")
        .bind(id)
        .bind(reason)
        .bind(staff_id)
        .execute(&mut *tx)
        .await?;
    audit::record(&mut tx, staff_id, "invoice.reject", &format!("invoice:{id}"), serde_json::json!({"reason": reason})).await?;
    tx.commit().await?;
    Ok(())
}

/// The issued PDF: the owner's (`Some(user_id)`) or any (`None` = staff).
pub async fn pdf(pool: &PgPool, user_id: Option<Uuid>, id: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    let v: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT pdf FROM invoices WHERE id = $1 AND status = 'issued' AND ($2::uuid IS NULL OR user_id = $2)",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(v.flatten())
}
