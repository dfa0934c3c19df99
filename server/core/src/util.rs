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

/// Anthropic-style request id: `req_` + 24 base62 characters: 8 of the time in milliseconds,
/// then 16 random ones (95 bits). Ids made later sort later (ASCII order), so the usage records'
/// primary key grows at its right edge instead of at random places (half the index cost).
pub fn request_id() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut rng = rand::thread_rng();
    let mut b = [0u8; 28];
    b[..4].copy_from_slice(b"req_");
    base62_digits(ms, &mut b[4..12]);
    // two 64-bit draws of 8 characters each (62^8 < 2^48): dividing a u64 by 62 is a multiply,
    // where one u128 draw cost a library division per character
    base62_digits(rng.gen(), &mut b[12..20]);
    base62_digits(rng.gen(), &mut b[20..]);
    String::from_utf8_lossy(&b).into_owned()
}

/// The low `out.len()` base62 digits of `v`, most significant first.
fn base62_digits(mut v: u64, out: &mut [u8]) {
    for c in out.iter_mut().rev() {
        *c = BASE62[(v % 62) as usize];
        v /= 62;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_unique_and_time_ordered() {
        let a = super::request_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::request_id();
        assert_eq!((a.len(), &a[..4]), (28, "req_"));
        assert!(a[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(a < b, "{a} < {b}");
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| super::request_id()).collect();
        assert_eq!(many.len(), 10_000);
        // each of the 16 random characters takes (nearly) every base62 value
        for pos in 12..28 {
            let seen: std::collections::HashSet<u8> = many.iter().map(|id| id.as_bytes()[pos]).collect();
            assert!(seen.len() >= 60, "position {pos}: {} values", seen.len());
        }
    }
}

/// Anthropic-style message id: `msg_01` + 22 base62 characters.
pub fn message_id() -> String {
    format!("msg_01{}", random_base62(22))
}
