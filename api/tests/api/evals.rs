//! Agent evaluations over HTTP, on SQLite and PostgreSQL, with real agent processes (the
//! command driver's test agent, `services/tests/services/fixtures/line_agent.py`): a scenario
//! task runs each agent as a job, the agent whose summary drops a fact breaks exactly the
//! dimension of that fact and ranks below the one that kept everything, on the task's and the
//! global leaderboard; bad requests are 4xx in Memory-Break's shape naming the field; another
//! tenant's task is 404; cancel kills a running agent; a hanging agent ends in error by timeout.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Stack, TestApp, admin_client, engram_worker, spawn_app, spawn_app_with};

on_both_databases!(
    a_scenario_task_ranks_the_agent_that_kept_every_fact_first,
    bad_requests_are_4xx_naming_the_field_and_tasks_stay_their_owners,
    cancel_kills_a_running_agent_and_a_hang_ends_in_a_timeout,
    a_killed_worker_leaves_no_agent_behind_and_the_run_finishes_on_another,
);

fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../services/tests/services/fixtures/line_agent.py")
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// An agents file declaring `(name, environment)` line agents, each with `marker` as an argument.
fn agents_file(agents: &[(&str, &[(&str, &str)])], marker: &str) -> String {
    let mut toml = String::new();
    for (name, env) in agents {
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
        toml.push_str(&format!(
            "[agents.{name}]\ndriver = \"command\"\ncommand = [{:?}, {:?}, {:?}]\nenv = {{ {} }}\n\n",
            python(),
            script(),
            marker,
            env.join(", ")
        ));
    }
    let path = tempfile::tempdir().unwrap().keep().join("agents.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

/// The scenario of the command driver's own tests.
fn scenario() -> Value {
    serde_json::from_str(include_str!("../../../services/tests/services/fixtures/line_agent_scenario.json"))
        .unwrap()
}

/// A freshly registered account's client.
async fn tenant(app: &TestApp, email: &str) -> reqwest::Client {
    let body = json!({"email": email, "password": "a long enough password"});
    let response = app.client.post(app.at("/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    admin_client(body["token"].as_str().unwrap())
}

async fn call(
    app: &TestApp,
    client: &reqwest::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let request = client.request(method.parse().unwrap(), app.at(path));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// Polls the task until `done` says so, or fails after `within`.
async fn wait_for(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = call(app, client, "GET", path, None).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(started.elapsed() < within, "{path} not there within {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pids of the processes whose command line holds `marker`.
fn pids_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

fn processes_with(marker: &str) -> usize {
    pids_with(marker).len()
}

async fn a_scenario_task_ranks_the_agent_that_kept_every_fact_first(stack: Stack) {
    let marker = format!("marker-{}", ulid::Ulid::generate());
    let forgetful: &[(&str, &str)] = &[("LINE_AGENT_FORGET", "frankfurt"), ("LINE_AGENT_COMPACT_AT", "200")];
    let keeper: &[(&str, &str)] = &[("LINE_AGENT_COMPACT_AT", "200")];
    let file = agents_file(&[("forgetful", forgetful), ("keeper", keeper)], &marker);
    let Some(app) = spawn_app(stack, &[("EVAL_AGENTS_FILE", &file)]).await else { return };
    let client = tenant(&app, "evaluator@example.com").await;

    let body =
        json!({"scenario": scenario(), "rubric": ["AR", "LRU", "SF"], "rubric_thresholds": {"AR": 0.8}});
    let (status, created) = call(&app, &client, "POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["message"], "Task created and queued for processing");
    let task = &created["task"];
    assert_eq!(
        (task["scenario"].as_str(), task["agents"].clone()),
        (Some("line-agent"), json!(["forgetful", "keeper"]))
    );
    let id = task["id"].as_str().unwrap();
    let path = format!("/api/v1/tasks/{id}");
    let task = wait_for(&app, &client, &path, Duration::from_secs(90), |t| t["status"] == "done").await;
    assert!(task["completed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(processes_with(&marker), 0, "no agent outlives its run");

    let (_, runs) = call(&app, &client, "GET", &format!("{path}/agents"), None).await;
    assert!(runs.as_array().unwrap().iter().all(|r| r["status"] == "done"), "{runs}");
    let (_, details) = call(&app, &client, "GET", &format!("{path}/agents/forgetful/details"), None).await;
    let scores = &details["scores"];
    assert_eq!(scores["dimension_scores"], json!({"AR": 1.0, "LRU": 0.0, "SF": 1.0}), "{details}");
    assert_eq!(
        (scores["passed"].clone(), scores["breaking_dimensions"].clone()),
        (json!(false), json!(["LRU"]))
    );
    assert_eq!(scores["breaking_details"]["LRU"], "LRU: 0.00 < 0.70 (FAILED)");
    assert_eq!(
        (scores["thresholds_used"]["AR"].clone(), scores["judge_type"].clone()),
        (json!(0.8), json!("deterministic"))
    );
    let run = &details["agent_run"];
    assert_eq!(run["stats"]["compression_detected"], true);
    assert!(run["stats"]["compactions"][0]["summary"].as_str().is_some_and(|s| !s.contains("Frankfurt")));
    assert!(run["milestones"]["deep_dive"].is_string() && run["milestones"]["evaluation"].is_string());
    assert_eq!(run["artifacts"]["transcript.txt"], format!("evals/{id}/forgetful/transcript.txt"));
    let listed = app.client.get(app.at(&format!("/api/v1/artifacts/{id}/list"))).send().await.unwrap();
    assert_eq!(listed.status(), 401);
    let (_, listed) = call(&app, &client, "GET", &format!("/api/v1/artifacts/{id}/list"), None).await;
    let names: Vec<&str> =
        listed["artifacts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"transcript.txt") && names.contains(&"events.jsonl"), "{listed}");
    let transcript =
        client.get(app.at(&format!("/api/v1/artifacts/{id}/forgetful/transcript.txt"))).send().await.unwrap();
    assert_eq!(transcript.headers()["content-type"], "text/plain; charset=utf-8");
    let transcript = transcript.text().await.unwrap();
    assert!(
        transcript.contains("USER: The codename is Bluefin.")
            && transcript.contains("[evaluation] ASSISTANT"),
        "{transcript}"
    );
    let (status, missing) =
        call(&app, &client, "GET", &format!("/api/v1/artifacts/{id}/forgetful/..%2Fsecret"), None).await;
    assert_eq!((status, missing["error"].as_str()), (404, Some("Artifact not found")));
    let (_, keeper) = call(&app, &client, "GET", &format!("{path}/agents/keeper/details"), None).await;
    assert_eq!(keeper["scores"]["passed"], true, "{keeper}");

    let (_, board) = call(&app, &client, "GET", &format!("{path}/leaderboard"), None).await;
    let order: Vec<&str> =
        board["leaderboard"].as_array().unwrap().iter().map(|e| e["agent"].as_str().unwrap()).collect();
    assert_eq!(order, ["keeper", "forgetful"], "{board}");
    assert_eq!(board["leaderboard"][1]["compression_detected"], "True");

    let (status, global) = call(&app, &client, "GET", "/api/v1/leaderboard", None).await;
    assert_eq!(status, 200, "{global}");
    assert_eq!((global["runs_counted"].clone(), global["tasks_counted"].clone()), (json!(2), json!(1)));
    let first = &global["leaderboard"][0];
    assert_eq!(
        (first["agent"].as_str(), first["rank"].as_i64(), first["pass_rate"].as_f64()),
        (Some("keeper"), Some(1), Some(1.0))
    );
    let (_, none) = call(&app, &client, "GET", "/api/v1/leaderboard?rubric=TTL", None).await;
    assert_eq!(none["runs_counted"], 0, "no task's rubric holds TTL");
    let (_, listed) = call(&app, &client, "GET", "/api/v1/tasks?status=done", None).await;
    assert_eq!((listed["total"].clone(), listed["tasks"][0]["id"].clone()), (json!(1), json!(id)));
}

async fn bad_requests_are_4xx_naming_the_field_and_tasks_stay_their_owners(stack: Stack) {
    let marker = format!("marker-{}", ulid::Ulid::generate());
    let file = agents_file(&[("keeper", &[])], &marker);
    let Some(app) = spawn_app(stack, &[("EVAL_AGENTS_FILE", &file)]).await else { return };
    let client = tenant(&app, "owner@example.com").await;
    let mut bad_turn = scenario();
    bad_turn["turns"][0]["text"] = json!("");
    let cases = [
        (json!({"scenario": "release-notes", "agents": ["nobody"]}), 400, "not available"),
        (json!({"pr_url": "https://github.com/o/r/pull/1", "agents": ["keeper"]}), 400, "pr_url"),
        (json!({"scenario": "no-such", "agents": ["keeper"]}), 422, "scenario:"),
        (json!({"scenario": bad_turn, "agents": ["keeper"]}), 422, "turns[0].text"),
        (json!({"scenario": "release-notes", "rubric_thresholds": {"AR": 1.5}}), 422, "rubric_thresholds.AR"),
        (json!({"scenario": "release-notes", "rubric": ["AR", "XX"]}), 422, "rubric[1]"),
        (json!({"scenario": "release-notes", "max_files": 0}), 422, "max_files"),
        (json!({"scenario": "release-notes", "colour": "blue"}), 422, "colour"),
    ];
    for (body, status, names) in cases {
        let (got, reply) = call(&app, &client, "POST", "/api/v1/tasks", Some(body.clone())).await;
        assert_eq!(got, status, "{body}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains(names), "{body}: {reply}");
        assert_eq!(
            (reply["status_code"].as_u64(), reply["path"].as_str()),
            (Some(status as u64), Some("/api/v1/tasks"))
        );
        assert_eq!(reply["detail"], reply["error"]);
    }
    let (_, listed) = call(&app, &client, "GET", "/api/v1/tasks?filter=all", None).await;
    assert_eq!(listed["total"], 0, "nothing was created");
    let (status, _) = call(&app, &client, "GET", "/api/v1/tasks?filter=everything", None).await;
    assert_eq!(status, 422);
    let (status, _) = call(&app, &client, "GET", "/api/v1/tasks?filter=team_tasks", None).await;
    assert_eq!(status, 403);

    let (status, created) = call(
        &app,
        &client,
        "POST",
        "/api/v1/tasks",
        Some(json!({"scenario": "release-notes", "rubric": ["AR"]})),
    )
    .await;
    assert_eq!(status, 202, "{created}");
    let id = created["task"]["id"].as_str().unwrap().to_string();
    let other = tenant(&app, "other@example.com").await;
    for (method, path) in [
        ("GET", format!("/api/v1/tasks/{id}")),
        ("GET", format!("/api/v1/tasks/{id}/agents")),
        ("GET", format!("/api/v1/tasks/{id}/leaderboard")),
        ("DELETE", format!("/api/v1/tasks/{id}")),
        ("POST", format!("/api/v1/tasks/{id}/retry")),
    ] {
        let (status, reply) = call(&app, &other, method, &path, None).await;
        assert_eq!((status, reply["error"].as_str()), (404, Some("Task not found")), "{method} {path}");
    }
    let (_, theirs) = call(&app, &other, "GET", "/api/v1/leaderboard", None).await;
    assert_eq!(theirs["runs_counted"], 0);
    let (status, _) = call(&app, &client, "GET", &format!("/api/v1/tasks/{id}/agents/nobody"), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&app, &app.client, "GET", "/api/v1/tasks", None).await;
    assert_eq!(status, 401, "a credential is needed");
}

async fn cancel_kills_a_running_agent_and_a_hang_ends_in_a_timeout(stack: Stack) {
    let marker = format!("marker-{}", ulid::Ulid::generate());
    let file = agents_file(&[("hanger", &[("LINE_AGENT_HANG_AT_TURN", "3")])], &marker);
    let extra = [("EVAL_AGENTS_FILE", file.as_str()), ("EVAL_TURN_TIMEOUT_SECS", "3")];
    let Some(app) = spawn_app(stack, &extra).await else { return };
    let client = tenant(&app, "canceller@example.com").await;
    let body = json!({"scenario": scenario(), "rubric": ["AR"]});
    let (status, created) = call(&app, &client, "POST", "/api/v1/tasks", Some(body)).await;
    assert_eq!(status, 202, "{created}");
    let path = format!("/api/v1/tasks/{}", created["task"]["id"].as_str().unwrap());
    wait_for(&app, &client, &format!("{path}/agents/hanger"), Duration::from_secs(30), |r| {
        r["status"] == "running"
    })
    .await;
    let started = Instant::now();
    while processes_with(&marker) == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the agent never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, cancelled) = call(&app, &client, "DELETE", &path, None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(
        (cancelled["task"]["status"].as_str(), cancelled["task"]["error_message"].as_str()),
        (Some("error"), Some("Task cancelled by user"))
    );
    let started = Instant::now();
    while processes_with(&marker) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the cancelled agent is still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, run) = call(&app, &client, "GET", &format!("{path}/agents/hanger"), None).await;
    assert_eq!(
        (run["status"].as_str(), run["error_message"].as_str()),
        (Some("error"), Some("Task cancelled"))
    );
    let (status, _) = call(&app, &client, "DELETE", &path, None).await;
    assert_eq!(status, 400, "an ended task is not cancelled twice");

    // Run again, the agent hangs on the same turn: the turn timeout ends the run as an error.
    let (status, retried) = call(&app, &client, "POST", &format!("{path}/retry"), None).await;
    assert_eq!((status, retried["agents"].clone()), (200, json!(["hanger"])), "{retried}");
    let run = wait_for(&app, &client, &format!("{path}/agents/hanger"), Duration::from_secs(60), |r| {
        r["status"] == "error"
    })
    .await;
    assert_eq!(run["retry_count"], 1);
    assert!(run["error_message"].as_str().unwrap().contains("did not finish a turn within 3 s"), "{run}");
    assert!(run["artifacts"]["transcript.txt"].is_string(), "a failed run keeps what it recorded: {run}");
    let task = wait_for(&app, &client, &path, Duration::from_secs(10), |t| t["status"] == "done").await;
    assert_eq!(task["status"], "done", "a task ends once its runs have, failed or not");
    let (_, details) = call(&app, &client, "GET", &format!("{path}/agents/hanger/details"), None).await;
    assert_eq!(details["scores"], Value::Null, "an agent that failed is never scored");
    let started = Instant::now();
    while processes_with(&marker) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the timed-out agent is still running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The run starts over on the second worker; the agent the first one left (it lingers after
/// its input ends, as one waiting on its model would) is killed when the second one starts.
async fn a_killed_worker_leaves_no_agent_behind_and_the_run_finishes_on_another(stack: Stack) {
    let marker = format!("marker-{}", ulid::Ulid::generate());
    let slow: &[(&str, &str)] =
        &[("LINE_AGENT_SLOW_MS", "300"), ("LINE_AGENT_LINGER_SECS", "120"), ("LINE_AGENT_COMPACT_AT", "200")];
    let file = agents_file(&[("slow", slow)], &marker);
    let Some(app) = spawn_app_with(stack, &[("EVAL_AGENTS_FILE", &file)], false).await else { return };
    let worker = || {
        engram_worker(&["--heartbeat-secs", "1", "--stale-after-secs", "3"], &app.env)
            .spawn()
            .expect("engram-worker starts")
    };
    let mut first = worker();
    let client = tenant(&app, "survivor@example.com").await;
    let (status, created) =
        call(&app, &client, "POST", "/api/v1/tasks", Some(json!({"scenario": scenario(), "rubric": ["AR"]})))
            .await;
    assert_eq!(status, 202, "{created}");
    let path = format!("/api/v1/tasks/{}", created["task"]["id"].as_str().unwrap());
    wait_for(&app, &client, &format!("{path}/agents/slow"), Duration::from_secs(30), |r| {
        r["milestones"]["pre_compression"].is_string()
    })
    .await;
    assert_eq!(pids_with(&marker).len(), 1);

    let orphan = pids_with(&marker);
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(pids_with(&marker), orphan, "the agent outlives its killed worker");
    let _second = worker();
    let started = Instant::now();
    while pids_with(&marker).contains(&orphan[0]) {
        assert!(started.elapsed() < Duration::from_secs(20), "the orphaned agent was not reaped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let task = wait_for(&app, &client, &path, Duration::from_secs(120), |t| t["status"] == "done").await;
    assert_eq!(task["status"], "done");
    let (_, details) = call(&app, &client, "GET", &format!("{path}/agents/slow/details"), None).await;
    assert_eq!(details["agent_run"]["status"], "done", "{details}");
    assert_eq!(details["scores"]["dimension_scores"]["AR"], 1.0, "{details}");
    let started = Instant::now();
    while processes_with(&marker) > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "an agent was left behind");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
