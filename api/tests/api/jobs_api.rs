//! The job engine over HTTP on each backend combination: SQLite; PostgreSQL; PostgreSQL with
//! the queue and event bus on Redis. Each app runs its in-process worker.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

macro_rules! on_every_stack {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::Embedded, super::$case).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::Postgres, super::$case).await })*
        }
        mod postgres_redis {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::ScaleOut, super::$case).await })*
        }
    };
}

on_every_stack!(
    a_job_succeeds_with_its_result_and_logs,
    idempotency_keys_return_the_existing_job,
    bad_submissions_get_422_naming_the_field,
    a_failing_job_retries_with_growing_delays_then_goes_dead,
    panics_and_timeouts_fail_the_attempt_and_are_retried,
    cancelling_a_running_job_kills_its_child_process,
    a_delayed_job_waits,
    sse_replays_after_last_event_id_then_ends,
    batch_submit_queues_every_job,
    manual_retry_of_a_dead_job,
    a_schedule_fires_once_per_tick,
    workers_and_queues_are_listed,
    tombstone_gc_purges_only_old_tombstones,
    a_high_priority_job_overtakes_the_backlog,
    nul_characters_are_refused_on_every_backend,
);

async fn run<F: std::future::Future<Output = ()>>(stack: Stack, case: impl FnOnce(TestApp) -> F) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    case(app).await;
}

const WITHIN: Duration = Duration::from_secs(20);

async fn a_job_succeeds_with_its_result_and_logs(app: TestApp) {
    let id = app.submit(json!({"kind": "noop", "payload": {"log_lines": 3, "echo": {"x": 1}}})).await;
    let job = app.wait_final(&id, WITHIN).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"], json!({"attempt": 1, "echo": {"x": 1}}));
    assert_eq!((job["attempt"].as_i64(), job["progress"].as_i64()), (Some(1), Some(100)));
    assert!(job["worker_id"].is_string() && job["finished_at"].is_string(), "{job}");
    let logs = app.get_json(&format!("/api/v1/jobs/{id}/logs")).await;
    let lines: Vec<_> =
        logs["lines"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert_eq!(lines, ["line 1", "line 2", "line 3"]);
    let page = app.get_json(&format!("/api/v1/jobs/{id}/logs?after=1&limit=1")).await;
    assert_eq!((page["lines"][0]["seq"].as_i64(), page["next_after"].as_i64()), (Some(2), Some(2)));
    let listed = app.get_json("/api/v1/jobs?status=succeeded&kind=noop").await;
    assert_eq!(listed["jobs"][0]["id"], id.as_str());
}

async fn idempotency_keys_return_the_existing_job(app: TestApp) {
    let body = json!({"kind": "noop", "payload": {}, "idempotency_key": "order-42"});
    let (first_status, first) = app.post_json("/api/v1/jobs", &body).await;
    let (second_status, second) = app.post_json("/api/v1/jobs", &body).await;
    assert_eq!((first_status, second_status), (202, 200));
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!(second["created"], false);
    app.wait_final(first["job_id"].as_str().unwrap(), WITHIN).await;
    let all = app.get_json("/api/v1/jobs").await;
    assert_eq!(all["jobs"].as_array().unwrap().len(), 1, "one job, one run");
}

async fn bad_submissions_get_422_naming_the_field(app: TestApp) {
    for (body, field) in [
        (json!({"kind": "no_such_kind"}), "kind"),
        (json!({"kind": "noop", "payload": {"sleep_ms": "soon"}}), "payload.sleep_ms"),
        (json!({"kind": "noop", "payload": {"surprise": 1}}), "payload"),
        (json!({"kind": "noop", "run_at": "tomorrow"}), "run_at"),
        (json!({"payload": {}}), "kind"),
    ] {
        let (status, reply) = app.post_json("/api/v1/jobs", &body).await;
        assert_eq!(status, 422, "{body}: {reply}");
        assert!(reply["error"]["message"].as_str().unwrap().contains(field), "{field} in {reply}");
    }
    let listed = app.get("/api/v1/jobs?status=sideways").await;
    assert_eq!(listed.status(), 422);
    assert!(app.get_json("/api/v1/jobs").await["jobs"].as_array().unwrap().is_empty(), "nothing was queued");
    assert_eq!(app.get("/api/v1/jobs/01NOSUCHJOB").await.status(), 404);
}

async fn a_failing_job_retries_with_growing_delays_then_goes_dead(app: TestApp) {
    let id = app.submit(json!({"kind": "noop", "payload": {"fail_attempts": 99}})).await;
    let job = app.wait_final(&id, Duration::from_secs(30)).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("dead"), Some(3)), "{job}");
    assert!(job["last_error"].as_str().unwrap().contains("fail attempt 3"), "{job}");
    let logs = app.get_json(&format!("/api/v1/jobs/{id}/logs")).await;
    let retry_times: Vec<chrono::DateTime<chrono::Utc>> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["line"].as_str().unwrap().split("retrying at ").nth(1).map(|t| t.parse().unwrap()))
        .collect();
    let failed_at: Vec<chrono::DateTime<chrono::Utc>> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["line"].as_str().unwrap().contains("failed"))
        .map(|l| l["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!((retry_times.len(), failed_at.len()), (2, 3), "{logs}");
    let delays: Vec<i64> =
        retry_times.iter().zip(&failed_at).map(|(r, f)| (*r - *f).num_milliseconds()).collect();
    // noop backs off from 200 ms: the second delay's range (200–400 ms) lies above the first's (100–200 ms).
    assert!((90..=210).contains(&delays[0]) && (190..=410).contains(&delays[1]), "{delays:?}");
}

async fn panics_and_timeouts_fail_the_attempt_and_are_retried(app: TestApp) {
    let panicking = app.submit(json!({"kind": "noop", "payload": {"panic_attempts": 1}})).await;
    let slow = app.submit(json!({"kind": "noop", "payload": {"sleep_ms": 60000, "timeout_ms": 300}})).await;
    let job = app.wait_final(&panicking, WITHIN).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("succeeded"), Some(2)), "{job}");
    let logs = app.get_json(&format!("/api/v1/jobs/{panicking}/logs")).await.to_string();
    assert!(logs.contains("panicked"), "{logs}");
    let job = app.wait_final(&slow, WITHIN).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("dead"), Some(3)), "{job}");
    assert!(job["last_error"].as_str().unwrap().contains("timed out"), "{job}");
}

