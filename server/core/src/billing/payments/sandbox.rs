//! The sandbox provider: test money for the demo, signed with the server secret.

use super::signing::parse_form;
use super::*;

pub struct SandboxProvider {
    key: Vec<u8>,
    base_url: String,
}

impl SandboxProvider {
    /// `secret`: the server secret; `base_url`: the console's public base URL ("" for relative).
    pub fn new(secret: &str, base_url: &str) -> Self {
        SandboxProvider { key: secret.as_bytes().to_vec(), base_url: base_url.trim_end_matches('/').to_string() }
    }

    fn mac(&self, order_id: Uuid, amount: MicroCny, trade_no: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(format!("cloudrouter-sandbox\n{order_id}\n{}\n{trade_no}", amount.micros()).as_bytes());
        m
    }

    /// The form body the sandbox page posts to `/api/payments/notify/sandbox`.
    pub fn sign(&self, order_id: Uuid, amount: MicroCny) -> String {
        let amount_micros = amount.micros();
        let trade_no = format!("SBX-{}", order_id.simple());
        let sig = hex::encode(self.mac(order_id, amount, &trade_no).finalize().into_bytes());
        format!("order_id={order_id}&amount_micros={amount_micros}&trade_no={trade_no}&signature={sig}")
    }
}

impl PaymentProvider for SandboxProvider {
    fn method(&self) -> PaymentMethod {
        PaymentMethod::Sandbox
    }

    fn checkout(&self, order: &Order, _return_url: &str) -> Checkout {
        Checkout::Redirect(format!("{}/pay/sandbox/{}", self.base_url, order.id))
    }

    fn verify_notification(&self, _headers: &http::HeaderMap, body: &[u8]) -> Result<PaymentNotice, PaymentError> {
        let p = parse_form(body)?;
        let get = |k: &str| p.get(k).cloned().ok_or_else(|| PaymentError::Malformed(format!("missing {k}")));
        let order_id = Uuid::parse_str(&get("order_id")?).map_err(|_| PaymentError::Malformed("order_id".into()))?;
        let amount = get("amount_micros")?.parse().map(MicroCny::from_micros).map_err(|_| PaymentError::Malformed("amount_micros".into()))?;
        let trade_no = get("trade_no")?;
        let sig = hex::decode(get("signature")?).map_err(|_| PaymentError::BadSignature)?;
        self.mac(order_id, amount, &trade_no).verify_slice(&sig).map_err(|_| PaymentError::BadSignature)?;
        Ok(PaymentNotice { order_id, trade_no, amount_micros: amount, paid: true })
    }

    fn ack(&self) -> (u16, String) {
        (200, "ok".into())
    }
}
