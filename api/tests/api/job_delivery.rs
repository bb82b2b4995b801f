//! Job delivery never stalls silently, on every stack: a consumer whose queue backend fails
//! is restarted and its kind's jobs run; a kind whose due jobs wait past the stall bound
//! turns `/health` degraded naming it, and shows in `/api/v1/queues` and `/metrics`; a
//! delivery lost from the queue is pushed again by the watchdog and its job runs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use storage::testing::{RawSqlTarget, execute_raw_sql};

use crate::common::{Stack, TestApp, spawn_app};

on_every_stack!(
    a_consumer_whose_queue_fails_is_restarted_and_its_jobs_run,
    a_kind_waiting_past_the_stall_bound_turns_health_degraded,
    a_delivery_lost_from_the_queue_is_pushed_again,
);

fn env_of<'a>(app: &'a TestApp, key: &str) -> Option<&'a str> {
    app.env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Changes the app's queue behind its back: on Redis deletes `redis_keys` (after the
/// deployment's prefix), elsewhere runs a statement on apalis' tables (`engram.queue.db`, or
/// PostgreSQL's `apalis` schema).
async fn tamper_with_queue(app: &TestApp, stack: Stack, redis_keys: &[&str], sqlite: &str, postgres: &str) {
    match (stack, env_of(app, "DATABASE_URL")) {
        (Stack::ScaleOut, _) => {
            let client = redis::Client::open(env_of(app, "REDIS_URL").unwrap()).unwrap();
            let mut redis = client.get_multiplexed_async_connection().await.unwrap();
            let prefix = env_of(app, "ENGRAM_REDIS_PREFIX").unwrap();
            let keys: Vec<String> = redis_keys.iter().map(|key| format!("{prefix}:{key}")).collect();
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut redis).await.unwrap();
        }
        (_, None) => {
            let queue = app.data_dir.join("engram.queue.db");
            execute_raw_sql(RawSqlTarget::Sqlite(&queue), sqlite).await.unwrap();
        }
        (_, Some(url)) => execute_raw_sql(RawSqlTarget::Postgres(url), postgres).await.unwrap(),
    }
}

/// Takes the `noop` consumers' registrations away in the queue backend, as a worker that took
/// them for dead does on Redis (its orphan recovery removes them): their next heartbeat
/// fails, which ends an apalis worker for good.
async fn unregister_noop_consumers(app: &TestApp, stack: Stack) {
    tamper_with_queue(
        app,
        stack,
        &["noop:workers", "noop:priority:workers"],
        "UPDATE Workers SET worker_type = 'elsewhere' WHERE id LIKE '%:noop'",
        "UPDATE apalis.workers SET worker_type = 'elsewhere' WHERE id LIKE '%:noop'",
    )
    .await
}

/// Deletes every `noop` delivery waiting in the queue backend.
async fn lose_noop_deliveries(app: &TestApp, stack: Stack) {
    tamper_with_queue(
        app,
        stack,
        &["noop:scheduled", "noop:active"],
        "DELETE FROM Jobs WHERE job_type = 'engram:noop'",
        "DELETE FROM apalis.jobs WHERE job_type = 'engram:noop'",
    )
    .await
}

/// This process' report of its `noop` consumer (from its last heartbeat).
async fn noop_consumer(app: &TestApp) -> Value {
    let workers = app.get_json("/api/v1/workers").await;
    let worker = &workers["workers"][0];
    worker["consumers"].as_array().unwrap().iter().find(|c| c["kind"] == "noop").cloned().unwrap()
}

