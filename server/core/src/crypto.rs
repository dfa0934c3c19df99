//! Encryption at rest for upstream credentials: AES-256-GCM with a key derived by HKDF-SHA256
//! from the server secret (`CLOUDROUTER_SECRET`). Stored form: `0x01 || nonce(12) || ciphertext+tag`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;

const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext is malformed")]
    Malformed,
    #[error("ciphertext cannot be decrypted with this server secret")]
    Decrypt,
}

#[derive(Clone)]
pub struct Crypto {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypto(..)")
    }
}

impl Crypto {
    /// Derives the encryption key from the server secret. Use a long random secret.
    pub fn from_secret(secret: &str) -> Crypto {
        let hk = Hkdf::<Sha256>::new(Some(b"cloudrouter"), secret.as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"upstream-credentials-v1", &mut key).expect("32 bytes is a valid HKDF length");
        Crypto { cipher: Aes256Gcm::new_from_slice(&key).expect("32-byte key") }
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self.cipher.encrypt(Nonce::from_slice(&nonce), plaintext).expect("AES-GCM encryption cannot fail");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    pub fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if stored.len() < 1 + 12 + 16 || stored[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        self.cipher
            .decrypt(Nonce::from_slice(&stored[1..13]), &stored[13..])
            .map_err(|_| CryptoError::Decrypt)
    }

    pub fn encrypt_str(&self, s: &str) -> Vec<u8> {
        self.encrypt(s.as_bytes())
    }

    pub fn decrypt_str(&self, stored: &[u8]) -> Result<String, CryptoError> {
        String::from_utf8(self.decrypt(stored)?).map_err(|_| CryptoError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wrong_secret() {
        let c = Crypto::from_secret("s3cret");
        let e = c.encrypt_str("sk-ant-upstream");
        assert!(!e.windows(9).any(|w| w == b"sk-ant-up"));
        assert_eq!(c.decrypt_str(&e).unwrap(), "sk-ant-upstream");
        assert_ne!(c.encrypt_str("x"), c.encrypt_str("x"), "fresh nonce each time");
        assert!(Crypto::from_secret("other").decrypt(&e).is_err());
        assert!(c.decrypt(&e[..10]).is_err());
    }
}
