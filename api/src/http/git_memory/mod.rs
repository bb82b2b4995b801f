//! DiffMem's routes (git memory), in its shapes: `/repos/setup`, `/repos/status/{user_id}`,
//! the synchronous reads `/memory/context`, `/memory/search` and
//! `/memory/orchestrated-search`, and the writes `/memory/process-session`,
//! `/memory/commit-session`, `/memory/process-and-commit` and `/memory/rebuild-index`, which
//! run as jobs: they wait for the job (bounded) and answer its result like the original, or
//! answer 202 with the job's URLs past the bound or at once with `Prefer: respond-async`.
//! A `user_id` must be the caller's own unless the caller is an administrator.

pub mod original_paths;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Json, middleware};
use jobs::kinds::{
    CommitSession, CommitSessionPayload, ProcessSession, ProcessSessionPayload, RebuildIndex, UserPayload,
};
use serde::Deserialize;
use serde_json::{Value, json};
use services::git_memory::context::{ChatTurn, Depth};
use services::git_memory::session::{check_session_id, check_session_input, parse_session_date};
use services::git_memory::{GitMemory, GitMemoryError, SetupRequest};
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, AppJson, ErrorCode, ErrorFamily, reshape_errors};
use crate::http::jobs::wait::{for_caller, run_job};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(setup))
        .routes(routes!(status))
        .routes(routes!(context))
        .routes(routes!(search))
        .routes(routes!(orchestrated_search))
        .routes(routes!(process_session))
        .routes(routes!(commit_session))
        .routes(routes!(process_and_commit))
        .routes(routes!(rebuild_index))
        .layer(middleware::map_response_with_state(ErrorFamily::FastApi, reshape_errors))
        .merge(original_paths::router())
}

impl From<GitMemoryError> for ApiError {
    fn from(e: GitMemoryError) -> Self {
        let code = match &e {
            GitMemoryError::Invalid(_) => ErrorCode::Unprocessable,
            GitMemoryError::NotSetUp(_) => ErrorCode::NotFound,
            GitMemoryError::Conflict(_) | GitMemoryError::Busy(_) => ErrorCode::Conflict,
            GitMemoryError::RemoteUnauthorized => ErrorCode::BadRequest,
            GitMemoryError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            GitMemoryError::Remote(why) => return ApiError::unavailable(why.clone()),
            GitMemoryError::Internal(why) => return ApiError::internal(why),
        };
        ApiError::new(code, e.to_string())
    }
}

/// The user a request names, checked: a valid id (422), the caller's own or any for an
/// administrator (404 otherwise).
pub(crate) fn acting_user<'a>(caller: &Caller, user_id: &'a str, scope: &str) -> Result<&'a str, ApiError> {
    caller.require(scope)?;
    GitMemory::check_user_id(user_id)?;
    caller.act_as(user_id)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SetupBody {
    /// https URL of the remote to clone; none creates an empty memory repo.
    repo_url: Option<String>,
    #[serde(default = "default_branch")]
    branch: String,
    user_id: String,
    /// Engram's addition: a token for the remote. Without it, the GitHub token the caller
    /// exchanged at `/auth/github` is used.
    github_token: Option<String>,
}

fn default_branch() -> String {
    "main".to_string()
}

/// Set up a user's memory repository
#[utoipa::path(post, path = "/repos/setup", tag = "git memory", request_body = SetupBody, responses(
    (status = 200, description = "The repository is ready (set up again: unchanged)"),
    (status = 400, description = "The git remote refused the token"),
    (status = 409, description = "The user already has a repository with another remote"),
    (status = 413, description = "The repository is larger than MAX_REPO_SIZE_MB"),
    (status = 422, description = "Invalid user_id, branch or repo_url")))]
pub async fn setup(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<SetupBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:rw")?;
    if body.github_token.as_deref().is_some_and(|t| t.is_empty() || t.len() > 1000) {
        return Err(ApiError::new(ErrorCode::Unprocessable, "github_token: 1 to 1,000 characters"));
    }
    let report = state
        .git_memory
        .setup(SetupRequest {
            user_id: user_id.to_string(),
            repo_url: body.repo_url.filter(|u| !u.trim().is_empty()),
            branch: body.branch,
            token: body.github_token,
            caller_id: caller.user.id.clone(),
        })
        .await?;
    if report.repo_url.is_some() {
        jobs::kinds::ensure_sync_schedule(
            &state.engine,
            user_id,
            state.config.git_memory.sync_interval_minutes,
        )
        .await
        .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    }
    let mut reply = serde_json::to_value(report).map_err(ApiError::internal)?;
    reply["message"] = json!("memory repository ready");
    Ok(Json(reply))
}

/// A memory repository's status
#[utoipa::path(get, path = "/repos/status/{user_id}", tag = "git memory", responses(
    (status = 200, description = "repo_url, last_sync, status, memory_files_count, index_stats, staged changes"),
    (status = 404, description = "No repository for this user (or not the caller's)")))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let report = state.git_memory.status(user_id).await?;
    Ok(Json(serde_json::to_value(report).map_err(ApiError::internal)?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ContextBody {
    #[schema(value_type = Vec<Object>)]
    conversation: Vec<ChatTurn>,
    #[serde(default = "default_depth")]
    #[schema(value_type = String, example = "basic")]
    depth: Depth,
    user_id: String,
}

fn default_depth() -> Depth {
    Depth::Basic
}

/// Context for a conversation at a depth (basic, wide, deep, temporal)
#[utoipa::path(post, path = "/memory/context", tag = "git memory", request_body = ContextBody, responses(
    (status = 200, description = "The assembled context"),
    (status = 422, description = "Unknown depth, empty conversation")))]
