//! Worker processes and their heartbeats, on SQLite and PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: i32,
    pub kinds: Vec<String>,
    pub concurrency: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub stopping: bool,
    /// Jobs running under this worker right now.
    pub running_jobs: Vec<String>,
    /// What the worker last reported of each kind's consumer (at its last heartbeat).
    pub consumers: Vec<ConsumerLiveness>,
}

/// How one kind's consumer in a worker process is doing: whether it runs, when it last asked
/// the queue for work, and how often it was restarted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerLiveness {
    pub kind: String,
    /// `false` while the consumer is being restarted.
    pub alive: bool,
    /// The last time it asked the queue for a task (on Redis, the older of the kind's two
    /// lanes).
    pub last_fetch_at: Option<DateTime<Utc>>,
    /// Deliveries it is running now.
    pub in_flight: u32,
    /// Times it was restarted since the process started.
    pub restarts: u64,
    /// Why it was last restarted.
    pub last_error: Option<String>,
}

#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Records a worker (again) as alive now.
    async fn register(&self, worker: &WorkerRecord) -> StoreResult<()>;

    /// Records the worker as alive now, with its consumers' state; `false` when the worker's
    /// row is gone (it was declared dead): it must re-register.
    async fn heartbeat(&self, id: &str, stopping: bool, consumers: &[ConsumerLiveness]) -> StoreResult<bool>;

    async fn list(&self) -> StoreResult<Vec<WorkerRecord>>;

    /// Workers not seen since `before`.
    async fn stale(&self, before: DateTime<Utc>) -> StoreResult<Vec<String>>;

    async fn remove(&self, id: &str) -> StoreResult<()>;
}

#[derive(FromRow)]
struct WorkerRow {
    id: String,
    host: String,
    pid: i32,
    kinds: Json<Vec<String>>,
    concurrency: i32,
    started_at: i64,
    last_seen: i64,
    stopping: bool,
    consumers: Json<Vec<ConsumerLiveness>>,
}

const REGISTER: &str = "INSERT INTO workers (id, host, pid, kinds, concurrency, started_at, last_seen, stopping, \
     consumers) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
     last_seen = excluded.last_seen, stopping = excluded.stopping, consumers = excluded.consumers";
const HEARTBEAT: &str = "UPDATE workers SET last_seen = $2, stopping = $3, consumers = $4 WHERE id = $1";
const LIST: &str = "SELECT * FROM workers ORDER BY started_at, id";
const RUNNING: &str =
    "SELECT worker_id, id FROM jobs WHERE status = 'running' AND worker_id IS NOT NULL ORDER BY id";
const STALE: &str = "SELECT id FROM workers WHERE last_seen < $1";
const REMOVE: &str = "DELETE FROM workers WHERE id = $1";

fn records(rows: Vec<WorkerRow>, running: Vec<(String, String)>) -> Vec<WorkerRecord> {
    rows.into_iter()
        .map(|row| WorkerRecord {
            running_jobs: running.iter().filter(|(w, _)| *w == row.id).map(|(_, job)| job.clone()).collect(),
            id: row.id,
            host: row.host,
            pid: row.pid,
            kinds: row.kinds.0,
            concurrency: row.concurrency,
            started_at: from_millis(row.started_at),
            last_seen: from_millis(row.last_seen),
            stopping: row.stopping,
            consumers: row.consumers.0,
        })
        .collect()
}

macro_rules! sql_worker_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl WorkerStore for $name {
            async fn register(&self, worker: &WorkerRecord) -> StoreResult<()> {
                sqlx::query(REGISTER)
                    .bind(&worker.id)
                    .bind(&worker.host)
                    .bind(worker.pid)
                    .bind(Json(&worker.kinds))
                    .bind(worker.concurrency)
                    .bind(to_millis(worker.started_at))
                    .bind(to_millis(Utc::now()))
                    .bind(worker.stopping)
                    .bind(Json(&worker.consumers))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn heartbeat(
                &self,
                id: &str,
                stopping: bool,
                consumers: &[ConsumerLiveness],
            ) -> StoreResult<bool> {
                let result = sqlx::query(HEARTBEAT)
                    .bind(id)
                    .bind(to_millis(Utc::now()))
                    .bind(stopping)
                    .bind(Json(consumers))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn list(&self) -> StoreResult<Vec<WorkerRecord>> {
                let rows: Vec<WorkerRow> = sqlx::query_as(LIST).fetch_all(&self.pool).await?;
                let running: Vec<(String, String)> = sqlx::query_as(RUNNING).fetch_all(&self.pool).await?;
                Ok(records(rows, running))
            }

            async fn stale(&self, before: DateTime<Utc>) -> StoreResult<Vec<String>> {
                Ok(sqlx::query_scalar(STALE).bind(to_millis(before)).fetch_all(&self.pool).await?)
            }

            async fn remove(&self, id: &str) -> StoreResult<()> {
                sqlx::query(REMOVE).bind(id).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

sql_worker_store!(SqliteWorkers, SqlitePool);
sql_worker_store!(PostgresWorkers, PgPool);
