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

use super::orders::Order;
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
    Instructions { bank_name: String, account_name: String, account_number: String, reference: String, amount: i64 },
}

/// A verified notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotice {
    pub order_id: Uuid,
    pub trade_no: String,
    pub amount_micros: i64,
    pub paid: bool,
}

pub trait PaymentProvider: Send + Sync {
    /// alipay | wechat | bank | sandbox
    fn method(&self) -> &'static str;
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
    fn method(&self) -> &'static str {
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

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn parse_private_key(s: &str) -> Result<RsaPrivateKey, PaymentError> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        RsaPrivateKey::from_pkcs8_pem(s)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(s))
            .map_err(|e| PaymentError::Config(format!("private key: {e}")))
    } else {
        let der = B64.decode(s.split_whitespace().collect::<String>()).map_err(|e| PaymentError::Config(format!("private key: {e}")))?;
        RsaPrivateKey::from_pkcs8_der(&der)
            .or_else(|_| RsaPrivateKey::from_pkcs1_der(&der))
            .map_err(|e| PaymentError::Config(format!("private key: {e}")))
    }
}

fn parse_public_key(s: &str) -> Result<RsaPublicKey, PaymentError> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        RsaPublicKey::from_public_key_pem(s)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(s))
            .map_err(|e| PaymentError::Config(format!("public key: {e}")))
    } else {
        let der = B64.decode(s.split_whitespace().collect::<String>()).map_err(|e| PaymentError::Config(format!("public key: {e}")))?;
        RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
            .map_err(|e| PaymentError::Config(format!("public key: {e}")))
    }
}

/// base64 SHA256withRSA (PKCS#1 v1.5).
pub fn rsa_sha256_sign(key: &RsaPrivateKey, msg: &[u8]) -> String {
    let sk = SigningKey::<Sha256>::new(key.clone());
    B64.encode(sk.sign(msg).to_vec())
}

pub fn rsa_sha256_verify(key: &RsaPublicKey, msg: &[u8], sig_b64: &str) -> bool {
    let Ok(raw) = B64.decode(sig_b64.trim()) else { return false };
    let Ok(sig) = Signature::try_from(raw.as_slice()) else { return false };
    VerifyingKey::<Sha256>::new(key.clone()).verify(msg, &sig).is_ok()
}

/// Percent-encoding of everything but RFC 3986 unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn url_decode(s: &str) -> Result<String, PaymentError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(h.ok_or_else(|| PaymentError::Malformed("bad percent-encoding".into()))?);
                i += 2;
            }
            b'%' => return Err(PaymentError::Malformed("bad percent-encoding".into())),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| PaymentError::Malformed("not UTF-8".into()))
}

/// Parses an `application/x-www-form-urlencoded` body (a repeated name is malformed).
pub fn parse_form(body: &[u8]) -> Result<BTreeMap<String, String>, PaymentError> {
    let s = std::str::from_utf8(body).map_err(|_| PaymentError::Malformed("not UTF-8".into()))?;
    let mut m = BTreeMap::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if m.insert(url_decode(k)?, url_decode(v)?).is_some() {
            return Err(PaymentError::Malformed("a parameter is repeated".into()));
        }
    }
    Ok(m)
}