async fn eventually<T>(within: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_consumer_whose_queue_fails_is_restarted_and_its_jobs_run(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let warmed = app.submit(json!({"kind": "noop"})).await;
    app.wait_final(&warmed, Duration::from_secs(20)).await;
    let before = noop_consumer(&app).await;
    assert_eq!((before["alive"].as_bool(), before["restarts"].as_u64()), (Some(true), Some(0)), "{before}");

    unregister_noop_consumers(&app, stack).await;
    // Jobs submitted while the consumer fails are not lost.
    let queued: Vec<String> =
        futures::future::join_all((0..5).map(|_| app.submit(json!({"kind": "noop"})))).await;
    let restarted = eventually(Duration::from_secs(20), "the noop consumer restarts", async || {
        let consumer = noop_consumer(&app).await;
        (consumer["restarts"].as_u64() >= Some(1) && consumer["alive"] == true).then_some(consumer)
    })
    .await;
    assert!(
        restarted["last_error"].as_str().is_some_and(|e| e.contains("failed")),
        "the report says why: {restarted}"
    );
    for id in &queued {
        assert_eq!(app.wait_final(id, Duration::from_secs(30)).await["status"], "succeeded");
    }
    let after = app.submit(json!({"kind": "noop", "payload": {"echo": "after the restart"}})).await;
    assert_eq!(app.wait_final(&after, Duration::from_secs(20)).await["status"], "succeeded");
    let tombstones = app.submit(json!({"kind": "tombstone_gc"})).await;
    assert_eq!(app.wait_final(&tombstones, Duration::from_secs(20)).await["status"], "succeeded");
    let gc = app.get_json("/api/v1/workers").await["workers"][0]["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "tombstone_gc")
        .cloned()
        .unwrap();
    assert_eq!(gc["restarts"], 0, "other kinds' consumers were left alone: {gc}");
    app.stop().await.unwrap();
}

fn health_names_noop(health: &Value) -> bool {
    health["stalled_kinds"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k["kind"] == "noop"))
}

async fn a_kind_waiting_past_the_stall_bound_turns_health_degraded(stack: Stack) {
    let env = [("ENGRAM_JOBS_STALL_AFTER_SECS", "5"), ("ENGRAM_JOBS_MAX_RUNNING_PER_OWNER", "0")];
    let Some(app) = spawn_app(stack, &env).await else { return };
    let health = app.get_json("/health").await;
    assert_eq!(
        (health["status"].as_str(), health["job_delivery"].as_str()),
        (Some("ok"), Some("ok")),
        "{health}"
    );
    // Every slot of the only worker is taken by a long job: the next one waits.
    let workers = app.get_json("/api/v1/workers").await;
    let slots = workers["workers"][0]["concurrency"].as_u64().unwrap();
    let mut sleepers = Vec::new();
    for _ in 0..slots {
        sleepers.push(app.submit(json!({"kind": "noop", "payload": {"sleep_ms": 60_000}})).await);
    }
    for id in &sleepers {
        app.wait_for_job(id, Duration::from_secs(20), |job| job["status"] == "running").await;
    }
    let waiting = app.submit(json!({"kind": "noop"})).await;

    let health = eventually(Duration::from_secs(20), "/health names noop", async || {
        let response = app.client.get(app.at("/health")).send().await.unwrap();
        assert_eq!(response.status(), 200, "a stalled kind leaves the process serving");
        let health: Value = response.json().await.unwrap();
        health_names_noop(&health).then_some(health)
    })
    .await;
    assert_eq!(
        (health["status"].as_str(), health["job_delivery"].as_str()),
        (Some("degraded"), Some("stalled"))
    );
    let stalled = health["stalled_kinds"].as_array().unwrap();
    assert_eq!(stalled.len(), 1, "only noop waits: {health}");
    assert!(stalled[0]["waiting_secs"].as_f64().unwrap() >= 5.0, "{health}");

    let queues = app.get_json("/api/v1/queues").await;
    let noop = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "noop").unwrap();
    assert!(noop["oldest_due_age_secs"].as_f64().unwrap() >= 5.0, "{noop}");
    let idle = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "tombstone_gc").unwrap();
    assert!(idle["oldest_due_age_secs"].is_null(), "{idle}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let age: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("engram_jobs_oldest_due_age_seconds{kind=\"noop\"} "))
        .expect("the oldest due age of noop is exported")
        .parse()
        .unwrap();
    assert!(age >= 5.0, "{age}");
    assert!(metrics.contains("engram_jobs_oldest_due_age_seconds{kind=\"tombstone_gc\"} 0"), "{metrics}");
    assert!(
        metrics.lines().any(|l| l.starts_with("engram_job_consumer_alive{") && l.contains("kind=\"noop\""))
    );

    for id in &sleepers {
        app.post_json(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    }
    assert_eq!(app.wait_final(&waiting, Duration::from_secs(20)).await["status"], "succeeded");
    let health = app.get_json("/health").await;
    assert_eq!(
        (health["status"].as_str(), health["job_delivery"].as_str()),
        (Some("ok"), Some("ok")),
        "{health}"
    );
    app.stop().await.unwrap();
}

fn time(job: &Value, field: &str) -> DateTime<Utc> {
    job[field].as_str().unwrap().parse().unwrap()
}

async fn a_delivery_lost_from_the_queue_is_pushed_again(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("ENGRAM_JOBS_STALL_AFTER_SECS", "5")]).await else { return };
    let run_at = Utc::now() + chrono::Duration::seconds(3);
    let id = app.submit(json!({"kind": "noop", "run_at": run_at.to_rfc3339()})).await;
    lose_noop_deliveries(&app, stack).await;

    let job = app.wait_final(&id, Duration::from_secs(40)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    let waited = time(&job, "started_at") - time(&job, "run_at");
    assert!(waited >= chrono::Duration::seconds(5), "it ran only once the watchdog pushed it again: {job}");
    app.stop().await.unwrap();
}