fn process_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

async fn cancelling_a_running_job_kills_its_child_process(app: TestApp) {
    let id = app.submit(json!({"kind": "noop", "payload": {"command": ["sleep", "300"]}})).await;
    let started = Instant::now();
    let pid = loop {
        let logs = app.get_json(&format!("/api/v1/jobs/{id}/logs")).await;
        let found = logs["lines"].as_array().unwrap().iter().find_map(|l| {
            l["line"]
                .as_str()
                .unwrap()
                .strip_prefix("started child process ")
                .map(|p| p.parse::<i32>().unwrap())
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(started.elapsed() < WITHIN, "the child never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(process_alive(pid));
    let (status, job) = app.post_json(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!((status, job["cancel_requested"].as_bool()), (200, Some(true)), "{job}");
    let job = app.wait_final(&id, WITHIN).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let gone_by = Instant::now() + Duration::from_secs(5);
    while process_alive(pid) {
        assert!(Instant::now() < gone_by, "child {pid} still runs after cancel");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A queued job is cancelled at once.
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let queued = app.submit(json!({"kind": "noop", "run_at": later})).await;
    let (_, job) = app.post_json(&format!("/api/v1/jobs/{queued}/cancel"), &json!({})).await;
    assert_eq!(job["status"], "cancelled");
}

async fn a_delayed_job_waits(app: TestApp) {
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let id = app.submit(json!({"kind": "noop", "run_at": run_at})).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(app.get_json(&format!("/api/v1/jobs/{id}")).await["status"], "queued");
    let job = app.wait_final(&id, WITHIN).await;
    assert_eq!(job["status"], "succeeded");
    let started: chrono::DateTime<chrono::Utc> = job["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= run_at, "started {started} before {run_at}");
}

/// Reads SSE frames until `event: end`; returns (event, id, data) triples.
async fn read_sse(response: reqwest::Response) -> Vec<(String, Option<String>, Value)> {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = Instant::now() + WITHIN;
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline.into(), body.next()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::from("message"), None, Value::Null);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).unwrap();
                }
            }
            if frame.starts_with(':') {
                continue;
            }
            let done = event == "end";
            events.push((event, id, data));
            if done {
                return events;
            }
        }
    }
    panic!("the stream did not end: {events:?}");
}

async fn sse_replays_after_last_event_id_then_ends(app: TestApp) {
    // Live: subscribe while the job is still waiting to run.
    let run_at = chrono::Utc::now() + chrono::Duration::seconds(1);
    let id = app
        .submit(json!({"kind": "noop", "run_at": run_at, "payload": {"log_lines": 40, "sleep_ms": 200}}))
        .await;
    let url = app.at(&format!("/api/v1/jobs/{id}/logs/stream"));
    let response = app.admin.get(&url).send().await.unwrap();
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let live = read_sse(response).await;
    let seqs: Vec<i64> =
        live.iter().filter(|e| e.0 == "log").map(|e| e.1.as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "every line once, in order");
    assert_eq!(live.last().unwrap().2, json!({"status": "succeeded"}));

    // Reconnect after line 25: the rest, once each, then end.
    let response = app.admin.get(&url).header("last-event-id", "25").send().await.unwrap();
    let replayed = read_sse(response).await;
    let seqs: Vec<i64> =
        replayed.iter().filter(|e| e.0 == "log").map(|e| e.1.as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(seqs, (26..=40).collect::<Vec<_>>());
    assert_eq!(replayed.last().unwrap().0, "end");
}

async fn batch_submit_queues_every_job(app: TestApp) {
    let jobs: Vec<Value> = (0..50).map(|i| json!({"kind": "noop", "payload": {"echo": i}})).collect();
    let (status, reply) = app.post_json("/api/v1/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 202, "{reply}");
    let ids: Vec<String> =
        reply["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().into()).collect();
    assert_eq!(ids.len(), 50);
    for (i, id) in ids.iter().enumerate() {
        let job = app.wait_final(id, WITHIN).await;
        assert_eq!((job["status"].as_str(), &job["result"]["echo"]), (Some("succeeded"), &json!(i)));
    }
    let bad = json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "payload": {"sleep_ms": -1}}]});
    let (status, reply) = app.post_json("/api/v1/jobs/batch", &bad).await;
    assert_eq!(status, 422);
    assert!(reply["error"]["message"].as_str().unwrap().starts_with("jobs[1].payload.sleep_ms"), "{reply}");
}