/// Alipay's content to sign: sorted `k=v` of non-empty parameters except `sign` and `sign_type`.
pub fn alipay_sign_content(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .filter(|(k, v)| k.as_str() != "sign" && k.as_str() != "sign_type" && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn order_no(id: Uuid) -> String {
    id.simple().to_string()
}

fn shanghai_now() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S").to_string()
}

// ---------------------------------------------------------------------------------------------
// Alipay
// ---------------------------------------------------------------------------------------------

pub struct AlipayProvider {
    app_id: String,
    merchant_key: RsaPrivateKey,
    alipay_key: RsaPublicKey,
    gateway_url: String,
    notify_url: Option<String>,
}

impl AlipayProvider {
    /// Keys as PEM (PKCS#8 / SPKI or PKCS#1) or bare base64 DER as Alipay's console shows them.
    pub fn new(app_id: &str, merchant_private_key_pem: &str, alipay_public_key_pem: &str, gateway_url: &str) -> Result<Self, PaymentError> {
        Ok(AlipayProvider {
            app_id: app_id.to_string(),
            merchant_key: parse_private_key(merchant_private_key_pem)?,
            alipay_key: parse_public_key(alipay_public_key_pem)?,
            gateway_url: gateway_url.to_string(),
            notify_url: None,
        })
    }

    /// Where Alipay posts notifications (…/api/payments/notify/alipay).
    pub fn with_notify_url(mut self, url: &str) -> Self {
        self.notify_url = Some(url.to_string());
        self
    }

    /// The signed parameters of a `alipay.trade.page.pay` request (desktop web checkout).
    pub fn page_pay_params(&self, order: &Order, return_url: &str) -> BTreeMap<String, String> {
        let total = super::yuan_2dp(order.amount_micros).unwrap_or_else(|| crate::money::to_decimal_string(order.amount_micros));
        let biz = serde_json::json!({
            "out_trade_no": order_no(order.id),
            "total_amount": total,
            "subject": format!("CloudRouter order {}", order.reference),
            "product_code": "FAST_INSTANT_TRADE_PAY",
        });
        let mut p = BTreeMap::new();
        p.insert("app_id".into(), self.app_id.clone());
        p.insert("method".into(), "alipay.trade.page.pay".into());
        p.insert("format".into(), "JSON".into());
        p.insert("charset".into(), "utf-8".into());
        p.insert("sign_type".into(), "RSA2".into());
        p.insert("timestamp".into(), shanghai_now());
        p.insert("version".into(), "1.0".into());
        p.insert("return_url".into(), return_url.to_string());
        if let Some(n) = &self.notify_url {
            p.insert("notify_url".into(), n.clone());
        }
        p.insert("biz_content".into(), biz.to_string());
        let sign = rsa_sha256_sign(&self.merchant_key, alipay_sign_content(&p).as_bytes());
        p.insert("sign".into(), sign);
        p
    }
}

impl PaymentProvider for AlipayProvider {
    fn method(&self) -> &'static str {
        "alipay"
    }

    fn checkout(&self, order: &Order, return_url: &str) -> Checkout {
        let q = self
            .page_pay_params(order, return_url)
            .iter()
            .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        Checkout::Redirect(format!("{}?{}", self.gateway_url, q))
    }

    fn verify_notification(&self, _headers: &http::HeaderMap, body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        let p = parse_form(body)?;
        let sign = p.get("sign").ok_or(PaymentError::BadSignature)?;
        if p.get("sign_type").is_some_and(|t| t != "RSA2") {
            return Err(PaymentError::BadSignature);
        }
        if !rsa_sha256_verify(&self.alipay_key, alipay_sign_content(&p).as_bytes(), sign) {
            return Err(PaymentError::BadSignature);
        }
        if p.get("app_id") != Some(&self.app_id) {
            return Err(PaymentError::Malformed("notification for another app".into()));
        }
        let get = |k: &str| p.get(k).cloned().ok_or_else(|| PaymentError::Malformed(format!("missing {k}")));
        let order_id = Uuid::parse_str(&get("out_trade_no")?).map_err(|_| PaymentError::Malformed("out_trade_no".into()))?;
        let amount_micros = crate::money::parse_decimal(&get("total_amount")?).map_err(|_| PaymentError::Malformed("total_amount".into()))?;
        let status = get("trade_status")?;
        Ok(PaymentNotice {
            order_id,
            trade_no: get("trade_no")?,
            amount_micros,
            paid: status == "TRADE_SUCCESS" || status == "TRADE_FINISHED",
        })
    }

    fn ack(&self) -> (u16, String) {
        (200, "success".into())
    }

    fn nack(&self, _reason: &str) -> (u16, String) {
        (400, "failure".into())
    }
}

// ---------------------------------------------------------------------------------------------
// WeChat Pay (API v3)
// ---------------------------------------------------------------------------------------------

pub struct WechatPayProvider {
    mch_id: String,
    app_id: String,
    apiv3_key: [u8; 32],
    platform_key: RsaPublicKey,
    merchant_key: RsaPrivateKey,
    serial_no: String,
    notify_url: Option<String>,
    api_base: String,
}

