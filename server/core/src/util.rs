//! Small shared helpers: random identifiers and hashing.

use rand::Rng;
use sha2::{Digest, Sha256};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` random base62 characters from a cryptographically secure generator.
pub fn random_base62(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| BASE62[rng.gen_range(0..62)] as char).collect()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Anthropic-style request id: `req_` + 24 base62 characters.
pub fn request_id() -> String {
    let mut s = String::with_capacity(28);
    s.push_str("req_");
    s.push_str(&random_base62(24));
    s
}

/// Anthropic-style message id: `msg_01` + 22 base62 characters.
pub fn message_id() -> String {
    format!("msg_01{}", random_base62(22))
}
