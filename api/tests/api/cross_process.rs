//! Jobs across processes: `engram-api` (no in-process worker) with separate `engram-worker`
//! processes on the same backends — an idle worker picking up new jobs, a worker SIGKILLed
//! mid-run, live logs and schedules with two workers. Pick-up latency itself (target: under
//! 500 ms) is measured by `scripts/bench-jobs.sh latency`, not here.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Stack, TestApp, engram_worker, spawn_app_with};

on_every_stack!(an_idle_worker_process_picks_up_each_job_the_api_pushes, a_killed_worker_loses_nothing);

/// These tests start several processes each and measure latency: they run one at a time so
/// they neither starve each other of the machine's two cores nor measure each other's load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn worker(app: &TestApp, extra: &[&str]) -> tokio::process::Child {
    let mut args = vec!["--heartbeat-secs", "1", "--stale-after-secs", "3"];
    args.extend_from_slice(extra);
    engram_worker(&args, &app.env).spawn().expect("engram-worker starts")
}

/// Waits until `count` workers are registered.
async fn wait_for_workers(app: &TestApp, count: usize) {
    let started = Instant::now();
    while app.get_json("/api/v1/workers").await["workers"].as_array().unwrap().len() < count {
        assert!(started.elapsed() < Duration::from_secs(30), "workers did not register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `noop` kind's line of `/api/v1/queues`.
fn noop_queue(queues: &Value) -> &Value {
    queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "noop").expect("a noop queue")
}

fn millis_between(job: &Value, from: &str, to: &str) -> i64 {
    let at = |field: &str| job[field].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    (at(to) - at(from)).num_milliseconds()
}

async fn an_idle_worker_process_picks_up_each_job_the_api_pushes(stack: Stack) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(app) = spawn_app_with(stack, &[], false).await else { return };
    let _worker = worker(&app, &[]);
    wait_for_workers(&app, 1).await;
    // Let the idle worker settle into polling, then measure several separate pushes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let id = app.submit(json!({"kind": "noop"})).await;
        let job = app.wait_final(&id, Duration::from_secs(10)).await;
        assert_eq!(job["status"], "succeeded");
        // Far above the 500 ms target so a loaded machine cannot fail it, far below the 30 s
        // an idle apalis poller used to sleep through new tasks.
        let latency = millis_between(&job, "created_at", "started_at");
        assert!(latency < 5_000, "started {latency} ms after submission: {job}");
        assert_ne!(job["worker_id"], Value::Null);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// One owner with a running cap below the worker's slots, so jobs are parked and unparked
/// across the kill too.
async fn a_killed_worker_loses_nothing(stack: Stack) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let capped = [("ENGRAM_JOBS_MAX_RUNNING_PER_OWNER", "6")];
    let Some(app) = spawn_app_with(stack, &capped, false).await else { return };
    let mut first = worker(&app, &["--concurrency", "8"]);
    wait_for_workers(&app, 1).await;
    let jobs: Vec<Value> = (0..2000)
        .map(|_| json!({"kind": "noop", "payload": {"sleep_ms": 50, "record_effect": true}}))
        .collect();
    let (status, reply) = app.post_json("/api/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 202, "{reply}");
    let ids: Vec<String> =
        reply["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().to_string()).collect();

    // Kill the first worker once a few hundred jobs are done, with others running.
    let started = Instant::now();
    loop {
        let done = noop_queue(&app.get_json("/api/v1/queues").await)["succeeded_last_hour"].as_i64().unwrap();
        if done >= 300 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the first worker made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // What the dead worker was running stays `running` until a live worker rescues it.
    let running: Vec<String> = app.get_json("/api/v1/jobs?status=running&limit=100").await["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    let _second = worker(&app, &["--concurrency", "8"]);

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let queues = app.get_json("/api/v1/queues").await;
        let noop = noop_queue(&queues);
        if noop["succeeded_last_hour"].as_i64() == Some(2000) {
            assert_eq!((noop["queued"].as_i64(), noop["running"].as_i64()), (Some(0), Some(0)), "{queues}");
            break;
        }
        assert!(Instant::now() < deadline, "not every job finished: {queues}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let database = app.open_database().await;
    let jobs = database.job_store();
    let effects = database.key_value_store();
    let mut reran = 0;
    for id in &ids {
        let job = jobs.get(id).await.unwrap().unwrap();
        assert_eq!(job.status, storage::sql::JobStatus::Succeeded, "{job:?}");
        let effect = effects.get(jobs::kinds::EFFECTS_NAMESPACE, id).await.unwrap().expect("its side effect");
        if effect.version > 1 || job.attempt > 1 {
            reran += 1;
        }
    }
    let mut recorded = 0;
    let mut after: Option<String> = None;
    loop {
        let page = effects.list(jobs::kinds::EFFECTS_NAMESPACE, "", after.as_deref(), 1000).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        recorded += page.len();
    }
    assert_eq!(recorded, 2000, "one effect per job, none stray");
    assert!(!running.is_empty(), "the kill should interrupt running jobs");
    for id in &running {
        let job = jobs.get(id).await.unwrap().unwrap();
        assert!(job.attempt >= 2, "{id} was running when its worker died, so it ran again: {job:?}");
    }
    eprintln!("crash test: 2000 succeeded, {reran} ran more than once (at-least-once, idempotent)");
}

#[tokio::test]
async fn two_workers_stream_logs_to_the_api_and_fire_each_tick_once_on_redis() {
    two_workers_stream_logs_to_the_api_and_fire_each_tick_once(Stack::ScaleOut).await;
}

#[tokio::test]
async fn two_workers_stream_logs_to_the_api_and_fire_each_tick_once_on_postgres_notify() {
    two_workers_stream_logs_to_the_api_and_fire_each_tick_once(Stack::Postgres).await;
}

async fn two_workers_stream_logs_to_the_api_and_fire_each_tick_once(stack: Stack) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(app) = spawn_app_with(stack, &[], false).await else { return };
    let _workers = [worker(&app, &[]), worker(&app, &[])];
    wait_for_workers(&app, 2).await;

    let run_at = chrono::Utc::now() + chrono::Duration::seconds(1);
    let id = app.submit(json!({"kind": "noop", "run_at": run_at, "payload": {"log_lines": 20}})).await;
    let response = app.admin.get(app.at(&format!("/api/v1/jobs/{id}/logs/stream"))).send().await.unwrap();
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut first_line_at = None;
    while !text.contains("event: end") {
        let chunk = tokio::time::timeout_at(deadline.into(), body.next()).await.expect("the stream ends");
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
        if first_line_at.is_none() && text.contains("event: log") {
            first_line_at = Some(chrono::Utc::now());
        }
    }
    // Live, not the stream's fallback poll of the table (every 2 s).
    let logged: chrono::DateTime<chrono::Utc> =
        app.get_json(&format!("/api/v1/jobs/{id}/logs?limit=1")).await["lines"][0]["at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let lag = (first_line_at.unwrap() - logged).num_milliseconds();
    assert!(lag < 1000, "the first line arrived {lag} ms after it was logged");
    let seqs: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(
        seqs,
        (1..=20).map(|i| i.to_string()).collect::<Vec<_>>().iter().map(String::as_str).collect::<Vec<_>>()
    );
    let job = app.get_json(&format!("/api/v1/jobs/{id}")).await;
    let workers: HashSet<String> = app.get_json("/api/v1/workers").await["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    assert!(workers.contains(job["worker_id"].as_str().unwrap()), "ran in a worker process: {job}");

    let (status, schedule) =
        app.post_json("/api/v1/schedules", &json!({"kind": "noop", "cron": "* * * * * *"})).await;
    assert_eq!(status, 201);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let patch = json!({"paused": true});
    app.admin
        .patch(app.at(&format!("/api/v1/schedules/{}", schedule["id"].as_str().unwrap())))
        .json(&patch)
        .send()
        .await
        .unwrap();
    let jobs = app.get_json("/api/v1/jobs?limit=100").await;
    let ticks: Vec<&str> =
        jobs["jobs"].as_array().unwrap().iter().filter_map(|j| j["idempotency_key"].as_str()).collect();
    let unique: HashSet<_> = ticks.iter().collect();
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert_eq!(unique.len(), ticks.len(), "every tick once with two schedulers: {ticks:?}");
}

#[tokio::test]
async fn twenty_thousand_queued_jobs_drain_on_redis() {
    let _turn = ONE_AT_A_TIME.lock().await;
    // One owner's backlog: what is measured is delivery, not that owner's running cap.
    let uncapped = [("ENGRAM_JOBS_MAX_RUNNING_PER_OWNER", "0")];
    let Some(app) = spawn_app_with(Stack::ScaleOut, &uncapped, false).await else { return };
    for _ in 0..2 {
        let jobs: Vec<Value> = (0..10_000).map(|_| json!({"kind": "noop"})).collect();
        let (status, reply) = app.post_json("/api/v1/jobs/batch", &json!({"jobs": jobs})).await;
        assert_eq!(status, 202, "{reply}");
    }
    // Everything is due before any worker runs: apalis-redis alone dies above ~8,000.
    let mut worker = worker(&app, &["--concurrency", "16"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let queues = app.get_json("/api/v1/queues").await;
        if noop_queue(&queues)["succeeded_last_hour"].as_i64() == Some(20_000) {
            break;
        }
        assert!(worker.try_wait().unwrap().is_none(), "the worker died: {queues}");
        assert!(Instant::now() < deadline, "the backlog did not drain: {queues}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_finishing_short_jobs_and_requeueing_long_ones() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(app) = spawn_app_with(Stack::Embedded, &[], false).await else { return };
    let mut first = worker(&app, &["--drain-secs", "2"]);
    wait_for_workers(&app, 1).await;
    let short = app.submit(json!({"kind": "noop", "payload": {"sleep_ms": 1000}})).await;
    let long = app.submit(json!({"kind": "noop", "payload": {"sleep_ms": 15000}})).await;
    for id in [&short, &long] {
        app.wait_for_job(id, Duration::from_secs(10), |j| j["status"] == "running").await;
    }
    std::process::Command::new("kill").args(["-TERM", &first.id().unwrap().to_string()]).status().unwrap();
    let status =
        tokio::time::timeout(Duration::from_secs(10), first.wait()).await.expect("drains in time").unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        app.get_json(&format!("/api/v1/jobs/{short}")).await["status"],
        "succeeded",
        "finished while draining"
    );
    let long_job = app.get_json(&format!("/api/v1/jobs/{long}")).await;
    assert_eq!(long_job["status"], "queued", "re-queued at the deadline: {long_job}");
    assert!(app.get_json("/api/v1/workers").await["workers"].as_array().unwrap().is_empty(), "deregistered");
    let _second = worker(&app, &[]);
    let job = app.wait_final(&long, Duration::from_secs(40)).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("succeeded"), Some(2)), "{job}");
}
