//! SSO gateway headers (`X-User-ID`, `X-User-Email`, `X-Org-ID`, `X-Team-ID`, `X-User-Role`),
//! as Memory-Break's gateway sends them. They are believed only with `SSO_ENABLED=true` and
//! only from a trusted proxy address (`SSO_TRUSTED_PROXIES`) or with the gateway's shared
//! secret in `X-SSO-Secret`; otherwise they are ignored, so a client cannot name itself.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use storage::Config;
use storage::sql::{Role, User};

use super::tokens::{hashes_match, secret_hash};

/// SSO users get ids in a namespace of their own, so a gateway id never equals a local one.
pub const SSO_ID_PREFIX: &str = "sso:";
/// Longest header value taken.
const MAX_VALUE: usize = 256;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= MAX_VALUE && !value.chars().any(char::is_control)).then_some(value)
}

/// Whether this request's SSO headers may be believed.
fn trusted(config: &Config, headers: &HeaderMap, peer: Option<SocketAddr>) -> bool {
    if !config.auth.sso_enabled {
        return false;
    }
    let from_proxy =
        peer.is_some_and(|peer| config.auth.sso_trusted_proxies.iter().any(|r| r.contains(peer.ip())));
    let with_secret = match (&config.auth.sso_shared_secret, header(headers, "x-sso-secret")) {
        (Some(expected), Some(given)) => hashes_match(&secret_hash(expected.expose()), &secret_hash(given)),
        _ => false,
    };
    from_proxy || with_secret
}

/// The user the gateway names, when its headers are trusted and name one.
pub fn sso_user(config: &Config, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<User> {
    if !trusted(config, headers, peer) {
        return None;
    }
    let id = header(headers, "x-user-id")?;
    let email = header(headers, "x-user-email").map(str::to_lowercase);
    Some(User {
        id: format!("{SSO_ID_PREFIX}{id}"),
        display_name: email.clone().unwrap_or_else(|| id.to_string()),
        email,
        role: header(headers, "x-user-role").and_then(Role::parse).unwrap_or(Role::User),
        org_id: header(headers, "x-org-id").map(str::to_string),
        team_id: header(headers, "x-team-id").map(str::to_string),
        github_login: None,
        settings: serde_json::json!({}),
        created_at: chrono::DateTime::UNIX_EPOCH,
    })
}
