//! DiffMem's original routes, with the user id in the path (`/memory/{user_id}/…`), in the
//! original server's shapes: `{"status": "success", <what was asked>, "metadata": {"user_id",
//! "timestamp", …}}`. They run on the same `GitMemory` as the README routes of `memory.rs`:
//! reads answer at once; writes (process-session, commit-session, process-and-commit,
//! rebuild-index, onboard) run as jobs, waiting for the job (bounded) and answering its result
//! in the original's shape, or 202 with the job's URLs past the bound, with
//! `Prefer: respond-async` or with the original's `?sync=false`. `onboard` sets up an empty
//! memory repo when the user has none, then processes and commits `user_info` as a session.
//! Not supported: `callback_url` and `template` (refused with 422, never ignored).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use services::git_memory::context::{ChatTurn, Depth, check_conversation};
use services::git_memory::session::{
    MAX_SESSION_INPUT, check_session_id, check_session_input, parse_session_date,
};
use services::git_memory::{GitMemoryError, SetupRequest};
use utoipa::ToSchema;

use jobs::engine::Submit;
use jobs::kinds::{
    CommitSession, CommitSessionPayload, ProcessSession, ProcessSessionPayload, RebuildIndex, UserPayload,
};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{MAX_QUERY, acting_user, check_k};
use crate::auth::Caller;
use crate::error::{ApiError, AppJson, AppQuery, ErrorCode, ErrorFamily, reshape_errors};
use crate::http::jobs::wait::{Outcome, accepted_body, for_caller, prefers_async, submit_and_wait};
use crate::state::AppState;

/// The session `onboard` records `user_info` as unless the request names one.
const ONBOARDING_SESSION: &str = "onboarding";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(onboard))
        .routes(routes!(onboard_status))
        .routes(routes!(context))
        .routes(routes!(search))
        .routes(routes!(orchestrated_search))
        .routes(routes!(user_entity))
        .routes(routes!(recent_timeline))
        .routes(routes!(process_session))
        .routes(routes!(commit_session))
        .routes(routes!(process_and_commit))
        .routes(routes!(rebuild_index))
        .routes(routes!(status))
        .routes(routes!(validate))
        .layer(middleware::map_response_with_state(ErrorFamily::FastApi, reshape_errors))
}

fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn metadata(user_id: &str) -> Value {
    json!({"user_id": user_id, "timestamp": timestamp()})
}

/// A read's answer: `{"status": "success", key: value, "metadata": {user_id, timestamp, …extra}}`.
fn success(
    user_id: &str,
    key: &str,
    value: impl serde::Serialize,
    extra: Value,
) -> Result<Json<Value>, ApiError> {
    let mut metadata = metadata(user_id);
    if let (Value::Object(metadata), Value::Object(extra)) = (&mut metadata, extra) {
        metadata.extend(extra);
    }
    let value = serde_json::to_value(value).map_err(ApiError::internal)?;
    Ok(Json(json!({"status": "success", key: value, "metadata": metadata})))
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unprocessable, message)
}

/// The original's webhook on completion is not offered: refused rather than never called.
fn refuse_callback(callback_url: Option<&str>) -> Result<(), ApiError> {
    match callback_url {
        Some(_) => Err(unprocessable(
            "callback_url: not supported; send `Prefer: respond-async` (or ?sync=false) and follow the job's status_url",
        )),
        None => Ok(()),
    }
}

/// The original's `?sync=`: `false` answers 202 at once, `true` waits (still bounded).
#[derive(Debug, Deserialize)]
pub struct SyncQuery {
    sync: Option<bool>,
}

