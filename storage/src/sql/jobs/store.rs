//! The SQL behind `JobStore`, written once for SQLite and PostgreSQL. Batches travel as one
//! JSON parameter that each database unpacks into rows (`json_each` on SQLite,
//! `jsonb_array_elements` on PostgreSQL), so a batch of any size is one statement.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::statements::{
    BY_IDEMPOTENCY_KEY, CANCEL, FAIL_DEAD, FAIL_RETRY, FINISH_CANCELLED, GET, INSERT_LOG, KIND_STATS,
    LAST_LOG_SEQ, LIST, LOGS, OLDEST_DUE, POSTGRES_BATCH_SQL, PROGRESS, REQUEUE_WORKER, RETRY,
    SQLITE_BATCH_SQL, TAKE_FOR_REDELIVERY,
};
use super::turns::{
    ANY_DUE, CAPPED_LOOKAHEAD, IN_TURN, IN_TURN_CAPPED, POSTGRES_TURN_SQL, SQLITE_TURN_SQL, WAITING_COUNT,
    take_and_park,
};
use super::{AttemptOutcome, Job, JobFilter, JobStatus, JobStore, KindStats, LogLine, MAX_PAGE, NewJob};
use crate::error::{StoreError, StoreResult};
use crate::ids::SYSTEM_OWNER;
use crate::sql::millis::{from_millis, to_millis};

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

/// One job of a batch insert, as the JSON the statement unpacks.
#[derive(Serialize)]
struct NewRow<'a> {
    id: &'a str,
    kind: &'a str,
    owner: &'a str,
    payload: &'a Value,
    max_attempts: i32,
    priority: i32,
    run_at: i64,
    parent_id: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    fair_seq: i64,
}

impl<'a> NewRow<'a> {
    fn new(job: &'a NewJob, fair_seq: i64) -> Self {
        Self {
            id: &job.id,
            kind: &job.kind,
            owner: &job.owner,
            payload: &job.payload,
            max_attempts: job.max_attempts,
            priority: job.priority,
            run_at: to_millis(job.run_at),
            parent_id: job.parent_id.as_deref(),
            idempotency_key: job.idempotency_key.as_deref(),
            fair_seq,
        }
    }
}

/// One success of a batch, as the JSON the statement unpacks.
#[derive(Serialize)]
struct Success<'a> {
    id: &'a str,
    result: &'a Value,
}

fn now_millis() -> i64 {
    to_millis(Utc::now())
}

fn log_rows(rows: Vec<(i64, i64, String, String)>) -> Vec<LogLine> {
    rows.into_iter().map(|(seq, at, level, line)| LogLine { seq, at: from_millis(at), level, line }).collect()
}

fn merge_stats(rows: Vec<(String, String, i64, i64)>) -> Vec<KindStats> {
    let mut stats: std::collections::BTreeMap<String, KindStats> = Default::default();
    for (kind, status, count, last_minute) in rows {
        let stat = stats.entry(kind.clone()).or_insert_with(|| KindStats { kind, ..Default::default() });
        match JobStatus::parse(&status) {
            Some(JobStatus::Queued) => stat.queued = count,
            Some(JobStatus::Running) => stat.running = count,
            Some(JobStatus::Failed) => stat.failed = count,
            Some(JobStatus::Dead) => stat.dead = count,
            Some(JobStatus::Succeeded) => {
                stat.succeeded_last_hour = count;
                stat.succeeded_last_minute = last_minute;
            }
            _ => {}
        }
    }
    stats.into_values().collect()
}

