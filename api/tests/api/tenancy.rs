//! Tenancy over every route, on SQLite and PostgreSQL. Tenant A owns a job, a schedule, an
//! API key and an evaluation task, each carrying a marker. Every protected route is then called with no token, an
//! expired token, a forged token and A's revoked API key (401 every time), and with tenant
//! B's session and API key (404, or 403 for administrators' routes, or B's own data): no
//! answer may hold A's marker, email or id, and A's resources are unchanged afterwards.
//!
//! A new route joins `ROUTES` in one line; `every_documented_route_is_in_the_table` fails
//! until it does.

use std::collections::BTreeSet;

use api::auth::tokens::{AccessTokens, Claims};
use base64::Engine;
use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    /// Anyone: the routes that hand out credentials, health, docs.
    Public,
    /// A signed-in caller, on what it owns; `{id}` stands for tenant A's resource of this kind.
    Owner(Resource),
    /// Administrators only: a signed-in user gets 403.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Resource {
    None,
    Job,
    Schedule,
    ApiKey,
    /// `{user_id}` in the path and `{user}` in the body stand for tenant A's user id.
    User,
    Memory,
    /// An evaluation task; `{agent}` in the path stands for its agent.
    Task,
}

use Access::{Admin, Owner, Public};
use Resource::{ApiKey, Job, Memory, Schedule, Task, User};

