//! Who is calling: accounts with argon2id passwords, login sessions whose short access tokens
//! (JWT) and rotating refresh tokens end when the session is revoked, API keys for machine
//! clients, the seeds' static `API_KEY`, and the `Caller` extractor every protected route takes.

pub mod github;
pub mod password;
pub mod scopes;
pub mod sso;
pub mod throttle;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::Utc;
use storage::Config;
use storage::config::Registration;
use storage::sql::{IdentityStore, InviteStore, NewUser, Role, Rotation, User};

use self::tokens::{AccessTokens, new_secret, secret_hash};
use crate::error::{ApiError, ErrorCode};

/// A session's credentials, as register, login and refresh hand them out.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub user: User,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Email already registered")]
    EmailTaken,
    #[error("Invalid credentials")]
    InvalidCredentials,
    #[error("Invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("Refresh token reuse detected: the session is revoked")]
    RefreshTokenReused,
    #[error("Registration is closed on this server")]
    RegistrationClosed,
    #[error("Registration needs a valid invitation (inviteCode) from an administrator")]
    InvitationRequired,
    #[error("GitHub sign-in reaches existing accounts only: this server's registration is not open")]
    GitHubSignUpClosed,
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::EmailTaken => ApiError::new(ErrorCode::Conflict, e.to_string()),
            AuthError::InvalidCredentials
            | AuthError::InvalidRefreshToken
            | AuthError::RefreshTokenReused => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
            AuthError::RegistrationClosed | AuthError::InvitationRequired | AuthError::GitHubSignUpClosed => {
                ApiError::new(ErrorCode::Forbidden, e.to_string())
            }
            AuthError::Store(e) => e.into(),
            AuthError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

/// Accounts, sessions and keys.
#[derive(Clone)]
pub struct Auth {
    pub identity: Arc<dyn IdentityStore>,
    pub access: AccessTokens,
    pub refresh_lifetime: Duration,
    /// The seeds' single admin key (`API_KEY`), compared by hash.
    pub static_key_hash: Option<String>,
    /// Who may create an account (`ENGRAM_REGISTRATION`).
    pub registration: Registration,
    pub invites: Arc<dyn InviteStore>,
    /// Whose SSO headers to trust (`SSO_*`).
    pub config: Arc<Config>,
}

/// The user a static `API_KEY` acts as: an administrator with no account row.
pub const STATIC_KEY_USER: &str = "admin";

