//! Agent evaluations (Memory-Break) on SQLite and PostgreSQL: tasks (a PR or a scenario, the
//! agents to run, the rubric and its thresholds), one run per agent with what it recorded,
//! and each run's judgement once judged. A task that ended (done, or error after a failure or
//! a cancel) is changed only by a retry, so a worker finishing late cannot undo a cancel.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::memories::new_memory_id;
use super::millis::{from_millis, to_millis};
use crate::error::{StoreError, StoreResult};

/// Where a task stands: `queued → running → judging → done | error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Queued,
    Running,
    Judging,
    Done,
    Error,
}

/// Where one agent's run stands: `queued → running → memory_only → evaluating → done | error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Queued,
    Running,
    MemoryOnly,
    Evaluating,
    Done,
    Error,
}

text_enum!(TaskStatus { Queued => "queued", Running => "running", Judging => "judging", Done => "done", Error => "error" });
text_enum!(RunStatus {
    Queued => "queued",
    Running => "running",
    MemoryOnly => "memory_only",
    Evaluating => "evaluating",
    Done => "done",
    Error => "error",
});

impl TaskStatus {
    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Done | TaskStatus::Error)
    }
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Done | RunStatus::Error)
    }
}

/// The pull request a task evaluates on.
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequest {
    pub url: String,
    /// `owner/repo`.
    pub repo: String,
    pub number: i64,
}

