//! Access tokens (HS256 JWTs naming their user and session) and opaque secrets (refresh
//! tokens `rt_…`, API keys `ek_…`), which are stored only as SHA-256 hashes: they are random
//! 256-bit values, so a fast hash is enough and lookups stay one index probe.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The session (login) the token belongs to; revoking it ends the token.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

const ISSUER: &str = "engram";

/// Signs and checks access tokens with `JWT_SECRET`.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub lifetime: Duration,
}

impl AccessTokens {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            lifetime,
        }
    }

    pub fn issue(&self, user_id: &str, session_id: &str) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat: now,
            exp: now + self.lifetime.as_secs() as i64,
            iss: ISSUER.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail")
    }

    /// The claims of a token signed with our secret and not expired; `None` otherwise.
    pub fn check(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok().map(|data| data.claims)
    }
}

/// A fresh secret: `prefix` and 256 random bits, URL-safe.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// How a secret is stored.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in time independent of where they differ.
pub fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let tokens = AccessTokens::new(b"a secret of the test", Duration::from_secs(3600));
        let token = tokens.issue("user-1", "session-1");
        let claims = tokens.check(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("user-1", "session-1"));
        assert_eq!(claims.exp - claims.iat, 3600);

        let other = AccessTokens::new(b"another secret", Duration::from_secs(3600));
        assert!(other.check(&token).is_none(), "signed with another secret");
        let expired = AccessTokens::new(b"a secret of the test", Duration::from_secs(0));
        let mut claims = tokens.check(&expired.issue("u", "s")).unwrap();
        claims.exp -= 60;
        let stale = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.encoding).unwrap();
        assert!(tokens.check(&stale).is_none(), "expired");
        let unsigned = format!("{}.", token.rsplit_once('.').unwrap().0);
        assert!(tokens.check(&unsigned).is_none());
        assert!(tokens.check("not a token").is_none());
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (new_secret("rt_"), new_secret("rt_"));
        assert!(a.starts_with("rt_") && a.len() == 3 + 43, "{a}");
        assert_ne!(a, b);
        assert_eq!(secret_hash(&a), secret_hash(&a));
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), secret_hash(&b));
    }
}