/// Runs a write job, waiting unless `?sync=false` (or, without `sync`, `Prefer:
/// respond-async`); a finished job's result is handed to `shape`, a 202 gains the original's
/// `metadata` (`user_id`, `poll_url`).
async fn run_write(
    state: &AppState,
    headers: HeaderMap,
    sync: Option<bool>,
    submit: Submit,
    user_id: &str,
    shape: impl FnOnce(Map<String, Value>) -> Value,
) -> Result<Response, ApiError> {
    let wait = sync.unwrap_or_else(|| !prefers_async(&headers));
    Ok(match submit_and_wait(state, wait, submit).await? {
        Outcome::Finished(Value::Object(fields)) => Json(shape(fields)).into_response(),
        Outcome::Finished(_) => Json(shape(Map::new())).into_response(),
        Outcome::Accepted(job) => {
            let mut queued = accepted_body(&job);
            queued["metadata"] = json!({"user_id": user_id, "poll_url": queued["status_url"].clone()});
            (StatusCode::ACCEPTED, Json(queued)).into_response()
        }
    })
}

/// A finished job in the original's write shape: the job's fields (`staged_files`,
/// `commit`, …) under `status: "success"`, `message` and `metadata`.
fn write_success(mut fields: Map<String, Value>, user_id: &str, message: &str) -> Value {
    fields.remove("user_id");
    fields.insert("status".into(), json!("success"));
    fields.insert("message".into(), json!(message));
    fields.insert("metadata".into(), metadata(user_id));
    Value::Object(fields)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct OnboardBody {
    /// What to remember about the user, processed and committed as one session.
    user_info: String,
    /// The session it is recorded as; `onboarding` when absent.
    session_id: Option<String>,
    /// Not supported (422): the user entity is written from `user_info`.
    template: Option<String>,
}

/// Onboard a user: set up an empty memory repo if absent, then process and commit `user_info`
#[utoipa::path(post, path = "/memory/{user_id}/onboard", tag = "git memory", request_body = OnboardBody,
    params(("user_id" = String, Path), ("sync" = Option<bool>, Query, description = "false: answer 202 at once")),
    responses(
        (status = 200, description = "{status: success, message, result: {success, repo_created, commit, …}, metadata}"),
        (status = 202, description = "Still running, or `Prefer: respond-async`: {job_id, status_url, events_url, metadata}"),
        (status = 409, description = "The user's repository has a remote or another branch being set up"),
        (status = 422, description = "Invalid user_id or session_id, empty user_info, template given")))]
pub async fn onboard(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SyncQuery>,
    AppJson(body): AppJson<OnboardBody>,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:rw")?.to_string();
    if body.template.is_some() {
        return Err(unprocessable("template: not supported; the user entity is written from user_info"));
    }
    let session_id = body.session_id.unwrap_or_else(|| ONBOARDING_SESSION.to_string());
    check_session_id(&session_id)?;
    if body.user_info.trim().is_empty() {
        return Err(unprocessable("user_info: must not be empty"));
    }
    if body.user_info.len() > MAX_SESSION_INPUT {
        return Err(unprocessable(format!("user_info: longer than {MAX_SESSION_INPUT} bytes")));
    }
    let repo_created = match state.git_memory.record(&user_id).await {
        Ok(_) => false,
        Err(GitMemoryError::NotSetUp(_)) => {
            let request = SetupRequest {
                user_id: user_id.clone(),
                repo_url: None,
                branch: "main".to_string(),
                token: None,
                caller_id: caller.user.id.clone(),
            };
            state.git_memory.setup(request).await?;
            true
        }
        Err(e) => return Err(e.into()),
    };
    let payload = ProcessSessionPayload {
        user_id: user_id.clone(),
        session_id: session_id.clone(),
        memory_input: body.user_info,
        session_date: None,
        commit: true,
    };
    run_write(
        &state,
        headers,
        query.sync,
        for_caller::<ProcessSession>(&caller, &payload),
        &user_id,
        |mut result| {
            result.remove("user_id");
            result.insert("success".into(), json!(true));
            result.insert("repo_created".into(), json!(repo_created));
            json!({
                "status": "success",
                "message": format!("User {user_id} successfully onboarded"),
                "result": result,
                "metadata": metadata(&user_id),
            })
        },
    )
    .await
}

/// Whether a user is onboarded: has a memory repo holding its user entity file
#[utoipa::path(get, path = "/memory/{user_id}/onboard-status", tag = "git memory",
    params(("user_id" = String, Path)),
    responses((status = 200, description = "{status, user_id, onboarded, message, timestamp}")))]
