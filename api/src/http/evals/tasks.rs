//! The task routes: create (202, its agent runs queued as `agent_run` jobs), list, read,
//! run, cancel (the runs' jobs are cancelled, which kills their agents), retry, and the
//! task's agent runs with their scores.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jobs::engine::{Requester, Submit};
use jobs::kinds::{AgentRun, AgentRunPayload};
use serde::Deserialize;
use serde_json::{Value, json};
use services::evals::service::{NewTask, ScenarioChoice, TaskOwner};
use storage::sql::{EvalRun, EvalTask, RunStatus, RunUpdate, TaskQuery, TaskScope, TaskStatus};
use utoipa::{IntoParams, ToSchema};

use super::replies::{run_json, scores_json, task_json, unscored_reason};
use super::{evals, own_task, visible_scope, visible_task};
use crate::auth::Caller;
use crate::error::{ApiError, AppJson, AppQuery, ErrorCode};
use crate::state::AppState;

const DEFAULT_MAX_FILES: i64 = 50;
const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 100;

fn default_max_files() -> i64 {
    DEFAULT_MAX_FILES
}

/// A new task: a built-in scenario's name or a scenario document, the agents to run (all
/// declared ones when empty), the rubric (all four dimensions when empty) and thresholds.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTaskBody {
    /// A GitHub pull request (`https://github.com/{owner}/{repo}/pull/{n}`); not supported yet.
    pr_url: Option<String>,
    /// A built-in scenario's name (`project-handover`, `release-notes`, `tool-output-facts`),
    /// or a scenario document.
    #[schema(value_type = Object)]
    scenario: Option<Value>,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    rubric: Vec<String>,
    #[serde(default)]
    rubric_thresholds: BTreeMap<String, f64>,
    #[serde(default = "default_max_files")]
    #[schema(minimum = 1, maximum = 1000)]
    max_files: i64,
}

/// Queues an `agent_run` job for each of `runs` (once per retry: a repeat is a no-op) and
/// records its id on the run.
async fn submit_runs(state: &AppState, task: &EvalTask, runs: &[EvalRun]) -> Result<(), ApiError> {
    for run in runs {
        let payload = AgentRunPayload { task_id: task.id.clone(), agent: run.agent.clone() };
        let mut submit = Submit::of::<AgentRun>(&payload, task.spec.owner.clone(), Requester::Engram);
        submit.idempotency_key = Some(format!("agent_run:{}:{}:{}", task.id, run.agent, run.retry_count));
        let (job, _) = state.engine.submit(submit).await?;
        let update = RunUpdate { job_id: Some(job.id), ..RunUpdate::default() };
        evals(state).store.update_run(&task.id, &run.agent, &update, chrono::Utc::now()).await?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/tasks", tag = "evals", request_body = CreateTaskBody, responses(
    (status = 202, description = "`{message, task}`: created, its agent runs queued"),
    (status = 400, description = "An agent that is not available, or a pull request task"),
    (status = 422, description = "A field out of bounds, named in `error`")))]
pub(super) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<CreateTaskBody>,
) -> Result<Response, ApiError> {
    caller.require("evals:rw")?;
    let service = evals(&state);
    let agents = if body.agents.is_empty() {
        service.agents.names().into_iter().map(str::to_string).collect()
    } else {
        body.agents
    };
    let scenario = body.scenario.map(|value| match value {
        Value::String(name) => ScenarioChoice::Builtin(name),
        document => ScenarioChoice::Document(document),
    });
    let new = NewTask {
        pr_url: body.pr_url,
        scenario,
        agents,
        rubric: body.rubric,
        rubric_thresholds: body.rubric_thresholds,
        max_files: body.max_files,
    };
    let user = &caller.user;
    let owner = TaskOwner {
        owner: user.id.clone(),
        team_id: user.team_id.clone(),
        org_id: user.org_id.clone(),
        project_id: None,
        email: user.email.clone(),
        name: Some(user.display_name.clone()),
    };
    let task = service.create_task(&owner, new).await?;
    let runs = service.store.runs(&task.id).await?;
    submit_runs(&state, &task, &runs).await?;
    let body = json!({"message": "Task created and queued for processing", "task": task_json(&task)});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// From 1.
    #[param(minimum = 1)]
    page: Option<i64>,
    /// 1 to 100, default 20.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<i64>,
    /// `queued`, `running`, `judging`, `done` or `error`.
    #[param(pattern = "^(|queued|running|judging|done|error)$")]
    status: Option<String>,
    /// `my_tasks` (default), `team_tasks` (administrators of a team) or `all` (what the caller sees).
    #[param(pattern = "^(|my_tasks|team_tasks|all)$")]
    filter: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "evals", params(ListParams), responses(
    (status = 200, description = "`{tasks, total, page, page_size}`, newest first"),
    (status = 403, description = "`team_tasks` without a team or without the administrator role"),
    (status = 422, description = "A parameter out of bounds")))]
