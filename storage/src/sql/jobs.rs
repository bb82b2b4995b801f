//! Engram's own job records and their log lines, on SQLite and PostgreSQL: the one view the
//! API and the dashboard read, whichever queue delivers the jobs. Every state change is one
//! conditional statement, so two processes never both move the same job.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::{StoreError, StoreResult};

/// Where a job is in its life: `queued → running → succeeded | failed → … | dead | cancelled`.
/// `failed` means an attempt failed and another is scheduled at `run_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// No further change happens to a job in this status without a manual retry.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: String,
    pub kind: String,
    pub owner: String,
    pub payload: Value,
    pub status: JobStatus,
    pub attempt: i32,
    pub max_attempts: i32,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub progress: i32,
    pub progress_message: Option<String>,
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub cancel_requested: bool,
    pub worker_id: Option<String>,
    pub parent_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub kind: String,
    pub owner: String,
    pub payload: Value,
    pub max_attempts: i32,
    pub priority: i32,
    pub run_at: DateTime<Utc>,
    pub parent_id: Option<String>,
    pub idempotency_key: Option<String>,
}

/// Which jobs `list` returns: newest first, before `before_id` (the cursor).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub owner: Option<String>,
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    pub before_id: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub level: String,
    pub line: String,
}

/// Counts for one job kind, as `GET /api/v1/queues` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KindStats {
    pub kind: String,
    pub queued: i64,
    pub running: i64,
    pub failed: i64,
    pub dead: i64,
    pub succeeded_last_minute: i64,
    pub succeeded_last_hour: i64,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    Succeeded(Value),
    /// Failed; retried at `retry_at` when given, otherwise the job is dead.
    Failed {
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Stopped because cancellation was requested.
    Cancelled,
}

