//! Agent evaluations (Memory-Break) in the original's shapes: tasks (`/api/v1/tasks…`),
//! their agent runs and per-task leaderboard, the global leaderboard, and the runs' artifacts. Errors are
//! Memory-Break's `{error, detail, status_code, path}`. A task belongs to its creator; the
//! creator's team sees it too (read only), administrators see every task. API keys need
//! `evals:rw`.

mod artifacts;
mod leaderboard;
mod replies;
mod tasks;

use axum::middleware;
use services::evals::{Evals, EvalsError};
use storage::sql::{EvalTask, TaskScope};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode, reshape_errors_by_path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(tasks::create, tasks::list))
        .routes(routes!(tasks::get, tasks::cancel))
        .routes(routes!(tasks::run))
        .routes(routes!(tasks::retry))
        .routes(routes!(tasks::agents))
        .routes(routes!(tasks::agent))
        .routes(routes!(tasks::agent_details))
        .routes(routes!(leaderboard::task_leaderboard))
        .routes(routes!(leaderboard::global))
        .routes(routes!(artifacts::list))
        .routes(routes!(artifacts::get))
        .layer(middleware::from_fn(reshape_errors_by_path))
}

fn evals(state: &AppState) -> &Evals {
    &state.jobs.services.evals
}

impl From<EvalsError> for ApiError {
    fn from(e: EvalsError) -> Self {
        match e {
            EvalsError::Invalid(fault) => ApiError::new(ErrorCode::Unprocessable, fault.to_string()),
            EvalsError::Unavailable(why) => ApiError::new(ErrorCode::BadRequest, why),
            EvalsError::NotFound(why) => ApiError::not_found(why),
            EvalsError::Store(e) => e.into(),
        }
    }
}

/// The tasks `caller` sees: its own and its team's; every task for an administrator.
fn visible_scope(caller: &Caller) -> TaskScope {
    if caller.is_admin() {
        TaskScope::default()
    } else {
        TaskScope { owner: Some(caller.user.id.clone()), team_id: caller.user.team_id.clone() }
    }
}

fn can_see(caller: &Caller, task: &EvalTask) -> bool {
    caller.is_admin()
        || task.spec.owner == caller.user.id
        || (task.spec.team_id.is_some() && task.spec.team_id == caller.user.team_id)
}

/// Task `id` when the caller may see it; 404 otherwise, as for a task that does not exist.
async fn visible_task(state: &AppState, caller: &Caller, id: &str) -> Result<EvalTask, ApiError> {
    caller.require("evals:read")?;
    match evals(state).store.task(id).await? {
        Some(task) if can_see(caller, &task) => Ok(task),
        _ => Err(ApiError::not_found("Task not found")),
    }
}

/// Task `id` when the caller may change it (its creator, or an administrator).
async fn own_task(state: &AppState, caller: &Caller, id: &str) -> Result<EvalTask, ApiError> {
    caller.require("evals:rw")?;
    let task = visible_task(state, caller, id).await?;
    if task.spec.owner != caller.user.id && !caller.is_admin() {
        return Err(ApiError::new(ErrorCode::Forbidden, "only the task's creator may change it"));
    }
    Ok(task)
}