/// Emails are compared without case or surrounding space.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Auth {
    /// Creates an account, as `registration` allows: with `invite_code` spent when
    /// registration is by invitation (and given back when the account cannot be created).
    pub async fn register(
        &self,
        email: &str,
        password: String,
        invite_code: Option<&str>,
    ) -> Result<Issued, AuthError> {
        if self.registration == Registration::Closed {
            return Err(AuthError::RegistrationClosed);
        }
        let new = NewUser {
            id: storage::ids::new_id(),
            email: Some(normalize_email(email)),
            password_hash: Some(password::hash(password).await?),
            display_name: String::new(),
            role: Role::User,
            github_login: None,
        };
        let invite = match self.registration {
            Registration::Open | Registration::Closed => None,
            Registration::Invite => {
                let code = invite_code.ok_or(AuthError::InvitationRequired)?;
                let email = new.email.as_deref().unwrap_or_default();
                let taken = self.invites.take(&secret_hash(code), email, &new.id).await?;
                Some(taken.ok_or(AuthError::InvitationRequired)?)
            }
        };
        let created = match self.identity.create_user(new).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(AuthError::EmailTaken),
            Err(e) => Err(e.into()),
        };
        if let (Err(_), Some(invite)) = (&created, &invite) {
            self.invites.give_back(&invite.id).await?;
        }
        self.start_session(created?).await
    }

    /// The same answer, after the same work, for an unknown email and a wrong password.
    pub async fn login(&self, email: &str, password: String) -> Result<Issued, AuthError> {
        let found = self.identity.credentials(&normalize_email(email)).await?;
        let (user, stored) = match found {
            Some((user, stored)) => (Some(user), stored),
            None => (None, None),
        };
        let matches = password::verify(password, stored).await?;
        match user {
            Some(user) if matches => self.start_session(user).await,
            _ => Err(AuthError::InvalidCredentials),
        }
    }

    pub async fn start_session(&self, user: User) -> Result<Issued, AuthError> {
        let session_id = storage::ids::new_id();
        let refresh_token = new_secret("rt_");
        let expires =
            Utc::now() + chrono::Duration::from_std(self.refresh_lifetime).map_err(anyhow::Error::from)?;
        self.identity.create_session(&session_id, &user.id, &secret_hash(&refresh_token), expires).await?;
        Ok(self.issue(user, &session_id, refresh_token))
    }

    /// Starts a session for the account of a GitHub login, creating the account the first time.
    pub async fn github_login(&self, github: github::GitHubUser) -> Result<Issued, AuthError> {
        let login = github.login.to_lowercase();
        if let Some(user) = self.identity.user_by_github_login(&login).await? {
            return self.start_session(user).await;
        }
        if self.registration != Registration::Open {
            return Err(AuthError::GitHubSignUpClosed);
        }
        let new = NewUser {
            id: storage::ids::new_id(),
            email: None,
            password_hash: None,
            display_name: github.name.unwrap_or_else(|| github.login.clone()),
            role: Role::User,
            github_login: Some(login.clone()),
        };
        let user = match self.identity.create_user(new).await? {
            Some(user) => user,
            // Created by a concurrent exchange of the same login.
            None => self
                .identity
                .user_by_github_login(&login)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the account of GitHub user {login} vanished"))?,
        };
        self.start_session(user).await
    }

    /// Spends `refresh_token` for a new pair; a spent token presented again revokes its session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued, AuthError> {
        let next = new_secret("rt_");
        let expires =
            Utc::now() + chrono::Duration::from_std(self.refresh_lifetime).map_err(anyhow::Error::from)?;
        match self
            .identity
            .rotate_refresh_token(&secret_hash(refresh_token), &secret_hash(&next), expires)
            .await?
        {
            Rotation::Rotated { session_id, user } => Ok(self.issue(user, &session_id, next)),
            Rotation::Reused { session_id } => {
                tracing::warn!(session_id, "a spent refresh token was presented again; session revoked");
                Err(AuthError::RefreshTokenReused)
            }
            Rotation::Invalid => Err(AuthError::InvalidRefreshToken),
        }
    }

    /// A new access token for a live session (the original API's refresh by access token);
    /// the refresh token stays as it is.
    pub fn reissue_access(&self, caller: &Caller) -> Option<String> {
        caller.session_id().map(|session| self.access.issue(&caller.user.id, session))
    }

    pub async fn logout(&self, session_id: &str) -> Result<bool, AuthError> {
        Ok(self.identity.revoke_session(session_id, "logout").await?)
    }

    fn issue(&self, user: User, session_id: &str, refresh_token: String) -> Issued {
        Issued {
            access_token: self.access.issue(&user.id, session_id),
            refresh_token,
            expires_in: self.access.lifetime.as_secs(),
            user,
        }
    }

    /// The caller a bearer credential names: an API key (`ek_…`), the static `API_KEY`, or
    /// an access token while its session lives.
    pub async fn caller(&self, bearer: &str) -> Result<Option<Caller>, AuthError> {
        if bearer.starts_with(API_KEY_PREFIX) {
            let found = self.identity.api_key_user(&secret_hash(bearer)).await?;
            return Ok(
                found.map(|(key, user)| Caller { user, via: Via::ApiKey { id: key.id, scopes: key.scopes } })
            );
        }
        if let Some(expected) = &self.static_key_hash
            && tokens::hashes_match(expected, &secret_hash(bearer))
        {
            let user = User {
                id: STATIC_KEY_USER.to_string(),
                email: None,
                display_name: "API_KEY".to_string(),
                role: Role::Admin,
                org_id: None,
                team_id: None,
                github_login: None,
                settings: serde_json::json!({}),
                created_at: chrono::DateTime::UNIX_EPOCH,
            };
            return Ok(Some(Caller { user, via: Via::StaticKey }));
        }
        let Some(claims) = self.access.check(bearer) else { return Ok(None) };
        let user = self.identity.session_user(&claims.sid).await?;
        Ok(user.filter(|u| u.id == claims.sub).map(|user| Caller { user, via: Via::Session(claims.sid) }))
    }
}

/// API key secrets start with this.
pub const API_KEY_PREFIX: &str = "ek_";

/// How the caller proved who they are.
#[derive(Debug, Clone, PartialEq)]
pub enum Via {
    /// An access token of this session.
    Session(String),
    /// An API key, limited to its scopes.
    ApiKey { id: String, scopes: Vec<String> },
    /// The static `API_KEY`: an administrator.
    StaticKey,
    /// Headers of a trusted SSO gateway.
    Sso,
}