pub async fn onboard_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let onboarded = match state.git_memory.user_entity(user_id).await {
        Ok(entity) => !entity.trim().is_empty(),
        Err(GitMemoryError::NotSetUp(_)) => false,
        Err(e) => return Err(e.into()),
    };
    let what = if onboarded { "onboarded" } else { "not onboarded" };
    Ok(Json(json!({
        "status": "success",
        "user_id": user_id,
        "onboarded": onboarded,
        "message": format!("User {user_id} is {what}"),
        "timestamp": timestamp(),
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathContextBody {
    #[schema(value_type = Vec<Object>)]
    conversation: Vec<ChatTurn>,
    #[serde(default = "basic")]
    #[schema(value_type = String, example = "basic")]
    depth: Depth,
    /// The later original's switch for the user entity and timeline only: `basic`.
    #[serde(default)]
    baseline_only: bool,
}

fn basic() -> Depth {
    Depth::Basic
}

/// Context for a conversation at a depth (basic, wide, deep, temporal)
#[utoipa::path(post, path = "/memory/{user_id}/context", tag = "git memory", request_body = PathContextBody,
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "{status, context: the assembled context, metadata: {depth, user_id, timestamp}}"),
        (status = 404, description = "No repository for this user"),
        (status = 422, description = "Unknown depth, empty conversation")))]
pub async fn context(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    AppJson(body): AppJson<PathContextBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let depth = if body.baseline_only { Depth::Basic } else { body.depth };
    let assembled = state.git_memory.context(user_id, &body.conversation, depth).await?;
    success(user_id, "context", assembled, json!({"depth": depth}))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathSearchBody {
    query: String,
    #[serde(default = "five")]
    k: usize,
}

fn five() -> usize {
    5
}

/// BM25 search over memory blocks
#[utoipa::path(post, path = "/memory/{user_id}/search", tag = "git memory", request_body = PathSearchBody,
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "{status, results: the best blocks, metadata: {query, k, user_id, timestamp}}"),
        (status = 404, description = "No repository for this user"),
        (status = 422, description = "k out of 1 to 100, query too long")))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    AppJson(body): AppJson<PathSearchBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    check_k(body.k)?;
    if body.query.len() > MAX_QUERY {
        return Err(unprocessable(format!("query: longer than {MAX_QUERY} characters")));
    }
    let results = state.git_memory.search(user_id, &body.query, body.k).await?;
    success(user_id, "results", results, json!({"query": body.query, "k": body.k}))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathOrchestratedBody {
    #[schema(value_type = Vec<Object>)]
    conversation: Vec<ChatTurn>,
    /// Results kept after merging every planned query's.
    #[serde(default = "five")]
    k: usize,
}

/// Search planned from a conversation
#[utoipa::path(post, path = "/memory/{user_id}/orchestrated-search", tag = "git memory",
    request_body = PathOrchestratedBody, params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "{status, results: {queries, planner, snippets}, metadata}"),
        (status = 404, description = "No repository for this user")))]
pub async fn orchestrated_search(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    AppJson(body): AppJson<PathOrchestratedBody>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    check_k(body.k)?;
    check_conversation(&body.conversation)?;
    let known = state.git_memory.known_entities(user_id).await?;
    let (queries, planner) = state.git_memory.plan_queries(&body.conversation, &known).await;
    let found = state.git_memory.orchestrated_search(user_id, queries, body.k).await?;
    let results = json!({"queries": found.queries, "planner": planner, "snippets": found.results});
    success(user_id, "results", results, json!({}))
}

/// The user's own entity file
#[utoipa::path(get, path = "/memory/{user_id}/user-entity", tag = "git memory",
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "{status, entity: {path, content}, metadata: {user_id, timestamp}}"),
        (status = 404, description = "No repository for this user")))]
pub async fn user_entity(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let content = state.git_memory.user_entity(user_id).await?;
    let entity = json!({"path": services::git_memory::layout::user_file(user_id), "content": content});
    success(user_id, "entity", entity, json!({}))
}

#[derive(Debug, Deserialize)]
pub struct TimelineQuery {
    #[serde(default = "thirty")]
    days_back: i64,
}