/// 300 jobs of priority 0 keep the in-process worker (4 at a time, 20 ms each) busy for 1.5 s;
/// a priority-5 job due at the same moment starts before most of them. All are delayed to one
/// time, so how long the submissions take does not matter.
async fn a_high_priority_job_overtakes_the_backlog(app: TestApp) {
    let due = chrono::Utc::now() + chrono::Duration::seconds(3);
    let backlog: Vec<Value> =
        (0..300).map(|_| json!({"kind": "noop", "payload": {"sleep_ms": 20}, "run_at": due})).collect();
    let (status, reply) = app.post_json("/api/v1/jobs/batch", &json!({"jobs": backlog})).await;
    assert_eq!(status, 202, "{reply}");
    let low: Vec<String> =
        reply["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap().into()).collect();
    let high = app.submit(json!({"kind": "noop", "priority": 5, "run_at": due})).await;
    assert!(chrono::Utc::now() < due, "submitting took longer than the delay");
    let started =
        |job: &Value| job["started_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let high_started = started(&app.wait_final(&high, WITHIN).await);
    let mut overtaken = 0;
    for id in &low {
        let job = app.wait_final(id, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "succeeded");
        overtaken += usize::from(started(&job) > high_started);
    }
    assert!(overtaken >= 150, "the priority job started before only {overtaken} of 300 queued jobs");
}

/// PostgreSQL cannot store U+0000; every backend refuses it alike, before anything is stored.
async fn nul_characters_are_refused_on_every_backend(app: TestApp) {
    let (status, reply) =
        app.post_json("/api/v1/jobs", &json!({"kind": "noop", "payload": {"echo": ["ok", "a\u{0}b"]}})).await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["error"]["message"].as_str().unwrap().starts_with("payload.echo[1]: contains a NUL"),
        "{reply}"
    );
    let batch = json!({"jobs": [{"kind": "noop"}, {"kind": "noop", "payload": {"echo": {"k\u{0}": 1}}}]});
    let (status, reply) = app.post_json("/api/v1/jobs/batch", &batch).await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply["error"]["message"].as_str().unwrap().starts_with("jobs[1].payload.echo."), "{reply}");
    let keyed = json!({"kind": "noop", "idempotency_key": "a\u{0}"});
    assert_eq!(app.post_json("/api/v1/jobs", &keyed).await.0, 422);
    let schedule = json!({"kind": "noop", "cron": "* * * * *", "payload": {"echo": "\u{0}"}});
    assert_eq!(app.post_json("/api/v1/schedules", &schedule).await.0, 422);
    assert_eq!(app.get_json("/api/v1/jobs").await["jobs"], json!([]), "nothing was stored");
}

