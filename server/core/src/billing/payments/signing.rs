//! Keys, RSA signatures and form encoding the providers share.

use super::*;

pub(super) fn parse_private_key(s: &str) -> Result<RsaPrivateKey, PaymentError> {
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

pub(super) fn parse_public_key(s: &str) -> Result<RsaPublicKey, PaymentError> {
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

pub(super) fn url_decode(s: &str) -> Result<String, PaymentError> {
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

pub(super) fn order_no(id: Uuid) -> String {
    id.simple().to_string()
}

pub(super) fn shanghai_now() -> String {
    (chrono::Utc::now() + chrono::Duration::hours(8)).format("%Y-%m-%d %H:%M:%S").to_string()
}