fn thirty() -> i64 {
    30
}

/// Timeline entries of the last days, newest first
#[utoipa::path(get, path = "/memory/{user_id}/recent-timeline", tag = "git memory",
    params(("user_id" = String, Path), ("days_back" = Option<i64>, Query, description = "1 to 3660; 30 when absent")),
    responses(
        (status = 200, description = "{status, timeline, metadata: {days_back, user_id, timestamp}}"),
        (status = 404, description = "No repository for this user"),
        (status = 422, description = "days_back out of range")))]
pub async fn recent_timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    AppQuery(query): AppQuery<TimelineQuery>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let timeline = state.git_memory.recent_timeline(user_id, query.days_back).await?;
    success(user_id, "timeline", timeline, json!({"days_back": query.days_back}))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathSessionBody {
    memory_input: String,
    session_id: String,
    /// `YYYY-MM-DD`; today when absent.
    session_date: Option<String>,
    /// Not supported (422): follow the job instead.
    callback_url: Option<String>,
}

async fn submit_session(
    state: AppState,
    caller: Caller,
    user_id: String,
    (headers, sync): (HeaderMap, Option<bool>),
    body: PathSessionBody,
    commit: bool,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:rw")?.to_string();
    refuse_callback(body.callback_url.as_deref())?;
    check_session_id(&body.session_id)?;
    check_session_input(&body.memory_input)?;
    parse_session_date(body.session_date.as_deref())?;
    state.git_memory.record(&user_id).await?;
    let payload = ProcessSessionPayload {
        user_id: user_id.clone(),
        session_id: body.session_id.clone(),
        memory_input: body.memory_input,
        session_date: body.session_date,
        commit,
    };
    let message =
        if commit { "Session processed and committed" } else { "Session processed and staged for commit" };
    run_write(&state, headers, sync, for_caller::<ProcessSession>(&caller, &payload), &user_id, |fields| {
        write_success(fields, &user_id, message)
    })
    .await
}

/// Process a session into staged changes (a `process_session` job)
#[utoipa::path(post, path = "/memory/{user_id}/process-session", tag = "git memory",
    request_body = PathSessionBody,
    params(("user_id" = String, Path), ("sync" = Option<bool>, Query, description = "false: answer 202 at once")),
    responses(
        (status = 200, description = "{status: success, session_id, message, staged_files, entities, metadata}"),
        (status = 202, description = "Still running, or `Prefer: respond-async`"),
        (status = 404, description = "No repository for this user"),
        (status = 422, description = "Invalid session_id, date or input; callback_url given")))]
pub async fn process_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SyncQuery>,
    AppJson(body): AppJson<PathSessionBody>,
) -> Result<Response, ApiError> {
    submit_session(state, caller, user_id, (headers, query.sync), body, false).await
}

/// Process a session and commit it at once
#[utoipa::path(post, path = "/memory/{user_id}/process-and-commit", tag = "git memory",
    request_body = PathSessionBody,
    params(("user_id" = String, Path), ("sync" = Option<bool>, Query, description = "false: answer 202 at once")),
    responses(
        (status = 200, description = "{status: success, session_id, message, commit, metadata}"),
        (status = 202, description = "Still running, or `Prefer: respond-async`"),
        (status = 404, description = "No repository for this user")))]
pub async fn process_and_commit(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SyncQuery>,
    AppJson(body): AppJson<PathSessionBody>,
) -> Result<Response, ApiError> {
    submit_session(state, caller, user_id, (headers, query.sync), body, true).await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct PathCommitBody {
    session_id: String,
    /// Not supported (422): follow the job instead.
    callback_url: Option<String>,
}

/// Commit a session's staged changes (a `commit_session` job)
#[utoipa::path(post, path = "/memory/{user_id}/commit-session", tag = "git memory",
    request_body = PathCommitBody,
    params(("user_id" = String, Path), ("sync" = Option<bool>, Query, description = "false: answer 202 at once")),
    responses(
        (status = 200, description = "{status: success, session_id, message, commit, files, sync, metadata}"),
        (status = 202, description = "Still running, or `Prefer: respond-async`"),
        (status = 404, description = "No repository for this user"),
        (status = 409, description = "Nothing is staged for this session")))]
