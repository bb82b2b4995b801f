//! The jobs API: submit, list, inspect, cancel and retry jobs, read their logs, and see the
//! workers and per-kind queue counts. Engram's own routes: always asynchronous. A caller
//! sees its own jobs (scope `jobs:read`, `jobs:rw` to change them); an administrator sees every
//! tenant's, the workers and the queues.

pub mod schedules;
mod shared;
pub mod stream;
pub(crate) mod wait;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use jobs::engine::{QUEUE_FULL_RETRY_AFTER, Submit, SubmitError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::sql::{Job, JobFilter, JobStatus, KindStats, LogLine, WorkerRecord};
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::shared::{empty_object, find_job};
use crate::auth::Caller;
use crate::error::{ApiError, AppJson, AppQuery, ErrorCode};
use crate::state::AppState;

/// Most jobs one batch submit takes.
pub const MAX_BATCH: usize = 10_000;
const DEFAULT_PAGE: u32 = 50;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(submit_batch))
        .routes(routes!(get_job))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(logs))
        .routes(routes!(stream::stream))
        .routes(routes!(workers))
        .routes(routes!(queues))
        .merge(schedules::router())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// A registered job kind, e.g. `noop`.
    kind: String,
    #[serde(default = "empty_object")]
    payload: Value,
    /// Not before this time (RFC 3339).
    run_at: Option<DateTime<Utc>>,
    /// Higher runs first; the kind's default otherwise.
    priority: Option<i32>,
    /// The same key from the same owner returns the existing job.
    idempotency_key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Submitted {
    job_id: String,
    #[schema(value_type = String, example = "queued")]
    status: JobStatus,
    status_url: String,
    events_url: String,
    /// `false` when an idempotency key matched an existing job.
    created: bool,
}

impl Submitted {
    fn new(job: &Job, created: bool) -> Self {
        Self {
            status_url: format!("/api/v1/jobs/{}", job.id),
            events_url: format!("/api/v1/jobs/{}/logs/stream", job.id),
            job_id: job.id.clone(),
            status: job.status,
            created,
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Store(e) => e.into(),
            SubmitError::Delivery(e) => ApiError::internal(format!("{e:#}")),
            SubmitError::Forbidden(why) => ApiError::new(ErrorCode::Forbidden, why),
            full @ SubmitError::QueueFull { .. } => {
                ApiError::rate_limited(full.to_string(), QUEUE_FULL_RETRY_AFTER)
            }
            other => ApiError::new(ErrorCode::Unprocessable, other.to_string()),
        }
    }
}

fn check_request(request: &SubmitRequest) -> Result<(), ApiError> {
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(ApiError::new(ErrorCode::Unprocessable, "idempotency_key: must be 1 to 200 characters"));
    }
    if request.idempotency_key.as_deref().is_some_and(|key| key.contains('\0')) {
        return Err(ApiError::new(
            ErrorCode::Unprocessable,
            "idempotency_key: must not contain NUL characters",
        ));
    }
    Ok(())
}

fn into_submit(request: SubmitRequest, caller: &Caller) -> Submit {
    Submit {
        kind: request.kind,
        payload: request.payload,
        owner: caller.user.id.clone(),
        run_at: request.run_at,
        priority: request.priority,
        idempotency_key: request.idempotency_key,
        parent_id: None,
        requester: caller.requester(),
    }
}

/// Submit a job
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = SubmitRequest, responses(
    (status = 202, description = "Queued", body = Submitted),
    (status = 200, description = "The idempotency key matched an existing job", body = Submitted),
    (status = 422, description = "Unknown kind or a payload that does not fit it")))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(request): AppJson<SubmitRequest>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    caller.require("jobs:rw")?;
    check_request(&request)?;
    let (job, created) = state.engine.submit(into_submit(request, &caller)).await?;
    let status = if created { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(Submitted::new(&job, created))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    jobs: Vec<SubmitRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchSubmitted {
    jobs: Vec<Submitted>,
}

/// Submit many jobs at once (up to 10,000)
#[utoipa::path(post, path = "/api/v1/jobs/batch", tag = "jobs", request_body = BatchRequest, responses(
    (status = 202, description = "Queued", body = BatchSubmitted),
    (status = 422, description = "A job is invalid; nothing was queued")))]
pub async fn submit_batch(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(request): AppJson<BatchRequest>,
) -> Result<(StatusCode, Json<BatchSubmitted>), ApiError> {
    caller.require("jobs:rw")?;
    if request.jobs.is_empty() || request.jobs.len() > MAX_BATCH {
        return Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("jobs: must hold 1 to {MAX_BATCH} jobs"),
        ));
    }
    request.jobs.iter().try_for_each(check_request)?;
    let submits = request.jobs.into_iter().map(|job| into_submit(job, &caller)).collect();
    let created = state.engine.submit_many(submits).await.map_err(|(index, e)| match ApiError::from(e) {
        e if e.code == ErrorCode::Unprocessable => {
            ApiError::new(e.code, format!("jobs[{index}].{}", e.message))
        }
        e => e,
    })?;
    let jobs = created.iter().map(|(job, fresh)| Submitted::new(job, *fresh)).collect();
    Ok((StatusCode::ACCEPTED, Json(BatchSubmitted { jobs })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// 1 to 1000 (default 50).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    #[schema(value_type = Vec<Object>)]
    jobs: Vec<Job>,
    next_cursor: Option<String>,
}

fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        n @ 1..=1000 => Ok(n),
        _ => Err(ApiError::new(ErrorCode::Unprocessable, "limit: must be from 1 to 1000")),
    }
}

