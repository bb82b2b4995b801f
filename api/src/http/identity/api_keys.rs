//! API keys for machine clients: create (the secret is shown once), list, revoke. Keys are
//! made by a logged-in user or an administrator, never by another key, so a key cannot
//! widen its own scopes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use storage::sql::ApiKey;
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::tokens::{new_secret, secret_hash};
use crate::auth::{API_KEY_PREFIX, Caller, STATIC_KEY_USER, Via, scopes};
use crate::error::{ApiError, AppJson, ErrorCode};
use crate::state::AppState;

/// Longest key name.
const MAX_NAME: usize = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(revoke))
}

/// Keys belong to an account: the static `API_KEY` has none to hold them.
fn key_owner(caller: &Caller) -> Result<&str, ApiError> {
    match caller.via {
        Via::ApiKey { .. } => Err(ApiError::new(ErrorCode::Forbidden, "API keys cannot manage API keys")),
        _ if caller.user.id == STATIC_KEY_USER => {
            Err(ApiError::new(ErrorCode::Forbidden, "the static API_KEY has no account to hold keys"))
        }
        _ => Ok(&caller.user.id),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, e.g. `laptop sync client`.
    name: String,
    /// What the key may do, e.g. `["blobs:rw", "federation:push"]`.
    scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    key: ApiKeyView,
    /// The secret, for `Authorization: Bearer`. Shown only in this answer.
    secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    id: String,
    name: String,
    scopes: Vec<String>,
    created_at: chrono::DateTime<Utc>,
    last_used_at: Option<chrono::DateTime<Utc>>,
    revoked_at: Option<chrono::DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            name: key.name,
            scopes: key.scopes,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "auth", request_body = CreateKey, responses(
    (status = 201, description = "Created; the secret is shown only now", body = CreatedKey),
    (status = 401, description = "Not logged in"),
    (status = 403, description = "Called with an API key"),
    (status = 422, description = "Empty or long name, unknown or no scopes")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(request): AppJson<CreateKey>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let owner = key_owner(&caller)?;
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("name: 1 to {MAX_NAME} printable characters"),
        ));
    }
    if request.scopes.is_empty() {
        return Err(ApiError::new(ErrorCode::Unprocessable, "scopes: at least one scope"));
    }
    if let Some(unknown) = request.scopes.iter().find(|s| !scopes::is_known(s)) {
        return Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("scopes: unknown scope {unknown:?}; known: {}", scopes::KNOWN.join(", ")),
        ));
    }
    let mut scopes = request.scopes;
    scopes.sort();
    scopes.dedup();
    let key = ApiKey {
        id: storage::ids::new_id(),
        user_id: owner.to_string(),
        name: name.to_string(),
        scopes,
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    let secret = new_secret(API_KEY_PREFIX);
    state.auth.identity.create_api_key(&key, &secret_hash(&secret)).await?;
    Ok((StatusCode::CREATED, Json(CreatedKey { key: key.into(), secret })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<ApiKeyView>,
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "auth", responses(
    (status = 200, description = "The caller's keys, without secrets", body = KeyList),
    (status = 401, description = "Not logged in")))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<KeyList>, ApiError> {
    let owner = key_owner(&caller)?;
    let keys = state.auth.identity.api_keys(owner).await?;
    Ok(Json(KeyList { keys: keys.into_iter().map(ApiKeyView::from).collect() }))
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "auth", responses(
    (status = 204, description = "Revoked: the key stops working at once"),
    (status = 404, description = "No such key of the caller's")))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let owner = key_owner(&caller)?;
    if state.auth.identity.revoke_api_key(owner, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such API key"))
    }
}