/// A signed `POST /v3/pay/transactions/native` request.
#[derive(Debug, Clone)]
pub struct WechatRequest {
    pub url: String,
    pub authorization: String,
    pub body: String,
}

impl WechatPayProvider {
    pub fn new(
        mch_id: &str,
        app_id: &str,
        apiv3_key: [u8; 32],
        platform_public_key_pem: &str,
        merchant_private_key_pem: &str,
    ) -> Result<Self, PaymentError> {
        Ok(WechatPayProvider {
            mch_id: mch_id.to_string(),
            app_id: app_id.to_string(),
            apiv3_key,
            platform_key: parse_public_key(platform_public_key_pem)?,
            merchant_key: parse_private_key(merchant_private_key_pem)?,
            serial_no: String::new(),
            notify_url: None,
            api_base: "https://api.mch.weixin.qq.com".into(),
        })
    }

    /// The merchant certificate serial number (needed to call WeChat's API).
    pub fn with_serial_no(mut self, serial: &str) -> Self {
        self.serial_no = serial.to_string();
        self
    }

    pub fn with_notify_url(mut self, url: &str) -> Self {
        self.notify_url = Some(url.to_string());
        self
    }

    /// Where WeChat Pay's API lives (its real address by default; tests point it at a fake).
    pub fn with_api_base(mut self, base: &str) -> Self {
        self.api_base = base.trim_end_matches('/').to_string();
        self
    }

    /// Signs a request to WeChat Pay ("WECHATPAY2-SHA256-RSA2048" Authorization header).
    pub fn authorization(&self, method: &str, path: &str, body: &str) -> String {
        let ts = chrono::Utc::now().timestamp();
        let nonce: String = Uuid::new_v4().simple().to_string();
        let msg = format!("{method}\n{path}\n{ts}\n{nonce}\n{body}\n");
        let sig = rsa_sha256_sign(&self.merchant_key, msg.as_bytes());
        format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{sig}\",timestamp=\"{ts}\",serial_no=\"{}\"",
            self.mch_id, self.serial_no
        )
    }

    /// The Native (QR code) payment request for an order.
    pub fn native_request(&self, order: &Order) -> WechatRequest {
        let path = "/v3/pay/transactions/native";
        let body = serde_json::json!({
            "appid": self.app_id,
            "mchid": self.mch_id,
            "description": format!("CloudRouter order {}", order.reference),
            "out_trade_no": order_no(order.id),
            "notify_url": self.notify_url.clone().unwrap_or_default(),
            "amount": {"total": order.amount_micros / 10_000, "currency": "CNY"},
        })
        .to_string();
        WechatRequest { url: format!("{}{path}", self.api_base), authorization: self.authorization("POST", path, &body), body }
    }

    /// Calls WeChat Pay for the order's `code_url` (render it as a QR code).
    pub async fn native_code_url(&self, order: &Order) -> Result<String, PaymentError> {
        let r = self.native_request(order);
        let resp = reqwest::Client::new()
            .post(&r.url)
            .header("authorization", r.authorization)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(r.body)
            .send()
            .await
            .map_err(|e| PaymentError::Provider(e.to_string()))?;
        let v: serde_json::Value = resp.json().await.map_err(|e| PaymentError::Provider(e.to_string()))?;
        v["code_url"].as_str().map(str::to_string).ok_or_else(|| PaymentError::Provider(v.to_string()))
    }

    /// Decrypts a notification `resource` (AEAD_AES_256_GCM with the APIv3 key).
    pub fn decrypt_resource(&self, ciphertext_b64: &str, nonce: &str, associated_data: &str) -> Result<Vec<u8>, PaymentError> {
        let ct = B64.decode(ciphertext_b64).map_err(|_| PaymentError::Malformed("ciphertext".into()))?;
        if nonce.len() != 12 {
            return Err(PaymentError::Malformed("nonce".into()));
        }
        let cipher = Aes256Gcm::new_from_slice(&self.apiv3_key).map_err(|_| PaymentError::Config("APIv3 key".into()))?;
        cipher
            .decrypt(Nonce::from_slice(nonce.as_bytes()), Payload { msg: &ct, aad: associated_data.as_bytes() })
            .map_err(|_| PaymentError::BadSignature)
    }
}

