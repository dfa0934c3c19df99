//! Payment providers behind one interface: Alipay (RSA2), WeChat Pay (API v3), corporate bank
//! transfer (staff confirm receipt) and a sandbox for the demo (HMAC-SHA256 with the server
//! secret; off unless switched on, see [`SandboxSwitch`]). Each provider verifies its own signed
//! notification exactly as its documentation specifies; [`handle_notification`] then marks the
//! order paid (idempotently, amount checked, only for an order created for that provider).
//!
//! * Alipay: the notification is a form post. The signed content is every parameter except `sign`
//!   and `sign_type`, with a non-empty value, sorted by name, joined as `k=v&k=v` (decoded values);
//!   `sign` is base64 of SHA256withRSA (PKCS#1 v1.5) with Alipay's public key. Ack body `success`.
//! * WeChat Pay v3: header `Wechatpay-Signature` is base64 RSA-SHA256 over
//!   `"{Wechatpay-Timestamp}\n{Wechatpay-Nonce}\n{body}\n"` with the platform public key (the
//!   timestamp must be within 5 minutes); the `resource` is AEAD_AES_256_GCM-encrypted with the
//!   APIv3 key, its `nonce` and `associated_data` (the ciphertext ends with the 16-byte tag).
//!   Ack: HTTP 204 without body.
//! * Sandbox: form `order_id, amount_micros, trade_no, signature` with signature = hex HMAC-SHA256
//!   (server secret) of `"cloudrouter-sandbox\n{order_id}\n{amount_micros}\n{trade_no}"`.
//!
//! One file per provider (`alipay`, `wechat`, `sandbox`, `bank`); `signing` holds the keys,
//! signatures and form encoding they share. This file is the interface, the configured set and
//! the notification route.

mod alipay;
mod bank;
mod sandbox;
mod signing;
mod wechat;

pub use alipay::AlipayProvider;
pub use bank::BankTransfer;
pub use sandbox::SandboxProvider;
pub use signing::{alipay_sign_content, parse_form, rsa_sha256_sign, rsa_sha256_verify, url_encode};
pub use wechat::{WechatPayProvider, WechatRequest};

use super::orders::{Order, PaymentMethod};
use crate::money::MicroCny;
use super::purchases::{self, PaidOutcome};
use super::BillingError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("The notification signature is invalid.")]
    BadSignature,
    #[error("The notification is malformed: {0}")]
    Malformed(String),
    #[error("This payment method is not configured.")]
    UnknownMethod,
    #[error("This payment method does not send notifications.")]
    NotSupported,
    #[error("The notification does not report a completed payment.")]
    NotPaid,
    #[error("Payment configuration error: {0}")]
    Config(String),
    #[error("The payment provider could not be reached: {0}")]
    Provider(String),
    #[error(transparent)]
    Billing(#[from] BillingError),
}

/// How the customer pays an order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Checkout {
    /// Send the browser here (provider page, or a console page such as `/pay/sandbox/{order_id}`).
    Redirect(String),
    /// Corporate bank transfer: pay `amount` (micro-CNY) quoting `reference`.
    Instructions { bank_name: String, account_name: String, account_number: String, reference: String, amount: MicroCny },
}

/// A verified notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotice {
    pub order_id: Uuid,
    pub trade_no: String,
    pub amount_micros: MicroCny,
    pub paid: bool,
}

pub trait PaymentProvider: Send + Sync {
    /// alipay | wechat | bank | sandbox
    fn method(&self) -> PaymentMethod;
    fn checkout(&self, order: &Order, return_url: &str) -> Checkout;
    fn verify_notification(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<PaymentNotice, PaymentError>;
    /// The answer the provider expects for a notification it should not send again.
    fn ack(&self) -> (u16, String);
    /// The answer for a notification that was refused (the provider retries later).
    fn nack(&self, _reason: &str) -> (u16, String) {
        (400, "failure".into())
    }
}

/// A shared provider is a provider: `Payments` keeps WeChat Pay both in its list and by type
/// (its QR checkout needs a call only the concrete type can make).
impl<T: PaymentProvider + ?Sized> PaymentProvider for Arc<T> {
    fn method(&self) -> PaymentMethod {
        (**self).method()
    }
    fn checkout(&self, order: &Order, return_url: &str) -> Checkout {
        (**self).checkout(order, return_url)
    }
    fn verify_notification(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        (**self).verify_notification(headers, body)
    }
    fn ack(&self) -> (u16, String) {
        (**self).ack()
    }
    fn nack(&self, reason: &str) -> (u16, String) {
        (**self).nack(reason)
    }
}



/// Whether the sandbox provider is on. Off unless `CLOUDROUTER_SANDBOX_PAYMENTS=1` (the run
/// command sets it in demo mode); `CLOUDROUTER_SANDBOX_PAYMENTS_ALLOW_PUBLIC=1` lets it run on a
/// public console or beside real providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SandboxSwitch {
    pub on: bool,
    pub allow_public: bool,
}

