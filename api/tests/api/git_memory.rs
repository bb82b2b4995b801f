//! Git memory (DiffMem's routes) over HTTP on every stack: a repo set up empty, a session
//! processed into staged files and committed as one git commit, search and the four context
//! depths (`wide` with the embedding model installed by scripts/test.sh), the 202 answer of `Prefer: respond-async`, and bad input refused with nothing
//! written.

use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

on_both_databases!(
    a_session_becomes_one_commit_and_is_found_at_every_depth,
    respond_async_answers_202_with_the_job,
    bad_input_is_refused_and_writes_nothing,
);

fn today() -> String {
    chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string()
}

async fn setup_empty(app: &TestApp, user: &str) -> Value {
    let (status, reply) = app.post_json("/repos/setup", &json!({"user_id": user, "branch": "main"})).await;
    assert_eq!(status, 200, "{reply}");
    reply
}

fn repo_dir(app: &TestApp, user: &str) -> std::path::PathBuf {
    app.data_dir.join("repos").join(user)
}

async fn a_session_becomes_one_commit_and_is_found_at_every_depth(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let setup = setup_empty(&app, "alex").await;
    assert_eq!(
        (setup["status"].as_str(), setup["memory_files_count"].as_u64()),
        (Some("active"), Some(2)),
        "{setup}"
    );
    assert_eq!(setup["index_stats"]["total_blocks"], 1, "the user file's core block: {setup}");

    let session = json!({
        "user_id": "alex",
        "session_id": "session-001",
        "session_date": today(),
        "memory_input": "Had coffee with mom today. Great conversation about family. Went running with Sarah in the park.",
    });
    let (status, processed) = app.post_json("/memory/process-session", &session).await;
    assert_eq!(status, 200, "{processed}");
    assert_eq!(processed["status"], "processed");
    let staged: Vec<&str> =
        processed["staged_files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for file in
        ["memories/people/mom.md", "memories/people/sarah.md", "memories/contexts/health.md", "index.md"]
    {
        assert!(staged.contains(&file), "{file} not staged: {processed}");
    }
    let status_before = app.get_json("/repos/status/alex").await;
    assert!(status_before["staged_changes"].as_array().unwrap().len() >= staged.len(), "{status_before}");
    // Staged only: nothing of the session is searchable or committed yet.
    let repo = git2::Repository::open(repo_dir(&app, "alex")).unwrap();
    assert_eq!(
        repo.head().unwrap().peel_to_commit().unwrap().message(),
        Some("Initialize memory repository")
    );

    let (status, committed) = app
        .post_json("/memory/commit-session", &json!({"user_id": "alex", "session_id": "session-001"}))
        .await;
    assert_eq!(status, 200, "{committed}");
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert_eq!(head.message(), Some("Session session-001"));
    assert_eq!(head.id().to_string(), committed["commit"].as_str().unwrap());
    let tree = head.tree().unwrap();
    for file in ["memories/people/mom.md", &format!("sessions/{}_session-001.txt", today()), "index.md"] {
        assert!(tree.get_path(std::path::Path::new(file)).is_ok(), "{file} is not in the commit");
    }
    let after = app.get_json("/repos/status/alex").await;
    assert_eq!(after["staged_changes"], json!([]), "{after}");
    assert!(after["index_stats"]["total_blocks"].as_u64().unwrap() > 5, "{after}");
    // Committing again is a no-op naming the same commit (a retried job).
    let (status, again) = app
        .post_json("/memory/commit-session", &json!({"user_id": "alex", "session_id": "session-001"}))
        .await;
    assert_eq!((status, &again["commit"]), (200, &committed["commit"]), "{again}");

    let (status, found) = app
        .post_json("/memory/search", &json!({"user_id": "alex", "query": "coffee with mom", "k": 3}))
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"][0]["file"], "memories/people/mom.md", "{found}");
    assert!(found["results"].as_array().unwrap().len() <= 3);

    let conversation = json!([{"role": "user", "content": "How is my mom doing?"}]);
    let context = |depth: &str| json!({"user_id": "alex", "depth": depth, "conversation": conversation});
    let (status, basic) = app.post_json("/memory/context", &context("basic")).await;
    assert_eq!(status, 200, "{basic}");
    let text = basic["context"].as_str().unwrap();
    assert!(text.contains("The user whose memory this is"), "the user file: {text}");
    assert!(text.contains("Kind: person"), "core blocks of the top entities: {text}");
    assert!(basic["recent_timeline"][0].as_str().unwrap().contains("Had coffee with mom"), "{basic}");

    let (_, wide) = app.post_json("/memory/context", &context("wide")).await;
    assert_eq!(wide["entities"][0]["path"], "memories/people/mom.md", "{wide}");
    assert!(
        !wide["entities"][0]["content"].as_str().unwrap().contains("session session-001"),
        "core blocks only: {wide}"
    );

    // No word in common with anything stored: only the embedding model links it to health.
    let fitness = json!({"user_id": "alex", "depth": "wide",
        "conversation": [{"role": "user", "content": "Any news about my fitness and exercise lately?"}]});
    let (_, by_meaning) = app.post_json("/memory/context", &fitness).await;
    let paths: Vec<&str> =
        by_meaning["entities"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"memories/contexts/health.md"), "{by_meaning}");

    let (_, deep) = app.post_json("/memory/context", &context("deep")).await;
    assert!(deep["entities"][0]["content"].as_str().unwrap().contains("### "), "whole files: {deep}");
    assert!(deep["entities"][0]["content"].as_str().unwrap().contains("session session-001"), "{deep}");

    let (_, temporal) = app.post_json("/memory/context", &context("temporal")).await;
    let history = &temporal["entities"][0]["history"];
    assert_eq!(history[0]["message"], "Session session-001", "{temporal}");
    assert!(history[0]["lines_added"].as_u64().unwrap() > 0, "{temporal}");
    assert!(temporal["context"].as_str().unwrap().contains("History:"));

    let (status, orchestrated) = app
        .post_json("/memory/orchestrated-search", &json!({"user_id": "alex", "conversation": [{"role": "user", "content": "who did I go running with?"}]}))
        .await;
    assert_eq!(status, 200, "{orchestrated}");
    assert!(orchestrated["results"].to_string().contains("Sarah"), "{orchestrated}");

    // A cold start (no index on disk) rebuilds it from the repo.
    std::fs::remove_dir_all(app.data_dir.join("indexes/memory/alex")).unwrap();
    let (status, cold) = app
        .post_json("/memory/search", &json!({"user_id": "alex", "query": "coffee with mom", "k": 3}))
        .await;
    assert_eq!((status, &cold["results"]), (200, &found["results"]), "{cold}");

    // A rebuilt index finds the same.
    let (status, rebuilt) = app.post_json("/memory/rebuild-index", &json!({"user_id": "alex"})).await;
    assert_eq!(status, 200, "{rebuilt}");
    assert_eq!(rebuilt["index_stats"]["total_blocks"], after["index_stats"]["total_blocks"]);
}

