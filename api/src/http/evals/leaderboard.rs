//! Leaderboards: a task's (its runs by overall score, as the original) and the global one
//! over every task the caller sees (per agent: mean score with a 95 % interval, the mean of
//! each dimension, pass rate, runs counted), filterable by rubric and by when runs were judged.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use services::evals::Dimension;
use services::evals::leaderboard::{RunResult, standings};
use services::evals::score::Score;
use storage::sql::RunJudgement;
use utoipa::IntoParams;

use super::replies::leaderboard_entry;
use super::{evals, visible_scope, visible_task};
use crate::auth::Caller;
use crate::error::{ApiError, AppQuery, ErrorCode};
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/tasks/{id}/leaderboard", tag = "evals", params(("id" = String, Path)),
    responses((status = 200, description = "`{task_id, leaderboard}`: the runs, best overall score first (unscored last, with the reason)"),
    (status = 404, description = "No such task, or it has no agent runs")))]
pub(super) async fn task_leaderboard(
    State(state): State<AppState>,
    caller: Caller,
    Path(task_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let task = visible_task(&state, &caller, &task_id).await?;
    let runs = evals(&state).store.runs(&task.id).await?;
    if runs.is_empty() {
        return Err(ApiError::not_found("No agent runs found for this task"));
    }
    let mut entries: Vec<Value> = runs.iter().map(leaderboard_entry).collect();
    entries.sort_by(|a, b| {
        let score = |v: &Value| v["overall_score"].as_f64().unwrap_or(-1.0);
        score(b).total_cmp(&score(a))
    });
    Ok(Json(json!({"task_id": task.id, "leaderboard": entries})))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct GlobalParams {
    /// Comma-separated dimensions: only tasks whose rubric holds all of them.
    #[param(pattern = "^((AR|TTL|LRU|SF)(,(AR|TTL|LRU|SF))*)?$")]
    rubric: Option<String>,
    /// Only runs judged at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only runs judged before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
}

fn instant(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|_| ApiError::new(ErrorCode::Unprocessable, format!("{name}: not an RFC 3339 time")))
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/leaderboard", tag = "evals", params(GlobalParams), responses(
    (status = 200, description = "`{leaderboard, runs_counted, tasks_counted}`: per agent `rank, agent, mean_score, \
        confidence_interval, dimension_means, pass_rate, runs_scored, runs_unscored`"),
    (status = 422, description = "An unknown dimension or a bad time")))]
pub(super) async fn global(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(params): AppQuery<GlobalParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require("evals:read")?;
    let wanted: Vec<Dimension> = match params.rubric.as_deref() {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|code| {
                Dimension::parse(code.trim()).ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::Unprocessable,
                        format!("rubric: {code:?} is not AR, TTL, LRU or SF"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let since = instant("since", params.since.as_deref())?;
    let until = instant("until", params.until.as_deref())?;
    let judged = evals(&state).store.judged_runs(&visible_scope(&caller), since, until).await?;
    let counted: Vec<_> = judged
        .into_iter()
        .filter(|run| wanted.iter().all(|d| run.rubric.iter().any(|code| code == d.code())))
        .collect();
    let scores: Vec<Option<Score>> = counted
        .iter()
        .map(|run| match &run.judgement {
            RunJudgement::Scored { score, .. } => serde_json::from_value(score["score"].clone()).ok(),
            RunJudgement::Unscored { .. } => None,
        })
        .collect();
    let results: Vec<RunResult<'_>> = counted
        .iter()
        .zip(&scores)
        .map(|(run, score)| RunResult { agent: &run.agent, score: score.as_ref() })
        .collect();
    let mut tasks: Vec<&str> = counted.iter().map(|run| run.task_id.as_str()).collect();
    tasks.sort_unstable();
    tasks.dedup();
    Ok(Json(json!({
        "leaderboard": standings(&results),
        "runs_counted": counted.len(),
        "tasks_counted": tasks.len(),
    })))
}