pub(super) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(params): AppQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require("evals:read")?;
    let page = params.page.unwrap_or(1);
    let page_size = params.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page < 1 || !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return Err(ApiError::new(
            ErrorCode::Unprocessable,
            format!("page: from 1; page_size: 1 to {MAX_PAGE_SIZE}"),
        ));
    }
    let status = match params.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(TaskStatus::parse(text).ok_or_else(|| {
            ApiError::new(ErrorCode::Unprocessable, "status: queued, running, judging, done or error")
        })?),
    };
    let scope = match params.filter.as_deref().filter(|f| !f.is_empty()).unwrap_or("my_tasks") {
        "my_tasks" => TaskScope { owner: Some(caller.user.id.clone()), team_id: None },
        "all" => visible_scope(&caller),
        "team_tasks" => match (&caller.user.team_id, caller.is_admin()) {
            (Some(team), true) => TaskScope { owner: None, team_id: Some(team.clone()) },
            _ => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "team_tasks is for administrators of a team",
                ));
            }
        },
        _ => return Err(ApiError::new(ErrorCode::Unprocessable, "filter: my_tasks, team_tasks or all")),
    };
    let query = TaskQuery { scope, status, offset: (page - 1).saturating_mul(page_size), limit: page_size };
    let (tasks, total) = evals(&state).store.tasks(&query).await?;
    Ok(Json(json!({
        "tasks": tasks.iter().map(task_json).collect::<Vec<_>>(),
        "total": total,
        "page": page,
        "page_size": page_size,
    })))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, description = "The task"), (status = 404, description = "No such task the caller sees")))]
pub(super) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(task_json(&visible_task(&state, &caller, &task_id).await?)))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/run", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, description = "`{message, task}`: its queued runs are (again) submitted"),
    (status = 400, description = "The task is not queued"), (status = 404, description = "No such task")))]
pub(super) async fn run(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state, &caller, &task_id).await?;
    if task.status != TaskStatus::Queued {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("Task can only be run when queued; it is {}", task.status.as_str()),
        ));
    }
    let runs: Vec<EvalRun> = evals(&state)
        .store
        .runs(&task.id)
        .await?
        .into_iter()
        .filter(|r| r.status == RunStatus::Queued)
        .collect();
    submit_runs(&state, &task, &runs).await?;
    Ok(Json(json!({"message": "Task queued for processing", "task": task_json(&task)})))
}

#[utoipa::path(delete, path = "/api/v1/tasks/{id}", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, description = "`{message, task}`: ended as `error`, its running agents stopped"),
    (status = 400, description = "The task had ended"), (status = 404, description = "No such task")))]
pub(super) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state, &caller, &task_id).await?;
    let store = &evals(&state).store;
    if !store.cancel(&task.id, "Task cancelled by user", chrono::Utc::now()).await? {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("Task has ended already ({})", task.status.as_str()),
        ));
    }
    for run in store.runs(&task.id).await? {
        if let Some(job) = &run.job_id {
            state.engine.cancel(job).await?;
        }
    }
    let task = store.task(&task.id).await?.ok_or_else(|| ApiError::not_found("Task not found"))?;
    Ok(Json(json!({"message": "Task cancelled", "task": task_json(&task)})))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RetryParams {
    /// Comma-separated agents to run again (ended runs only); default: every run that failed.
    agents: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "evals", params(("id" = String, Path), RetryParams),
    responses((status = 200, description = "`{message, task, agents}`: the runs queued again"),
    (status = 400, description = "No run to retry"), (status = 404, description = "No such task")))]
pub(super) async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
    AppQuery(params): AppQuery<RetryParams>,
) -> Result<Json<Value>, ApiError> {
    let task = own_task(&state, &caller, &task_id).await?;
    let named: Option<Vec<String>> = params
        .agents
        .map(|list| list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect());
    let store = &evals(&state).store;
    let runs = store.retry(&task.id, named.as_deref(), chrono::Utc::now()).await?;
    if runs.is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "no agent run of this task can be retried"));
    }
    submit_runs(&state, &task, &runs).await?;
    let task = store.task(&task.id).await?.ok_or_else(|| ApiError::not_found("Task not found"))?;
    Ok(Json(json!({
        "message": format!("Retrying {} agent run(s)", runs.len()),
        "task": task_json(&task),
        "agents": runs.iter().map(|r| r.agent.clone()).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/agents", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, description = "The task's agent runs"), (status = 404, description = "No such task")))]
pub(super) async fn agents(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = visible_task(&state, &caller, &task_id).await?;
    let runs = evals(&state).store.runs(&task.id).await?;
    Ok(Json(Value::Array(runs.iter().map(run_json).collect())))
}

async fn visible_run(
    state: &AppState,
    caller: &Caller,
    task_id: &str,
    agent: &str,
) -> Result<EvalRun, ApiError> {
    let task = visible_task(state, caller, task_id).await?;
    evals(state).store.run(&task.id, agent).await?.ok_or_else(|| ApiError::not_found("Agent run not found"))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/agents/{agent}", tag = "evals",
    params(("id" = String, Path), ("agent" = String, Path)),
    responses((status = 200, description = "The agent's run"), (status = 404, description = "No such task or run")))]
pub(super) async fn agent(
    State(state): State<AppState>,
    caller: Caller,
    Path((task_id, agent)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(run_json(&visible_run(&state, &caller, &task_id, &agent).await?)))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/agents/{agent}/details", tag = "evals",
    params(("id" = String, Path), ("agent" = String, Path)),
    responses((status = 200, description = "`{agent_run, scores, unscored_reason}`; `scores` null until scored"),
    (status = 404, description = "No such task or run")))]
pub(super) async fn agent_details(
    State(state): State<AppState>,
    caller: Caller,
    Path((task_id, agent)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let run = visible_run(&state, &caller, &task_id, &agent).await?;
    Ok(Json(json!({
        "agent_run": run_json(&run),
        "scores": scores_json(&run),
        "unscored_reason": unscored_reason(&run),
        "answers": run.qa,
    })))
}
