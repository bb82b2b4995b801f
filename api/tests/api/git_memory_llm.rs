//! Git memory with an LLM configured (`LLM_BASE_URL` + `LLM_MODEL`): a local stand-in speaks
//! OpenAI's chat completions over HTTP. The session writer files what the model extracted,
//! orchestrated search runs the queries the model planned, and a failing model fails the
//! session job — reported, with nothing staged.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::common::{Stack, spawn_app};

/// Replies like OpenAI: an extraction to the session writer, a plan to the planner, or 500s
/// when `failing`. Keeps every request it gets.
#[derive(Clone, Default)]
struct StandIn {
    requests: Arc<Mutex<Vec<Value>>>,
    failing: bool,
}

async fn completions(
    State(stand_in): State<StandIn>,
    Json(request): Json<Value>,
) -> Result<Json<Value>, axum::http::StatusCode> {
    stand_in.requests.lock().unwrap().push(request.clone());
    if stand_in.failing {
        return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    }
    let system = request["messages"][0]["content"].as_str().unwrap_or_default();
    let content = if system.contains("plan searches") {
        json!({"queries": ["apollo launch", "rocket"]})
    } else {
        json!({
            "entities": [
                {"name": "Project Apollo", "kind": "context", "description": "The rocket launch project at work.",
                 "note": "The launch slipped to March.", "strength": "High"},
                {"name": "Priya", "kind": "person", "description": "Lead engineer on Project Apollo.",
                 "note": "Priya is worried about the March date.", "strength": "Medium"}
            ],
            "summary": "Project Apollo's launch slipped to March."
        })
    };
    Ok(Json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 60, "total_tokens": 180}
    })))
}

async fn start_stand_in(failing: bool) -> (String, StandIn) {
    let stand_in = StandIn { failing, ..StandIn::default() };
    let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, stand_in)
}

#[tokio::test]
async fn the_session_writer_and_the_planner_use_the_model() {
    let (url, stand_in) = start_stand_in(false).await;
    let env = [("LLM_BASE_URL", url.as_str()), ("LLM_MODEL", "stand-in-model"), ("LLM_API_KEY", "sk-test")];
    let Some(app) = spawn_app(Stack::Embedded, &env).await else { return };
    assert_eq!(app.post_json("/repos/setup", &json!({"user_id": "alex"})).await.0, 200);
    let session = json!({"user_id": "alex", "session_id": "s1", "memory_input": "Standup: the launch slipped again, Priya is worried."});
    let (status, done) = app.post_json("/memory/process-and-commit", &session).await;
    assert_eq!(status, 200, "{done}");
    let entities: Vec<&str> =
        done["entities"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(entities, ["Project Apollo", "Priya"]);
    let repo = app.data_dir.join("repos/alex");
    let apollo = std::fs::read_to_string(repo.join("memories/contexts/project-apollo.md")).unwrap();
    assert!(
        apollo.contains("The rocket launch project at work.") && apollo.contains("[Strength: High]"),
        "{apollo}"
    );
    assert!(
        std::fs::read_to_string(repo.join("index.md")).unwrap().contains("[Priya](memories/people/priya.md)")
    );

    let writer_request = stand_in.requests.lock().unwrap()[0].clone();
    assert_eq!(writer_request["model"], "stand-in-model");
    assert_eq!(writer_request["response_format"]["type"], "json_object");
    assert!(writer_request["messages"][1]["content"].as_str().unwrap().contains("Priya is worried"));

    let conversation = json!([{"role": "user", "content": "what's the status of the launch?"}]);
    let (status, found) = app
        .post_json("/memory/orchestrated-search", &json!({"user_id": "alex", "conversation": conversation}))
        .await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (found["planner"].as_str(), &found["queries"]),
        (Some("llm"), &json!(["apollo launch", "rocket"]))
    );
    assert_eq!(found["results"][0]["file"], "memories/contexts/project-apollo.md", "{found}");
}

#[tokio::test]
async fn a_failing_model_fails_the_session_and_stages_nothing() {
    let (url, stand_in) = start_stand_in(true).await;
    let env = [("LLM_BASE_URL", url.as_str()), ("LLM_MODEL", "stand-in-model"), ("LLM_MAX_RETRIES", "0")];
    let Some(app) = spawn_app(Stack::Embedded, &env).await else { return };
    assert_eq!(app.post_json("/repos/setup", &json!({"user_id": "alex"})).await.0, 200);
    let session = json!({"user_id": "alex", "session_id": "s1", "memory_input": "Anything at all."});
    let (status, reply) = app.post_json("/memory/process-session", &session).await;
    assert!(status >= 500, "{status} {reply}");
    assert!(reply["detail"].as_str().unwrap().contains("LLM"), "{reply}");
    assert_eq!(
        stand_in.requests.lock().unwrap().len(),
        3,
        "each of the job's 3 attempts asked the model once"
    );
    let status = app.get_json("/repos/status/alex").await;
    assert_eq!(status["staged_changes"], json!([]), "{status}");
    // Orchestrated search still answers, planned by rules.
    let conversation = json!([{"role": "user", "content": "anything"}]);
    let (status, found) = app
        .post_json("/memory/orchestrated-search", &json!({"user_id": "alex", "conversation": conversation}))
        .await;
    assert_eq!((status, found["planner"].as_str()), (200, Some("rules")), "{found}");
}