impl PaymentProvider for WechatPayProvider {
    fn method(&self) -> &'static str {
        "wechat"
    }

    /// WeChat Native pay needs a server call for the QR code: the console page
    /// `/pay/wechat/{order_id}` calls [`WechatPayProvider::native_code_url`].
    fn checkout(&self, order: &Order, _return_url: &str) -> Checkout {
        Checkout::Redirect(format!("/pay/wechat/{}", order.id))
    }

    fn verify_notification(&self, headers: &http::HeaderMap, body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string).ok_or(PaymentError::BadSignature);
        let ts = h("wechatpay-timestamp")?;
        let nonce = h("wechatpay-nonce")?;
        let sig = h("wechatpay-signature")?;
        let body_s = std::str::from_utf8(body).map_err(|_| PaymentError::Malformed("not UTF-8".into()))?;
        let msg = format!("{ts}\n{nonce}\n{body_s}\n");
        if !rsa_sha256_verify(&self.platform_key, msg.as_bytes(), &sig) {
            return Err(PaymentError::BadSignature);
        }
        let t: i64 = ts.parse().map_err(|_| PaymentError::BadSignature)?;
        if (chrono::Utc::now().timestamp() - t).abs() > 300 {
            return Err(PaymentError::Malformed("stale timestamp".into()));
        }
        let v: serde_json::Value = serde_json::from_str(body_s).map_err(|_| PaymentError::Malformed("not JSON".into()))?;
        let res = &v["resource"];
        if res["algorithm"].as_str() != Some("AEAD_AES_256_GCM") {
            return Err(PaymentError::Malformed("algorithm".into()));
        }
        let plain = self.decrypt_resource(
            res["ciphertext"].as_str().unwrap_or_default(),
            res["nonce"].as_str().unwrap_or_default(),
            res["associated_data"].as_str().unwrap_or_default(),
        )?;
        let p: serde_json::Value = serde_json::from_slice(&plain).map_err(|_| PaymentError::Malformed("resource is not JSON".into()))?;
        if p["mchid"].as_str() != Some(self.mch_id.as_str()) {
            return Err(PaymentError::Malformed("notification for another merchant".into()));
        }
        let order_id = Uuid::parse_str(p["out_trade_no"].as_str().unwrap_or_default()).map_err(|_| PaymentError::Malformed("out_trade_no".into()))?;
        let fen = p["amount"]["total"].as_i64().ok_or_else(|| PaymentError::Malformed("amount".into()))?;
        if p["amount"]["currency"].as_str().is_some_and(|c| c != "CNY") {
            return Err(PaymentError::Malformed("currency".into()));
        }
        Ok(PaymentNotice {
            order_id,
            trade_no: p["transaction_id"].as_str().unwrap_or_default().to_string(),
            amount_micros: fen.checked_mul(10_000).ok_or_else(|| PaymentError::Malformed("amount".into()))?,
            paid: p["trade_state"].as_str() == Some("SUCCESS"),
        })
    }

    fn ack(&self) -> (u16, String) {
        (204, String::new())
    }

    fn nack(&self, reason: &str) -> (u16, String) {
        (500, serde_json::json!({"code": "FAIL", "message": reason}).to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Sandbox (demo)
// ---------------------------------------------------------------------------------------------

pub struct SandboxProvider {
    key: Vec<u8>,
    base_url: String,
}

impl SandboxProvider {
    /// `secret`: the server secret; `base_url`: the console's public base URL ("" for relative).
    pub fn new(secret: &str, base_url: &str) -> Self {
        SandboxProvider { key: secret.as_bytes().to_vec(), base_url: base_url.trim_end_matches('/').to_string() }
    }

    fn mac(&self, order_id: Uuid, amount: i64, trade_no: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(format!("cloudrouter-sandbox\n{order_id}\n{amount}\n{trade_no}").as_bytes());
        m
    }

    /// The form body the sandbox page posts to `/api/payments/notify/sandbox`.
    pub fn sign(&self, order_id: Uuid, amount_micros: i64) -> String {
        let trade_no = format!("SBX-{}", order_id.simple());
        let sig = hex::encode(self.mac(order_id, amount_micros, &trade_no).finalize().into_bytes());
        format!("order_id={order_id}&amount_micros={amount_micros}&trade_no={trade_no}&signature={sig}")
    }
}

impl PaymentProvider for SandboxProvider {
    fn method(&self) -> &'static str {
        "sandbox"
    }

    fn checkout(&self, order: &Order, _return_url: &str) -> Checkout {
        Checkout::Redirect(format!("{}/pay/sandbox/{}", self.base_url, order.id))
    }

    fn verify_notification(&self, _headers: &http::HeaderMap, body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        let p = parse_form(body)?;
        let get = |k: &str| p.get(k).cloned().ok_or_else(|| PaymentError::Malformed(format!("missing {k}")));
        let order_id = Uuid::parse_str(&get("order_id")?).map_err(|_| PaymentError::Malformed("order_id".into()))?;
        let amount: i64 = get("amount_micros")?.parse().map_err(|_| PaymentError::Malformed("amount_micros".into()))?;
        let trade_no = get("trade_no")?;
        let sig = hex::decode(get("signature")?).map_err(|_| PaymentError::BadSignature)?;
        self.mac(order_id, amount, &trade_no).verify_slice(&sig).map_err(|_| PaymentError::BadSignature)?;
        Ok(PaymentNotice { order_id, trade_no, amount_micros: amount, paid: true })
    }

    fn ack(&self) -> (u16, String) {
        (200, "ok".into())
    }
}

// ---------------------------------------------------------------------------------------------
// Corporate bank transfer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct BankTransfer {
    pub bank_name: String,
    pub account_name: String,
    pub account_number: String,
}

