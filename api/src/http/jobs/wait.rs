//! Routes of a service that run their work as a job and answer like the original did: they
//! submit on the caller's behalf, wait for the job (bounded by `JOB_WAIT` and the request
//! timeout) and answer its result, or answer 202 with where to follow it when the bound passes
//! or the client sent `Prefer: respond-async`. The one place a job's outcome becomes a reply.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jobs::Kind;
use jobs::engine::{Requester, Submit, Waited};
use serde_json::{Value, json};
use storage::sql::{Job, JobStatus};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// Longest a route waits for its job before answering 202.
const JOB_WAIT: Duration = Duration::from_secs(30);

/// How a job submitted by a route that waits ended for the route.
pub(crate) enum Outcome {
    /// It succeeded within the wait; its result.
    Finished(Value),
    /// Still running past the wait, or the client asked not to wait: answer [`accepted`].
    Accepted(Box<Job>),
}

/// A `K` job for the caller, at priority 1: a client is waiting for it.
pub(crate) fn for_caller<K: Kind>(caller: &Caller, payload: &K::Payload) -> Submit {
    Submit::of::<K>(payload, caller.user.id.clone(), Requester::Engram).with_priority(1)
}

/// Whether the client sent `Prefer: respond-async` (answer 202 at once, do not wait).
pub(crate) fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// The body of a job still running: its id and where to follow it.
pub(crate) fn accepted_body(job: &Job) -> Value {
    json!({
        "job_id": job.id,
        "status": "queued",
        "status_url": format!("/api/v1/jobs/{}", job.id),
        "events_url": format!("/api/v1/jobs/{}/logs/stream", job.id),
    })
}

/// The 202 of a job still running.
pub(crate) fn accepted(job: &Job) -> Response {
    (StatusCode::ACCEPTED, Json(accepted_body(job))).into_response()
}

/// A job that ended without succeeding, as the route's error.
fn failed(job: Job) -> ApiError {
    // A job that gave up before its last attempt met a `JobError::Permanent`: the request
    // cannot be done as things stand (say, another session's commit took the staged edits
    // first), which is the client's conflict, not a server fault.
    let gave_up = job.status == JobStatus::Dead && job.attempt < job.max_attempts;
    let cancelled = job.status == JobStatus::Cancelled;
    let code = if gave_up || cancelled { ErrorCode::Conflict } else { ErrorCode::Internal };
    ApiError::new(
        code,
        format!(
            "job {} ended {}: {}",
            job.id,
            job.status.as_str(),
            job.last_error.unwrap_or_else(|| "no error recorded".into())
        ),
    )
}

/// Submits `submit` and, when `wait`, waits for it (bounded). A job that fails is an error.
pub(crate) async fn submit_and_wait(
    state: &AppState,
    wait: bool,
    submit: Submit,
) -> Result<Outcome, ApiError> {
    let (job, _) = state.engine.submit(submit).await?;
    if !wait {
        return Ok(Outcome::Accepted(Box::new(job)));
    }
    let bound = JOB_WAIT.min(state.config.http.request_timeout.saturating_sub(Duration::from_secs(2)));
    match state.engine.wait(&job.id, bound).await? {
        None => Err(ApiError::internal("a submitted job vanished")),
        Some(Waited::Running(job)) => Ok(Outcome::Accepted(Box::new(job))),
        Some(Waited::Ended(job)) if job.status == JobStatus::Succeeded => {
            Ok(Outcome::Finished(job.result.unwrap_or(Value::Null)))
        }
        Some(Waited::Ended(job)) => Err(failed(job)),
    }
}

/// [`submit_and_wait`] unless the client sent `Prefer: respond-async`; a finished job's
/// result answered as it is with 200.
pub(crate) async fn run_job(
    state: &AppState,
    headers: &HeaderMap,
    submit: Submit,
) -> Result<Response, ApiError> {
    Ok(match submit_and_wait(state, !prefers_async(headers), submit).await? {
        Outcome::Finished(result) => Json(result).into_response(),
        Outcome::Accepted(job) => accepted(&job),
    })
}