async fn respond_async_answers_202_with_the_job(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    setup_empty(&app, "alex").await;
    let session = json!({"user_id": "alex", "session_id": "s-async", "memory_input": "Booked a trip to Lisbon with Maria."});
    let reply = app
        .admin
        .post(app.at("/memory/process-and-commit"))
        .header("Prefer", "respond-async")
        .json(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202);
    let body: Value = reply.json().await.unwrap();
    let id = body["job_id"].as_str().unwrap();
    assert_eq!(body["status_url"], format!("/api/v1/jobs/{id}"));
    assert_eq!(body["events_url"], format!("/api/v1/jobs/{id}/logs/stream"));
    let job = app.wait_final(id, std::time::Duration::from_secs(30)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["status"], "committed", "{job}");
    let repo = git2::Repository::open(repo_dir(&app, "alex")).unwrap();
    assert_eq!(repo.head().unwrap().peel_to_commit().unwrap().message(), Some("Session s-async"));
}

async fn bad_input_is_refused_and_writes_nothing(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    setup_empty(&app, "alex").await;
    let cases = [
        ("/repos/setup", json!({"user_id": "../escape"}), 422),
        ("/repos/setup", json!({"user_id": "bob", "repo_url": "file:///etc"}), 422),
        ("/repos/setup", json!({"user_id": "bob", "repo_url": "https://user:pw@example.com/x.git"}), 422),
        ("/repos/setup", json!({"user_id": "bob", "branch": "../main"}), 422),
        ("/memory/search", json!({"user_id": "alex", "query": "x", "k": 0}), 422),
        ("/memory/search", json!({"user_id": "alex", "query": "x", "k": 101}), 422),
        ("/memory/search", json!({"user_id": "nobody", "query": "x"}), 404),
        (
            "/memory/context",
            json!({"user_id": "alex", "depth": "deepest", "conversation": [{"role": "user", "content": "x"}]}),
            422,
        ),
        ("/memory/context", json!({"user_id": "alex", "conversation": []}), 422),
        (
            "/memory/process-session",
            json!({"user_id": "alex", "session_id": "../../x", "memory_input": "hi"}),
            422,
        ),
        (
            "/memory/process-session",
            json!({"user_id": "alex", "session_id": "s1", "memory_input": "hi", "session_date": "15/01/2024"}),
            422,
        ),
        (
            "/memory/process-session",
            json!({"user_id": "alex", "session_id": "s1", "memory_input": "  "}),
            422,
        ),
        (
            "/memory/process-session",
            json!({"user_id": "nobody", "session_id": "s1", "memory_input": "hi"}),
            404,
        ),
        ("/memory/commit-session", json!({"user_id": "alex", "session_id": "a/b"}), 422),
        ("/memory/rebuild-index", json!({"user_id": "nobody"}), 404),
    ];
    for (path, body, expected) in cases {
        let (status, reply) = app.post_json(path, &body).await;
        assert_eq!(status, expected, "{path} {body}: {reply}");
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()), "FastAPI's detail: {reply}");
    }
    let (status, reply) = app
        .post_json("/memory/commit-session", &json!({"user_id": "alex", "session_id": "never-processed"}))
        .await;
    assert_eq!(status, 409, "{reply}");
    assert!(reply["detail"].as_str().unwrap().contains("nothing is staged"), "{reply}");
    let status = app.get_json("/repos/status/alex").await;
    assert_eq!(status["staged_changes"], json!([]), "{status}");
    let repos: Vec<String> = std::fs::read_dir(app.data_dir.join("repos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(repos, ["alex"], "nothing but alex's repo was written");
    assert!(!app.data_dir.join("escape").exists());
}
