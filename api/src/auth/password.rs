//! Password hashing with argon2id (OWASP's parameters: 19 MiB, 2 passes, 1 lane), run off the
//! async threads. Verification compares in constant time, and an unknown account is checked
//! against a dummy hash so the answer takes as long as for a wrong password.

use std::sync::LazyLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// Password lengths the AIBrain API accepts.
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 100;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Compared against when the account does not exist.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| argon2().hash_password(b"no such account").expect("argon2 hashes").to_string());

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of `password` with a fresh salt.
pub async fn hash(password: String) -> anyhow::Result<String> {
    storage::blocking::spawn_blocking_in_span(move || {
        argon2().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await?
}

/// Whether `password` matches `stored` (a PHC string); `None` for an account without one.
pub async fn verify(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    storage::blocking::spawn_blocking_in_span(move || {
        let (stored, real) = match stored {
            Some(stored) => (stored, true),
            None => (DUMMY_HASH.clone(), false),
        };
        let parsed = PasswordHash::new(&stored).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        Ok(argon2().verify_password(password.as_bytes(), &parsed).is_ok() && real)
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_differ_per_salt() {
        let first = hash("correct horse".into()).await.unwrap();
        let second = hash("correct horse".into()).await.unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{first}");
        assert_ne!(first, second, "a fresh salt each time");
        assert!(!first.contains("correct horse"));
        assert!(verify("correct horse".into(), Some(first.clone())).await.unwrap());
        assert!(!verify("wrong horse".into(), Some(first)).await.unwrap());
        assert!(!verify("no such account".into(), None).await.unwrap(), "the dummy never matches");
        assert!(verify("x".into(), Some("not a hash".into())).await.is_err());
    }
}
