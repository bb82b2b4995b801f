//! Invitations to register (`ENGRAM_REGISTRATION=invite`), for administrators: issue one
//! (its code is shown once), list them, revoke an unused one. Under `/api/v1/auth`, so errors
//! come in AIBrain's shape as the other account routes'.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Json, middleware};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::sql::{Invite, NewInvite};
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::tokens::{new_secret, secret_hash};
use crate::auth::{Caller, normalize_email};
use crate::error::{ApiError, AppJson, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

/// How long an invitation lasts unless the request says otherwise: a week.
const DEFAULT_HOURS: u32 = 7 * 24;
/// The longest an invitation may last: 30 days.
const MAX_HOURS: u32 = 30 * 24;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
        .layer(middleware::map_response_with_state(ErrorFamily::AiBrain, reshape_errors))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateInvite {
    /// Only this address may register with the invitation; any address when absent.
    email: Option<String>,
    /// 1 to 720 (default 168: a week).
    #[schema(minimum = 1, maximum = 720)]
    expires_in_hours: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    id: String,
    email: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    used_by: Option<String>,
}

impl From<Invite> for InviteView {
    fn from(invite: Invite) -> Self {
        Self {
            id: invite.id,
            email: invite.email,
            created_by: invite.created_by,
            created_at: invite.created_at,
            expires_at: invite.expires_at,
            used_at: invite.used_at,
            used_by: invite.used_by,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedInvite {
    success: bool,
    invite: InviteView,
    /// Send as `inviteCode` to `POST /api/v1/auth/register`. Shown only in this answer.
    code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InviteList {
    success: bool,
    invites: Vec<InviteView>,
}

/// Issue an invitation to register (administrators)
#[utoipa::path(post, path = "/api/v1/auth/invites", tag = "auth", request_body = CreateInvite, responses(
    (status = 201, description = "Issued; the code is shown only here", body = CreatedInvite),
    (status = 400, description = "A bad email or lifetime"),
    (status = 401, description = "No valid credential"),
    (status = 403, description = "Not an administrator")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(request): AppJson<CreateInvite>,
) -> Result<(StatusCode, Json<CreatedInvite>), ApiError> {
    caller.require_admin()?;
    let hours = request.expires_in_hours.unwrap_or(DEFAULT_HOURS);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("expiresInHours: 1 to {MAX_HOURS}")));
    }
    let email = request.email.map(|e| normalize_email(&e));
    if email.as_deref().is_some_and(|e| e.is_empty() || e.len() > 254 || !e.contains('@')) {
        return Err(ApiError::new(ErrorCode::BadRequest, "email: not a valid email address"));
    }
    let code = new_secret("inv_");
    let invite = state
        .auth
        .invites
        .create(NewInvite {
            id: storage::ids::new_id(),
            code_hash: secret_hash(&code),
            email,
            created_by: caller.user.id.clone(),
            expires_at: Utc::now() + chrono::Duration::hours(i64::from(hours)),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(CreatedInvite { success: true, invite: invite.into(), code })))
}

/// Every invitation, newest first (administrators)
#[utoipa::path(get, path = "/api/v1/auth/invites", tag = "auth", responses(
    (status = 200, body = InviteList),
    (status = 401, description = "No valid credential"),
    (status = 403, description = "Not an administrator")))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<InviteList>, ApiError> {
    caller.require_admin()?;
    let invites = state.auth.invites.list().await?.into_iter().map(InviteView::from).collect();
    Ok(Json(InviteList { success: true, invites }))
}

/// Revoke an unused invitation (administrators)
#[utoipa::path(delete, path = "/api/v1/auth/invites/{id}", tag = "auth", responses(
    (status = 204, description = "Revoked"),
    (status = 401, description = "No valid credential"),
    (status = 403, description = "Not an administrator"),
    (status = 404, description = "No unused invitation with this id")))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if state.auth.invites.revoke(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no unused invitation {id}")))
    }
}
