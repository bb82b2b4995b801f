//! AIBrain's auth routes, in the shapes its clients parse (`{success, token, user}`; errors
//! `{success: false, error, code}`), plus Engram's `refreshToken` and `expiresIn`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Json, middleware};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::sql::User;
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::password::{MAX_PASSWORD, MIN_PASSWORD};
use crate::auth::throttle::ClientAddress;
use crate::auth::{AuthError, Caller, Issued};
use crate::error::{ApiError, AppJson, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

/// Longest email accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(refresh))
        .routes(routes!(me))
        .layer(middleware::map_response_with_state(ErrorFamily::AiBrain, reshape_errors))
}

#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    email: String,
    /// 8 to 100 characters.
    password: String,
}

/// Debug output never shows the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("email", &self.email).field("password", &"****").finish()
    }
}

impl Credentials {
    fn check(&self) -> Result<(), ApiError> {
        let email = self.email.trim();
        let plausible = email.len() <= MAX_EMAIL
            && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !plausible {
            return Err(ApiError::new(ErrorCode::BadRequest, "email: not a valid email address"));
        }
        let length = self.password.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) || self.password.contains('\0') {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("password: must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
            ));
        }
        Ok(())
    }
}

/// A user as AIBrain's clients read it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    id: String,
    email: Option<String>,
    created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settings: Option<Value>,
}

impl UserView {
    fn of(user: &User) -> Self {
        Self { id: user.id.clone(), email: user.email.clone(), created_at: user.created_at, settings: None }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    success: bool,
    /// The access token (JWT), for `Authorization: Bearer`.
    token: String,
    /// Spent by `POST /api/v1/auth/refresh {refreshToken}` for a new pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// Seconds the access token is valid.
    expires_in: u64,
    user: UserView,
}

impl From<Issued> for Session {
    fn from(issued: Issued) -> Self {
        Session {
            success: true,
            token: issued.access_token,
            refresh_token: Some(issued.refresh_token),
            expires_in: issued.expires_in,
            user: UserView::of(&issued.user),
        }
    }
}

/// What `register` takes: credentials, and an invitation where registration needs one.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    #[serde(flatten)]
    credentials: Credentials,
    /// The code of an administrator's invitation (`ENGRAM_REGISTRATION=invite`); 1 to 128
    /// characters.
    invite_code: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = Registration, responses(
    (status = 201, description = "Registered and logged in", body = Session),
    (status = 400, description = "Bad email or password length"),
    (status = 403, description = "Registration is closed, or needs a valid invitation (`ENGRAM_REGISTRATION`)"),
    (status = 409, description = "The email is registered"),
    (status = 429, description = "Too many registrations from this address (`Retry-After`)")))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddress,
    AppJson(registration): AppJson<Registration>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    state.throttle.register_attempt(client).await?;
    let Registration { credentials, invite_code } = registration;
    credentials.check()?;
    if invite_code.as_deref().is_some_and(|code| code.is_empty() || code.chars().count() > 128) {
        return Err(ApiError::new(ErrorCode::BadRequest, "inviteCode: 1 to 128 characters"));
    }
    let issued =
        state.auth.register(&credentials.email, credentials.password, invite_code.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(issued.into())))
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = Credentials, responses(
    (status = 200, description = "Logged in", body = Session),
    (status = 401, description = "Invalid credentials"),
    (status = 429, description = "Too many attempts from this address, or the account is locked after repeated failures (`Retry-After`)")))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientAddress,
    AppJson(credentials): AppJson<Credentials>,
) -> Result<Json<Session>, ApiError> {
    let email = credentials.email;
    state.throttle.login_attempt(client, Some(&email)).await?;
    match state.auth.login(&email, credentials.password).await {
        Ok(issued) => {
            state.throttle.login_succeeded(&email).await?;
            Ok(Json(issued.into()))
        }
        Err(e @ AuthError::InvalidCredentials) => {
            state.throttle.login_failed(&email).await?;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedOut {
    success: bool,
    message: String,
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses(
    (status = 200, description = "The session is revoked: its access and refresh tokens stop working", body = LoggedOut),
    (status = 401, description = "No valid access token")))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Json<LoggedOut>, ApiError> {
    if let Some(session) = caller.session_id() {
        state.auth.logout(session).await?;
    }
    Ok(Json(LoggedOut { success: true, message: "Logged out".into() }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    refresh_token: String,
}

/// With `{refreshToken}`: rotates it and answers a new pair. Without a body, as AIBrain did:
/// a new access token for the session of the `Authorization: Bearer` access token.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body(content = RefreshRequest, description = "Optional: without a body the access token is refreshed"), responses(
    (status = 200, description = "New tokens", body = Session),
    (status = 401, description = "Invalid, expired or reused refresh token (reuse revokes the session)")))]
pub async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Session>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        let caller = Caller::from_headers(&headers, None, &state.auth).await?;
        let token = state.auth.reissue_access(&caller).ok_or_else(|| {
            ApiError::new(ErrorCode::Unauthorized, "Only a session's access token can be refreshed")
        })?;
        return Ok(Json(Session {
            success: true,
            token,
            refresh_token: None,
            expires_in: state.auth.access.lifetime.as_secs(),
            user: UserView::of(&caller.user),
        }));
    }
    let request: RefreshRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("refreshToken: {e}")))?;
    let issued = state.auth.refresh(&request.refresh_token).await?;
    Ok(Json(issued.into()))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    success: bool,
    user: UserView,
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses(
    (status = 200, description = "The caller", body = Me),
    (status = 401, description = "No valid access token")))]
pub async fn me(caller: Caller) -> Json<Me> {
    let mut user = UserView::of(&caller.user);
    user.settings = Some(caller.user.settings.clone());
    Json(Me { success: true, user })
}
