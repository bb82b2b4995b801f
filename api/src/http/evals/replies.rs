//! Tasks, agent runs and scores as Memory-Break answered them (`TaskResponse`,
//! `AgentRunResponse`, the details' `scores`), with Engram's additions beside them
//! (`scenario`, `rubric_thresholds`, `unscored_reason`). Times are UTC ISO strings with `Z`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use storage::sql::{EvalRun, EvalTask, RunJudgement};

pub(super) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn maybe_time(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| json!(time(at)))
}

pub(super) fn task_json(task: &EvalTask) -> Value {
    let spec = &task.spec;
    json!({
        "id": task.id,
        "pr_url": spec.pr.as_ref().map(|pr| pr.url.clone()),
        "repo": spec.pr.as_ref().map(|pr| pr.repo.clone()),
        "pr_number": spec.pr.as_ref().map(|pr| pr.number),
        "scenario": spec.scenario_name,
        "agents": spec.agents,
        "rubric": spec.rubric,
        "rubric_thresholds": spec.rubric_thresholds,
        "status": task.status.as_str(),
        "max_files": spec.max_files,
        "created_at": time(task.created_at),
        "updated_at": time(task.updated_at),
        "started_at": maybe_time(task.started_at),
        "completed_at": maybe_time(task.completed_at),
        "changed_files": task.changed_files,
        "prompt_hash": task.prompt_hash,
        "error_message": task.error_message,
        "created_by_user_id": spec.owner,
        "created_by_email": spec.created_by_email,
        "created_by_name": spec.created_by_name,
        "org_id": spec.org_id,
        "team_id": spec.team_id,
        "project_id": spec.project_id,
    })
}

pub(super) fn run_json(run: &EvalRun) -> Value {
    json!({
        "id": run.id,
        "task_id": run.task_id,
        "agent": run.agent,
        "status": run.status.as_str(),
        "milestones": run.milestones,
        "artifacts": run.artifacts,
        "stats": run.stats,
        "created_at": time(run.created_at),
        "updated_at": time(run.updated_at),
        "started_at": maybe_time(run.started_at),
        "completed_at": maybe_time(run.completed_at),
        "error_message": run.error_message,
        "retry_count": run.retry_count,
    })
}

/// The stored score and verdict (`{score, verdict}`) of a scored run.
fn scored(run: &EvalRun) -> Option<&Value> {
    match &run.judgement {
        Some(RunJudgement::Scored { score, .. }) => Some(score),
        _ => None,
    }
}

pub(super) fn unscored_reason(run: &EvalRun) -> Option<&str> {
    match &run.judgement {
        Some(RunJudgement::Unscored { reason }) => Some(reason),
        _ => None,
    }
}

/// The details' `scores`: null until the run is scored.
pub(super) fn scores_json(run: &EvalRun) -> Value {
    let Some(stored) = scored(run) else { return Value::Null };
    let (score, verdict) = (&stored["score"], &stored["verdict"]);
    json!({
        "overall_score": score["overall_score"],
        "dimension_scores": score["dimension_scores"],
        "rationale": verdict["rationale"],
        "breaking_dimensions": score["breaking_dimensions"],
        "breaking_details": score["breaking_details"],
        "thresholds_used": score["thresholds_used"],
        "passed": score["passed"],
        "judge_type": verdict["judge_type"],
        "judge_model": verdict["judge_model"],
        "probes": verdict["probes"],
    })
}

/// A run's line on its task's leaderboard; an unscored run has no numbers, and says why.
pub(super) fn leaderboard_entry(run: &EvalRun) -> Value {
    let score = scored(run).map(|stored| &stored["score"]);
    let field = |name: &str| score.map_or(Value::Null, |s| s[name].clone());
    let execution_time = match (run.started_at, run.completed_at) {
        (Some(started), Some(completed)) => (completed - started).num_milliseconds() as f64 / 1000.0,
        _ => (run.updated_at - run.created_at).num_milliseconds() as f64 / 1000.0,
    };
    let compressed = run.stats.get("compression_detected").and_then(Value::as_bool).unwrap_or(false);
    json!({
        "agent": run.agent,
        "status": run.status.as_str(),
        "overall_score": field("overall_score"),
        "scores": field("dimension_scores"),
        "passed": field("passed"),
        "execution_time": execution_time,
        "compression_detected": if compressed { "True" } else { "False" },
        "breaking_dimensions": field("breaking_dimensions"),
        "breaking_details": field("breaking_details"),
        "thresholds_used": field("thresholds_used"),
        "unscored_reason": unscored_reason(run),
    })
}
