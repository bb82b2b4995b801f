//! The job routes as tenants meet them, on SQLite, PostgreSQL and PostgreSQL + Redis: which
//! kinds a tenant may submit (never the test kinds, which run programs, nor the upkeep over
//! every tenant's data), the per-owner cap on waiting jobs, and fair delivery: one owner's
//! backlog of 5,000 jobs does not hold back another owner's job.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::{Stack, TestApp, admin_client, spawn_app};

on_every_stack!(
    tenants_submit_only_kinds_that_act_for_themselves,
    a_full_queue_answers_429_with_retry_after,
    another_owners_backlog_does_not_hold_a_job_back,
);

/// A freshly registered account: its id and a client that sends its token.
async fn tenant(app: &TestApp, email: &str) -> (String, reqwest::Client) {
    let body = json!({"email": email, "password": "a long enough password"});
    let response = app.client.post(app.at("/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    (body["user"]["id"].as_str().unwrap().to_string(), admin_client(body["token"].as_str().unwrap()))
}

async fn post(app: &TestApp, client: &reqwest::Client, path: &str, body: Value) -> (u16, Value) {
    let response = client.post(app.at(path)).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn later() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(1)
}

async fn tenants_submit_only_kinds_that_act_for_themselves(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (me, client) = tenant(&app, "tenant@example.com").await;
    let refused = [
        (json!({"kind": "noop", "payload": {"command": ["sh", "-c", "env"]}}), "kind: noop"),
        (json!({"kind": "noop"}), "kind: noop"),
        (json!({"kind": "tombstone_gc", "payload": {"retention_days": 1}}), "kind: tombstone_gc"),
        (json!({"kind": "blob_repair"}), "kind: blob_repair"),
        (json!({"kind": "rebuild_index", "payload": {"user_id": "someone-else"}}), "payload.user_id"),
        (json!({"kind": "repo_sync", "payload": {"user_id": "someone-else"}}), "payload.user_id"),
        (json!({"kind": "index_memory_vectors", "priority": 5}), "priority"),
    ];
    for (body, field) in &refused {
        let (status, reply) = post(&app, &client, "/api/v1/jobs", body.clone()).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (403, Some("forbidden")), "{body}: {reply}");
        assert!(reply["error"]["message"].as_str().unwrap().starts_with(field), "{field}: {reply}");
        let batch = json!({"jobs": [{"kind": "index_memory_vectors", "run_at": later()}, body]});
        let (status, reply) = post(&app, &client, "/api/v1/jobs/batch", batch).await;
        assert_eq!(status, 403, "{reply}");
        let payload = body.get("payload").cloned().unwrap_or(json!({}));
        let schedule = json!({"kind": body["kind"], "payload": payload, "cron": "0 0 1 1 *"});
        if body.get("priority").is_none() {
            let (status, reply) = post(&app, &client, "/api/v1/schedules", schedule).await;
            assert_eq!(status, 403, "{reply}");
        }
    }
    let listed: Value = client.get(app.at("/api/v1/jobs")).send().await.unwrap().json().await.unwrap();
    assert!(listed["jobs"].as_array().unwrap().is_empty(), "nothing was queued: {listed}");
    let own = [
        json!({"kind": "rebuild_index", "payload": {"user_id": me}, "run_at": later()}),
        json!({"kind": "index_memory_vectors", "priority": 0, "run_at": later()}),
        json!({"kind": "index_memory_vectors", "priority": -3, "run_at": later()}),
    ];
    for body in own {
        let (status, reply) = post(&app, &client, "/api/v1/jobs", body).await;
        assert_eq!(status, 202, "{reply}");
    }
    let (status, schedule) = post(
        &app,
        &client,
        "/api/v1/schedules",
        json!({"kind": "repo_sync", "payload": {"user_id": me}, "cron": "0 0 1 1 *"}),
    )
    .await;
    assert_eq!(status, 201, "{schedule}");
    let to_upkeep = json!({"kind": "tombstone_gc", "payload": {}});
    let patched = client
        .patch(app.at(&format!("/api/v1/schedules/{}", schedule["id"].as_str().unwrap())))
        .json(&to_upkeep)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 403, "a schedule cannot be turned into upkeep");
    let (status, _) = app.post_json("/api/v1/jobs", &json!({"kind": "tombstone_gc", "payload": {}})).await;
    assert_eq!(status, 202, "administrators run upkeep");
    app.stop().await.unwrap();

    let Some(without) = spawn_app(stack, &[("ENGRAM_ENABLE_TEST_KINDS", "false")]).await else { return };
    let (status, reply) = without.post_json("/api/v1/jobs", &json!({"kind": "noop"})).await;
    assert_eq!(status, 422, "without ENGRAM_ENABLE_TEST_KINDS there is no noop, even for administrators");
    assert!(reply["error"]["message"].as_str().unwrap().contains("unknown job kind"), "{reply}");
    let kinds: Vec<Value> = without.get_json("/api/v1/queues").await["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["kind"].clone())
        .collect();
    assert!(!kinds.contains(&json!("noop")), "{kinds:?}");
}

async fn a_full_queue_answers_429_with_retry_after(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("ENGRAM_JOBS_MAX_QUEUED_PER_OWNER", "3")]).await else { return };
    let (_, client) = tenant(&app, "busy@example.com").await;
    let job = || json!({"kind": "index_memory_vectors", "run_at": later()});
    let (status, _) = post(&app, &client, "/api/v1/jobs/batch", json!({"jobs": [job(), job()]})).await;
    assert_eq!(status, 202);
    let (status, reply) = post(&app, &client, "/api/v1/jobs/batch", json!({"jobs": [job(), job()]})).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (429, Some("rate_limited")), "{reply}");
    let (status, _) = post(&app, &client, "/api/v1/jobs", job()).await;
    assert_eq!(status, 202, "the third fits");
    let response = client.post(app.at("/api/v1/jobs")).json(&job()).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    // A service route that starts a job counts against the same cap, in its own error shape.
    let ingest = json!({"conversationText": "I live in Lisbon."});
    let (status, reply) = post(&app, &client, "/api/v1/memories/ingest", ingest).await;
    assert_eq!((status, reply["success"].as_bool()), (429, Some(false)), "{reply}");
    let (status, _) = app.post_json("/api/v1/jobs", &job()).await;
    assert_eq!(status, 202, "another owner (an administrator) is not held back");
}

