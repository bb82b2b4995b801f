//! A task's artifacts at Memory-Break's paths: the list of every run's files, and one file by
//! agent and name (the transcript, the protocol's raw events, stderr, compactions, answers),
//! read from the blob store where the run put them.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use storage::blob::BlobKey;

use super::{evals, visible_task};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The content type of an artifact, by its name.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("jsonl") => "application/x-ndjson",
        _ => "text/plain; charset=utf-8",
    }
}

#[utoipa::path(get, path = "/api/v1/artifacts/{id}/list", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, description = "`{task_id, artifacts: [{agent, name, path}]}`: every run's stored files"),
    (status = 404, description = "No such task the caller sees")))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = visible_task(&state, &caller, &task_id).await?;
    let mut artifacts = Vec::new();
    for run in evals(&state).store.runs(&task.id).await? {
        for name in run.artifacts.as_object().into_iter().flat_map(|names| names.keys()) {
            let path = format!("/api/v1/artifacts/{}/{}/{name}", task.id, run.agent);
            artifacts.push(json!({"agent": run.agent, "name": name, "path": path}));
        }
    }
    Ok(Json(json!({"task_id": task.id, "artifacts": artifacts})))
}

#[utoipa::path(get, path = "/api/v1/artifacts/{id}/{agent}/{artifact_name}", tag = "evals",
    params(("id" = String, Path), ("agent" = String, Path), ("artifact_name" = String, Path)),
    responses((status = 200, description = "The file, as text or JSON by its name"),
    (status = 404, description = "No such task, run or artifact")))]
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((task_id, agent, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let task = visible_task(&state, &caller, &task_id).await?;
    let run = evals(&state)
        .store
        .run(&task.id, &agent)
        .await?
        .ok_or_else(|| ApiError::not_found("Agent run not found"))?;
    // Only the keys the run recorded are read: a name is never made into a path.
    let key = run
        .artifacts
        .get(&name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
    let blob = state
        .backends
        .blobs
        .get(&BlobKey::parse(key)?)
        .await?
        .ok_or_else(|| ApiError::not_found("Artifact not found"))?;
    Ok(([(header::CONTENT_TYPE, content_type(&name))], Body::from(blob.body)).into_response())
}
