//! Login and registration throttling. Per client address: at most `LOGIN_RATE_LIMIT` logins
//! and `REGISTER_RATE_LIMIT` registrations per 15 minutes. Per account: `LOGIN_MAX_FAILURES`
//! failed logins in a row lock it for `LOGIN_LOCKOUT_SECS`, without checking the password
//! meanwhile. Unknown emails count and lock alike, so a lockout says nothing about whether
//! an account exists. Counts live in `storage::counters` (Redis in scale-out).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use storage::config::{AuthConfig, IpRange, RATE_WINDOW};
use storage::counters::Counters;

use super::normalize_email;
use super::tokens::secret_hash;
use crate::error::ApiError;

#[derive(Clone)]
pub struct Throttle {
    counters: Arc<dyn Counters>,
    config: AuthConfig,
}

/// Counter keys name accounts by a hash of the email, so no address sits in Redis.
fn account_key(kind: &str, email: &str) -> String {
    format!("{kind}:{}", secret_hash(&normalize_email(email)))
}

impl Throttle {
    pub fn new(counters: Arc<dyn Counters>, config: AuthConfig) -> Self {
        Self { counters, config }
    }

    /// Counts a registration from `client`; 429 past the limit.
    pub async fn register_attempt(&self, client: ClientAddress) -> Result<(), ApiError> {
        let count = self.counters.hit(&format!("register:ip:{}", client.0), RATE_WINDOW).await?;
        if count.hits > self.config.register_rate_limit {
            return Err(ApiError::rate_limited(
                "Too many registrations from this address; try again later",
                count.resets_in,
            ));
        }
        Ok(())
    }

    /// Counts a login attempt from `client` (pass no email for a login without one, such as a
    /// token exchange); 429 past the address's limit or while the account is locked.
    pub async fn login_attempt(&self, client: ClientAddress, email: Option<&str>) -> Result<(), ApiError> {
        let count = self.counters.hit(&format!("login:ip:{}", client.0), RATE_WINDOW).await?;
        if count.hits > self.config.login_rate_limit {
            return Err(ApiError::rate_limited(
                "Too many login attempts from this address; try again later",
                count.resets_in,
            ));
        }
        if let Some(email) = email {
            let lock = self.counters.peek(&account_key("login:locked", email)).await?;
            if lock.hits > 0 {
                return Err(ApiError::rate_limited(
                    "Too many failed logins for this account; try again later",
                    lock.resets_in,
                ));
            }
        }
        Ok(())
    }

    /// Records a failed login; the failure that reaches the limit locks the account.
    pub async fn login_failed(&self, email: &str) -> Result<(), ApiError> {
        let failures = account_key("login:failures", email);
        let count = self.counters.hit(&failures, self.config.login_lockout).await?;
        if count.hits >= self.config.login_max_failures {
            self.counters.hit(&account_key("login:locked", email), self.config.login_lockout).await?;
            self.counters.reset(&failures).await?;
            tracing::warn!(failures = count.hits, "account locked after repeated failed logins");
        }
        Ok(())
    }

    /// A successful login clears the account's failures.
    pub async fn login_succeeded(&self, email: &str) -> Result<(), ApiError> {
        Ok(self.counters.reset(&account_key("login:failures", email)).await?)
    }
}

/// The address of the client behind a request: the peer, or, when the peer is a trusted
/// proxy (`TRUSTED_PROXIES`), the nearest untrusted address in its `X-Forwarded-For`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

impl ClientAddress {
    pub fn of(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpRange]) -> Self {
        let is_trusted = |ip: IpAddr| trusted.iter().any(|range| range.contains(ip));
        let Some(peer) = peer.map(|p| p.ip()) else {
            return Self(IpAddr::from([0, 0, 0, 0]));
        };
        if !is_trusted(peer) {
            return Self(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        let client = forwarded.iter().rev().find(|ip| !is_trusted(**ip)).or(forwarded.first());
        Self(client.copied().unwrap_or(peer))
    }
}

/// The proxies whose `X-Forwarded-For` names the client (`TRUSTED_PROXIES`).
#[derive(Clone, Debug)]
pub struct TrustedProxies(pub Arc<Vec<IpRange>>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress
where
    TrustedProxies: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        Ok(Self::of(peer, &parts.headers, &TrustedProxies::from_ref(state).0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies: Vec<IpRange> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy = Some("10.0.0.5:4000".parse().unwrap());
        let stranger = Some("203.0.113.9:4000".parse().unwrap());
        let spoofed = headers("198.51.100.1, 203.0.113.7, 10.0.0.3");
        assert_eq!(
            ClientAddress::of(proxy, &spoofed, &proxies).0.to_string(),
            "203.0.113.7",
            "nearest untrusted hop"
        );
        assert_eq!(
            ClientAddress::of(stranger, &spoofed, &proxies).0.to_string(),
            "203.0.113.9",
            "peer as is"
        );
        assert_eq!(ClientAddress::of(proxy, &HeaderMap::new(), &proxies).0.to_string(), "10.0.0.5");
        assert_eq!(ClientAddress::of(proxy, &headers("junk"), &proxies).0.to_string(), "10.0.0.5");
        assert_eq!(ClientAddress::of(stranger, &spoofed, &[]).0.to_string(), "203.0.113.9");
    }
}