impl BankTransfer {
    pub fn new(bank_name: &str, account_name: &str, account_number: &str) -> Self {
        BankTransfer { bank_name: bank_name.into(), account_name: account_name.into(), account_number: account_number.into() }
    }
}

impl PaymentProvider for BankTransfer {
    fn method(&self) -> &'static str {
        "bank"
    }

    fn checkout(&self, order: &Order, _return_url: &str) -> Checkout {
        Checkout::Instructions {
            bank_name: self.bank_name.clone(),
            account_name: self.account_name.clone(),
            account_number: self.account_number.clone(),
            reference: order.reference.clone(),
            amount: order.amount_micros,
        }
    }

    /// Staff confirm transfers ([`purchases::confirm_bank_transfer`]); there is no notification.
    fn verify_notification(&self, _headers: &http::HeaderMap, _body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        Err(PaymentError::NotSupported)
    }

    fn ack(&self) -> (u16, String) {
        (200, "ok".into())
    }
}

// ---------------------------------------------------------------------------------------------
// The configured set
// ---------------------------------------------------------------------------------------------

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
        let real = ["alipay", "wechat"].into_iter().filter(|m| self.get(m).is_some()).collect::<Vec<_>>();
        if !switch.allow_public && (public || !real.is_empty()) {
            let why = if public { format!("the console is public ({console_base_url})") } else { format!("real payment providers are configured ({})", real.join(", ")) };
            return Err(PaymentError::Config(format!(
                "sandbox payments (CLOUDROUTER_SANDBOX_PAYMENTS=1) hand out free balance, and {why}; \
                 switch the sandbox off, or set CLOUDROUTER_SANDBOX_PAYMENTS_ALLOW_PUBLIC=1 if this is really wanted"
            )));
        }
        Ok(self.with(SandboxProvider::new(server_secret, console_base_url)))
    }

    pub fn get(&self, method: &str) -> Option<&dyn PaymentProvider> {
        self.providers.iter().find(|p| p.method() == method).map(|p| p.as_ref())
    }

    /// Configured methods, for the checkout page ("balance" is always possible for plans).
    pub fn methods(&self) -> Vec<&'static str> {
        self.providers.iter().map(|p| p.method()).collect()
    }

    /// WeChat Pay, if configured: the console asks it for the QR code of an order.
    pub fn wechat(&self) -> Option<&WechatPayProvider> {
        self.wechat.as_deref()
    }

    /// The sandbox provider, if on (the console's sandbox page signs with it).
    pub fn sandbox(&self) -> Option<&dyn PaymentProvider> {
        self.get("sandbox")
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
    let Some(p) = st.payments.get(&method) else {
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