async fn manual_retry_of_a_dead_job(app: TestApp) {
    let id = app.submit(json!({"kind": "noop", "payload": {"fail_attempts": 3}})).await;
    assert_eq!(app.wait_final(&id, Duration::from_secs(30)).await["status"], "dead");
    let (status, job) = app.post_json(&format!("/api/v1/jobs/{id}/retry"), &json!({})).await;
    assert_eq!((status, job["status"].as_str()), (202, Some("queued")), "{job}");
    let job = app.wait_final(&id, WITHIN).await;
    assert_eq!((job["status"].as_str(), job["attempt"].as_i64()), (Some("succeeded"), Some(4)), "{job}");
    let (status, reply) = app.post_json(&format!("/api/v1/jobs/{id}/retry"), &json!({})).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (409, Some("conflict")));
}

async fn a_schedule_fires_once_per_tick(app: TestApp) {
    let body = json!({"kind": "noop", "payload": {"echo": "tick"}, "cron": "* * * * * *", "timezone": "Europe/Paris"});
    let (status, schedule) = app.post_json("/api/v1/schedules", &body).await;
    assert_eq!(status, 201, "{schedule}");
    let id = schedule["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let response = app
        .admin
        .patch(app.at(&format!("/api/v1/schedules/{id}")))
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let jobs = app.get_json("/api/v1/jobs?limit=100").await;
    let keys: Vec<&str> =
        jobs["jobs"].as_array().unwrap().iter().map(|j| j["idempotency_key"].as_str().unwrap()).collect();
    assert!((2..=5).contains(&keys.len()), "a tick a second: {keys:?}");
    let unique: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "each tick once");
    for (body, field) in [
        (json!({"kind": "noop", "cron": "every day"}), "cron"),
        (json!({"kind": "noop", "cron": "0 3 * * *", "timezone": "Moon/Base"}), "timezone"),
        (json!({"kind": "nope", "cron": "0 3 * * *"}), "kind"),
    ] {
        let (status, reply) = app.post_json("/api/v1/schedules", &body).await;
        assert_eq!(status, 422, "{reply}");
        assert!(reply["error"]["message"].as_str().unwrap().starts_with(field), "{reply}");
    }
    let response = app.admin.delete(app.at(&format!("/api/v1/schedules/{id}"))).send().await.unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(app.get(&format!("/api/v1/schedules/{id}")).await.status(), 404);
}

