//! Engram's own job records and their log lines, on SQLite and PostgreSQL: the one view the
//! API and the dashboard read, whichever queue delivers the jobs. Every state change is a
//! conditional statement, so two processes never both move the same job. Creating, claiming
//! and finishing take batches, so a busy worker pays one statement for many jobs.
//!
//! A delivery names a kind, not a job: the worker claims the kind's next due jobs in turn
//! (priority, then `fair_seq`, which interleaves owners), so one owner's backlog never holds
//! back another owner's job, and an owner at the running cap waits for room.

mod statements;
mod store;
mod turns;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::store::{PostgresJobs, SqliteJobs};
use crate::error::StoreResult;

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
    /// How long the longest-waiting due job (not parked) has waited for a worker, in seconds.
    pub oldest_due_age_secs: Option<f64>,
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

    /// Creates many jobs in one statement, in order; an idempotency key already used (also
    /// earlier in the same batch) returns the existing job in its place.
    async fn create_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<(Job, bool)>>;

    async fn get(&self, id: &str) -> StoreResult<Option<Job>>;

    async fn list(&self, filter: &JobFilter) -> StoreResult<Vec<Job>>;

    /// Moves up to `count` due jobs of `kind` to `running` for `worker_id`, counting their
    /// attempts: the highest priority first, then in turn across owners (`fair_seq`), passing
    /// over owners with `max_running_per_owner` jobs running (0: no cap). Claims of one kind
    /// run one at a time, so a claim never misses a job another claim is about to leave.
    ///
    /// Due jobs the cap passed over are parked: out of turn until their owner has room,
    /// when `claim_parked` or `unpark` hands them out again.
    async fn claim_next(
        &self,
        kind: &str,
        count: usize,
        worker_id: &str,
        max_running_per_owner: u64,
    ) -> StoreResult<Vec<Job>>;

    /// Claims `owner`'s next parked job of one of `kinds` for `worker_id` when the owner has
    /// room under `max_running_per_owner`: the slot one of its attempts just left runs it,
    /// with no delivery in between.
    async fn claim_parked(
        &self,
        owner: &str,
        kinds: &[&str],
        worker_id: &str,
        max_running_per_owner: u64,
    ) -> StoreResult<Option<Job>>;

    /// Takes parked jobs of `owners` (every owner when `None`) out of parking, as many per
    /// owner as it has room for under `max_running_per_owner`; returns them, to be delivered.
    async fn unpark(&self, owners: Option<&[String]>, max_running_per_owner: u64) -> StoreResult<Vec<Job>>;

    /// Jobs of `owner` waiting to run: queued, or failed and awaiting a retry.
    async fn waiting_count(&self, owner: &str) -> StoreResult<u64>;

    async fn set_progress(&self, id: &str, progress: i32, message: Option<&str>) -> StoreResult<()>;

    /// Records how attempts `worker_id` ran ended, in one transaction (successes in one
    /// statement). Per outcome, `false` when that job is no longer running under that worker
    /// (it was re-queued meanwhile): that outcome is dropped.
    async fn finish_attempts(
        &self,
        worker_id: &str,
        outcomes: &[(String, AttemptOutcome)],
    ) -> StoreResult<Vec<bool>>;

    /// `finish_attempts` of one attempt.
    async fn finish_attempt(&self, id: &str, worker_id: &str, outcome: AttemptOutcome) -> StoreResult<bool> {
        let recorded = self.finish_attempts(worker_id, &[(id.to_string(), outcome)]).await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }

    /// Cancels a queued or failed job at once, or asks a running one to stop.
    async fn cancel(&self, id: &str) -> StoreResult<Option<Job>>;

    /// Puts a failed, dead or cancelled job back in the queue with at least one attempt left.
    async fn retry(&self, id: &str) -> StoreResult<Option<Job>>;

    /// Puts jobs running under `worker_id` back in the queue; returns them.
    async fn requeue_worker_jobs(&self, worker_id: &str) -> StoreResult<Vec<Job>>;

    /// Waiting jobs (not parked) due before `due_before` and not re-delivered since they fell
    /// due, oldest first, marked as re-delivered now: however many sweeps call this at once,
    /// each due time of a job is returned once (the watchdog's re-push).
    async fn take_for_redelivery(&self, due_before: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Job>>;

    /// Per kind with a due job waiting for a delivery (not parked), when the longest-waiting
    /// one fell due.
    async fn oldest_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<(String, DateTime<Utc>)>>;

    async fn append_logs(&self, id: &str, lines: &[LogLine]) -> StoreResult<()>;

    async fn logs(&self, id: &str, after_seq: i64, limit: u32) -> StoreResult<Vec<LogLine>>;

    async fn last_log_seq(&self, id: &str) -> StoreResult<i64>;

    async fn kind_stats(&self, now: DateTime<Utc>) -> StoreResult<Vec<KindStats>>;
}

/// Largest page `list` and `logs` return.
pub(super) const MAX_PAGE: u32 = 1000;