/// List jobs, newest first
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery), responses(
    (status = 200, description = "One page", body = JobPage)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    caller.require("jobs:read")?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(JobStatus::parse(s).ok_or_else(|| {
            ApiError::new(ErrorCode::Unprocessable, format!("status: {s:?} is not a job status"))
        })?),
    };
    let limit = page_limit(query.limit)?;
    let owner = caller.listing_owner().map(str::to_string);
    let filter = JobFilter { owner, status, kind: query.kind, before_id: query.cursor, limit };
    let jobs = state.engine.jobs.list(&filter).await?;
    let next_cursor = (jobs.len() == limit as usize).then(|| jobs.last().map(|j| j.id.clone())).flatten();
    Ok(Json(JobPage { jobs, next_cursor }))
}

/// One job
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", responses(
    (status = 200, description = "The job", body = Object), (status = 404, description = "No such job")))]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    caller.require("jobs:read")?;
    Ok(Json(find_job(&state, &caller, &id).await?))
}

/// Cancel a job: at once when queued, cooperatively when running
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", responses(
    (status = 200, description = "The job after the request", body = Object),
    (status = 404, description = "No such job")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    caller.require("jobs:rw")?;
    find_job(&state, &caller, &id).await?;
    let job = state.engine.cancel(&id).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(job))
}

/// Retry a failed, dead or cancelled job
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs", responses(
    (status = 202, description = "Queued again", body = Object),
    (status = 404, description = "No such job"),
    (status = 409, description = "The job is queued, running or succeeded")))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    caller.require("jobs:rw")?;
    find_job(&state, &caller, &id).await?;
    match state.engine.retry(&id).await? {
        Some(job) => Ok((StatusCode::ACCEPTED, Json(job))),
        None => {
            let job = find_job(&state, &caller, &id).await?;
            Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a {} job cannot be retried", job.status.as_str()),
            ))
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Lines after this sequence number (default 0: from the start).
    after: Option<i64>,
    /// 1 to 1000 (default 50).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogPage {
    #[schema(value_type = Vec<Object>)]
    lines: Vec<LogLine>,
    /// Pass as `after` for the next page; absent at the end.
    next_after: Option<i64>,
}

/// A job's log lines, in order
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", params(LogsQuery), responses(
    (status = 200, description = "One page", body = LogPage), (status = 404, description = "No such job")))]
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppQuery(query): AppQuery<LogsQuery>,
) -> Result<Json<LogPage>, ApiError> {
    caller.require("jobs:read")?;
    find_job(&state, &caller, &id).await?;
    let limit = page_limit(query.limit)?;
    let lines = state.engine.jobs.logs(&id, query.after.unwrap_or(0), limit).await?;
    let next_after = (lines.len() == limit as usize).then(|| lines.last().map(|l| l.seq)).flatten();
    Ok(Json(LogPage { lines, next_after }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerList {
    #[schema(value_type = Vec<Object>)]
    workers: Vec<WorkerRecord>,
}

/// Worker processes and what they run (administrators)
#[utoipa::path(get, path = "/api/v1/workers", tag = "jobs", responses(
    (status = 200, body = WorkerList), (status = 403, description = "Not an administrator")))]
pub async fn workers(State(state): State<AppState>, caller: Caller) -> Result<Json<WorkerList>, ApiError> {
    caller.require_admin()?;
    Ok(Json(WorkerList { workers: state.workers.list().await? }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    #[schema(value_type = Vec<Object>)]
    queues: Vec<KindStats>,
}

/// Per job kind: queued, running, failed, dead, and succeeded in the last minute and hour
/// (administrators)
#[utoipa::path(get, path = "/api/v1/queues", tag = "jobs", responses(
    (status = 200, body = QueueList), (status = 403, description = "Not an administrator")))]
pub async fn queues(State(state): State<AppState>, caller: Caller) -> Result<Json<QueueList>, ApiError> {
    caller.require_admin()?;
    let mut stats = state.engine.jobs.kind_stats(Utc::now()).await?;
    for kind in state.engine.kinds.names() {
        if !stats.iter().any(|s| s.kind == kind) {
            stats.push(KindStats { kind: kind.to_string(), ..Default::default() });
        }
    }
    stats.sort_by(|a, b| a.kind.cmp(&b.kind));
    Ok(Json(QueueList { queues: stats }))
}