/// A client the SSO gateway vouches for, as the user `id` with `role`.
fn through_gateway(id: &str, role: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in [("x-sso-secret", GATEWAY_SECRET), ("x-user-id", id), ("x-user-role", role)] {
        headers.insert(name, value.parse().unwrap());
    }
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

const GATEWAY_SECRET: &str = "the gateway's secret";

/// Owner A queues 5,000 jobs; owner B then submits one. B's job starts before at least 4,000
/// of A's (A keeps running in its share of the slots meanwhile), B's blocking route answers
/// with its result, and every one of A's jobs still runs: the jobs
/// that A's cap on running jobs passed over are parked and run when A has room. The owners
/// are administrators signed in through the SSO gateway, so that the jobs can be the test
/// kind and cost next to nothing: what is measured is delivery.
async fn another_owners_backlog_does_not_hold_a_job_back(stack: Stack) {
    let gateway = [("SSO_ENABLED", "true"), ("SSO_SHARED_SECRET", GATEWAY_SECRET)];
    let Some(app) = spawn_app(stack, &gateway).await else { return };
    let (alice, bob) = (through_gateway("alice", "admin"), through_gateway("bob", "admin"));
    let backlog: Vec<Value> = (0..5000).map(|_| json!({"kind": "noop"})).collect();
    let (status, reply) = post(&app, &alice, "/api/v1/jobs/batch", json!({"jobs": backlog})).await;
    assert_eq!(status, 202, "{reply}");
    let (status, reply) = post(&app, &bob, "/api/v1/jobs", json!({"kind": "noop"})).await;
    assert_eq!(status, 202, "{reply}");
    let bobs = app.wait_final(reply["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!(bobs["status"], "succeeded", "{bobs}");
    let time = |job: &Value, field: &str| job[field].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    // A route that waits for its job (DESIGN §4) answers with the job's result, not 202.
    let (status, repo) = post(&app, &bob, "/repos/setup", json!({"user_id": "bob-memory"})).await;
    assert_eq!(status, 200, "{repo}");
    let session =
        json!({"user_id": "bob-memory", "session_id": "s1", "memory_input": "Bob met Ada in Lisbon."});
    let asked = Instant::now();
    let (status, committed) = post(&app, &bob, "/memory/process-and-commit", session).await;
    assert_eq!((status, committed["status"].as_str()), (200, Some("committed")), "{committed}");
    let route_took = asked.elapsed();

    let started = Instant::now();
    let mut alices = Vec::new();
    loop {
        alices.clear();
        let mut cursor: Option<String> = None;
        loop {
            let after = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
            let page = app.get_json(&format!("/api/v1/jobs?limit=1000{after}")).await;
            let jobs = page["jobs"].as_array().unwrap();
            alices.extend(jobs.iter().filter(|j| j["owner"] == "sso:alice").cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
        if alices.iter().all(|j| j["status"] == "succeeded") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "alice's backlog did not drain (stranded jobs?)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(alices.len(), 5000);
    let (queued_at, bob_started) = (time(&bobs, "created_at"), time(&bobs, "started_at"));
    let ahead = alices.iter().filter(|j| (queued_at..bob_started).contains(&time(j, "started_at"))).count();
    let behind = alices.iter().filter(|j| time(j, "started_at") > bob_started).count();
    let alice_took = alices.iter().map(|j| time(j, "finished_at")).max().unwrap()
        - alices.iter().map(|j| time(j, "created_at")).min().unwrap();
    eprintln!(
        "fairness on {stack:?}: bob's job waited {} ms, while {ahead} of alice's 5,000 jobs started (in \
         her share of the slots) and {behind} started after it; bob's process-and-commit answered in {} ms; \
         alice's backlog took {} ms",
        (bob_started - queued_at).num_milliseconds(),
        route_took.as_millis(),
        alice_took.num_milliseconds()
    );
    assert!(
        behind >= 4000,
        "bob's job waited for alice's backlog: only {behind} of her jobs started after it"
    );
    assert!(bob_started - queued_at < chrono::Duration::seconds(10), "bob's job waited too long: {bobs}");
}
