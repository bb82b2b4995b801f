//! Sealing of remote tokens kept at rest (memory repo remotes, exchanged GitHub tokens):
//! AES-256-GCM under a key derived (HKDF-SHA256) from the deployment's secret, so a copy of
//! the database alone does not give the tokens away.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Seals and opens tokens with one key.
pub struct TokenSealer {
    key: LessSafeKey,
}

#[derive(Debug, thiserror::Error)]
#[error("a sealed token could not be opened (was the deployment's secret changed?)")]
pub struct UnsealError;

impl TokenSealer {
    /// A sealer whose key is derived from `secret` (the deployment's JWT secret).
    pub fn new(secret: &str) -> Self {
        let prk = Salt::new(HKDF_SHA256, b"engram").extract(secret.as_bytes());
        let okm = prk.expand(&[b"memory repo tokens"], &AES_256_GCM).expect("AES-256 key length is valid");
        let key = UnboundKey::from(okm);
        Self { key: LessSafeKey::new(key) }
    }

    /// base64(nonce ‖ ciphertext ‖ tag), a fresh random nonce each time.
    pub fn seal(&self, token: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let mut sealed = token.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed)
            .expect("sealing a short token cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<String, UnsealError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| UnsealError)?;
        if bytes.len() < NONCE_LEN {
            return Err(UnsealError);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| UnsealError)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut buffer).map_err(|_| UnsealError)?;
        String::from_utf8(plain.to_vec()).map_err(|_| UnsealError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_do_not_show_in_the_sealed_form() {
        let sealer = TokenSealer::new("deployment secret");
        let sealed = sealer.seal("ghp_secret_token");
        assert!(!sealed.contains("ghp_secret_token"));
        assert_ne!(sealed, sealer.seal("ghp_secret_token"), "a fresh nonce each time");
        assert_eq!(sealer.open(&sealed).unwrap(), "ghp_secret_token");
    }

    #[test]
    fn another_secret_or_a_tampered_seal_does_not_open() {
        let sealed = TokenSealer::new("one").seal("token");
        assert!(TokenSealer::new("two").open(&sealed).is_err());
        let mut bytes = STANDARD.decode(&sealed).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        assert!(TokenSealer::new("one").open(&STANDARD.encode(bytes)).is_err());
        assert!(TokenSealer::new("one").open("not base64!").is_err());
    }
}