/// What a task evaluates, and for whom: given when it is created (its runs are queued with it,
/// one per agent).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub owner: String,
    pub team_id: Option<String>,
    pub org_id: Option<String>,
    pub project_id: Option<String>,
    pub created_by_email: Option<String>,
    pub created_by_name: Option<String>,
    pub pr: Option<PullRequest>,
    pub scenario_name: Option<String>,
    /// The scenario document: given for a scenario task, written when a PR task is prepared.
    pub scenario: Option<Value>,
    pub agents: Vec<String>,
    pub rubric: Vec<String>,
    pub rubric_thresholds: BTreeMap<String, f64>,
    pub max_files: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalTask {
    pub id: String,
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub changed_files: Vec<String>,
    pub prompt_hash: Option<String>,
    pub error_message: Option<String>,
    /// The job that prepares and runs the task.
    pub job_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// How a judged run came out.
#[derive(Debug, Clone, PartialEq)]
pub enum RunJudgement {
    /// `score` is the whole score and verdict as the service writes it.
    Scored { score: Value, overall_score: f64, passed: bool },
    /// The judge could give no score; `reason` says why.
    Unscored { reason: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalRun {
    pub id: String,
    pub task_id: String,
    pub agent: String,
    pub status: RunStatus,
    pub milestones: Value,
    /// Artifact name → blob key.
    pub artifacts: Value,
    pub stats: Value,
    /// The probes' answers before and after compaction.
    pub qa: Value,
    pub error_message: Option<String>,
    pub retry_count: i64,
    pub job_id: Option<String>,
    pub judgement: Option<RunJudgement>,
    pub judged_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// What a run reports; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunUpdate {
    pub status: Option<RunStatus>,
    pub milestones: Option<Value>,
    pub artifacts: Option<Value>,
    pub stats: Option<Value>,
    pub qa: Option<Value>,
    pub error_message: Option<String>,
    pub job_id: Option<String>,
}

/// Whose tasks a query sees: those of `owner` and those of team `team_id`; neither set
/// means everyone's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskScope {
    pub owner: Option<String>,
    pub team_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskQuery {
    pub scope: TaskScope,
    pub status: Option<TaskStatus>,
    pub offset: i64,
    pub limit: i64,
}

/// A judged run with what a leaderboard needs of its task.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgedRun {
    pub task_id: String,
    pub agent: String,
    pub rubric: Vec<String>,
    pub judgement: RunJudgement,
    pub judged_at: DateTime<Utc>,
}

#[async_trait]
pub trait EvalStore: Send + Sync {
    /// Creates a queued task and a queued run for each of its agents.
    async fn create_task(&self, task: &TaskSpec, at: DateTime<Utc>) -> StoreResult<EvalTask>;

    async fn task(&self, id: &str) -> StoreResult<Option<EvalTask>>;

    /// A page of the tasks `query.scope` sees, newest first, and how many there are in all.
    async fn tasks(&self, query: &TaskQuery) -> StoreResult<(Vec<EvalTask>, i64)>;

    /// Moves a task that has not ended to `status` (with `error` for `Error`), stamping
    /// `started_at` on the first move to running and `completed_at` on the end; `false` when
    /// the task ended already or does not exist.
    async fn set_task_status(
        &self,
        id: &str,
        status: TaskStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Records what preparing the task found: the changed files, the prompts' hash and the
    /// scenario the runs follow.
    async fn set_task_prepared(
        &self,
        id: &str,
        changed_files: &[String],
        prompt_hash: Option<&str>,
        scenario: &Value,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn set_task_job(&self, id: &str, job_id: &str) -> StoreResult<()>;

    /// The task's runs, in the order of its agents.
    async fn runs(&self, task_id: &str) -> StoreResult<Vec<EvalRun>>;

    async fn run(&self, task_id: &str, agent: &str) -> StoreResult<Option<EvalRun>>;

    /// Applies `update` to a run that has not ended, stamping `started_at` on its first move
    /// to running and `completed_at` on its end; `None` when it ended already or does not exist.
    async fn update_run(
        &self,
        task_id: &str,
        agent: &str,
        update: &RunUpdate,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<EvalRun>>;

    /// Records the judgement of a run that is done.
    async fn judge_run(
        &self,
        task_id: &str,
        agent: &str,
        judgement: &RunJudgement,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;

    /// Queues again the runs named in `agents` that ended (all that ended in error when `None`), each
    /// counting one more retry and losing its judgement, and the task with them; returns
    /// the runs queued.
    async fn retry(
        &self,
        task_id: &str,
        agents: Option<&[String]>,
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<EvalRun>>;

    /// Ends a task that has not ended with `reason`, and each of its runs that had not with
    /// "Task cancelled"; `false` when it had ended already.
    async fn cancel(&self, task_id: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<bool>;

    /// The judged runs of the tasks `scope` sees, judged in `[since, until)` when given.
    async fn judged_runs(
        &self,
        scope: &TaskScope,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> StoreResult<Vec<JudgedRun>>;
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::backend("database", anyhow::anyhow!("stored evaluation data does not decode: {what}"))
}

fn decode<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{column}: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::backend("database", e))
}

#[derive(FromRow)]
struct TaskRow {
    id: String,
    owner: String,
    team_id: Option<String>,
    org_id: Option<String>,
    project_id: Option<String>,
    created_by_email: Option<String>,
    created_by_name: Option<String>,
    pr_url: Option<String>,
    repo: Option<String>,
    pr_number: Option<i64>,
    scenario_name: Option<String>,
    scenario: Option<String>,
    agents: String,
    rubric: String,
    rubric_thresholds: String,
    max_files: i64,
    status: String,
    changed_files: String,
    prompt_hash: Option<String>,
    error_message: Option<String>,
    job_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
}

impl TryFrom<TaskRow> for EvalTask {
    type Error = StoreError;

    fn try_from(row: TaskRow) -> StoreResult<Self> {
        let pr = match (row.pr_url, row.repo, row.pr_number) {
            (Some(url), Some(repo), Some(number)) => Some(PullRequest { url, repo, number }),
            _ => None,
        };
        Ok(EvalTask {
            status: TaskStatus::parse(&row.status)
                .ok_or_else(|| corrupt(format!("task status {}", row.status)))?,
            changed_files: decode("changed_files", &row.changed_files)?,
            spec: TaskSpec {
                scenario: row.scenario.as_deref().map(|s| decode("scenario", s)).transpose()?,
                agents: decode("agents", &row.agents)?,
                rubric: decode("rubric", &row.rubric)?,
                rubric_thresholds: decode("rubric_thresholds", &row.rubric_thresholds)?,
                owner: row.owner,
                team_id: row.team_id,
                org_id: row.org_id,
                project_id: row.project_id,
                created_by_email: row.created_by_email,
                created_by_name: row.created_by_name,
                pr,
                scenario_name: row.scenario_name,
                max_files: row.max_files,
            },
            id: row.id,
            prompt_hash: row.prompt_hash,
            error_message: row.error_message,
            job_id: row.job_id,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            started_at: row.started_at.map(from_millis),
            completed_at: row.completed_at.map(from_millis),
        })
    }
}

#[derive(FromRow)]
struct RunRow {
    id: String,
    task_id: String,
    agent: String,
    status: String,
    milestones: String,
    artifacts: String,
    stats: String,
    qa: String,
    error_message: Option<String>,
    retry_count: i64,
    job_id: Option<String>,
    score: Option<String>,
    overall_score: Option<f64>,
    passed: Option<bool>,
    unscored_reason: Option<String>,
    judged_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
}

fn judgement(
    score: Option<String>,
    overall_score: Option<f64>,
    passed: Option<bool>,
    unscored_reason: Option<String>,
) -> StoreResult<Option<RunJudgement>> {
    Ok(match (score, overall_score, passed, unscored_reason) {
        (Some(score), Some(overall_score), Some(passed), _) => {
            Some(RunJudgement::Scored { score: decode("score", &score)?, overall_score, passed })
        }
        (_, _, _, Some(reason)) => Some(RunJudgement::Unscored { reason }),
        _ => None,
    })
}

impl TryFrom<RunRow> for EvalRun {
    type Error = StoreError;

    fn try_from(row: RunRow) -> StoreResult<Self> {
        Ok(EvalRun {
            status: RunStatus::parse(&row.status)
                .ok_or_else(|| corrupt(format!("run status {}", row.status)))?,
            milestones: decode("milestones", &row.milestones)?,
            artifacts: decode("artifacts", &row.artifacts)?,
            stats: decode("stats", &row.stats)?,
            qa: decode("qa", &row.qa)?,
            judgement: judgement(row.score, row.overall_score, row.passed, row.unscored_reason)?,
            id: row.id,
            task_id: row.task_id,
            agent: row.agent,
            error_message: row.error_message,
            retry_count: row.retry_count,
            job_id: row.job_id,
            judged_at: row.judged_at.map(from_millis),
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            started_at: row.started_at.map(from_millis),
            completed_at: row.completed_at.map(from_millis),
        })
    }
}

#[derive(FromRow)]
struct JudgedRow {
    task_id: String,
    agent: String,
    rubric: String,
    score: Option<String>,
    overall_score: Option<f64>,
    passed: Option<bool>,
    unscored_reason: Option<String>,
    judged_at: i64,
}

impl TryFrom<JudgedRow> for JudgedRun {
    type Error = StoreError;

    fn try_from(row: JudgedRow) -> StoreResult<Self> {
        Ok(JudgedRun {
            rubric: decode("rubric", &row.rubric)?,
            judgement: judgement(row.score, row.overall_score, row.passed, row.unscored_reason)?
                .ok_or_else(|| corrupt("a judged run without a judgement"))?,
            task_id: row.task_id,
            agent: row.agent,
            judged_at: from_millis(row.judged_at),
        })
    }
}

const INSERT_TASK: &str = "INSERT INTO eval_tasks (id, owner, team_id, org_id, project_id, created_by_email, \
     created_by_name, pr_url, repo, pr_number, scenario_name, scenario, agents, rubric, rubric_thresholds, \
     max_files, status, changed_files, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'queued', '[]', $17, $17)";
const INSERT_RUN: &str = "INSERT INTO eval_runs (id, task_id, position, agent, status, milestones, artifacts, stats, \
     qa, retry_count, created_at, updated_at) VALUES ($1, $2, $3, $4, 'queued', '{}', '{}', '{}', '[]', 0, $5, $5)";
const TASK: &str = "SELECT * FROM eval_tasks WHERE id = $1";
/// `$1` owner, `$2` team: a task either names is in scope; both NULL: every task.
const TASKS: &str = "SELECT * FROM eval_tasks WHERE (($1 IS NULL AND $2 IS NULL) OR owner = $1 OR team_id = $2) \
     AND ($3 IS NULL OR status = $3) ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5";
const COUNT_TASKS: &str = "SELECT COUNT(*) FROM eval_tasks WHERE (($1 IS NULL AND $2 IS NULL) OR owner = $1 \
     OR team_id = $2) AND ($3 IS NULL OR status = $3)";
const SET_TASK_STATUS: &str = "UPDATE eval_tasks SET status = $2, error_message = COALESCE($3, error_message), \
     updated_at = $4, started_at = CASE WHEN $2 = 'running' AND started_at IS NULL THEN $4 ELSE started_at END, \
     completed_at = CASE WHEN $2 IN ('done', 'error') THEN $4 ELSE completed_at END \
     WHERE id = $1 AND status NOT IN ('done', 'error')";
const SET_TASK_PREPARED: &str = "UPDATE eval_tasks SET changed_files = $2, prompt_hash = $3, scenario = $4, updated_at = $5 WHERE id = $1";
const SET_TASK_JOB: &str = "UPDATE eval_tasks SET job_id = $2 WHERE id = $1";
const RUNS: &str = "SELECT * FROM eval_runs WHERE task_id = $1 ORDER BY position";
const RUN: &str = "SELECT * FROM eval_runs WHERE task_id = $1 AND agent = $2";
const UPDATE_RUN: &str = "UPDATE eval_runs SET status = COALESCE($3, status), \
     milestones = COALESCE($4, milestones), artifacts = COALESCE($5, artifacts), stats = COALESCE($6, stats), \
     qa = COALESCE($7, qa), error_message = COALESCE($8, error_message), job_id = COALESCE($9, job_id), \
     updated_at = $10, \
     started_at = CASE WHEN $3 = 'running' AND started_at IS NULL THEN $10 ELSE started_at END, \
     completed_at = CASE WHEN $3 IN ('done', 'error') THEN $10 ELSE completed_at END \
     WHERE task_id = $1 AND agent = $2 AND status NOT IN ('done', 'error') RETURNING *";
const JUDGE_RUN: &str = "UPDATE eval_runs SET score = $3, overall_score = $4, passed = $5, unscored_reason = $6, \
     judged_at = $7, updated_at = $7 WHERE task_id = $1 AND agent = $2 AND status = 'done'";
const RETRY_RUN: &str = "UPDATE eval_runs SET status = 'queued', retry_count = retry_count + 1, \
     error_message = NULL, score = NULL, overall_score = NULL, passed = NULL, unscored_reason = NULL, \
     judged_at = NULL, started_at = NULL, completed_at = NULL, milestones = '{}', stats = '{}', qa = '[]', \
     updated_at = $3 WHERE task_id = $1 AND agent = $2 AND (status = 'error' OR ($4 AND status = 'done')) RETURNING *";
/// A task that ended is queued again with its retried runs; one still running keeps going.
const REQUEUE_TASK: &str = "UPDATE eval_tasks SET status = 'queued', error_message = NULL, completed_at = NULL, \
     updated_at = $2 WHERE id = $1 AND status IN ('done', 'error')";
const CANCEL_TASK: &str = "UPDATE eval_tasks SET status = 'error', error_message = $2, updated_at = $3, \
     completed_at = $3 WHERE id = $1 AND status NOT IN ('done', 'error')";
const CANCEL_RUNS: &str = "UPDATE eval_runs SET status = 'error', error_message = 'Task cancelled', \
     updated_at = $2, completed_at = $2 WHERE task_id = $1 AND status NOT IN ('done', 'error')";
const JUDGED_RUNS: &str = "SELECT r.task_id, r.agent, t.rubric, r.score, r.overall_score, r.passed, \
     r.unscored_reason, r.judged_at FROM eval_runs r JOIN eval_tasks t ON t.id = r.task_id \
     WHERE r.judged_at IS NOT NULL AND (($1 IS NULL AND $2 IS NULL) OR t.owner = $1 OR t.team_id = $2) \
     AND ($3 IS NULL OR r.judged_at >= $3) AND ($4 IS NULL OR r.judged_at < $4) ORDER BY r.judged_at, r.id";

macro_rules! sql_eval_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl EvalStore for $name {
            async fn create_task(&self, task: &TaskSpec, at: DateTime<Utc>) -> StoreResult<EvalTask> {
                let id = new_memory_id();
                let at_ms = to_millis(at);
                let scenario = task.scenario.as_ref().map(encode).transpose()?;
                let mut tx = self.pool.begin().await?;
                sqlx::query(INSERT_TASK)
                    .bind(&id)
                    .bind(&task.owner)
                    .bind(&task.team_id)
                    .bind(&task.org_id)
                    .bind(&task.project_id)
                    .bind(&task.created_by_email)
                    .bind(&task.created_by_name)
                    .bind(task.pr.as_ref().map(|pr| pr.url.clone()))
                    .bind(task.pr.as_ref().map(|pr| pr.repo.clone()))
                    .bind(task.pr.as_ref().map(|pr| pr.number))
                    .bind(&task.scenario_name)
                    .bind(scenario)
                    .bind(encode(&task.agents)?)
                    .bind(encode(&task.rubric)?)
                    .bind(encode(&task.rubric_thresholds)?)
                    .bind(task.max_files)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await?;
                for (position, agent) in task.agents.iter().enumerate() {
                    sqlx::query(INSERT_RUN)
                        .bind(new_memory_id())
                        .bind(&id)
                        .bind(position as i64)
                        .bind(agent)
                        .bind(at_ms)
                        .execute(&mut *tx)
                        .await?;
                }
                let row: TaskRow = sqlx::query_as(TASK).bind(&id).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                row.try_into()
            }

            async fn task(&self, id: &str) -> StoreResult<Option<EvalTask>> {
                let row: Option<TaskRow> = sqlx::query_as(TASK).bind(id).fetch_optional(&self.pool).await?;
                row.map(EvalTask::try_from).transpose()
            }

            async fn tasks(&self, query: &TaskQuery) -> StoreResult<(Vec<EvalTask>, i64)> {
                let status = query.status.map(TaskStatus::as_str);
                let rows: Vec<TaskRow> = sqlx::query_as(TASKS)
                    .bind(&query.scope.owner)
                    .bind(&query.scope.team_id)
                    .bind(status)
                    .bind(query.limit)
                    .bind(query.offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar(COUNT_TASKS)
                    .bind(&query.scope.owner)
                    .bind(&query.scope.team_id)
                    .bind(status)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((rows.into_iter().map(EvalTask::try_from).collect::<StoreResult<_>>()?, total))
            }

            async fn set_task_status(
                &self,
                id: &str,
                status: TaskStatus,
                error: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(SET_TASK_STATUS)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(error)
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_task_prepared(
                &self,
                id: &str,
                changed_files: &[String],
                prompt_hash: Option<&str>,
                scenario: &Value,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(SET_TASK_PREPARED)
                    .bind(id)
                    .bind(encode(&changed_files)?)
                    .bind(prompt_hash)
                    .bind(encode(scenario)?)
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_task_job(&self, id: &str, job_id: &str) -> StoreResult<()> {
                sqlx::query(SET_TASK_JOB).bind(id).bind(job_id).execute(&self.pool).await?;
                Ok(())
            }

            async fn runs(&self, task_id: &str) -> StoreResult<Vec<EvalRun>> {
                let rows: Vec<RunRow> = sqlx::query_as(RUNS).bind(task_id).fetch_all(&self.pool).await?;
                rows.into_iter().map(EvalRun::try_from).collect()
            }

            async fn run(&self, task_id: &str, agent: &str) -> StoreResult<Option<EvalRun>> {
                let row: Option<RunRow> =
                    sqlx::query_as(RUN).bind(task_id).bind(agent).fetch_optional(&self.pool).await?;
                row.map(EvalRun::try_from).transpose()
            }

            async fn update_run(
                &self,
                task_id: &str,
                agent: &str,
                update: &RunUpdate,
                at: DateTime<Utc>,
            ) -> StoreResult<Option<EvalRun>> {
                let json = |value: &Option<Value>| value.as_ref().map(encode).transpose();
                let row: Option<RunRow> = sqlx::query_as(UPDATE_RUN)
                    .bind(task_id)
                    .bind(agent)
                    .bind(update.status.map(RunStatus::as_str))
                    .bind(json(&update.milestones)?)
                    .bind(json(&update.artifacts)?)
                    .bind(json(&update.stats)?)
                    .bind(json(&update.qa)?)
                    .bind(&update.error_message)
                    .bind(&update.job_id)
                    .bind(to_millis(at))
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(EvalRun::try_from).transpose()
            }

            async fn judge_run(
                &self,
                task_id: &str,
                agent: &str,
                judgement: &RunJudgement,
                at: DateTime<Utc>,
            ) -> StoreResult<bool> {
                let (score, overall, passed, reason) = match judgement {
                    RunJudgement::Scored { score, overall_score, passed } => {
                        (Some(encode(score)?), Some(*overall_score), Some(*passed), None)
                    }
                    RunJudgement::Unscored { reason } => (None, None, None, Some(reason.as_str())),
                };
                let done = sqlx::query(JUDGE_RUN)
                    .bind(task_id)
                    .bind(agent)
                    .bind(score)
                    .bind(overall)
                    .bind(passed)
                    .bind(reason)
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn retry(
                &self,
                task_id: &str,
                agents: Option<&[String]>,
                at: DateTime<Utc>,
            ) -> StoreResult<Vec<EvalRun>> {
                let mut tx = self.pool.begin().await?;
                let named: Vec<String> = match agents {
                    Some(agents) => agents.to_vec(),
                    None => {
                        sqlx::query_scalar(
                            "SELECT agent FROM eval_runs WHERE task_id = $1 AND status = 'error'",
                        )
                        .bind(task_id)
                        .fetch_all(&mut *tx)
                        .await?
                    }
                };
                let mut queued = Vec::new();
                for agent in &named {
                    let row: Option<RunRow> = sqlx::query_as(RETRY_RUN)
                        .bind(task_id)
                        .bind(agent)
                        .bind(to_millis(at))
                        .bind(agents.is_some())
                        .fetch_optional(&mut *tx)
                        .await?;
                    if let Some(row) = row {
                        queued.push(EvalRun::try_from(row)?);
                    }
                }
                if !queued.is_empty() {
                    sqlx::query(REQUEUE_TASK).bind(task_id).bind(to_millis(at)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(queued)
            }

            async fn cancel(&self, task_id: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await?;
                let ended = sqlx::query(CANCEL_TASK)
                    .bind(task_id)
                    .bind(reason)
                    .bind(to_millis(at))
                    .execute(&mut *tx)
                    .await?;
                if ended.rows_affected() == 0 {
                    return Ok(false);
                }
                sqlx::query(CANCEL_RUNS).bind(task_id).bind(to_millis(at)).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn judged_runs(
                &self,
                scope: &TaskScope,
                since: Option<DateTime<Utc>>,
                until: Option<DateTime<Utc>>,
            ) -> StoreResult<Vec<JudgedRun>> {
                let rows: Vec<JudgedRow> = sqlx::query_as(JUDGED_RUNS)
                    .bind(&scope.owner)
                    .bind(&scope.team_id)
                    .bind(since.map(to_millis))
                    .bind(until.map(to_millis))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(JudgedRun::try_from).collect()
            }
        }
    };
}

sql_eval_store!(SqliteEvals, SqlitePool);
sql_eval_store!(PostgresEvals, PgPool);
