//! DiffMem's original routes (`/memory/{user_id}/…`) over HTTP on every stack: a user
//! onboarded from a text and seen by the reads, a session processed and committed through
//! the path routes, search, context and the timeline in the original's shapes, and bad ids,
//! bad input and unknown users refused with nothing written.

use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

on_both_databases!(
    onboarding_sets_up_the_user_and_the_reads_reflect_it,
    a_session_through_the_path_routes_is_committed_and_found,
    bad_ids_bad_input_and_unknown_users_are_refused_with_nothing_written,
);

fn today() -> String {
    chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string()
}

fn head_message(app: &TestApp, user: &str) -> String {
    let repo = git2::Repository::open(app.data_dir.join("repos").join(user)).unwrap();
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    head.message().unwrap().to_string()
}

/// Status and JSON body of a GET (errors included).
async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.get(path).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn assert_metadata(reply: &Value, user: &str) {
    assert_eq!(reply["status"], "success", "{reply}");
    assert_eq!(reply["metadata"]["user_id"], user, "{reply}");
    assert!(reply["metadata"]["timestamp"].as_str().is_some_and(|t| t.starts_with(&today())), "{reply}");
}

async fn onboarding_sets_up_the_user_and_the_reads_reflect_it(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (status, before) = get(&app, "/memory/alex/onboard-status").await;
    assert_eq!((status, &before["onboarded"]), (200, &json!(false)), "{before}");

    let info =
        json!({"user_info": "Alex works at Acme as a climber coach. Goes climbing with Sarah every week."});
    let (status, onboarded) = app.post_json("/memory/alex/onboard", &info).await;
    assert_eq!(status, 200, "{onboarded}");
    assert_eq!(onboarded["message"], "User alex successfully onboarded", "{onboarded}");
    assert_metadata(&onboarded, "alex");
    let result = &onboarded["result"];
    assert_eq!((&result["success"], &result["repo_created"]), (&json!(true), &json!(true)), "{onboarded}");
    assert_eq!(result["session_id"], "onboarding", "{onboarded}");
    assert_eq!(head_message(&app, "alex"), "Session onboarding");

    let (_, after) = get(&app, "/memory/alex/onboard-status").await;
    assert_eq!((&after["onboarded"], &after["user_id"]), (&json!(true), &json!("alex")), "{after}");
    let (status, entity) = get(&app, "/memory/alex/user-entity").await;
    assert_eq!(status, 200, "{entity}");
    assert_metadata(&entity, "alex");
    assert_eq!(entity["entity"]["path"], "alex.md");
    assert!(entity["entity"]["content"].as_str().unwrap().contains("# alex"), "{entity}");

    let (status, repo) = get(&app, "/memory/alex/status").await;
    assert_eq!(status, 200, "{repo}");
    assert_metadata(&repo, "alex");
    let repo_status = &repo["repo_status"];
    assert_eq!(
        (&repo_status["onboarded"], &repo_status["staged_changes"]),
        (&json!(true), &json!([])),
        "{repo}"
    );
    assert!(repo_status["memory_files_count"].as_u64().unwrap() > 2, "the session's entities: {repo}");
    let (_, found) = app.post_json("/memory/alex/search", &json!({"query": "climbing Sarah"})).await;
    assert!(found["results"].to_string().contains("Sarah"), "{found}");

    let (status, validation) = get(&app, "/memory/alex/validate").await;
    assert_eq!(status, 200, "{validation}");
    assert_eq!(validation["validation"]["valid"], true, "{validation}");

    // Onboarding again keeps the repo and records another session.
    let again = json!({"user_info": "Alex moved to Lisbon.", "session_id": "onboarding-2"});
    let (status, second) = app.post_json("/memory/alex/onboard", &again).await;
    assert_eq!((status, &second["result"]["repo_created"]), (200, &json!(false)), "{second}");
    assert_eq!(head_message(&app, "alex"), "Session onboarding-2");
}

