//! Alipay (RSA2): page payment and its signed form notification.

use super::signing::{alipay_sign_content, order_no, parse_form, parse_private_key, parse_public_key, rsa_sha256_sign, rsa_sha256_verify, shanghai_now, url_encode};
use super::*;

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
        let total = order.amount_micros.two_places().unwrap_or_else(|| order.amount_micros.decimal());
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
    fn method(&self) -> PaymentMethod {
        PaymentMethod::Alipay
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
        let amount_micros = MicroCny::parse(&get("total_amount")?).map_err(|_| PaymentError::Malformed("total_amount".into()))?;
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