pub async fn context(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<ContextBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:read")?;
    let assembled = state.git_memory.context(user_id, &body.conversation, body.depth).await?;
    Ok(Json(serde_json::to_value(assembled).map_err(ApiError::internal)?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SearchBody {
    query: String,
    #[serde(default = "default_k")]
    k: usize,
    user_id: String,
}

fn default_k() -> usize {
    5
}

/// Longest search query accepted.
pub(crate) const MAX_QUERY: usize = 2000;

pub(crate) fn check_k(k: usize) -> Result<(), ApiError> {
    if (1..=storage::git_memory::index::MAX_K).contains(&k) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("k: must be from 1 to {}", storage::git_memory::index::MAX_K),
        ))
    }
}

/// BM25 search over memory blocks
#[utoipa::path(post, path = "/memory/search", tag = "git memory", request_body = SearchBody, responses(
    (status = 200, description = "The best blocks, best first (k of 1 to 100)"),
    (status = 422, description = "k out of range, query too long")))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:read")?;
    check_k(body.k)?;
    if body.query.len() > MAX_QUERY {
        return Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("query: longer than {MAX_QUERY} characters"),
        ));
    }
    let results = state.git_memory.search(user_id, &body.query, body.k).await?;
    Ok(Json(json!({"user_id": user_id, "query": body.query, "k": body.k, "results": results})))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OrchestratedBody {
    #[schema(value_type = Vec<Object>)]
    conversation: Vec<ChatTurn>,
    user_id: String,
    #[serde(default = "default_orchestrated_k")]
    k: usize,
}

fn default_orchestrated_k() -> usize {
    10
}

/// Search planned from a conversation
#[utoipa::path(post, path = "/memory/orchestrated-search", tag = "git memory", request_body = OrchestratedBody, responses(
    (status = 200, description = "The queries planned and the merged results")))]
pub async fn orchestrated_search(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<OrchestratedBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:read")?;
    check_k(body.k)?;
    services::git_memory::context::check_conversation(&body.conversation)?;
    let known = state.git_memory.known_entities(user_id).await?;
    let (queries, planner) = state.git_memory.plan_queries(&body.conversation, &known).await;
    let found = state.git_memory.orchestrated_search(user_id, queries, body.k).await?;
    Ok(Json(
        json!({"user_id": user_id, "planner": planner, "queries": found.queries, "results": found.results}),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SessionBody {
    memory_input: String,
    session_id: String,
    /// `YYYY-MM-DD`; today when absent.
    session_date: Option<String>,
    user_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CommitBody {
    session_id: String,
    user_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UserBody {
    user_id: String,
}

fn check_session(body: &SessionBody) -> Result<(), ApiError> {
    check_session_id(&body.session_id)?;
    check_session_input(&body.memory_input)?;
    parse_session_date(body.session_date.as_deref())?;
    Ok(())
}

async fn submit_session(
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    body: SessionBody,
    commit: bool,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:rw")?.to_string();
    check_session(&body)?;
    state.git_memory.record(&user_id).await?;
    let payload = ProcessSessionPayload {
        user_id,
        session_id: body.session_id,
        memory_input: body.memory_input,
        session_date: body.session_date,
        commit,
    };
    run_job(&state, &headers, for_caller::<ProcessSession>(&caller, &payload)).await
}

/// Process a session into staged changes (a `process_session` job)
#[utoipa::path(post, path = "/memory/process-session", tag = "git memory", request_body = SessionBody, responses(
    (status = 200, description = "Processed: the files staged"),
    (status = 202, description = "Still running, or `Prefer: respond-async`: {job_id, status_url, events_url}"),
    (status = 404, description = "No repository for this user"),
    (status = 422, description = "Invalid session_id, date or input")))]
pub async fn process_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<SessionBody>,
) -> Result<Response, ApiError> {
    submit_session(state, caller, headers, body, false).await
}

/// Process a session and commit it at once
#[utoipa::path(post, path = "/memory/process-and-commit", tag = "git memory", request_body = SessionBody, responses(
    (status = 200, description = "Processed and committed"),
    (status = 202, description = "Still running, or `Prefer: respond-async`")))]
pub async fn process_and_commit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<SessionBody>,
) -> Result<Response, ApiError> {
    submit_session(state, caller, headers, body, true).await
}

/// Commit a session's staged changes (a `commit_session` job)
#[utoipa::path(post, path = "/memory/commit-session", tag = "git memory", request_body = CommitBody, responses(
    (status = 200, description = "Committed as `Session <session_id>` (and pushed when there is a remote)"),
    (status = 202, description = "Still running, or `Prefer: respond-async`"),
    (status = 404, description = "No repository for this user"),
    (status = 409, description = "Nothing is staged for this session")))]
pub async fn commit_session(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<CommitBody>,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:rw")?.to_string();
    state.git_memory.check_commit_ready(&user_id, &body.session_id).await?;
    let payload = CommitSessionPayload { user_id, session_id: body.session_id };
    run_job(&state, &headers, for_caller::<CommitSession>(&caller, &payload)).await
}

/// Rebuild a user's search index from the repository (a `rebuild_index` job)
#[utoipa::path(post, path = "/memory/rebuild-index", tag = "git memory", request_body = UserBody, responses(
    (status = 200, description = "Rebuilt: index_stats"),
    (status = 202, description = "Still running, or `Prefer: respond-async`")))]
pub async fn rebuild_index(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    AppJson(body): AppJson<UserBody>,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &body.user_id, "memories:rw")?.to_string();
    state.git_memory.record(&user_id).await?;
    run_job(&state, &headers, for_caller::<RebuildIndex>(&caller, &UserPayload { user_id })).await
}