impl SandboxSwitch {
    pub fn from_env() -> SandboxSwitch {
        SandboxSwitch {
            on: env("CLOUDROUTER_SANDBOX_PAYMENTS").as_deref() == Some("1"),
            allow_public: env("CLOUDROUTER_SANDBOX_PAYMENTS_ALLOW_PUBLIC").as_deref() == Some("1"),
        }
    }
}

#[derive(Default)]
pub struct Payments {
    providers: Vec<Box<dyn PaymentProvider>>,
    wechat: Option<Arc<WechatPayProvider>>,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl Payments {
    pub fn new() -> Payments {
        Payments::default()
    }

    /// Adds (or replaces) a provider.
    pub fn with(mut self, p: impl PaymentProvider + 'static) -> Payments {
        self.providers.retain(|q| q.method() != p.method());
        self.providers.push(Box::new(p));
        self
    }

    /// Adds WeChat Pay, kept by type as well for its QR checkout.
    pub fn with_wechat(mut self, w: WechatPayProvider) -> Payments {
        let w = Arc::new(w);
        self.wechat = Some(w.clone());
        self.with(w)
    }

    /// From the environment:
    /// * Alipay: `CLOUDROUTER_ALIPAY_APP_ID`, `CLOUDROUTER_ALIPAY_PRIVATE_KEY`,
    ///   `CLOUDROUTER_ALIPAY_PUBLIC_KEY` (PEM or base64 DER), `CLOUDROUTER_ALIPAY_GATEWAY`
    ///   (default `https://openapi.alipay.com/gateway.do`), `CLOUDROUTER_ALIPAY_NOTIFY_URL`;
    /// * WeChat Pay: `CLOUDROUTER_WECHAT_MCH_ID`, `CLOUDROUTER_WECHAT_APP_ID`,
    ///   `CLOUDROUTER_WECHAT_APIV3_KEY` (32 characters), `CLOUDROUTER_WECHAT_PLATFORM_PUBLIC_KEY`,
    ///   `CLOUDROUTER_WECHAT_PRIVATE_KEY`, `CLOUDROUTER_WECHAT_SERIAL_NO`, `CLOUDROUTER_WECHAT_NOTIFY_URL`;
    /// * bank transfer: `CLOUDROUTER_BANK_NAME`, `CLOUDROUTER_BANK_ACCOUNT_NAME`, `CLOUDROUTER_BANK_ACCOUNT_NUMBER`;
    /// * sandbox: see [`SandboxSwitch::from_env`] and [`Payments::with_sandbox`]; signed with `server_secret`.
    pub fn from_env(server_secret: &str, console_base_url: &str) -> Result<Payments, PaymentError> {
        let mut p = Payments::new();
        if let (Some(app), Some(sk), Some(pk)) =
            (env("CLOUDROUTER_ALIPAY_APP_ID"), env("CLOUDROUTER_ALIPAY_PRIVATE_KEY"), env("CLOUDROUTER_ALIPAY_PUBLIC_KEY"))
        {
            let gw = env("CLOUDROUTER_ALIPAY_GATEWAY").unwrap_or_else(|| "https://openapi.alipay.com/gateway.do".into());
            let mut a = AlipayProvider::new(&app, &sk, &pk, &gw)?;
            if let Some(n) = env("CLOUDROUTER_ALIPAY_NOTIFY_URL") {
                a = a.with_notify_url(&n);
            }
            p = p.with(a);
        }
        if let (Some(mch), Some(app), Some(key), Some(pk), Some(sk)) = (
            env("CLOUDROUTER_WECHAT_MCH_ID"),
            env("CLOUDROUTER_WECHAT_APP_ID"),
            env("CLOUDROUTER_WECHAT_APIV3_KEY"),
            env("CLOUDROUTER_WECHAT_PLATFORM_PUBLIC_KEY"),
            env("CLOUDROUTER_WECHAT_PRIVATE_KEY"),
        ) {
            let k: [u8; 32] = key.as_bytes().try_into().map_err(|_| PaymentError::Config("the WeChat APIv3 key must be 32 characters".into()))?;
            let mut w = WechatPayProvider::new(&mch, &app, k, &pk, &sk)?;
            if let Some(s) = env("CLOUDROUTER_WECHAT_SERIAL_NO") {
                w = w.with_serial_no(&s);
            }
            if let Some(n) = env("CLOUDROUTER_WECHAT_NOTIFY_URL") {
                w = w.with_notify_url(&n);
            }
            p = p.with_wechat(w);
        }
        if let (Some(b), Some(n), Some(a)) =
            (env("CLOUDROUTER_BANK_NAME"), env("CLOUDROUTER_BANK_ACCOUNT_NAME"), env("CLOUDROUTER_BANK_ACCOUNT_NUMBER"))
        {
            p = p.with(BankTransfer::new(&b, &n, &a));
        }
        p.with_sandbox(SandboxSwitch::from_env(), server_secret, console_base_url)
    }

    /// Adds the sandbox when it is switched on. Sandbox money is free money: it is refused where
    /// real customers may be (an `https` console) or real money moves (Alipay or WeChat Pay
    /// configured) unless staff allowed it explicitly.
    pub fn with_sandbox(self, switch: SandboxSwitch, server_secret: &str, console_base_url: &str) -> Result<Payments, PaymentError> {
        if !switch.on {
            return Ok(self);
        }
        let public = console_base_url.trim().to_ascii_lowercase().starts_with("https://");
        let real = [PaymentMethod::Alipay, PaymentMethod::Wechat].into_iter().filter(|m| self.get(*m).is_some()).collect::<Vec<_>>();
        if !switch.allow_public && (public || !real.is_empty()) {
            let why = if public { format!("the console is public ({console_base_url})") } else { format!("real payment providers are configured ({})", real.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")) };
            return Err(PaymentError::Config(format!(
                "sandbox payments (CLOUDROUTER_SANDBOX_PAYMENTS=1) hand out free balance, and {why}; \
                 switch the sandbox off, or set CLOUDROUTER_SANDBOX_PAYMENTS_ALLOW_PUBLIC=1 if this is really wanted"
            )));
        }
        Ok(self.with(SandboxProvider::new(server_secret, console_base_url)))
    }

    pub fn get(&self, method: PaymentMethod) -> Option<&dyn PaymentProvider> {
        self.providers.iter().find(|p| p.method() == method).map(|p| p.as_ref())
    }

    /// Configured methods, for the checkout page ("balance" is always possible for plans).
    pub fn methods(&self) -> Vec<PaymentMethod> {
        self.providers.iter().map(|p| p.method()).collect()
    }

    /// WeChat Pay, if configured: the console asks it for the QR code of an order.
    pub fn wechat(&self) -> Option<&WechatPayProvider> {
        self.wechat.as_deref()
    }

    /// The sandbox provider, if on (the console's sandbox page signs with it).
    pub fn sandbox(&self) -> Option<&dyn PaymentProvider> {
        self.get(PaymentMethod::Sandbox)
    }
}

/// Verifies a notification and marks its order paid (idempotent).
pub async fn handle_notification(
    pool: &PgPool,
    provider: &dyn PaymentProvider,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<PaidOutcome, PaymentError> {
    let n = provider.verify_notification(headers, body)?;
    if !n.paid {
        return Err(PaymentError::NotPaid);
    }
    Ok(purchases::mark_paid(pool, n.order_id, provider.method(), &n.trade_no, n.amount_micros).await?)
}

#[derive(Clone)]
struct NotifyState {
    pool: PgPool,
    payments: Arc<Payments>,
}

/// `POST /notify/{method}` for each provider (nest it at `/api/payments`). Answers each
/// provider's expected acknowledgement; refused notifications get the provider's failure answer
/// (so a provider retries after a transient database error).
pub fn router(pool: PgPool, payments: Arc<Payments>) -> axum::Router {
    axum::Router::new().route("/notify/{method}", axum::routing::post(notify)).with_state(NotifyState { pool, payments })
}

async fn notify(
    State(st): State<NotifyState>,
    Path(method): Path<String>,
    headers: http::HeaderMap,
    body: bytes::Bytes,
) -> axum::response::Response {
    let Some(p) = method.parse().ok().and_then(|m| st.payments.get(m)) else {
        return (http::StatusCode::NOT_FOUND, "unknown payment method").into_response();
    };
    let (code, text) = match handle_notification(&st.pool, p, &headers, &body).await {
        Ok(_) | Err(PaymentError::NotPaid) => p.ack(),
        Err(e) => {
            tracing::warn!(method, error = %e, "payment notification refused");
            p.nack(&e.to_string())
        }
    };
    (http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK), text).into_response()
}