async fn a_session_through_the_path_routes_is_committed_and_found(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (status, reply) = app.post_json("/repos/setup", &json!({"user_id": "alex"})).await;
    assert_eq!(status, 200, "{reply}");

    let session = json!({
        "session_id": "session-001",
        "session_date": today(),
        "memory_input": "Had coffee with mom today. Went running with Sarah in the park.",
    });
    let (status, processed) = app.post_json("/memory/alex/process-session", &session).await;
    assert_eq!(status, 200, "{processed}");
    assert_metadata(&processed, "alex");
    assert_eq!(processed["message"], "Session processed and staged for commit");
    assert_eq!(processed["session_id"], "session-001");
    assert!(processed["staged_files"].to_string().contains("memories/people/mom.md"), "{processed}");
    assert_eq!(head_message(&app, "alex"), "Initialize memory repository", "staged only");

    let (status, committed) =
        app.post_json("/memory/alex/commit-session", &json!({"session_id": "session-001"})).await;
    assert_eq!(status, 200, "{committed}");
    assert_metadata(&committed, "alex");
    assert_eq!(committed["message"], "Session committed");
    assert_eq!(head_message(&app, "alex"), "Session session-001");
    let repo = git2::Repository::open(app.data_dir.join("repos").join("alex")).unwrap();
    assert_eq!(
        repo.head().unwrap().peel_to_commit().unwrap().id().to_string(),
        committed["commit"].as_str().unwrap()
    );

    let (status, found) =
        app.post_json("/memory/alex/search", &json!({"query": "coffee with mom", "k": 3})).await;
    assert_eq!(status, 200, "{found}");
    assert_metadata(&found, "alex");
    assert_eq!(
        (&found["metadata"]["query"], &found["metadata"]["k"]),
        (&json!("coffee with mom"), &json!(3))
    );
    assert_eq!(found["results"][0]["file"], "memories/people/mom.md", "{found}");

    let conversation = json!([{"role": "user", "content": "How is my mom doing?"}]);
    let (status, context) =
        app.post_json("/memory/alex/context", &json!({"conversation": conversation, "depth": "deep"})).await;
    assert_eq!(status, 200, "{context}");
    assert_metadata(&context, "alex");
    assert_eq!(context["metadata"]["depth"], "deep");
    assert_eq!(context["context"]["entities"][0]["path"], "memories/people/mom.md", "{context}");
    let (_, baseline) = app
        .post_json("/memory/alex/context", &json!({"conversation": conversation, "baseline_only": true}))
        .await;
    assert_eq!(baseline["metadata"]["depth"], "basic", "{baseline}");

    let running = json!({"conversation": [{"role": "user", "content": "who did I go running with?"}]});
    let (status, orchestrated) = app.post_json("/memory/alex/orchestrated-search", &running).await;
    assert_eq!(status, 200, "{orchestrated}");
    assert_metadata(&orchestrated, "alex");
    assert!(orchestrated["results"]["snippets"].to_string().contains("Sarah"), "{orchestrated}");
    assert!(!orchestrated["results"]["queries"].as_array().unwrap().is_empty(), "{orchestrated}");

    let (status, timeline) = get(&app, "/memory/alex/recent-timeline?days_back=7").await;
    assert_eq!(status, 200, "{timeline}");
    assert_metadata(&timeline, "alex");
    assert_eq!(timeline["metadata"]["days_back"], 7);
    assert!(timeline["timeline"][0].as_str().unwrap().contains("Had coffee with mom"), "{timeline}");
    for bad in ["0", "-3", "100000", "soon"] {
        let (status, refused) = get(&app, &format!("/memory/alex/recent-timeline?days_back={bad}")).await;
        assert_eq!(status, 422, "days_back={bad}: {refused}");
        assert!(refused["detail"].as_str().is_some_and(|d| d.contains("days_back")), "{refused}");
    }

    let (status, rebuilt) = app.post_json("/memory/alex/rebuild-index", &Value::Null).await;
    assert_eq!(status, 200, "{rebuilt}");
    assert_eq!(rebuilt["message"], "Index rebuilt successfully");
    assert!(rebuilt["index_stats"]["total_blocks"].as_u64().unwrap() > 5, "{rebuilt}");

    // The original's ?sync=false answers at once with where to poll.
    let next = json!({"session_id": "s-async", "memory_input": "Booked a trip to Lisbon with Maria."});
    let (status, queued) = app.post_json("/memory/alex/process-and-commit?sync=false", &next).await;
    assert_eq!(status, 202, "{queued}");
    let id = queued["job_id"].as_str().unwrap();
    assert_eq!(queued["metadata"]["poll_url"], format!("/api/v1/jobs/{id}"), "{queued}");
    let job = app.wait_final(id, std::time::Duration::from_secs(30)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(head_message(&app, "alex"), "Session s-async");
}

async fn bad_ids_bad_input_and_unknown_users_are_refused_with_nothing_written(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let info = json!({"user_info": "Someone."});
    let posts = [
        ("/memory/..%2Fescape/onboard", info.clone(), 422),
        ("/memory/bad%20id/onboard", info.clone(), 422),
        ("/memory/.hidden/onboard", info.clone(), 422),
        ("/memory/carol/onboard", json!({"user_info": "  "}), 422),
        ("/memory/carol/onboard", json!({"user_info": "x", "session_id": "../x"}), 422),
        ("/memory/carol/onboard", json!({"user_info": "x", "template": "# carol"}), 422),
        ("/memory/carol/onboard", json!({}), 422),
        ("/memory/nobody/process-session", json!({"session_id": "s1", "memory_input": "hi"}), 404),
        ("/memory/nobody/process-and-commit", json!({"session_id": "s1", "memory_input": "hi"}), 404),
        ("/memory/nobody/commit-session", json!({"session_id": "s1"}), 404),
        ("/memory/nobody/search", json!({"query": "x"}), 404),
        ("/memory/nobody/context", json!({"conversation": [{"role": "user", "content": "x"}]}), 404),
        ("/memory/nobody/rebuild-index", json!({}), 404),
        ("/memory/..%2Fescape/process-session", json!({"session_id": "s1", "memory_input": "hi"}), 422),
    ];
    for (path, body, expected) in posts {
        let (status, reply) = app.post_json(path, &body).await;
        assert_eq!(status, expected, "{path} {body}: {reply}");
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()), "FastAPI's detail: {reply}");
    }
    for (path, expected) in [
        ("/memory/..%2Fescape/status", 422),
        ("/memory/..%2F..%2Fetc/user-entity", 422),
        ("/memory/nobody/status", 404),
        ("/memory/nobody/user-entity", 404),
        ("/memory/nobody/recent-timeline", 404),
    ] {
        let (status, reply) = get(&app, path).await;
        assert_eq!(status, expected, "{path}: {reply}");
    }
    let (status, onboard) = get(&app, "/memory/nobody/onboard-status").await;
    assert_eq!((status, &onboard["onboarded"]), (200, &json!(false)), "{onboard}");
    let (status, validation) = get(&app, "/memory/nobody/validate").await;
    assert_eq!((status, &validation["validation"]["valid"]), (200, &json!(false)), "{validation}");

    // A set-up user's session refuses the original's webhook rather than never calling it.
    let (status, reply) = app.post_json("/repos/setup", &json!({"user_id": "alex"})).await;
    assert_eq!(status, 200, "{reply}");
    let hook = json!({"session_id": "s1", "memory_input": "hi", "callback_url": "https://example.com/hook"});
    let (status, reply) = app.post_json("/memory/alex/process-session", &hook).await;
    assert_eq!(status, 422, "{reply}");
    let (status, reply) =
        app.post_json("/memory/alex/commit-session", &json!({"session_id": "never-processed"})).await;
    assert_eq!(status, 409, "{reply}");

    let (_, repo) = get(&app, "/memory/alex/status").await;
    assert_eq!(repo["repo_status"]["staged_changes"], json!([]), "{repo}");
    let repos: Vec<String> = std::fs::read_dir(app.data_dir.join("repos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(repos, ["alex"], "nothing but alex's repo was written");
    assert!(
        !app.data_dir.join("escape").exists()
            && !app.data_dir.join("repos").join("..").join("escape").exists()
    );
}