async fn workers_and_queues_are_listed(app: TestApp) {
    let id = app.submit(json!({"kind": "noop", "payload": {"sleep_ms": 1500}})).await;
    app.wait_for_job(&id, WITHIN, |j| j["status"] == "running").await;
    let workers = app.get_json("/api/v1/workers").await;
    let worker = &workers["workers"][0];
    assert_eq!(worker["running_jobs"], json!([id]));
    assert_eq!(
        (worker["concurrency"].as_i64(), worker["pid"].as_i64()),
        (Some(4), Some(i64::from(std::process::id())))
    );
    let queues = app.get_json("/api/v1/queues").await;
    let noop = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "noop").unwrap().clone();
    assert_eq!(noop["running"], 1, "{queues}");
    app.wait_final(&id, WITHIN).await;
    let queues = app.get_json("/api/v1/queues").await;
    let noop = queues["queues"].as_array().unwrap().iter().find(|q| q["kind"] == "noop").unwrap();
    assert_eq!(noop["succeeded_last_minute"], 1, "{queues}");
}

async fn tombstone_gc_purges_only_old_tombstones(app: TestApp) {
    let index = app.open_database().await.blob_index();
    let entry = |path: &str, days_old: i64, is_deleted: bool| storage::sql::IndexEntry {
        namespace: "alice".into(),
        path: path.into(),
        md5: "d41d8cd98f00b204e9800998ecf8427e".into(),
        size: 0,
        last_modified: chrono::Utc::now() - chrono::Duration::days(days_old),
        is_deleted,
        seq: 0,
        version: 1,
        content_type: None,
    };
    for e in [entry("old-tombstone", 40, true), entry("new-tombstone", 2, true), entry("old-live", 40, false)]
    {
        index.upsert(&e).await.unwrap();
    }
    let id = app.submit(json!({"kind": "tombstone_gc", "payload": {"retention_days": 30}})).await;
    let job = app.wait_final(&id, WITHIN).await;
    assert_eq!(
        (job["status"].as_str(), job["result"]["purged"].as_i64()),
        (Some("succeeded"), Some(1)),
        "{job}"
    );
    assert!(index.get("alice", "old-tombstone").await.unwrap().is_none());
    assert!(index.get("alice", "new-tombstone").await.unwrap().is_some());
    assert!(index.get("alice", "old-live").await.unwrap().is_some());
    let (status, _) = app
        .post_json("/api/v1/jobs", &json!({"kind": "tombstone_gc", "payload": {"retention_days": -1}}))
        .await;
    assert_eq!(status, 422);
}

/// apalis-redis locks every fetched task with an `LREM` over the whole active list (O(backlog)
/// per task); Engram turns task locks off. A lock leaves `locked_by` in the task's metadata.
#[tokio::test]
async fn redis_tasks_are_delivered_without_apalis_task_locks() {
    let Some(app) = spawn_app(Stack::ScaleOut, &[]).await else { return };
    let var = |name: &str| app.env.iter().find(|(k, _)| k == name).expect("scale-out env").1.clone();
    let (prefix, url) = (var("ENGRAM_REDIS_PREFIX"), var("REDIS_URL"));
    let id = app.submit(json!({"kind": "noop"})).await;
    assert_eq!(app.wait_final(&id, WITHIN).await["status"], "succeeded");
    let mut redis = redis::Client::open(url).unwrap().get_connection_manager().await.unwrap();
    let metas: Vec<String> =
        redis::cmd("KEYS").arg(format!("{prefix}:noop:meta:*")).query_async(&mut redis).await.unwrap();
    assert_eq!(metas.len(), 1, "{metas:?}");
    // apalis acknowledges the task after Engram has recorded the job's end: wait for it.
    let started = std::time::Instant::now();
    let meta = loop {
        let meta: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(&metas[0]).query_async(&mut redis).await.unwrap();
        if meta.get("status").map(String::as_str) == Some("Done") || started.elapsed() > WITHIN {
            break meta;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(meta.get("status").map(String::as_str), Some("Done"), "{meta:?}");
    assert!(!meta.contains_key("locked_by"), "the task was locked: {meta:?}");
}
