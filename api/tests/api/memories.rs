//! Semantic memories (AIBrain's `/api/v1/memories...`) over HTTP on SQLite and PostgreSQL:
//! the original's request and response shapes, CRUD with history, 422s naming the field with
//! nothing stored, list filters and paging, search in each mode (a paraphrase found by
//! meaning), ingest offline (add, skip, supersede) and through an LLM stand-in, import of
//! 10,000 then an equal export, the sync feed with deletes, and the per-user rate limits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

on_both_databases!(
    the_originals_shapes_and_crud_with_history,
    bad_input_is_refused_naming_the_field_and_stores_nothing,
    lists_filter_and_page,
    search_finds_a_paraphrase_by_meaning_and_reports_score_parts,
    ingest_offline_adds_skips_and_supersedes,
    ingest_uses_the_llm_when_configured,
    import_ten_thousand_then_export_the_same,
    the_sync_feed_pages_and_reports_deletes,
    the_costly_routes_are_rate_limited_per_user,
);

const PASSWORD: &str = "a long password";

async fn call(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.request(method, app.at(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn user(app: &TestApp, email: &str) -> String {
    let (status, body) = call(
        app,
        Method::POST,
        "/api/v1/auth/register",
        "",
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, reply) = call(app, Method::POST, "/api/v1/memories", token, Some(body)).await;
    assert_eq!(status, 201, "{reply}");
    reply["memory"].clone()
}

fn fact(content: &str) -> Value {
    json!({"content": content, "type": "fact", "scope": "user_global"})
}

async fn the_originals_shapes_and_crud_with_history(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let alice = user(&app, "alice@example.com").await;
    // The seed README's example, as its clients send it.
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/memories",
        &alice,
        Some(json!({
            "content": "I prefer dark mode in all applications",
            "type": "preference",
            "scope": "user_global",
            "tags": ["ui", "preferences"],
            "confidence": 0.95,
            "sourceUrl": "https://chatgpt.com/c/123",
            "sourcePlatform": "chatgpt.com",
            "sourceTimestamp": 1767225600000i64,
            "sourceConversationId": "123"
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["success"], true);
    let memory = &created["memory"];
    for key in [
        "id",
        "userId",
        "content",
        "type",
        "scope",
        "sourceUrl",
        "sourcePlatform",
        "sourceTimestamp",
        "sourceConversationId",
        "createdAt",
        "updatedAt",
        "confidence",
        "accessCount",
        "tags",
    ] {
        assert!(memory.get(key).is_some(), "memory lacks {key}: {memory}");
    }
    assert!(memory.get("embedding").is_none(), "no vector unless asked: {memory}");
    assert_eq!(memory["sourceTimestamp"], "2026-01-01T00:00:00Z");
    assert_eq!(memory["tags"], json!(["ui", "preferences"]));
    assert_eq!(memory["accessCount"], 0);
    let id = memory["id"].as_str().unwrap().to_string();

    let (status, read) = call(&app, Method::GET, &format!("/api/v1/memories/{id}"), &alice, None).await;
    assert_eq!(status, 200);
    assert_eq!(read["memory"]["content"], "I prefer dark mode in all applications");
    let (_, with_vector) =
        call(&app, Method::GET, &format!("/api/v1/memories/{id}?includeEmbedding=true"), &alice, None).await;
    assert_eq!(with_vector["memory"]["embedding"].as_array().unwrap().len(), 384);

    let (status, updated) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/memories/{id}"),
        &alice,
        Some(json!({"content": "I prefer light mode in all applications", "sourceUrl": null})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["memory"]["id"], id.as_str());
    assert_eq!(updated["memory"]["sourceUrl"], Value::Null);
    assert_eq!(updated["memory"]["tags"], json!(["ui", "preferences"]), "fields not sent are kept");
    let (_, history) = call(&app, Method::GET, &format!("/api/v1/memories/{id}/history"), &alice, None).await;
    assert_eq!(history["count"], 1, "{history}");
    assert_eq!(history["history"][0]["content"], "I prefer dark mode in all applications");
    assert_eq!(history["history"][0]["supersededBy"], id.as_str());
    assert!(history["history"][0]["validTo"].is_string());

    let bob = user(&app, "bob@example.com").await;
    for (method, body) in [(Method::GET, None), (Method::PUT, Some(fact("mine now"))), (Method::DELETE, None)]
    {
        let (status, reply) = call(&app, method, &format!("/api/v1/memories/{id}"), &bob, body).await;
        assert_eq!(status, 404, "another user gets 404: {reply}");
        assert_eq!(reply["success"], false);
        assert_eq!(reply["code"], "NOT_FOUND");
    }

    let (status, deleted) = call(&app, Method::DELETE, &format!("/api/v1/memories/{id}"), &alice, None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({"success": true, "message": "Memory deleted successfully"}));
    let (status, _) = call(&app, Method::GET, &format!("/api/v1/memories/{id}"), &alice, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&app, Method::DELETE, &format!("/api/v1/memories/{id}"), &alice, None).await;
    assert_eq!(status, 404);
}

async fn bad_input_is_refused_naming_the_field_and_stores_nothing(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = user(&app, "carol@example.com").await;
    let long = "x".repeat(10_001);
    let cases = [
        ("/api/v1/memories", json!({"content": "", "type": "fact", "scope": "user_global"}), "content"),
        ("/api/v1/memories", json!({"content": long, "type": "fact", "scope": "user_global"}), "content"),
        ("/api/v1/memories", json!({"content": "x", "type": "opinion", "scope": "user_global"}), "type"),
        ("/api/v1/memories", json!({"content": "x", "type": "fact", "scope": "everywhere"}), "scope"),
        (
            "/api/v1/memories",
            json!({"content": "x", "type": "fact", "scope": "site", "confidence": 1.5}),
            "confidence",
        ),
        (
            "/api/v1/memories",
            json!({"content": "x", "type": "fact", "scope": "site", "tags": vec!["a"; 21]}),
            "tags",
        ),
        (
            "/api/v1/memories",
            json!({"content": "x", "type": "fact", "scope": "site", "tags": [""]}),
            "tags[0]",
        ),
        (
            "/api/v1/memories",
            json!({"content": "x", "type": "fact", "scope": "site", "sourceTimestamp": "soon"}),
            "sourceTimestamp",
        ),
        (
            "/api/v1/memories",
            json!({"content": "x", "type": "fact", "scope": "site", "embedding": [1.0, 0.0]}),
            "embedding",
        ),
        ("/api/v1/memories", json!({"type": "fact", "scope": "site"}), "content"),
        ("/api/v1/memories/search", json!({"query": "x", "limit": 101}), "limit"),
        ("/api/v1/memories/search", json!({"limit": 5}), "query"),
        ("/api/v1/memories/search", json!({"query": "x", "filter": {"type": "nope"}}), "filter.type"),
        ("/api/v1/memories/search", json!({"query": "x", "mode": "psychic"}), "mode"),
        ("/api/v1/memories/ingest", json!({"conversationText": ""}), "conversationText"),
        ("/api/v1/memories/import", json!({"memories": []}), "memories"),
        (
            "/api/v1/memories/import",
            json!({"memories": [fact("ok"), fact("ok too"), fact("fine"), {"content": "", "type": "fact"}]}),
            "memories[3].content",
        ),
        (
            "/api/v1/memories/import",
            json!({"memories": [{"content": "x", "type": "fact", "createdAt": "last week"}]}),
            "memories[0].createdAt",
        ),
    ];
    for (path, body, field) in cases {
        let (status, reply) = call(&app, Method::POST, path, &token, Some(body.clone())).await;
        assert_eq!(status, 422, "{path} {body}: {reply}");
        assert_eq!(reply["success"], false);
        assert_eq!(reply["code"], "UNPROCESSABLE");
        let error = reply["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("{field}:")), "{path}: {error:?} should name {field}");
    }
    let response = app
        .client
        .post(app.at("/api/v1/memories"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    for path in [
        "/api/v1/memories?limit=0",
        "/api/v1/memories?offset=-1",
        "/api/v1/memories?cursor=zz",
        "/api/v1/memories/sync/updates?cursor=7",
        "/api/v1/memories/sync/updates?limit=5000",
        "/api/v1/memories/sync/updates?updatedAfter=yesterday",
    ] {
        let (status, reply) = call(&app, Method::GET, path, &token, None).await;
        assert_eq!(status, 422, "{path}: {reply}");
    }
    let (_, listed) = call(&app, Method::GET, "/api/v1/memories", &token, None).await;
    assert_eq!(listed["count"], 0, "nothing was stored: {listed}");
    let (status, _) = call(&app, Method::POST, "/api/v1/memories", "not-a-token", Some(fact("x"))).await;
    assert_eq!(status, 401);
}

async fn lists_filter_and_page(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = user(&app, "dave@example.com").await;
    for i in 0..12 {
        let body = json!({
            "content": format!("list item {i}"),
            "type": if i % 3 == 0 { "task" } else { "fact" },
            "scope": if i % 2 == 0 { "site" } else { "user_global" },
            "sourcePlatform": if i < 4 { "claude.ai" } else { "chatgpt.com" },
            "tags": match i % 4 { 0 => json!(["work", "urgent"]), 1 => json!(["work"]), 2 => json!(["home"]), _ => json!([]) },
            "generateEmbedding": false,
        });
        create(&app, &token, body).await;
    }
    let list = |query: &'static str| {
        let (app, token) = (&app, &token);
        async move {
            let (status, reply) =
                call(app, Method::GET, &format!("/api/v1/memories{query}"), token, None).await;
            assert_eq!(status, 200, "{query}: {reply}");
            reply
        }
    };
    let all = list("").await;
    assert_eq!(all["count"], 12);
    assert_eq!(list("?type=task").await["count"], 4);
    assert_eq!(list("?scope=site").await["count"], 6);
    assert_eq!(list("?platform=claude.ai").await["count"], 4);
    assert_eq!(list("?tags=work").await["count"], 6);
    assert_eq!(list("?tags=work,urgent").await["count"], 3);
    assert_eq!(list("?tagsAny=urgent,home").await["count"], 6);
    assert_eq!(list("?type=task&tags=urgent").await["count"], 1, "items 0 only (3 and 9 have no urgent tag)");
    assert_eq!(list("?startDate=2000-01-01T00:00:00Z&endDate=2001-01-01T00:00:00Z").await["count"], 0);
    assert_eq!(list("?limit=100000").await["count"], 12, "a large limit is capped, not refused");

    let ids = |reply: &Value| -> Vec<String> {
        reply["memories"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
    };
    let everything = ids(&all);
    let mut paged = Vec::new();
    let mut path = "/api/v1/memories?limit=5".to_string();
    loop {
        let (_, page) = call(&app, Method::GET, &path, &token, None).await;
        paged.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/memories?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, everything, "cursor pages cover the list once, newest first");
    let (_, offset) = call(&app, Method::GET, "/api/v1/memories?limit=5&offset=5", &token, None).await;
    assert_eq!(ids(&offset), everything[5..10]);
}

async fn search_finds_a_paraphrase_by_meaning_and_reports_score_parts(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = user(&app, "erin@example.com").await;
    let dark = create(
        &app,
        &token,
        json!({"content": "I prefer dark mode in all applications", "type": "preference", "scope": "user_global"}),
    )
    .await;
    for content in [
        "My dog is called Rex and he is a beagle",
        "I am allergic to peanuts",
        "The quarterly report is due on Friday",
        "I usually take the train to work",
        "My sister lives in Lisbon",
    ] {
        create(&app, &token, fact(content)).await;
    }
    let other = user(&app, "frank@example.com").await;
    create(&app, &other, fact("Dark colour schemes for every app, please")).await;

    let search = |body: Value| {
        let (app, token) = (&app, &token);
        async move {
            let (status, reply) = call(app, Method::POST, "/api/v1/memories/search", token, Some(body)).await;
            assert_eq!(status, 200, "{reply}");
            reply
        }
    };
    // No word in common with the stored memory: only meaning can find it.
    let semantic =
        search(json!({"query": "night theme for my software", "mode": "semantic", "limit": 3})).await;
    assert_eq!(semantic["mode"], "semantic");
    let hits = semantic["memories"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], dark["id"], "{semantic}");
    let top = hits[0]["similarity"].as_f64().unwrap();
    assert!(top > hits[1]["similarity"].as_f64().unwrap() + 0.1, "{semantic}");
    assert_eq!(hits[0]["scores"]["semantic"].as_f64().unwrap(), top);
    assert!(hits[0]["scores"]["keyword"].is_null());
    assert_eq!(hits[0]["accessCount"], 1, "a hit counts as an access");
    assert!(hits.iter().all(|h| h["userId"] == dark["userId"]), "only the caller's memories");

    let keyword = search(json!({"query": "peanuts", "mode": "keyword"})).await;
    assert_eq!(keyword["count"], 1);
    assert_eq!(keyword["memories"][0]["content"], "I am allergic to peanuts");
    assert!(keyword["memories"][0]["scores"]["semantic"].is_null());
    let hybrid =
        search(json!({"query": "what is my dog's name", "filter": {"type": "fact"}, "limit": 2})).await;
    assert_eq!(hybrid["mode"], "hybrid");
    assert!(hybrid["memories"][0]["content"].as_str().unwrap().starts_with("My dog"), "{hybrid}");
    assert!(hybrid["memories"][0]["scores"]["keyword"].as_f64().unwrap() > 0.0);
    assert!(hybrid["memories"][0]["scores"]["semantic"].as_f64().unwrap() > 0.0);
    let preferences = search(json!({"query": "dog", "filter": {"type": "preference"}})).await;
    assert!(preferences["memories"].as_array().unwrap().iter().all(|m| m["type"] == "preference"));

    let vector = {
        let path = format!("/api/v1/memories/{}?includeEmbedding=true", dark["id"].as_str().unwrap());
        call(&app, Method::GET, &path, &token, None).await.1["memory"]["embedding"].clone()
    };
    let by_vector = search(json!({"embedding": vector, "limit": 1, "includeEmbedding": true})).await;
    assert_eq!(by_vector["memories"][0]["id"], dark["id"]);
    assert!((by_vector["memories"][0]["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-3);
    assert_eq!(by_vector["memories"][0]["embedding"].as_array().unwrap().len(), 384);
}

async fn ingest(app: &TestApp, token: &str, text: &str) -> Value {
    let body = json!({"conversationText": text, "context": {"url": "https://chatgpt.com/c/9", "platform": "chatgpt.com", "conversationId": "9"}});
    let (status, reply) = call(app, Method::POST, "/api/v1/memories/ingest", token, Some(body)).await;
    assert_eq!(status, 201, "{reply}");
    reply
}

fn actions(reply: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for decision in reply["decisions"].as_array().unwrap() {
        *counts.entry(decision["action"].as_str().unwrap().to_string()).or_default() += 1;
    }
    counts
}

async fn ingest_offline_adds_skips_and_supersedes(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = user(&app, "gina@example.com").await;
    let first = ingest(
        &app,
        &token,
        "User: I love using React for building UIs. I live in Berlin.\nAssistant: React is great for component-based development.",
    )
    .await;
    assert_eq!(first["success"], true);
    assert!(first["count"].as_u64().unwrap() >= 2, "{first}");
    assert_eq!(first["count"], first["memories"].as_array().unwrap().len());
    assert!(first["message"].is_string());
    let contents: Vec<&str> =
        first["memories"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert!(contents.iter().any(|c| c.contains("React")), "{contents:?}");
    let berlin = first["memories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["content"].as_str().unwrap().contains("Berlin"))
        .expect("the place is a fact")
        .clone();
    assert_eq!(berlin["sourceConversationId"], "9");
    assert_eq!(berlin["provenance"]["conversationId"], "9");
    assert!(berlin["provenance"]["turnStart"].is_u64());

    let again = ingest(&app, &token, "User: I love using React for building UIs. I live in Berlin.").await;
    assert_eq!(
        actions(&again).get("skipped").copied().unwrap_or(0),
        again["decisions"].as_array().unwrap().len()
    );
    assert_eq!(again["count"], 0, "a repeated fact is skipped: {again}");

    let moved = ingest(&app, &token, "User: I live in Munich now.").await;
    assert_eq!(actions(&moved).get("updated"), Some(&1), "{moved}");
    let updated = &moved["memories"][0];
    assert_eq!(updated["id"], berlin["id"], "the changed fact supersedes the old one in place");
    assert!(updated["content"].as_str().unwrap().contains("Munich"));
    let path = format!("/api/v1/memories/{}/history", berlin["id"].as_str().unwrap());
    let (_, history) = call(&app, Method::GET, &path, &token, None).await;
    assert!(history["history"][0]["content"].as_str().unwrap().contains("Berlin"), "{history}");

    let response = app
        .client
        .post(app.at("/api/v1/memories/ingest"))
        .bearer_auth(&token)
        .header("prefer", "respond-async")
        .json(&json!({"conversationText": "User: I prefer tea over coffee."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let job = app.wait_final(accepted["job_id"].as_str().unwrap(), std::time::Duration::from_secs(60)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "ingest_conversation");
}

#[derive(Clone, Default)]
struct StandIn {
    requests: Arc<Mutex<Vec<Value>>>,
}

async fn completions(State(stand_in): State<StandIn>, Json(request): Json<Value>) -> Json<Value> {
    stand_in.requests.lock().unwrap().push(request.clone());
    let content = json!({"facts": [
        {"content": "User is training for the Berlin marathon in September", "type": "project", "confidence": 0.9,
         "tags": ["running"], "turn_start": 0, "turn_end": 0},
        {"content": "User maybe likes pineapple", "type": "preference", "confidence": 0.3, "tags": [],
         "turn_start": 0, "turn_end": 0}
    ]});
    Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    }))
}

async fn ingest_uses_the_llm_when_configured(stack: Stack) {
    let stand_in = StandIn::default();
    let router = Router::new().route("/v1/chat/completions", post(completions)).with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let Some(app) = spawn_app(stack, &[("LLM_BASE_URL", &url), ("LLM_MODEL", "stand-in")]).await else {
        return;
    };
    let token = user(&app, "hana@example.com").await;
    let reply = ingest(&app, &token, "User: I signed up for the Berlin marathon, it's in September!").await;
    assert_eq!(reply["count"], 1, "the 0.3-confidence fact is dropped: {reply}");
    assert_eq!(reply["memories"][0]["content"], "User is training for the Berlin marathon in September");
    assert_eq!(reply["memories"][0]["type"], "project");
    let requests = stand_in.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].to_string().contains("I signed up for the Berlin marathon"),
        "the model saw the conversation"
    );
}

/// A unit vector of 384 numbers, different for each `seed`.
fn vector(seed: usize) -> Vec<f64> {
    let raw: Vec<f64> =
        (0..384).map(|i| (((seed * 7919 + i * 104_729) % 1000) as f64 / 1000.0) - 0.5).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    raw.iter().map(|x| ((x / norm) * 1e5).round() / 1e5).collect()
}

const TYPES: [&str; 3] = ["fact", "preference", "task"];

async fn import_ten_thousand_then_export_the_same(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("ENGRAM_BODY_LIMIT_MB", "64")]).await else { return };
    let token = user(&app, "ivan@example.com").await;
    let items: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({
                "id": format!("local-{i:05}"),
                "content": format!("imported memory number {i}"),
                "type": TYPES[i % 3],
                "scope": "user_global",
                "tags": [format!("batch{}", i % 10)],
                "sourceTimestamp": 1_700_000_000_000i64 + i as i64,
                "createdAt": "2025-06-01T10:00:00Z",
                "embedding": vector(i),
            })
        })
        .collect();
    // A large import is a job: asked not to wait, the route answers where to follow it.
    let started = std::time::Instant::now();
    let response = app
        .client
        .post(app.at("/api/v1/memories/import"))
        .bearer_auth(&token)
        .header("prefer", "respond-async")
        .json(&json!({"memories": items, "deduplicateOnImport": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    eprintln!("import of 10,000 accepted in {:?}", started.elapsed());
    let accepted: Value = response.json().await.unwrap();
    let job = app.wait_final(accepted["job_id"].as_str().unwrap(), std::time::Duration::from_secs(300)).await;
    eprintln!("import of 10,000 done in {:?}", started.elapsed());
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "import_memories");
    assert_eq!(job["result"]["imported"], 10_000);
    assert_eq!(job["result"]["skipped"], 0);
    // PostgreSQL stores the vectors outside the HNSW index first; the job moves them in.
    let backlog = if matches!(stack, Stack::Embedded) { 0 } else { 10_000 };
    assert_eq!(job["result"]["indexed"], backlog, "{job}");

    let response = app
        .client
        .get(app.at("/api/v1/memories/export?includeEmbeddings=true"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let exported: Vec<Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(exported.len(), 10_000);
    for (i, memory) in exported.iter().enumerate() {
        let original = &items[i];
        assert_eq!(memory["id"], original["id"]);
        assert_eq!(memory["content"], original["content"]);
        assert_eq!(memory["type"], original["type"]);
        assert_eq!(memory["tags"], original["tags"]);
        assert_eq!(memory["createdAt"], "2025-06-01T10:00:00Z", "client timestamps are kept");
        let sent = original["sourceTimestamp"].as_i64().unwrap();
        let kept = chrono::DateTime::parse_from_rfc3339(memory["sourceTimestamp"].as_str().unwrap()).unwrap();
        assert_eq!(kept.timestamp_millis(), sent);
        let stored = memory["embedding"].as_array().unwrap();
        let sent = original["embedding"].as_array().unwrap();
        assert!(
            stored.iter().zip(sent).all(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-4)
        );
    }
    // Idempotent on client ids: importing again skips every item.
    let again: Vec<Value> = items.iter().take(3).cloned().collect();
    let (_, reply) =
        call(&app, Method::POST, "/api/v1/memories/import", &token, Some(json!({"memories": again}))).await;
    assert_eq!(reply, json!({"success": true, "imported": 0, "skipped": 3}));

    // An import small enough to answer inline leaves its vectors' indexing to a job.
    // `vector` repeats every 1,000 seeds; its opposites are new directions.
    let opposite = |i: usize| vector(i).into_iter().map(|x| -x).collect::<Vec<f64>>();
    let inline: Vec<Value> = (0..150)
        .map(|i| json!({"content": format!("inline import {i}"), "type": "fact", "embedding": opposite(i)}))
        .collect();
    let (status, reply) =
        call(&app, Method::POST, "/api/v1/memories/import", &token, Some(json!({"memories": inline}))).await;
    assert_eq!((status, reply), (201, json!({"success": true, "imported": 150, "skipped": 0})));
    let (_, search) = call(
        &app,
        Method::POST,
        "/api/v1/memories/search",
        &token,
        Some(json!({"mode": "semantic", "embedding": opposite(42), "limit": 1})),
    )
    .await;
    assert_eq!(search["memories"][0]["content"], "inline import 42", "found, indexed yet or not: {search}");
    let (_, jobs) = call(&app, Method::GET, "/api/v1/jobs?kind=index_memory_vectors", &token, None).await;
    let jobs = jobs["jobs"].as_array().unwrap();
    if matches!(stack, Stack::Embedded) {
        assert!(jobs.is_empty(), "SQLite searches exactly and has nothing to index: {jobs:?}");
    } else {
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        let job = app.wait_final(jobs[0]["id"].as_str().unwrap(), std::time::Duration::from_secs(120)).await;
        assert_eq!((&job["status"], &job["result"]["indexed"]), (&json!("succeeded"), &json!(150)), "{job}");
    }
}

async fn the_sync_feed_pages_and_reports_deletes(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let token = user(&app, "jack@example.com").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let memory = create(&app, &token, json!({"content": format!("sync {i}"), "type": "fact", "scope": "session", "generateEmbedding": false})).await;
        ids.push(memory["id"].as_str().unwrap().to_string());
    }
    let (_, first) = call(&app, Method::GET, "/api/v1/memories/sync/updates?limit=3", &token, None).await;
    assert_eq!(first["count"], 3);
    assert_eq!(first["hasMore"], true);
    let cursor = first["cursor"].as_str().unwrap();
    let (_, rest) =
        call(&app, Method::GET, &format!("/api/v1/memories/sync/updates?cursor={cursor}"), &token, None)
            .await;
    assert_eq!(rest["count"], 2);
    assert_eq!(rest["hasMore"], false);
    let caught_up = rest["cursor"].as_str().unwrap().to_string();

    call(&app, Method::DELETE, &format!("/api/v1/memories/{}", ids[0]), &token, None).await;
    let (_, after) =
        call(&app, Method::GET, &format!("/api/v1/memories/sync/updates?cursor={caught_up}"), &token, None)
            .await;
    assert_eq!(after["count"], 0);
    assert_eq!(after["deleted"][0]["id"], ids[0].as_str(), "{after}");
    assert_eq!(after["deleted"][0]["deleted"], true);
    assert_eq!(after["changes"].as_array().unwrap().len(), 1);

    // The original's form: strictly after a time, deletes included.
    let stamp = first["memories"][0]["updatedAt"].as_str().unwrap().to_string();
    let path = format!("/api/v1/memories/sync/updates?updatedAfter={}", stamp.replace('+', "%2B"));
    let (status, since) = call(&app, Method::GET, &path, &token, None).await;
    assert_eq!(status, 200, "{since}");
    assert!(
        since["memories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["updatedAt"].as_str().unwrap() > stamp.as_str())
    );
    assert_eq!(since["deleted"].as_array().unwrap().len(), 1);
    let other = user(&app, "kim@example.com").await;
    let (_, theirs) = call(&app, Method::GET, "/api/v1/memories/sync/updates", &other, None).await;
    assert_eq!(theirs["count"], 0);
    assert!(theirs["deleted"].as_array().unwrap().is_empty());
}

async fn the_costly_routes_are_rate_limited_per_user(stack: Stack) {
    let limits = [
        ("MEMORY_SEARCH_RATE_LIMIT", "3"),
        ("MEMORY_IMPORT_RATE_LIMIT", "2"),
        ("MEMORY_INGEST_RATE_LIMIT", "1"),
    ];
    let Some(app) = spawn_app(stack, &limits).await else { return };
    let token = user(&app, "lee@example.com").await;
    let cases = [
        ("/api/v1/memories/search", json!({"query": "anything", "mode": "keyword"}), 3),
        ("/api/v1/memories/import", json!({"memories": [fact("one")]}), 2),
        ("/api/v1/memories/ingest", json!({"conversationText": "User: I like tea."}), 1),
    ];
    for (path, body, limit) in cases {
        for _ in 0..limit {
            let (status, reply) = call(&app, Method::POST, path, &token, Some(body.clone())).await;
            assert!(status == 200 || status == 201, "{path}: {reply}");
        }
        let response = app.client.post(app.at(path)).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 429, "{path}");
        assert!(response.headers().get("retry-after").is_some());
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["code"], "RATE_LIMITED");
    }
    let other = user(&app, "mia@example.com").await;
    let (status, _) =
        call(&app, Method::POST, "/api/v1/memories/search", &other, Some(json!({"query": "x"}))).await;
    assert_eq!(status, 200, "limits are per user");
}