pub async fn commit_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SyncQuery>,
    AppJson(body): AppJson<PathCommitBody>,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:rw")?.to_string();
    refuse_callback(body.callback_url.as_deref())?;
    state.git_memory.check_commit_ready(&user_id, &body.session_id).await?;
    let payload = CommitSessionPayload { user_id: user_id.clone(), session_id: body.session_id.clone() };
    run_write(
        &state,
        headers,
        query.sync,
        for_caller::<CommitSession>(&caller, &payload),
        &user_id,
        |fields| write_success(fields, &user_id, "Session committed"),
    )
    .await
}

/// Rebuild the user's search index from the repository (a `rebuild_index` job)
#[utoipa::path(post, path = "/memory/{user_id}/rebuild-index", tag = "git memory",
    params(("user_id" = String, Path), ("sync" = Option<bool>, Query, description = "false: answer 202 at once")),
    responses(
        (status = 200, description = "{status: success, message, index_stats, metadata}"),
        (status = 202, description = "Still running, or `Prefer: respond-async`"),
        (status = 404, description = "No repository for this user")))]
pub async fn rebuild_index(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<SyncQuery>,
) -> Result<Response, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:rw")?.to_string();
    state.git_memory.record(&user_id).await?;
    let payload = UserPayload { user_id: user_id.clone() };
    run_write(
        &state,
        headers,
        query.sync,
        for_caller::<RebuildIndex>(&caller, &payload),
        &user_id,
        |fields| write_success(fields, &user_id, "Index rebuilt successfully"),
    )
    .await
}

/// A memory repository's status
#[utoipa::path(get, path = "/memory/{user_id}/status", tag = "git memory",
    params(("user_id" = String, Path)),
    responses(
        (status = 200, description = "{status, repo_status: {onboarded, branch, memory_files_count, index_stats, staged_changes, …}, metadata}"),
        (status = 404, description = "No repository for this user")))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let mut repo_status =
        serde_json::to_value(state.git_memory.status(user_id).await?).map_err(ApiError::internal)?;
    repo_status["onboarded"] = json!(true);
    success(user_id, "repo_status", repo_status, json!({}))
}

/// Whether a user's memory setup is complete: issues (not set up, no user entity, a failed
/// sync) and warnings (staged changes waiting, an empty index)
#[utoipa::path(get, path = "/memory/{user_id}/validate", tag = "git memory",
    params(("user_id" = String, Path)),
    responses((status = 200, description = "{status, validation: {valid, onboarded, issues, warnings, user_id}, metadata}")))]
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user_id = acting_user(&caller, &user_id, "memories:read")?;
    let validation = match state.git_memory.status(user_id).await {
        Err(GitMemoryError::NotSetUp(_)) => json!({
            "valid": false,
            "onboarded": false,
            "issues": [format!("no memory repository is set up; call POST /memory/{user_id}/onboard")],
            "warnings": [],
            "user_id": user_id,
        }),
        Err(e) => return Err(e.into()),
        Ok(report) => {
            let entity = state.git_memory.user_entity(user_id).await?;
            let mut issues = Vec::new();
            let mut warnings = Vec::new();
            if entity.trim().is_empty() {
                issues.push(format!(
                    "the user entity file {} is missing or empty",
                    services::git_memory::layout::user_file(user_id)
                ));
            }
            if report.status != "active" {
                let why = report.last_error.as_deref().unwrap_or("no error recorded");
                issues.push(format!("the last sync ended in {}: {why}", report.status));
            }
            if !report.staged_changes.is_empty() {
                warnings
                    .push(format!("{} staged changes wait for commit-session", report.staged_changes.len()));
            }
            if report.index_stats.total_blocks == 0 {
                warnings.push("the search index holds no blocks".to_string());
            }
            json!({
                "valid": issues.is_empty(),
                "onboarded": !entity.trim().is_empty(),
                "issues": issues,
                "warnings": warnings,
                "user_id": user_id,
            })
        }
    };
    success(user_id, "validation", validation, json!({}))
}
