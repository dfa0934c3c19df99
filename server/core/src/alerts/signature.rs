//! How alert webhooks are signed, so that a receiver can tell them from forgeries and replays.
//!
//! Each POST carries `CloudRouter-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`, the MAC
//! taken with the webhook's secret over `<t>.<raw body>`. A receiver recomputes it over the bytes
//! it received (before parsing), compares in constant time, rejects a `t` more than five minutes
//! from its clock (a replay), and drops an event `id` it has already handled (a retry after a
//! lost answer delivers the same id again).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "cloudrouter-signature";
/// How far a signature's time may be from the receiver's clock.
pub const TOLERANCE_SECS: i64 = 300;

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The header's value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature is too old or from the future (a replay?)")]
    Stale,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// What a receiver does: checks `header` against the raw `body` at `now` (unix seconds).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else { return Err(SignatureError::Malformed) };
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Stale);
    }
    mac(secret, t, body).verify_slice(&v1).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_rejects_tampering_and_replays() {
        let h = sign("whsec_x", 1_700_000_000, b"{\"id\":1}");
        assert_eq!(verify("whsec_x", &h, b"{\"id\":1}", 1_700_000_100), Ok(()));
        assert_eq!(verify("whsec_x", &h, b"{\"id\":2}", 1_700_000_100), Err(SignatureError::Mismatch));
        assert_eq!(verify("other", &h, b"{\"id\":1}", 1_700_000_100), Err(SignatureError::Mismatch));
        assert_eq!(verify("whsec_x", &h, b"{\"id\":1}", 1_700_000_000 + 301), Err(SignatureError::Stale));
        assert_eq!(verify("whsec_x", "v1=00", b"", 0), Err(SignatureError::Malformed));
    }
}
