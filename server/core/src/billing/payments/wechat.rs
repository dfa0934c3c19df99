//! WeChat Pay API v3: Native (QR) payment and its signed, encrypted notification.

use super::signing::{order_no, parse_private_key, parse_public_key, rsa_sha256_sign, rsa_sha256_verify};
use super::*;

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
            "amount": {"total": order.amount_micros.micros() / 10_000, "currency": "CNY"},
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
    fn method(&self) -> PaymentMethod {
        PaymentMethod::Wechat
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
            amount_micros: fen.checked_mul(10_000).map(MicroCny::from_micros).ok_or_else(|| PaymentError::Malformed("amount".into()))?,
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
