//! The worker registry and schedule store conformance suite, on SQLite and PostgreSQL.

use chrono::{Duration, Utc};
use serde_json::json;
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{AttemptOutcome, ConsumerLiveness, Database, NewJob, Schedule, WorkerRecord};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        workers_register_heartbeat_and_go_stale,
        schedule_crud,
        a_tick_advances_once_among_many_schedulers,
    ]
);

async fn open_sqlite() -> Option<Database> {
    let dir = tempfile::tempdir().unwrap().keep();
    Some(Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap())
}

async fn open_postgres() -> Option<Database> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap())
}

fn worker(id: &str) -> WorkerRecord {
    WorkerRecord {
        id: id.into(),
        host: "host-a".into(),
        pid: 4242,
        kinds: vec!["noop".into(), "tombstone_gc".into()],
        concurrency: 4,
        started_at: Utc::now(),
        last_seen: Utc::now(),
        stopping: false,
        running_jobs: vec![],
        consumers: vec![],
    }
}

async fn workers_register_heartbeat_and_go_stale(database: Database) {
    let (workers, jobs) = (database.worker_store(), database.job_store());
    workers.register(&worker("w1")).await.unwrap();
    workers.register(&worker("w2")).await.unwrap();
    let job = NewJob {
        id: storage::ids::new_id(),
        kind: "noop".into(),
        owner: "o".into(),
        payload: json!({}),
        max_attempts: 1,
        priority: 0,
        run_at: Utc::now(),
        parent_id: None,
        idempotency_key: None,
    };
    let (job, _) = jobs.create(job).await.unwrap();
    assert_eq!(jobs.claim_next("noop", 1, "w1", 0).await.unwrap()[0].id, job.id);
    let listed = workers.list().await.unwrap();
    assert_eq!(listed.len(), 2);
    let w1 = listed.iter().find(|w| w.id == "w1").unwrap();
    assert_eq!(
        (w1.kinds.clone(), w1.concurrency, w1.running_jobs.clone()),
        (worker("w1").kinds, 4, vec![job.id.clone()])
    );

    let consumers = vec![ConsumerLiveness {
        kind: "noop".into(),
        alive: false,
        last_fetch_at: Some(Utc::now() - Duration::seconds(40)),
        in_flight: 1,
        restarts: 3,
        last_error: Some("the queue refused: database is locked".into()),
    }];
    assert!(workers.heartbeat("w1", true, &consumers).await.unwrap());
    let w1 = workers.list().await.unwrap().into_iter().find(|w| w.id == "w1").unwrap();
    assert!(w1.stopping);
    assert_eq!(w1.consumers.len(), 1);
    assert_eq!((w1.consumers[0].alive, w1.consumers[0].restarts), (false, 3));
    let fetched = w1.consumers[0].last_fetch_at.unwrap();
    assert!((fetched - consumers[0].last_fetch_at.unwrap()).num_milliseconds().abs() < 1000);
    let stale = workers.stale(Utc::now() + Duration::seconds(1)).await.unwrap();
    assert_eq!(stale.len(), 2);
    assert!(workers.stale(Utc::now() - Duration::seconds(60)).await.unwrap().is_empty());
    workers.remove("w2").await.unwrap();
    assert!(!workers.heartbeat("w2", false, &[]).await.unwrap(), "a removed worker must register again");
    jobs.finish_attempt(&job.id, "w1", AttemptOutcome::Succeeded(json!(1))).await.unwrap();
    assert!(workers.list().await.unwrap()[0].running_jobs.is_empty());
}

fn schedule(next: chrono::DateTime<Utc>) -> Schedule {
    Schedule {
        id: storage::ids::new_id(),
        owner: "alice".into(),
        kind: "tombstone_gc".into(),
        payload: json!({"retention_days": 30}),
        cron: "0 3 * * *".into(),
        timezone: "Europe/Paris".into(),
        paused: false,
        next_run_at: Some(next),
        last_run_at: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn schedule_crud(database: Database) {
    let store = database.schedule_store();
    let mut s = schedule(Utc::now() + Duration::hours(1));
    store.create(&s).await.unwrap();
    let got = store.get(&s.id).await.unwrap().unwrap();
    assert_eq!(
        (got.cron.as_str(), got.timezone.as_str(), got.payload.clone()),
        ("0 3 * * *", "Europe/Paris", s.payload.clone())
    );
    store.create(&Schedule { owner: "bob".into(), ..schedule(Utc::now()) }).await.unwrap();
    assert_eq!(store.list(None).await.unwrap().len(), 2);
    assert_eq!(store.list(Some("alice")).await.unwrap().len(), 1);
    s.paused = true;
    s.cron = "*/5 * * * *".into();
    assert!(store.update(&s).await.unwrap());
    let got = store.get(&s.id).await.unwrap().unwrap();
    assert!(got.paused && got.cron == "*/5 * * * *");
    assert!(store.delete(&s.id).await.unwrap());
    assert!(!store.delete(&s.id).await.unwrap());
    assert!(store.get(&s.id).await.unwrap().is_none());
}

async fn a_tick_advances_once_among_many_schedulers(database: Database) {
    let store = database.schedule_store();
    let tick = chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis() - 1000).unwrap();
    let s = schedule(tick);
    store.create(&s).await.unwrap();
    let paused = Schedule { paused: true, ..schedule(tick) };
    store.create(&paused).await.unwrap();
    let due = store.due(Utc::now(), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        vec![s.id.clone()],
        "paused ones are not due"
    );
    let next = tick + Duration::days(1);
    let racers = (0..8).map(|_| {
        let (store, id) = (database.schedule_store(), s.id.clone());
        tokio::spawn(async move { store.advance(&id, tick, Some(next)).await.unwrap() })
    });
    let wins = futures::future::join_all(racers).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(wins, 1);
    let got = store.get(&s.id).await.unwrap().unwrap();
    assert_eq!((got.next_run_at, got.last_run_at), (Some(next), Some(tick)));
    assert!(store.due(Utc::now(), 10).await.unwrap().is_empty());
}
