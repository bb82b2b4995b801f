//! Federation (the agmem coordinator) over HTTP, on SQLite and PostgreSQL: the seed's push
//! and pull shapes, the merge of each agent's latest summary (re-pushes replace, older pushes
//! are ignored) kept across a restart, pulls since a cursor, the agents listing, 422s naming
//! the field, API key scopes, the per-key rate limit, and tenants apart.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::common;
use crate::common::{Stack, TestApp, spawn_app};

on_both_databases!(
    the_merge_of_latest_summaries_survives_a_restart,
    a_pull_since_a_cursor_answers_only_changes,
    bad_summaries_are_refused_naming_the_field,
    api_keys_need_their_federation_scopes,
    each_key_is_rate_limited,
    tenants_do_not_see_each_other
);

const PASSWORD: &str = "a long password";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, HeaderMap, Value) {
    let mut request = app.client.request(method, app.at(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

/// A new account's access token.
async fn register(app: &TestApp, email: &str) -> String {
    let body = json!({"email": email, "password": PASSWORD});
    let response = app.client.post(app.at("/api/v1/auth/register")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// A new API key of the account `token` is a session of.
async fn api_key(app: &TestApp, token: &str, scopes: &[&str]) -> String {
    let body = json!({"name": format!("{scopes:?}"), "scopes": scopes});
    let (status, _, created) = send(app, Method::POST, "/api/v1/api-keys", token, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["secret"].as_str().unwrap().to_string()
}

fn summary(agent: &str, timestamp: &str, topics: Value, hashes: &[&str]) -> Value {
    json!({"summary": {"agent_id": agent, "timestamp": timestamp, "topic_counts": topics, "fact_hashes": hashes}})
}

async fn push(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, _, reply) = send(app, Method::POST, "/push", token, Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn pull(app: &TestApp, token: &str, query: &str) -> Value {
    let (status, _, reply) = send(app, Method::GET, &format!("/pull{query}"), token, None).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn the_merge_of_latest_summaries_survives_a_restart(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = register(&app, "coordinator@example.com").await;

    // The seed's example, answered in the seed's shape.
    let seed = json!({"summary": {"agent_id": "agent-123", "timestamp": "2026-02-01T12:00:00Z",
        "topic_counts": {"user-preferences": 5, "project-context": 3},
        "fact_hashes": ["abc123", "def456"], "metadata": {"version": "0.2.1"}}});
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let reply = push(&app, &token, seed).await;
    let keys: Vec<&str> = reply.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["agent_id", "message", "status", "timestamp"], "{reply}");
    assert_eq!(reply["status"], "accepted");
    assert_eq!(reply["agent_id"], "agent-123");
    assert_eq!(reply["message"], "Summary from agent-123 stored successfully");
    let received: chrono::DateTime<chrono::Utc> = reply["timestamp"].as_str().unwrap().parse().unwrap();
    assert!(received > before && reply["timestamp"].as_str().unwrap().ends_with('Z'), "{reply}");

    let b = summary("agent-b", "2026-02-01T12:00:00Z", json!({"user-preferences": 4}), &["def456"]);
    push(&app, &token, b).await;
    let c = summary(
        "agent-c",
        "2026-02-01T11:30:00+00:00",
        json!({"project-context": 1, "tools": 2}),
        &["abc123"],
    );
    push(&app, &token, c).await;
    // agent-b again: replaces its first summary.
    let b = summary(
        "agent-b",
        "2026-02-01T12:05:00Z",
        json!({"user-preferences": 10, "project-context": 5}),
        &["FEED01", "def456"],
    );
    push(&app, &token, b).await;
    // agent-b, older than what is stored: ignored.
    let stale = summary("agent-b", "2026-02-01T12:01:00Z", json!({"user-preferences": 1000}), &["ffff"]);
    let ignored = push(&app, &token, stale).await;
    assert_eq!(ignored["status"], "ignored");
    assert!(ignored["message"].as_str().unwrap().contains("newer summary"), "{ignored}");

    let expected = json!({
        "merged_topic_counts": {"user-preferences": 15, "project-context": 9, "tools": 2},
        "unique_fact_hashes": ["abc123", "def456", "feed01"],
        "contributing_agents": 3,
        "last_updated": "2026-02-01T12:05:00Z",
        "metadata": {"total_facts": 3, "total_topics": 3},
        "cursor": 4,
    });
    assert_eq!(pull(&app, &token, "").await, expected);

    // A fresh engram-api process on the same database and data dir, which never saw the
    // pushes, answers the same pull: the merge lives in the database, not in a process.
    let port = common::free_port();
    let mut env = app.env.clone();
    env.push(("ENGRAM_BIND".to_string(), format!("127.0.0.1:{port}")));
    let _fresh = common::engram_api(&[], &env).spawn().expect("engram-api starts");
    let fresh = format!("http://127.0.0.1:{port}");
    common::wait_until_up(&format!("{fresh}/health"), std::time::Duration::from_secs(60)).await;
    let response = app.client.get(format!("{fresh}/pull")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap(), expected, "kept across processes");

    let (status, _, listed) = send(&app, Method::GET, "/api/v1/federation/agents", &token, None).await;
    assert_eq!(status, 200, "{listed}");
    let agents = listed["agents"].as_array().unwrap();
    let ids: Vec<&str> = agents.iter().map(|a| a["agent_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["agent-123", "agent-b", "agent-c"]);
    let first = &agents[0];
    assert_eq!(
        (&first["timestamp"], &first["topics"], &first["facts"]),
        (&json!("2026-02-01T12:00:00Z"), &json!(2), &json!(2))
    );
    assert_eq!(first["metadata"], json!({"version": "0.2.1"}));
    assert_eq!(first["last_push"], reply["timestamp"], "when it was received");
    assert_eq!((&agents[1]["timestamp"], &agents[1]["facts"]), (&json!("2026-02-01T12:05:00Z"), &json!(2)));
}

async fn a_pull_since_a_cursor_answers_only_changes(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = register(&app, "since@example.com").await;
    let empty = pull(&app, &token, "").await;
    assert_eq!(empty["cursor"], 0);
    assert_eq!((&empty["contributing_agents"], &empty["last_updated"]), (&json!(0), &Value::Null));

    push(&app, &token, summary("a", "2026-02-01T12:00:00Z", json!({"x": 1, "y": 2}), &["01", "02"])).await;
    push(&app, &token, summary("b", "2026-02-01T12:00:00Z", json!({"y": 3}), &["02", "03"])).await;
    let whole = pull(&app, &token, "").await;
    let cursor = whole["cursor"].as_i64().unwrap();

    let unchanged = pull(&app, &token, &format!("?since={cursor}")).await;
    assert_eq!(
        unchanged,
        json!({"merged_topic_counts": {}, "unique_fact_hashes": [], "contributing_agents": 2,
            "last_updated": "2026-02-01T12:00:00Z", "metadata": {"total_facts": 3, "total_topics": 2},
            "cursor": cursor, "since": cursor, "removed_topics": [], "removed_fact_hashes": []})
    );

    push(&app, &token, summary("a", "2026-02-01T12:10:00Z", json!({"y": 2, "z": 7}), &["02", "04"])).await;
    let changes = pull(&app, &token, &format!("?since={cursor}")).await;
    assert_eq!(changes["merged_topic_counts"], json!({"z": 7}));
    assert_eq!(changes["removed_topics"], json!(["x"]));
    assert_eq!(changes["unique_fact_hashes"], json!(["04"]));
    assert_eq!(changes["removed_fact_hashes"], json!(["01"]));
    assert_eq!(changes["cursor"], cursor + 1);
    assert_eq!(changes["metadata"], json!({"total_facts": 3, "total_topics": 2}));
    assert_eq!(changes["last_updated"], "2026-02-01T12:10:00Z");

    for bad in ["abc", "-1", "1.5"] {
        let (status, _, reply) = send(&app, Method::GET, &format!("/pull?since={bad}"), &token, None).await;
        assert_eq!(status, 422, "{bad}: {reply}");
        assert!(reply["detail"].as_str().unwrap().starts_with("since:"), "{reply}");
    }
}

async fn bad_summaries_are_refused_naming_the_field(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = register(&app, "strict@example.com").await;
    let ok = |field: &str, value: Value| {
        let mut body = summary("a", "2026-02-01T12:00:00Z", json!({"t": 1}), &["ab"]);
        body["summary"][field] = value;
        body
    };
    let many: Vec<String> = (0..100_001).map(|i| format!("{i:x}")).collect();
    let cases = [
        (json!({"agent_id": "a"}), "summary:"),
        (json!({"summary": {"timestamp": "2026-02-01T12:00:00Z"}}), "summary.agent_id:"),
        (ok("agent_id", json!("")), "summary.agent_id:"),
        (ok("agent_id", json!("a".repeat(256))), "summary.agent_id:"),
        (ok("timestamp", json!("yesterday")), "summary.timestamp:"),
        (ok("timestamp", json!("2026-02-30T12:00:00Z")), "summary.timestamp:"),
        (ok("topic_counts", json!({"": 1})), "summary.topic_counts:"),
        (ok("topic_counts", json!({"t".repeat(256): 1})), "summary.topic_counts:"),
        (ok("topic_counts", json!({"foo": -1})), "summary.topic_counts.foo: must be a non-negative integer"),
        (ok("topic_counts", json!({"foo": 2.5})), "summary.topic_counts.foo:"),
        (ok("topic_counts", json!({"foo": "3"})), "summary.topic_counts.foo:"),
        (ok("fact_hashes", json!(["ab", "not-hex"])), "summary.fact_hashes[1]:"),
        (ok("fact_hashes", json!([""])), "summary.fact_hashes[0]:"),
        (ok("fact_hashes", json!(["a".repeat(129)])), "summary.fact_hashes[0]:"),
        (ok("fact_hashes", json!(many)), "summary.fact_hashes: at most 100000"),
        (ok("metadata", json!("v1")), "summary.metadata:"),
    ];
    for (body, field) in cases {
        let (status, _, reply) = send(&app, Method::POST, "/push", &token, Some(body.clone())).await;
        let shown: String = body.to_string().chars().take(120).collect();
        assert_eq!(status, 422, "{shown}: {reply}");
        let detail = reply["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(field), "{shown}: {detail:?} should name {field}");
        assert_eq!(reply["error"]["code"], "unprocessable");
    }
    let not_json =
        app.client.post(app.at("/push")).bearer_auth(&token).body("agent_id=a").send().await.unwrap();
    assert_eq!(not_json.status(), 415);
    let at_limit: Vec<String> = (0..100_000).map(|i| format!("{i:x}")).collect();
    push(&app, &token, summary("big", "2026-02-01T12:00:00Z", json!({}), &[])).await;
    let mut big = summary("big", "2026-02-01T12:00:01Z", json!({}), &[]);
    big["summary"]["fact_hashes"] = json!(at_limit);
    push(&app, &token, big).await;
    let merged = pull(&app, &token, "").await;
    assert_eq!(
        (&merged["contributing_agents"], &merged["metadata"]["total_facts"]),
        (&json!(1), &json!(100_000))
    );
}

async fn api_keys_need_their_federation_scopes(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = register(&app, "scoped@example.com").await;
    let pusher = api_key(&app, &token, &["federation:push"]).await;
    let puller = api_key(&app, &token, &["federation:pull"]).await;
    let reader = api_key(&app, &token, &["federation:read"]).await;
    let other = api_key(&app, &token, &["jobs:rw", "blobs:rw", "memories:rw"]).await;
    let body = summary("a", "2026-02-01T12:00:00Z", json!({"t": 1}), &["ab"]);

    let status = |method: Method, path: &'static str, key: String| {
        let app = &app;
        let body = body.clone();
        async move {
            let body = (method == Method::POST).then_some(body);
            send(app, method, path, &key, body).await.0
        }
    };
    let routes =
        [(Method::POST, "/push"), (Method::GET, "/pull"), (Method::GET, "/api/v1/federation/agents")];
    for (key, allowed) in [
        (&pusher, [200, 403, 403]),
        (&puller, [403, 200, 200]),
        (&reader, [403, 200, 200]),
        (&other, [403, 403, 403]),
        (&token, [200, 200, 200]),
        (&"ek_not-a-key".to_string(), [401, 401, 401]),
    ] {
        for ((method, path), expected) in routes.iter().zip(allowed) {
            assert_eq!(
                status(method.clone(), path, key.clone()).await,
                expected,
                "{method} {path} with {key:.12}"
            );
        }
    }
    let seen = pull(&app, &puller, "").await;
    assert_eq!(seen["merged_topic_counts"], json!({"t": 1}), "keys act in their user's federation");
    let (status, _, reply) = send(&app, Method::GET, "/pull", &pusher, None).await;
    assert_eq!(status, 403);
    assert!(reply["detail"].as_str().unwrap().contains("federation:pull"), "{reply}");
}

async fn each_key_is_rate_limited(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("FEDERATION_RATE_LIMIT", "3")]).await else { return };
    let token = register(&app, "busy@example.com").await;
    let key = api_key(&app, &token, &["federation:push", "federation:pull"]).await;
    let other_key = api_key(&app, &token, &["federation:pull"]).await;
    push(&app, &key, summary("a", "2026-02-01T12:00:00Z", json!({"t": 1}), &[])).await;
    pull(&app, &key, "").await;
    pull(&app, &key, "?since=0").await;
    let (status, headers, reply) = send(&app, Method::GET, "/pull", &key, None).await;
    assert_eq!(status, 429, "{reply}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(reply["detail"].as_str().unwrap().contains("Too many"), "{reply}");
    let body = summary("a", "2026-02-01T12:01:00Z", json!({"t": 2}), &[]);
    assert_eq!(send(&app, Method::POST, "/push", &key, Some(body)).await.0, 429, "pushes count too");

    // Another key, and the user's session, have counts of their own.
    assert_eq!(pull(&app, &other_key, "").await["merged_topic_counts"], json!({"t": 1}));
    pull(&app, &token, "").await;
}

async fn tenants_do_not_see_each_other(stack: Stack) {
    let sso = [("SSO_ENABLED", "true"), ("SSO_SHARED_SECRET", "gateway-secret")];
    let Some(app) = spawn_app(stack, &sso).await else { return };
    let a = register(&app, "tenant-a@example.com").await;
    let b = register(&app, "tenant-b@example.com").await;
    push(&app, &a, summary("shared-name", "2026-02-01T12:00:00Z", json!({"a-secret": 1}), &["aaaa"])).await;
    let seen_by_b = pull(&app, &b, "").await;
    assert_eq!(
        (&seen_by_b["merged_topic_counts"], &seen_by_b["unique_fact_hashes"]),
        (&json!({}), &json!([]))
    );
    assert_eq!(seen_by_b["contributing_agents"], 0);
    let (_, _, agents) = send(&app, Method::GET, "/api/v1/federation/agents", &b, None).await;
    assert_eq!(agents, json!({"agents": []}));
    // B's agent of the same name, older: B's own, so accepted, and A's stays as it was.
    let older = summary("shared-name", "2026-01-01T00:00:00Z", json!({"b-topic": 2}), &["bbbb"]);
    assert_eq!(push(&app, &b, older).await["status"], "accepted");
    let seen_by_a = pull(&app, &a, "").await;
    assert_eq!(
        (&seen_by_a["merged_topic_counts"], &seen_by_a["unique_fact_hashes"]),
        (&json!({"a-secret": 1}), &json!(["aaaa"]))
    );
    let admin = app.get_json("/pull").await;
    assert_eq!(admin["contributing_agents"], 0, "the static API_KEY has a federation of its own");

    // SSO users of one org share its federation.
    let gateway = |user: &'static str, org: &'static str| {
        let request = app.client.get(app.at("/pull")).header("x-sso-secret", "gateway-secret");
        request.header("x-user-id", user).header("x-org-id", org)
    };
    let pushed = app
        .client
        .post(app.at("/push"))
        .header("x-sso-secret", "gateway-secret")
        .header("x-user-id", "alice")
        .header("x-org-id", "acme")
        .json(&summary("alice-laptop", "2026-02-01T12:00:00Z", json!({"acme": 3}), &["acac"]))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200);
    let bob: Value = gateway("bob", "acme").send().await.unwrap().json().await.unwrap();
    assert_eq!(bob["merged_topic_counts"], json!({"acme": 3}), "{bob}");
    let carol: Value = gateway("carol", "globex").send().await.unwrap().json().await.unwrap();
    assert_eq!(carol["contributing_agents"], 0, "{carol}");
}