#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates the job, or returns the existing one with the same owner and idempotency key
    /// (`false` in the tuple).
    async fn create(&self, job: NewJob) -> StoreResult<(Job, bool)>;

    /// Creates many jobs in one transaction; an idempotency key already used returns the
    /// existing job in its place.
    async fn create_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<(Job, bool)>>;

    async fn get(&self, id: &str) -> StoreResult<Option<Job>>;

    async fn list(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;

    /// Moves a queued or failed job to `running` for `worker_id` and counts the attempt.
    /// `None` when the job is not claimable (gone, cancelled, already running or done).
    async fn claim(&self, id: &str, worker_id: &str) -> StoreResult<Option<Job>>;

    async fn set_progress(&self, id: &str, progress: i32, message: Option<&str>) -> StoreResult<()>;

    /// Records how the attempt `worker_id` ran ended. `false` when the job is no longer
    /// running under that worker (it was re-queued meanwhile): the outcome is dropped.
    async fn finish_attempt(&self, id: &str, worker_id: &str, outcome: AttemptOutcome) -> StoreResult<bool>;

    /// Cancels a queued or failed job at once, or asks a running one to stop.
    async fn cancel(&self, id: &str) -> StoreResult<Option<Job>>;

    /// Puts a failed, dead or cancelled job back in the queue with at least one attempt left.
    async fn retry(&self, id: &str) -> StoreResult<Option<Job>>;

    /// Puts jobs running under `worker_id` back in the queue; returns them.
    async fn requeue_worker_jobs(&self, worker_id: &str) -> StoreResult<Vec<Job>>;

    /// Queued or failed jobs due before `due_before`, oldest first (for re-delivery sweeps).
    async fn due_jobs(&self, due_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Job>>;

    async fn append_logs(&self, id: &str, lines: &[LogLine]) -> StoreResult<()>;

    async fn logs(&self, id: &str, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>>;

    async fn last_log_seq(&self, id: &str) -> StoreResult<i64>;

    async fn kind_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<KindStats>>;
}

/// Largest page `list` and `logs` return.
pub const MAX_PAGE: u32 = 1000;

#[derive(FromRow)]
struct JobRow {
    id: String,
    kind: String,
    owner: String,
    payload: Json<Value>,
    status: String,
    attempt: i32,
    max_attempts: i32,
    priority: i32,
    run_at: i64,
    progress: i32,
    progress_message: Option<String>,
    result: Option<Json<Value>>,
    last_error: Option<String>,
    cancel_requested: bool,
    worker_id: Option<String>,
    parent_id: Option<String>,
    idempotency_key: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    updated_at: i64,
}

impl TryFrom<JobRow> for Job {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self, StoreError> {
        let status = JobStatus::parse(&row.status).ok_or_else(|| {
            StoreError::backend("database", anyhow::anyhow!("unknown job status {:?}", row.status))
        })?;
        Ok(Job {
            id: row.id,
            kind: row.kind,
            owner: row.owner,
            payload: row.payload.0,
            status,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            priority: row.priority,
            run_at: from_millis(row.run_at),
            progress: row.progress,
            progress_message: row.progress_message,
            result: row.result.map(|r| r.0),
            last_error: row.last_error,
            cancel_requested: row.cancel_requested,
            worker_id: row.worker_id,
            parent_id: row.parent_id,
            idempotency_key: row.idempotency_key,
            created_at: from_millis(row.created_at),
            started_at: row.started_at.map(from_millis),
            finished_at: row.finished_at.map(from_millis),
            updated_at: from_millis(row.updated_at),
        })
    }
}

fn jobs(rows: Vec<JobRow>) -> StoreResult<Vec<Job>> {
    rows.into_iter().map(Job::try_from).collect()
}

const INSERT: &str = "INSERT INTO jobs (id, kind, owner, payload, status, max_attempts, priority, run_at, \
     parent_id, idempotency_key, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $10) \
     ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING *";
const BY_IDEMPOTENCY_KEY: &str = "SELECT * FROM jobs WHERE owner = $1 AND idempotency_key = $2";
const GET: &str = "SELECT * FROM jobs WHERE id = $1";
const LIST: &str = "SELECT * FROM jobs WHERE ($1 IS NULL OR owner = $1) AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5";
const CLAIM: &str = "UPDATE jobs SET status = 'running', attempt = attempt + 1, worker_id = $2, \
     started_at = $3, updated_at = $3, progress = 0, progress_message = NULL \
     WHERE id = $1 AND status IN ('queued', 'failed') AND NOT cancel_requested RETURNING *";
const PROGRESS: &str = "UPDATE jobs SET progress = $2, progress_message = $3, updated_at = $4 \
     WHERE id = $1 AND status = 'running'";
const SUCCEED: &str = "UPDATE jobs SET status = 'succeeded', result = $3, progress = 100, finished_at = $4, \
     updated_at = $4, last_error = NULL WHERE id = $1 AND worker_id = $2 AND status = 'running'";
const FAIL_RETRY: &str = "UPDATE jobs SET status = 'failed', last_error = $3, run_at = $4, updated_at = $5, \
     worker_id = NULL WHERE id = $1 AND worker_id = $2 AND status = 'running'";
const FAIL_DEAD: &str = "UPDATE jobs SET status = 'dead', last_error = $3, finished_at = $4, updated_at = $4 \
     WHERE id = $1 AND worker_id = $2 AND status = 'running'";
const FINISH_CANCELLED: &str = "UPDATE jobs SET status = 'cancelled', finished_at = $3, updated_at = $3 \
     WHERE id = $1 AND worker_id = $2 AND status = 'running'";
const CANCEL: &str = "UPDATE jobs SET \
     status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END, \
     finished_at = CASE WHEN status = 'running' THEN finished_at ELSE $2 END, \
     cancel_requested = TRUE, updated_at = $2 \
     WHERE id = $1 AND status IN ('queued', 'failed', 'running') RETURNING *";
const RETRY: &str = "UPDATE jobs SET status = 'queued', run_at = $2, updated_at = $2, finished_at = NULL, \
     cancel_requested = FALSE, worker_id = NULL, \
     max_attempts = CASE WHEN max_attempts > attempt THEN max_attempts ELSE attempt + 1 END \
     WHERE id = $1 AND status IN ('failed', 'dead', 'cancelled') RETURNING *";
const REQUEUE_WORKER: &str = "UPDATE jobs SET status = 'queued', worker_id = NULL, updated_at = $2, \
     last_error = 'its worker stopped before the attempt finished' \
     WHERE worker_id = $1 AND status = 'running' RETURNING *";
const DUE: &str = "SELECT * FROM jobs WHERE status IN ('queued', 'failed') AND run_at <= $1 \
     AND NOT cancel_requested ORDER BY run_at LIMIT $2";
const INSERT_LOG: &str = "INSERT INTO job_logs (job_id, seq, at, level, line) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (job_id, seq) DO NOTHING";
const LOGS: &str = "SELECT seq, at, level, line FROM job_logs WHERE job_id = $1 AND seq > $2 \
     ORDER BY seq LIMIT $3";
const LAST_LOG_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM job_logs WHERE job_id = $1";
const STATUS_COUNTS: &str = "SELECT kind, status, COUNT(*) FROM jobs \
     WHERE status IN ('queued', 'running', 'failed', 'dead') GROUP BY kind, status";
const RECENT_SUCCESSES: &str = "SELECT kind, \
     SUM(CASE WHEN finished_at >= $1 THEN 1 ELSE 0 END), COUNT(*) FROM jobs \
     WHERE status = 'succeeded' AND finished_at >= $2 GROUP BY kind";

fn now_millis() -> i64 {
    to_millis(Utc::now())
}

fn log_rows(rows: Vec<(i64, i64, String, String)>) -> Vec<LogLine> {
    rows.into_iter().map(|(seq, at, level, line)| LogLine { seq, at: from_millis(at), level, line }).collect()
}

fn merge_stats(counts: Vec<(String, String, i64)>, recent: Vec<(String, i64, i64)>) -> Vec<KindStats> {
    let mut stats: std::collections::BTreeMap<String, KindStats> = Default::default();
    for (kind, status, count) in counts {
        let stat = stats.entry(kind.clone()).or_insert_with(|| KindStats { kind, ..Default::default() });
        match JobStatus::parse(&status) {
            Some(JobStatus::Queued) => stat.queued = count,
            Some(JobStatus::Running) => stat.running = count,
            Some(JobStatus::Failed) => stat.failed = count,
            Some(JobStatus::Dead) => stat.dead = count,
            _ => {}
        }
    }
    for (kind, last_minute, last_hour) in recent {
        let stat = stats.entry(kind.clone()).or_insert_with(|| KindStats { kind, ..Default::default() });
        stat.succeeded_last_minute = last_minute;
        stat.succeeded_last_hour = last_hour;
    }
    stats.into_values().collect()
}

macro_rules! sql_job_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl JobStore for $name {
            async fn create(&self, job: NewJob) -> StoreResult<(Job, bool)> {
                let mut created = self.create_many(vec![job]).await?;
                Ok(created.pop().expect("one job in, one job out"))
            }

            async fn create_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<(Job, bool)>> {
                let now = now_millis();
                let mut tx = self.pool.begin().await?;
                let mut out = Vec::with_capacity(jobs.len());
                for job in jobs {
                    let inserted: Option<JobRow> = sqlx::query_as(INSERT)
                        .bind(&job.id)
                        .bind(&job.kind)
                        .bind(&job.owner)
                        .bind(Json(&job.payload))
                        .bind(job.max_attempts)
                        .bind(job.priority)
                        .bind(to_millis(job.run_at))
                        .bind(&job.parent_id)
                        .bind(&job.idempotency_key)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                    match inserted {
                        Some(row) => out.push((Job::try_from(row)?, true)),
                        None => {
                            let existing: JobRow = sqlx::query_as(BY_IDEMPOTENCY_KEY)
                                .bind(&job.owner)
                                .bind(&job.idempotency_key)
                                .fetch_one(&mut *tx)
                                .await?;
                            out.push((Job::try_from(existing)?, false));
                        }
                    }
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn get(&self, id: &str) -> StoreResult<Option<Job>> {
                let row: Option<JobRow> = sqlx::query_as(GET).bind(id).fetch_optional(&self.pool).await?;
                row.map(Job::try_from).transpose()
            }

            async fn list(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
                let rows: Vec<JobRow> = sqlx::query_as(LIST)
                    .bind(&filter.owner)
                    .bind(filter.status.map(JobStatus::as_str))
                    .bind(&filter.kind)
                    .bind(&filter.before_id)
                    .bind(i64::from(filter.limit.min(MAX_PAGE)))
                    .fetch_all(&self.pool)
                    .await?;
                jobs(rows)
            }

            async fn claim(&self, id: &str, worker_id: &str) -> StoreResult<Option<Job>> {
                let row: Option<JobRow> = sqlx::query_as(CLAIM)
                    .bind(id)
                    .bind(worker_id)
                    .bind(now_millis())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(Job::try_from).transpose()
            }

            async fn set_progress(&self, id: &str, progress: i32, message: Option<&str>) -> StoreResult<()> {
                sqlx::query(PROGRESS)
                    .bind(id)
                    .bind(progress.clamp(0, 100))
                    .bind(message)
                    .bind(now_millis())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn finish_attempt(
                &self,
                id: &str,
                worker_id: &str,
                outcome: AttemptOutcome,
            ) -> StoreResult<bool> {
                let now = now_millis();
                let query = match &outcome {
                    AttemptOutcome::Succeeded(result) => {
                        sqlx::query(SUCCEED).bind(id).bind(worker_id).bind(Json(result)).bind(now)
                    }
                    AttemptOutcome::Failed { error, retry_at: Some(at) } => sqlx::query(FAIL_RETRY)
                        .bind(id)
                        .bind(worker_id)
                        .bind(error)
                        .bind(to_millis(*at))
                        .bind(now),
                    AttemptOutcome::Failed { error, retry_at: None } => {
                        sqlx::query(FAIL_DEAD).bind(id).bind(worker_id).bind(error).bind(now)
                    }
                    AttemptOutcome::Cancelled => {
                        sqlx::query(FINISH_CANCELLED).bind(id).bind(worker_id).bind(now)
                    }
                };
                Ok(query.execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn cancel(&self, id: &str) -> StoreResult<Option<Job>> {
                let row: Option<JobRow> =
                    sqlx::query_as(CANCEL).bind(id).bind(now_millis()).fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => Ok(Some(Job::try_from(row)?)),
                    None => self.get(id).await,
                }
            }

            async fn retry(&self, id: &str) -> StoreResult<Option<Job>> {
                let row: Option<JobRow> =
                    sqlx::query_as(RETRY).bind(id).bind(now_millis()).fetch_optional(&self.pool).await?;
                row.map(Job::try_from).transpose()
            }

            async fn requeue_worker_jobs(&self, worker_id: &str) -> StoreResult<Vec<Job>> {
                let rows: Vec<JobRow> = sqlx::query_as(REQUEUE_WORKER)
                    .bind(worker_id)
                    .bind(now_millis())
                    .fetch_all(&self.pool)
                    .await?;
                jobs(rows)
            }

            async fn due_jobs(&self, due_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Job>> {
                let rows: Vec<JobRow> = sqlx::query_as(DUE)
                    .bind(to_millis(due_before))
                    .bind(i64::from(limit.min(MAX_PAGE)))
                    .fetch_all(&self.pool)
                    .await?;
                jobs(rows)
            }

            async fn append_logs(&self, id: &str, lines: &[LogLine]) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for line in lines {
                    sqlx::query(INSERT_LOG)
                        .bind(id)
                        .bind(line.seq)
                        .bind(to_millis(line.at))
                        .bind(&line.level)
                        .bind(&line.line)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn logs(&self, id: &str, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>> {
                let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(LOGS)
                    .bind(id)
                    .bind(after_seq)
                    .bind(i64::from(limit.min(MAX_PAGE)))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(log_rows(rows))
            }

            async fn last_log_seq(&self, id: &str) -> StoreResult<i64> {
                Ok(sqlx::query_scalar(LAST_LOG_SEQ).bind(id).fetch_one(&self.pool).await?)
            }

            async fn kind_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<KindStats>> {
                let counts: Vec<(String, String, i64)> =
                    sqlx::query_as(STATUS_COUNTS).fetch_all(&self.pool).await?;
                let minute_ago = to_millis(now - chrono::Duration::minutes(1));
                let hour_ago = to_millis(now - chrono::Duration::hours(1));
                let recent: Vec<(String, i64, i64)> = sqlx::query_as(RECENT_SUCCESSES)
                    .bind(minute_ago)
                    .bind(hour_ago)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(merge_stats(counts, recent))
            }
        }
    };
}

sql_job_store!(SqliteJobs, SqlitePool);
sql_job_store!(PostgresJobs, PgPool);