/// The authenticated caller of a request. Extracting it answers 401 when the request carries
/// no valid credentials.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub via: Via,
}

impl Caller {
    pub fn session_id(&self) -> Option<&str> {
        match &self.via {
            Via::Session(id) => Some(id),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// Whether the caller may do what `scope` names: sessions and the static key may do
    /// anything their user may; an API key only what its scopes grant.
    pub fn allows(&self, scope: &str) -> bool {
        match &self.via {
            Via::ApiKey { scopes, .. } => scopes::grants(scopes, scope),
            Via::Session(_) | Via::StaticKey | Via::Sso => true,
        }
    }

    /// 403 unless `allows(scope)`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, format!("this API key lacks the scope {scope}")))
        }
    }

    /// 403 unless the caller is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, "only administrators may do this"))
        }
    }

    /// The authority its submissions through the job routes carry.
    pub fn requester(&self) -> jobs::engine::Requester {
        if self.is_admin() { jobs::engine::Requester::Administrator } else { jobs::engine::Requester::Tenant }
    }

    /// Whether the caller may reach a resource owned by `owner`: its own, or any as admin.
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin() || self.user.id == owner
    }

    /// The owner a listing is narrowed to: the caller, or nobody (every tenant) for an admin.
    pub fn listing_owner(&self) -> Option<&str> {
        (!self.is_admin()).then_some(self.user.id.as_str())
    }

    /// A `user_id` named in a path or body: the caller's own, or anyone's for an admin.
    /// Another user's id answers 404, as their resources do, so ids cannot be probed.
    pub fn act_as<'a>(&self, user_id: &'a str) -> Result<&'a str, ApiError> {
        if self.owns(user_id) { Ok(user_id) } else { Err(ApiError::not_found("no such user")) }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl Caller {
    /// The caller the request proves (a bearer credential, else trusted SSO headers from
    /// `peer`), or 401.
    pub async fn from_headers(
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
        auth: &Auth,
    ) -> Result<Self, ApiError> {
        let unauthorized = || ApiError::new(ErrorCode::Unauthorized, "Missing or invalid access token");
        if let Some(token) = bearer(headers) {
            return auth.caller(token).await?.ok_or_else(unauthorized);
        }
        match sso::sso_user(&auth.config, headers, peer) {
            Some(user) => Ok(Caller { user, via: Via::Sso }),
            None => Err(unauthorized()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller
where
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        Caller::from_headers(&parts.headers, peer, &Auth::from_ref(state)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(id: &str, role: Role, via: Via) -> Caller {
        let user = User {
            id: id.to_string(),
            email: None,
            display_name: String::new(),
            role,
            org_id: None,
            team_id: None,
            github_login: None,
            settings: serde_json::json!({}),
            created_at: chrono::DateTime::UNIX_EPOCH,
        };
        Caller { user, via }
    }

    #[test]
    fn a_user_acts_only_as_itself_and_an_admin_as_anyone() {
        let user = caller("u1", Role::User, Via::Session("s".into()));
        assert_eq!(user.act_as("u1").unwrap(), "u1");
        assert_eq!(user.act_as("u2").unwrap_err().code, ErrorCode::NotFound);
        assert!(user.owns("u1") && !user.owns("u2"));
        assert_eq!(user.listing_owner(), Some("u1"));
        assert_eq!(user.require_admin().unwrap_err().code, ErrorCode::Forbidden);

        let admin = caller("root", Role::Admin, Via::StaticKey);
        assert_eq!(admin.act_as("u2").unwrap(), "u2");
        assert!(admin.owns("u2"));
        assert_eq!(admin.listing_owner(), None, "administrators list every tenant's");
        assert!(admin.require_admin().is_ok());
    }

    #[test]
    fn api_keys_do_only_what_their_scopes_grant() {
        let key = caller("u1", Role::User, Via::ApiKey { id: "k".into(), scopes: vec!["jobs:rw".into()] });
        assert!(key.allows("jobs:read") && key.allows("jobs:rw"));
        assert_eq!(key.require("blobs:read").unwrap_err().code, ErrorCode::Forbidden);
        let session = caller("u1", Role::User, Via::Session("s".into()));
        assert!(session.allows("blobs:rw"), "a session may do whatever its user may");
    }
}