macro_rules! sql_job_store {
    ($name:ident, $pool:ty, $sql:ident, $turns:ident) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl JobStore for $name {
            async fn create(&self, job: NewJob) -> StoreResult<(Job, bool)> {
                let mut created = self.create_many(vec![job]).await?;
                Ok(created.pop().expect("one job in, one job out"))
            }

            async fn create_many(&self, jobs: Vec<NewJob>) -> StoreResult<Vec<(Job, bool)>> {
                let now = now_millis();
                // It reads (each owner's `fair_seq`) before it writes: on SQLite the write lock
                // is taken first, or a claim committing in between would fail the insert.
                let mut tx = self.pool.begin_with($turns.begin).await?;
                let mut next_seq: HashMap<(&str, &str, i32), i64> = HashMap::new();
                let mut rows: Vec<NewRow> = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    let key = (job.owner.as_str(), job.kind.as_str(), job.priority);
                    let seq = match next_seq.get(&key) {
                        Some(last) => last + 1,
                        None => {
                            sqlx::query_scalar($turns.base_seq)
                                .bind(&job.owner)
                                .bind(&job.kind)
                                .bind(job.priority)
                                .bind(now)
                                .fetch_one(&mut *tx)
                                .await?
                        }
                    };
                    next_seq.insert(key, seq);
                    rows.push(NewRow::new(job, seq));
                }
                let inserted: Vec<JobRow> =
                    sqlx::query_as($sql.insert_many).bind(Json(&rows)).bind(now).fetch_all(&mut *tx).await?;
                let mut inserted: HashMap<String, JobRow> =
                    inserted.into_iter().map(|row| (row.id.clone(), row)).collect();
                let mut out = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    match inserted.remove(&job.id) {
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

            async fn claim_next(
                &self,
                kind: &str,
                count: usize,
                worker_id: &str,
                max_running_per_owner: u64,
            ) -> StoreResult<Vec<Job>> {
                if count == 0 {
                    return Ok(Vec::new());
                }
                let now = now_millis();
                // Most empty deliveries (an owner at the cap holding the rest of the queue)
                // end here, without taking the write lock: a job that becomes claimable after
                // this look brings a delivery of its own.
                let any: Option<String> =
                    sqlx::query_scalar(ANY_DUE).bind(kind).bind(now).fetch_optional(&self.pool).await?;
                if any.is_none() {
                    return Ok(Vec::new());
                }
                let mut tx = self.pool.begin_with($turns.begin).await?;
                if let Some(lock) = $turns.lock {
                    sqlx::query(lock).bind(kind).execute(&mut *tx).await?;
                }
                let (take, park) = if max_running_per_owner == 0 {
                    let ids: Vec<String> = sqlx::query_scalar(IN_TURN)
                        .bind(kind)
                        .bind(now)
                        .bind(count as i64)
                        .fetch_all(&mut *tx)
                        .await?;
                    (ids, Vec::new())
                } else {
                    let candidates: Vec<(String, bool)> = sqlx::query_as(IN_TURN_CAPPED)
                        .bind(kind)
                        .bind(now)
                        .bind((count + CAPPED_LOOKAHEAD) as i64)
                        .bind(i64::try_from(max_running_per_owner).unwrap_or(i64::MAX))
                        .bind(SYSTEM_OWNER)
                        .fetch_all(&mut *tx)
                        .await?;
                    take_and_park(candidates, count)
                };
                let claimed: Vec<JobRow> = if take.is_empty() {
                    Vec::new()
                } else {
                    sqlx::query_as($sql.claim_many)
                        .bind(Json(&take))
                        .bind(worker_id)
                        .bind(now)
                        .fetch_all(&mut *tx)
                        .await?
                };
                if !park.is_empty() {
                    sqlx::query($turns.park).bind(Json(&park)).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                // RETURNING gives rows in table order; callers get them in turn.
                let mut claimed = jobs(claimed)?;
                claimed.sort_by_key(|job| take.iter().position(|id| *id == job.id));
                Ok(claimed)
            }

            async fn unpark(
                &self,
                owners: Option<&[String]>,
                max_running_per_owner: u64,
            ) -> StoreResult<Vec<Job>> {
                let owners: Vec<String> = match owners {
                    Some(owners) => owners.to_vec(),
                    None => sqlx::query_scalar($turns.parked_owners).fetch_all(&self.pool).await?,
                };
                let room = match max_running_per_owner {
                    0 => i64::MAX / 2,
                    cap => i64::try_from(cap).unwrap_or(i64::MAX / 2),
                };
                let mut unparked = Vec::new();
                for owner in owners {
                    let rows: Vec<JobRow> =
                        sqlx::query_as($turns.unpark).bind(&owner).bind(room).fetch_all(&self.pool).await?;
                    unparked.extend(jobs(rows)?);
                }
                Ok(unparked)
            }

            async fn claim_parked(
                &self,
                owner: &str,
                kinds: &[&str],
                worker_id: &str,
                max_running_per_owner: u64,
            ) -> StoreResult<Option<Job>> {
                let room = i64::try_from(max_running_per_owner).unwrap_or(i64::MAX / 2);
                let row: Option<JobRow> = sqlx::query_as($turns.claim_parked)
                    .bind(owner)
                    .bind(worker_id)
                    .bind(now_millis())
                    .bind(Json(kinds))
                    .bind(room)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(Job::try_from).transpose()
            }

            async fn waiting_count(&self, owner: &str) -> StoreResult<u64> {
                let count: i64 = sqlx::query_scalar(WAITING_COUNT).bind(owner).fetch_one(&self.pool).await?;
                Ok(count.max(0) as u64)
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

            async fn finish_attempts(
                &self,
                worker_id: &str,
                outcomes: &[(String, AttemptOutcome)],
            ) -> StoreResult<Vec<bool>> {
                let now = now_millis();
                let successes: Vec<Success> = outcomes
                    .iter()
                    .filter_map(|(id, outcome)| match outcome {
                        AttemptOutcome::Succeeded(result) => Some(Success { id, result }),
                        _ => None,
                    })
                    .collect();
                let mut recorded: HashSet<String> = HashSet::new();
                let mut tx = self.pool.begin().await?;
                if !successes.is_empty() {
                    let ids: Vec<String> = sqlx::query_scalar($sql.succeed_many)
                        .bind(worker_id)
                        .bind(now)
                        .bind(Json(&successes))
                        .fetch_all(&mut *tx)
                        .await?;
                    recorded.extend(ids);
                }
                for (id, outcome) in outcomes {
                    let query = match outcome {
                        AttemptOutcome::Succeeded(_) => continue,
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
                    if query.execute(&mut *tx).await?.rows_affected() == 1 {
                        recorded.insert(id.clone());
                    }
                }
                tx.commit().await?;
                Ok(outcomes.iter().map(|(id, _)| recorded.contains(id)).collect())
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

            async fn take_for_redelivery(
                &self,
                due_before: DateTime<Utc>,
                limit: u32,
            ) -> StoreResult<Vec<Job>> {
                let rows: Vec<JobRow> = sqlx::query_as(TAKE_FOR_REDELIVERY)
                    .bind(to_millis(due_before))
                    .bind(now_millis())
                    .bind(i64::from(limit.min(MAX_PAGE)))
                    .fetch_all(&self.pool)
                    .await?;
                let mut taken = jobs(rows)?;
                taken.sort_by_key(|job| job.run_at);
                Ok(taken)
            }

            async fn oldest_due(&self, now: DateTime<Utc>) -> StoreResult<Vec<(String, DateTime<Utc>)>> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as(OLDEST_DUE).bind(to_millis(now)).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(|(kind, due)| (kind, from_millis(due))).collect())
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
                let minute_ago = to_millis(now - chrono::Duration::minutes(1));
                let hour_ago = to_millis(now - chrono::Duration::hours(1));
                let rows: Vec<(String, String, i64, i64)> =
                    sqlx::query_as(KIND_STATS).bind(minute_ago).bind(hour_ago).fetch_all(&self.pool).await?;
                let mut stats = merge_stats(rows);
                for (kind, due) in self.oldest_due(now).await? {
                    let age = ((now - due).num_milliseconds().max(0) as f64) / 1000.0;
                    match stats.iter_mut().find(|s| s.kind == kind) {
                        Some(stat) => stat.oldest_due_age_secs = Some(age),
                        None => stats.push(KindStats {
                            kind,
                            oldest_due_age_secs: Some(age),
                            ..Default::default()
                        }),
                    }
                }
                Ok(stats)
            }
        }
    };
}

sql_job_store!(SqliteJobs, SqlitePool, SQLITE_BATCH_SQL, SQLITE_TURN_SQL);
sql_job_store!(PostgresJobs, PgPool, POSTGRES_BATCH_SQL, POSTGRES_TURN_SQL);
