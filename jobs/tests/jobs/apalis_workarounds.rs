//! Regression tests for Engram's workarounds of apalis 1.0.0 defects (INFRA.md), so an apalis
//! upgrade that changes the behaviour they rely on is caught. The behavioural ones (timeouts
//! and panics never leave a job running, retry backoff, cross-process wake-up, one firing per
//! cron tick, the 20,000-job Redis backlog) run over HTTP in `api/tests/api`.

use chrono::Utc;
use jobs::delivery::{Delivery, DeliveryTask, QueueBackend};
use storage::config::{Config, RawConfig};
use storage::sql::{Database, open_sqlite};

fn task(kind: &str) -> DeliveryTask {
    DeliveryTask { job_id: storage::ids::new_id(), kind: kind.into(), run_at: Utc::now(), priority: 0 }
}

/// Defect 1 (the ack slowdown index) and the migration-table clash on SQLite.
#[tokio::test]
async fn sqlite_queue_drops_lidx_and_keeps_its_migrations_apart() {
    let dir = tempfile::tempdir().unwrap();
    let queue_pool = open_sqlite(&dir.path().join("engram.queue.db")).await.unwrap();
    let queue = QueueBackend::Sqlite(queue_pool.clone());
    queue.setup().await.unwrap();
    queue.setup().await.unwrap();
    let lidx: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'LIdx'")
            .fetch_one(&queue_pool)
            .await
            .unwrap();
    assert_eq!(lidx, 0, "LIdx makes every ack scan all finished tasks");
    let tracked: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM _apalis_migrations").fetch_one(&queue_pool).await.unwrap();
    assert!(tracked > 0);
    queue.push(&[task("noop")]).await.unwrap();
}

/// apalis-postgres' migrations run on a server without pgcrypto, tracked in its own schema.
#[tokio::test]
async fn postgres_queue_sets_up_beside_engrams_migrations() {
    let Some(url) = storage::testing::fresh_postgres_url().await else { return };
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    let database = Database::connect(&config.backends.database).await.unwrap();
    let Database::Postgres(pool) = &database else { unreachable!() };
    let queue = QueueBackend::Postgres(pool.clone());
    queue.setup().await.unwrap();
    queue.setup().await.unwrap();
    database.migrate().await.expect("Engram's migrator does not see apalis' history");
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'apalis' AND tablename = 'jobs'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(tables, 1);
    queue.push(&[task("noop")]).await.unwrap();
}

/// Defect 1 on PostgreSQL: with an index on `lock_by` alone the planner made each ack read
/// every task its worker ever ran. Only a partial index over in-flight tasks may remain, and
/// the duplicate of the primary key that every ack also wrote is gone.
#[tokio::test]
async fn postgres_queue_has_no_index_over_every_task_of_a_worker() {
    let Some(url) = storage::testing::fresh_postgres_url().await else { return };
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    let Database::Postgres(pool) = Database::connect(&config.backends.database).await.unwrap() else {
        unreachable!()
    };
    let queue = QueueBackend::Postgres(pool.clone());
    let (first, second) = tokio::join!(queue.setup(), queue.setup());
    first.and(second).expect("two processes may set up at once");
    let lock_by_indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'apalis' AND tablename = 'jobs' \
         AND indexdef LIKE '%(lock_by)%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!lock_by_indexes.is_empty(), "orphan recovery keeps an index of in-flight tasks");
    for (name, definition) in lock_by_indexes {
        assert!(definition.contains("WHERE"), "{name} indexes every task by worker: {definition}");
    }
    let on_id_alone: Vec<String> = sqlx::query_scalar(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'apalis' AND tablename = 'jobs' \
         AND indexdef LIKE '%(id)'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(on_id_alone, ["jobs_pkey"], "one index on the task id, written on every ack");
}

/// Defect 2: pushes are chunked and promoted so the scheduled set never holds a huge due set.
#[tokio::test]
async fn redis_pushes_leave_no_due_backlog_in_the_scheduled_set() {
    let Some(url) = storage::testing::redis_url() else { return };
    let prefix = format!("test-{}", ulid::Ulid::generate());
    let manager = redis::Client::open(url).unwrap().get_connection_manager().await.unwrap();
    let queue = QueueBackend::Redis(manager.clone(), prefix.clone());
    let tasks: Vec<DeliveryTask> = (0..9000).map(|_| task("noop")).collect();
    queue.push(&tasks).await.unwrap();
    let mut connection = manager.clone();
    let scheduled: i64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}:noop:scheduled"))
        .query_async(&mut connection)
        .await
        .unwrap();
    let active: i64 =
        redis::cmd("LLEN").arg(format!("{prefix}:noop:active")).query_async(&mut connection).await.unwrap();
    assert_eq!((scheduled, active), (0, 9000));
    let later = DeliveryTask { run_at: Utc::now() + chrono::Duration::seconds(60), ..task("noop") };
    queue.push(&[later]).await.unwrap();
    let scheduled: i64 = redis::cmd("ZCARD")
        .arg(format!("{prefix}:noop:scheduled"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(scheduled, 1, "a delayed task waits in the scheduled set");
}

/// apalis keeps finished deliveries forever; the vacuum removes them on every backend.
#[tokio::test]
async fn finished_deliveries_are_vacuumed() {
    use std::time::Duration;
    let kinds = vec!["noop".to_string()];

    let dir = tempfile::tempdir().unwrap();
    let pool = open_sqlite(&dir.path().join("engram.queue.db")).await.unwrap();
    let queue = QueueBackend::Sqlite(pool.clone());
    queue.setup().await.unwrap();
    queue.push(&[task("noop"), task("noop")]).await.unwrap();
    sqlx::query("UPDATE Jobs SET status = 'Done', run_at = 0 WHERE rowid = (SELECT MIN(rowid) FROM Jobs)")
        .execute(&pool)
        .await
        .unwrap();
    // apalis-sqlite's count includes its VACUUM statement: check the rows instead.
    assert!(queue.vacuum(&kinds, Duration::from_secs(60)).await.unwrap() >= 1, "sqlite");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 1, "pending deliveries stay");

    if let Some(url) = storage::testing::fresh_postgres_url().await {
        let config =
            Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
        let Database::Postgres(pool) = Database::connect(&config.backends.database).await.unwrap() else {
            unreachable!()
        };
        let queue = QueueBackend::Postgres(pool.clone());
        queue.setup().await.unwrap();
        queue.push(&[task("noop"), task("noop")]).await.unwrap();
        sqlx::query(
            "UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '1 hour' \
             WHERE id = (SELECT MIN(id) FROM apalis.jobs)",
        )
        .execute(&pool)
        .await
        .unwrap();
        assert_eq!(queue.vacuum(&kinds, Duration::from_secs(60)).await.unwrap(), 1, "postgres");
    }

    if let Some(url) = storage::testing::redis_url() {
        let prefix = format!("test-{}", ulid::Ulid::generate());
        let manager = redis::Client::open(url).unwrap().get_connection_manager().await.unwrap();
        let queue = QueueBackend::Redis(manager.clone(), prefix.clone());
        queue.push(&[task("noop"), task("noop")]).await.unwrap();
        let mut connection = manager.clone();
        let ids: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{prefix}:noop:data"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);
        let _: () = redis::cmd("HSET")
            .arg(format!("{prefix}:noop:meta:{}", ids[0]))
            .arg("status")
            .arg("Done")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(queue.vacuum(&kinds, Duration::from_secs(60)).await.unwrap(), 1, "redis");
    }
}