/// Every route: method, path as documented, who may call it, and a body to send.
const ROUTES: &[(&str, &str, Access, &str)] = &[
    ("GET", "/health", Public, ""),
    ("GET", "/ready", Public, ""),
    ("GET", "/metrics", Public, ""),
    ("POST", "/api/v1/auth/register", Public, ""),
    ("POST", "/api/v1/auth/login", Public, ""),
    ("POST", "/auth/github", Public, ""),
    ("POST", "/api/v1/auth/refresh", Owner(Resource::None), ""),
    ("GET", "/api/v1/auth/me", Owner(Resource::None), ""),
    ("POST", "/api/v1/auth/logout", Owner(Resource::None), ""),
    ("POST", "/api/v1/api-keys", Owner(Resource::None), r#"{"name": "b's key", "scopes": ["jobs:read"]}"#),
    ("GET", "/api/v1/api-keys", Owner(Resource::None), ""),
    ("DELETE", "/api/v1/api-keys/{id}", Owner(ApiKey), ""),
    ("POST", "/api/v1/jobs", Owner(Resource::None), r#"{"kind": "index_memory_vectors"}"#),
    ("GET", "/api/v1/jobs", Owner(Resource::None), ""),
    ("POST", "/api/v1/jobs/batch", Owner(Resource::None), r#"{"jobs": [{"kind": "index_memory_vectors"}]}"#),
    ("GET", "/api/v1/jobs/{id}", Owner(Job), ""),
    ("POST", "/api/v1/jobs/{id}/cancel", Owner(Job), "{}"),
    ("POST", "/api/v1/jobs/{id}/retry", Owner(Job), "{}"),
    ("GET", "/api/v1/jobs/{id}/logs", Owner(Job), ""),
    ("GET", "/api/v1/jobs/{id}/logs/stream", Owner(Job), ""),
    ("GET", "/api/v1/workers", Admin, ""),
    ("POST", "/api/v1/auth/invites", Admin, "{}"),
    ("GET", "/api/v1/auth/invites", Admin, ""),
    ("DELETE", "/api/v1/auth/invites/{id}", Admin, ""),
    ("GET", "/api/v1/queues", Admin, ""),
    ("GET", "/api/v1/schedules", Owner(Resource::None), ""),
    (
        "POST",
        "/api/v1/schedules",
        Owner(Resource::None),
        r#"{"kind": "index_memory_vectors", "cron": "0 0 1 1 *"}"#,
    ),
    ("GET", "/api/v1/schedules/{id}", Owner(Schedule), ""),
    ("PATCH", "/api/v1/schedules/{id}", Owner(Schedule), r#"{"paused": true}"#),
    ("DELETE", "/api/v1/schedules/{id}", Owner(Schedule), ""),
    ("POST", "/repos/setup", Owner(User), r#"{"user_id": "{user}"}"#),
    ("GET", "/repos/status/{user_id}", Owner(User), ""),
    (
        "POST",
        "/memory/context",
        Owner(User),
        r#"{"user_id": "{user}", "conversation": [{"role": "user", "content": "x"}]}"#,
    ),
    ("POST", "/memory/search", Owner(User), r#"{"user_id": "{user}", "query": "marker"}"#),
    (
        "POST",
        "/memory/orchestrated-search",
        Owner(User),
        r#"{"user_id": "{user}", "conversation": [{"role": "user", "content": "x"}]}"#,
    ),
    (
        "POST",
        "/memory/process-session",
        Owner(User),
        r#"{"user_id": "{user}", "session_id": "s9", "memory_input": "B was here"}"#,
    ),
    ("POST", "/memory/commit-session", Owner(User), r#"{"user_id": "{user}", "session_id": "s1"}"#),
    (
        "POST",
        "/memory/process-and-commit",
        Owner(User),
        r#"{"user_id": "{user}", "session_id": "s9", "memory_input": "B was here"}"#,
    ),
    ("POST", "/memory/rebuild-index", Owner(User), r#"{"user_id": "{user}"}"#),
    ("POST", "/memory/{user_id}/onboard", Owner(User), r#"{"user_info": "B was here"}"#),
    ("GET", "/memory/{user_id}/onboard-status", Owner(User), ""),
    (
        "POST",
        "/memory/{user_id}/context",
        Owner(User),
        r#"{"conversation": [{"role": "user", "content": "x"}]}"#,
    ),
    ("POST", "/memory/{user_id}/search", Owner(User), r#"{"query": "marker"}"#),
    (
        "POST",
        "/memory/{user_id}/orchestrated-search",
        Owner(User),
        r#"{"conversation": [{"role": "user", "content": "x"}]}"#,
    ),
    ("GET", "/memory/{user_id}/user-entity", Owner(User), ""),
    ("GET", "/memory/{user_id}/recent-timeline", Owner(User), ""),
    (
        "POST",
        "/memory/{user_id}/process-session",
        Owner(User),
        r#"{"session_id": "s9", "memory_input": "B was here"}"#,
    ),
    ("POST", "/memory/{user_id}/commit-session", Owner(User), r#"{"session_id": "s1"}"#),
    (
        "POST",
        "/memory/{user_id}/process-and-commit",
        Owner(User),
        r#"{"session_id": "s9", "memory_input": "B was here"}"#,
    ),
    ("POST", "/memory/{user_id}/rebuild-index", Owner(User), ""),
    ("GET", "/memory/{user_id}/status", Owner(User), ""),
    ("GET", "/memory/{user_id}/validate", Owner(User), ""),
    (
        "POST",
        "/push",
        Owner(Resource::None),
        r#"{"summary": {"agent_id": "b", "timestamp": "2026-02-01T12:00:00Z"}}"#,
    ),
    ("GET", "/pull", Owner(Resource::None), ""),
    ("GET", "/blob/{path}", Owner(Resource::None), ""),
    ("PUT", "/blob/{path}", Owner(Resource::None), "B was here"),
    ("DELETE", "/blob/{path}", Owner(Resource::None), ""),
    ("GET", "/sync", Owner(Resource::None), ""),
    ("GET", "/sync/events", Owner(Resource::None), ""),
    (
        "POST",
        "/blobs/batch",
        Owner(Resource::None),
        r#"{"operations": [{"op": "delete", "path": "{path}"}]}"#,
    ),
    ("GET", "/api/v1/federation/agents", Owner(Resource::None), ""),
    (
        "POST",
        "/api/v1/memories",
        Owner(Resource::None),
        r#"{"content": "B was here", "type": "fact", "scope": "site"}"#,
    ),
    ("GET", "/api/v1/memories", Owner(Resource::None), ""),
    ("POST", "/api/v1/memories/search", Owner(Resource::None), r#"{"query": "tenant private marker"}"#),
    (
        "POST",
        "/api/v1/memories/ingest",
        Owner(Resource::None),
        r#"{"conversationText": "User: I like tea."}"#,
    ),
    (
        "POST",
        "/api/v1/memories/import",
        Owner(Resource::None),
        r#"{"memories": [{"content": "B", "type": "fact"}]}"#,
    ),
    ("GET", "/api/v1/memories/export", Owner(Resource::None), ""),
    ("GET", "/api/v1/memories/sync/updates", Owner(Resource::None), ""),
    ("GET", "/api/v1/memories/{id}", Owner(Memory), ""),
    ("PUT", "/api/v1/memories/{id}", Owner(Memory), r#"{"content": "B was here"}"#),
    ("DELETE", "/api/v1/memories/{id}", Owner(Memory), ""),
    ("GET", "/api/v1/memories/{id}/history", Owner(Memory), ""),
    (
        "POST",
        "/api/v1/tasks",
        Owner(Resource::None),
        r#"{"scenario": "release-notes", "agents": ["quitter"], "rubric": ["AR"]}"#,
    ),
    ("GET", "/api/v1/tasks", Owner(Resource::None), ""),
    ("GET", "/api/v1/tasks/{id}", Owner(Task), ""),
    ("DELETE", "/api/v1/tasks/{id}", Owner(Task), ""),
    ("POST", "/api/v1/tasks/{id}/run", Owner(Task), ""),
    ("POST", "/api/v1/tasks/{id}/retry", Owner(Task), ""),
    ("GET", "/api/v1/tasks/{id}/agents", Owner(Task), ""),
    ("GET", "/api/v1/tasks/{id}/agents/{agent}", Owner(Task), ""),
    ("GET", "/api/v1/tasks/{id}/agents/{agent}/details", Owner(Task), ""),
    ("GET", "/api/v1/tasks/{id}/leaderboard", Owner(Task), ""),
    ("GET", "/api/v1/leaderboard", Owner(Resource::None), ""),
    ("GET", "/api/v1/artifacts/{id}/list", Owner(Task), ""),
    ("GET", "/api/v1/artifacts/{id}/{agent}/{artifact_name}", Owner(Task), ""),
    // A WebSocket: the upgrade itself is open to anyone (the AUTH-message form authenticates
    // after it; memories_ws.rs covers its tenancy), a plain GET is 401 without a credential.
    ("GET", "/api/v1/sync", Owner(Resource::None), ""),
];

const JWT_SECRET: &str = "tenancy-test-jwt-secret";
const MARKER: &str = "tenant-a-private-marker";
const PASSWORD: &str = "correct horse battery";
/// Where tenant A keeps a synced file holding the marker; `{path}` in ROUTES stands for it.
const BLOB_PATH: &str = "notes/tenant-a.md";

on_both_databases!(no_route_gives_one_tenant_another_tenants_data);

#[test]
fn every_documented_route_is_in_the_table() {
    let document = serde_json::to_value(api::http::docs::openapi()).unwrap();
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    let listed: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(method, path, ..)| (method.to_string(), path.to_string())).collect();
    let missing: Vec<_> = documented.difference(&listed).collect();
    assert!(missing.is_empty(), "add these routes to ROUTES: {missing:?}");
}

/// Tenant A: an account with a session, a job, a schedule, a live API key and a revoked one.
struct TenantA {
    user_id: String,
    email: String,
    token: String,
    session_id: String,
    job: String,
    schedule: String,
    memory: String,
    /// An evaluation task whose scenario is named after the marker.
    task: String,
    api_key_id: String,
    api_key: String,
    revoked_key: String,
}

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.client.request(method, app.at(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if !body.is_empty() {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    // A stream the caller may read never ends by itself: its first bytes are enough.
    let text = if response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().contains("event-stream"))
    {
        String::from("(event stream)")
    } else {
        response.text().await.unwrap()
    };
    (status, text)
}

async fn json_call(app: &TestApp, method: &str, path: &str, token: &str, body: Value) -> Value {
    let (status, text) = call(app, method, path, Some(token), &body.to_string()).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

async fn sign_up(app: &TestApp, email: &str) -> (String, String) {
    let (status, text) = call(
        app,
        "POST",
        "/api/v1/auth/register",
        None,
        &json!({"email": email, "password": PASSWORD}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    (body["user"]["id"].as_str().unwrap().to_string(), body["token"].as_str().unwrap().to_string())
}

async fn log_in(app: &TestApp, email: &str) -> String {
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    let (status, text) = call(app, "POST", "/api/v1/auth/login", None, &body).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["token"].as_str().unwrap().to_string()
}

fn session_of(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
            .unwrap();
    claims["sid"].as_str().unwrap().to_string()
}

async fn tenant_a(app: &TestApp) -> TenantA {
    let email = "tenant-a@example.com".to_string();
    let (user_id, token) = sign_up(app, &email).await;
    let far_future = chrono::Utc::now() + chrono::Duration::days(365);
    let job = json_call(
        app,
        "POST",
        "/api/v1/jobs",
        &token,
        json!({"kind": "ingest_conversation", "run_at": far_future,
        "payload": {"conversation_text": MARKER}}),
    )
    .await["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let schedule = json_call(
        app,
        "POST",
        "/api/v1/schedules",
        &token,
        json!({"kind": "ingest_conversation",
        "cron": "0 0 1 1 *", "payload": {"conversation_text": MARKER}}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = json_call(app, "POST", "/repos/setup", &token, json!({"user_id": user_id})).await;
    assert_eq!(repo["status"], "active", "{repo}");
    let session =
        json!({"user_id": user_id, "session_id": "s1", "memory_input": format!("Met Ada about {MARKER}.")});
    let processed = json_call(app, "POST", "/memory/process-session", &token, session).await;
    assert_eq!(processed["status"], "processed", "{processed}");
    let blob = app
        .client
        .put(app.at(&format!("/blob/{BLOB_PATH}")))
        .bearer_auth(&token)
        .header("Content-MD5", "new");
    assert_eq!(blob.body(MARKER).send().await.unwrap().status(), 201);
    let memory = json!({"content": format!("The {MARKER} memory"), "type": "fact", "scope": "user_global"});
    let memory = json_call(app, "POST", "/api/v1/memories", &token, memory).await["memory"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let scenario = json!({
        "name": MARKER,
        "turns": [{"kind": "fact", "fact": "f", "text": format!("The {MARKER} fact.")}],
        "deep_dive": ["Go on."],
        "probes": [{"id": "p", "dimension": "AR", "question": "Which fact?", "expected": MARKER}]
    });
    let task = json!({"scenario": scenario, "agents": ["quitter"], "rubric": ["AR"]});
    let task = json_call(app, "POST", "/api/v1/tasks", &token, task).await["task"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = json!({"name": MARKER, "scopes": ["jobs:rw"]});
    let created = json_call(app, "POST", "/api/v1/api-keys", &token, key.clone()).await;
    let revoked = json_call(app, "POST", "/api/v1/api-keys", &token, key).await;
    let revoked_id = revoked["id"].as_str().unwrap();
    assert_eq!(call(app, "DELETE", &format!("/api/v1/api-keys/{revoked_id}"), Some(&token), "").await.0, 204);
    TenantA {
        session_id: session_of(&token),
        user_id,
        email,
        token,
        job,
        schedule,
        memory,
        task,
        api_key_id: created["id"].as_str().unwrap().to_string(),
        api_key: created["secret"].as_str().unwrap().to_string(),
        revoked_key: revoked["secret"].as_str().unwrap().to_string(),
    }
}

/// A's own session and user, signed right but expired a minute ago.
fn expired_token(a: &TenantA) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: a.user_id.clone(),
        sid: a.session_id.clone(),
        iat: now - 3600,
        exp: now - 60,
        iss: "engram".into(),
    };
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// A's own session and user, unexpired, signed with a secret that is not the server's.
fn forged_token(a: &TenantA) -> String {
    AccessTokens::new(b"not-the-servers-secret", std::time::Duration::from_secs(3600))
        .issue(&a.user_id, &a.session_id)
}

fn path_for(path: &str, access: Access, a: &TenantA) -> String {
    let path = path
        .replace("{user_id}", &a.user_id)
        .replace("{path}", BLOB_PATH)
        .replace("{agent}", "quitter")
        .replace("{artifact_name}", "stderr.txt");
    let id = match access {
        Owner(Job) => &a.job,
        Owner(Schedule) => &a.schedule,
        Owner(ApiKey) => &a.api_key_id,
        Owner(Memory) => &a.memory,
        Owner(Task) => &a.task,
        _ => return path,
    };
    path.replace("{id}", id)
}

fn assert_no_data_of(a: &TenantA, what: &str, text: &str) {
    for secret in [MARKER, &a.email, &a.user_id] {
        assert!(!text.contains(secret), "{what} leaked {secret:?}: {text}");
    }
}

async fn no_route_gives_one_tenant_another_tenants_data(stack: Stack) {
    // An agent that exits at once: A's task ends without anything running for long.
    let agents = tempfile::tempdir().unwrap().keep().join("agents.toml");
    std::fs::write(&agents, "[agents.quitter]\ndriver = \"command\"\ncommand = [\"false\"]\n").unwrap();
    let agents = agents.display().to_string();
    let Some(app) = spawn_app(stack, &[("JWT_SECRET", JWT_SECRET), ("EVAL_AGENTS_FILE", &agents)]).await
    else {
        return;
    };
    let a = tenant_a(&app).await;
    sign_up(&app, "tenant-b@example.com").await;
    let b_key = {
        let token = log_in(&app, "tenant-b@example.com").await;
        let scopes = json!({"name": "b", "scopes": ["jobs:rw", "blobs:rw", "memories:rw", "federation:push", "evals:rw"]});
        json_call(&app, "POST", "/api/v1/api-keys", &token, scopes).await["secret"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let no_access = [
        ("no token", None),
        ("an expired token", Some(expired_token(&a))),
        ("a forged token", Some(forged_token(&a))),
        ("a revoked API key", Some(a.revoked_key.clone())),
        ("a garbage token", Some("ey.not.a-token".to_string())),
    ];

    for &(method, template, access, body) in ROUTES {
        let path = path_for(template, access, &a);
        let body = &body.replace("{user}", &a.user_id).replace("{path}", BLOB_PATH);
        if access == Public {
            let (status, text) = call(&app, method, &path, None, "").await;
            assert!(status < 500, "{method} {template}: {status}");
            assert_no_data_of(&a, &format!("{method} {template}"), &text);
            continue;
        }
        for (credential, token) in &no_access {
            let (status, text) = call(&app, method, &path, token.as_deref(), body).await;
            let what = format!("{method} {template} with {credential}");
            assert_eq!(status, 401, "{what}: {text}");
            assert_no_data_of(&a, &what, &text);
        }
        // A fresh session of B's per route, since one of them is logout.
        let b_session = log_in(&app, "tenant-b@example.com").await;
        for (credential, token) in [("B's session", &b_session), ("B's API key", &b_key)] {
            let (status, text) = call(&app, method, &path, Some(token), body).await;
            let what = format!("{method} {template} with {credential}");
            match access {
                Owner(Resource::None) => assert!(status < 500, "{what}: {status} {text}"),
                // A key may also be refused for what it is (403) before the resource is looked up.
                Owner(_) if credential == "B's API key" => {
                    assert!([403, 404].contains(&status), "{what}: {text}")
                }
                Owner(_) => assert_eq!(status, 404, "{what}: {text}"),
                Admin => assert_eq!(status, 403, "{what}: {text}"),
                Public => unreachable!(),
            }
            assert_no_data_of(&a, &what, &text);
        }
    }

    // Nothing of A's changed, and A's credentials still work.
    let job = json_call(&app, "GET", &format!("/api/v1/jobs/{}", a.job), &a.token, Value::Null).await;
    assert_eq!(
        (job["status"].as_str(), job["cancel_requested"].as_bool()),
        (Some("queued"), Some(false)),
        "{job}"
    );
    let schedule =
        json_call(&app, "GET", &format!("/api/v1/schedules/{}", a.schedule), &a.token, Value::Null).await;
    assert_eq!(schedule["paused"], false);
    let me = json_call(&app, "GET", "/api/v1/auth/me", &a.api_key, Value::Null).await;
    assert_eq!(me["user"]["id"], a.user_id.as_str(), "A's key still works");
    let repo = json_call(&app, "GET", &format!("/repos/status/{}", a.user_id), &a.token, Value::Null).await;
    assert!(
        repo["head_commit"].is_string() && repo["staged_changes"].as_array().unwrap().len() > 2,
        "A's session is still staged, not committed by B: {repo}"
    );
    let blob =
        app.client.get(app.at(&format!("/blob/{BLOB_PATH}"))).bearer_auth(&a.token).send().await.unwrap();
    assert_eq!(blob.text().await.unwrap(), MARKER, "A's synced file is unchanged");
    let memory =
        json_call(&app, "GET", &format!("/api/v1/memories/{}", a.memory), &a.token, Value::Null).await;
    assert_eq!(memory["memory"]["content"], format!("The {MARKER} memory"), "A's memory is unchanged");
    let task = json_call(&app, "GET", &format!("/api/v1/tasks/{}", a.task), &a.token, Value::Null).await;
    assert_ne!(task["error_message"], "Task cancelled by user", "B did not cancel A's task: {task}");
    let keys = json_call(&app, "GET", "/api/v1/api-keys", &a.token, Value::Null).await;
    assert!(keys.to_string().contains(&a.api_key_id), "A's session still works and holds its key: {keys}");
}
