//! Git memory with a remote, on every stack: memory repos cloned over git smart HTTP with a
//! token (a local `git http-backend` behind Basic auth stands in for GitHub), sessions
//! pushed to the remote, remote changes pulled by `repo_sync`, a conflicting remote change
//! reported and not overwritten, a wrong token and an oversize repo refused.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::git_http::GitHttpServer;
use crate::common::{Stack, TestApp, spawn_app};

on_both_databases!(
    a_committed_session_reaches_the_remote_and_remote_changes_come_back,
    a_conflicting_remote_change_is_reported_and_kept,
    a_wrong_token_or_an_oversize_repo_is_refused_and_leaves_nothing,
);

const TOKEN: &str = "ghp_remote_test_token";

const USER_FILE: &str = "# alex\n\n/START\n### alex [Strength: High] [ALWAYS_LOAD]\nLikes hiking.\n/END\n";

async fn app_for_remote(stack: Stack, extra: &[(&str, &str)]) -> Option<TestApp> {
    let mut env = vec![("REPO_URL_SCHEMES", "https,http")];
    env.extend_from_slice(extra);
    spawn_app(stack, &env).await
}

async fn setup(app: &TestApp, server: &GitHttpServer, token: &str) -> (u16, Value) {
    let body = json!({"user_id": "alex", "repo_url": server.url("alex-memory"), "branch": "main", "github_token": token});
    app.post_json("/repos/setup", &body).await
}

async fn sync(app: &TestApp) -> Value {
    let id = app.submit(json!({"kind": "repo_sync", "payload": {"user_id": "alex"}})).await;
    app.wait_final(&id, Duration::from_secs(30)).await
}

async fn a_committed_session_reaches_the_remote_and_remote_changes_come_back(stack: Stack) {
    let Some(app) = app_for_remote(stack, &[]).await else { return };
    let server = GitHttpServer::start(TOKEN).await;
    server.create_repo("alex-memory", &[("alex.md", USER_FILE), ("index.md", "# Index\n\n")]);
    let (status, repo) = setup(&app, &server, TOKEN).await;
    assert_eq!(status, 200, "{repo}");
    assert_eq!(repo["memory_files_count"], 2, "{repo}");
    let schedules = app.get_json("/api/v1/schedules").await;
    let schedule =
        schedules["schedules"].as_array().unwrap().iter().find(|s| s["kind"] == "repo_sync").unwrap();
    assert_eq!(
        (schedule["cron"].as_str(), &schedule["payload"]),
        (Some("*/5 * * * *"), &json!({"user_id": "alex"}))
    );
    assert_eq!(setup(&app, &server, TOKEN).await.0, 200, "setting up again changes nothing");
    let again = app.get_json("/api/v1/schedules").await;
    let syncs = again["schedules"].as_array().unwrap().iter().filter(|s| s["kind"] == "repo_sync").count();
    assert_eq!(syncs, 1, "one sync schedule per repo: {again}");
    let config = std::fs::read_to_string(app.data_dir.join("repos/alex/.git/config")).unwrap();
    assert!(
        !config.contains(TOKEN) && !config.contains("127.0.0.1"),
        "no token or remote in .git/config: {config}"
    );

    let session =
        json!({"user_id": "alex", "session_id": "s1", "memory_input": "Had coffee with mom today."});
    let (status, done) = app.post_json("/memory/process-and-commit", &session).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["sync"], "active", "{done}");
    let (sha, message) = server.head_commit("alex-memory", "main").unwrap();
    assert_eq!((sha.as_str(), message.as_str()), (done["commit"].as_str().unwrap(), "Session s1"));
    assert!(server.read_file("alex-memory", "main", "memories/people/mom.md").unwrap().contains("coffee"));

    // Someone else adds a file on the remote: the next sync brings it in and indexes it.
    let context = "# Garden\n\n/START\n### Garden [ALWAYS_LOAD]\nTomatoes and basil on the balcony.\n/END\n";
    server.push_change("alex-memory", "memories/contexts/garden.md", context, "Add garden");
    let job = sync(&app).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["sync"]["pulled"], true, "{job}");
    let (_, found) =
        app.post_json("/memory/search", &json!({"user_id": "alex", "query": "tomatoes basil"})).await;
    assert_eq!(found["results"][0]["file"], "memories/contexts/garden.md", "{found}");
    let status = app.get_json("/repos/status/alex").await;
    assert_eq!(status["status"], "active", "{status}");
    assert!(status["last_sync"].is_string(), "{status}");
}

async fn a_conflicting_remote_change_is_reported_and_kept(stack: Stack) {
    let Some(app) = app_for_remote(stack, &[]).await else { return };
    let server = GitHttpServer::start(TOKEN).await;
    server.create_repo("alex-memory", &[("alex.md", USER_FILE), ("index.md", "# Index\n\n")]);
    let (status, repo) = setup(&app, &server, TOKEN).await;
    assert_eq!(status, 200, "{repo}");
    let remote_index = "# Index\n\n- edited on another device\n";
    let remote_sha = server.push_change("alex-memory", "index.md", remote_index, "Edit index elsewhere");

    let session =
        json!({"user_id": "alex", "session_id": "s1", "memory_input": "Had coffee with mom today."});
    let (status, done) = app.post_json("/memory/process-and-commit", &session).await;
    assert_eq!(status, 200, "the local commit stands: {done}");
    assert_eq!(done["sync"], "conflict", "{done}");
    assert_eq!(server.head_commit("alex-memory", "main").unwrap().0, remote_sha, "no force push");
    assert_eq!(server.read_file("alex-memory", "main", "index.md").unwrap(), remote_index);

    let status = app.get_json("/repos/status/alex").await;
    assert_eq!(status["status"], "conflict", "{status}");
    assert!(status["last_error"].as_str().unwrap().contains("index.md"), "{status}");
    let job = sync(&app).await;
    assert_eq!(job["result"]["sync"]["conflicts"], json!(["index.md"]), "{job}");
    let local_head = git2::Repository::open(app.data_dir.join("repos/alex")).unwrap();
    assert_eq!(local_head.head().unwrap().peel_to_commit().unwrap().message(), Some("Session s1"));
}

async fn a_wrong_token_or_an_oversize_repo_is_refused_and_leaves_nothing(stack: Stack) {
    let Some(app) = app_for_remote(stack, &[("MAX_REPO_SIZE_MB", "1")]).await else { return };
    let server = GitHttpServer::start(TOKEN).await;
    server.create_repo("alex-memory", &[("alex.md", USER_FILE)]);
    let (status, reply) = setup(&app, &server, "not-the-token").await;
    assert_eq!(status, 400, "{reply}");
    assert!(reply["detail"].as_str().unwrap().contains("refused the token"), "{reply}");
    assert!(!reply.to_string().contains("not-the-token"));

    // Two MiB of bytes that do not compress, over a 1 MB limit.
    let mut noise = String::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while noise.len() < 2 * 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.push_str(&format!("{x:016x}"));
    }
    server.push_change("alex-memory", "big.md", &noise, "Big file");
    let (status, reply) = setup(&app, &server, TOKEN).await;
    assert_eq!(status, 413, "{reply}");
    let (status, _) = app.post_json("/memory/search", &json!({"user_id": "alex", "query": "x"})).await;
    assert_eq!(status, 404, "no repo was recorded");
    let left: Vec<_> =
        std::fs::read_dir(app.data_dir.join("repos")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(left.is_empty(), "nothing left in the repos dir: {left:?}");
}
