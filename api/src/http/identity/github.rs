//! DiffMem's token exchange: `POST /auth/github?github_token=…` checks the token with GitHub,
//! creates or finds the account of that GitHub login, and answers an Engram access token in
//! DiffMem's shape (errors carry FastAPI's `detail`). The GitHub token is kept, sealed, for
//! cloning and syncing the user's memory repo.

use axum::extract::State;
use axum::{Json, middleware};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::github::GitHubError;
use crate::auth::throttle::ClientAddress;
use crate::error::{ApiError, AppQuery, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(exchange))
        .layer(middleware::map_response_with_state(ErrorFamily::FastApi, reshape_errors))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExchangeQuery {
    /// A GitHub token (personal access token or OAuth token) of the user.
    github_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Exchanged {
    access_token: String,
    /// Always `bearer`.
    token_type: &'static str,
    /// Seconds the access token is valid.
    expires_in: u64,
    /// Engram's addition: spend at `POST /api/v1/auth/refresh {refreshToken}` for a new pair.
    refresh_token: String,
}

#[utoipa::path(post, path = "/auth/github", tag = "auth", params(ExchangeQuery), responses(
    (status = 200, description = "An access token for the GitHub user's account", body = Exchanged),
    (status = 401, description = "GitHub refused the token"),
    (status = 403, description = "A GitHub user with no account, where ENGRAM_REGISTRATION is not open"),
    (status = 429, description = "Too many attempts from this address (`Retry-After`)"),
    (status = 503, description = "GitHub could not be reached")))]
pub async fn exchange(
    State(state): State<AppState>,
    client: ClientAddress,
    AppQuery(query): AppQuery<ExchangeQuery>,
) -> Result<Json<Exchanged>, ApiError> {
    state.throttle.login_attempt(client, None).await?;
    let token = query.github_token.trim();
    if token.is_empty() || token.len() > 1000 {
        return Err(ApiError::new(ErrorCode::Unprocessable, "github_token: 1 to 1,000 characters"));
    }
    let github_user = state.github.user(token).await.map_err(|e| match e {
        GitHubError::InvalidToken => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
        GitHubError::Unavailable(why) => {
            tracing::warn!(error = why, "GitHub token check failed");
            ApiError::unavailable("GitHub could not be reached; try again")
        }
    })?;
    let issued = state.auth.github_login(github_user).await?;
    // Kept sealed for `/repos/setup` and the background syncs of the user's memory repo.
    state.git_memory.remember_github_token(&issued.user.id, token).await?;
    Ok(Json(Exchanged {
        access_token: issued.access_token,
        token_type: "bearer",
        expires_in: issued.expires_in,
        refresh_token: issued.refresh_token,
    }))
}
