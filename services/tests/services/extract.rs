//! `services::memories::extract` with an LLM: a stand-in speaks OpenAI's chat completions over
//! real HTTP on 127.0.0.1:0. Valid facts come back as asked, malformed ones are dropped one
//! by one, and `extract_facts` keeps the confident, distinct ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use services::llm::{LlmClient, LlmError};
use services::memories::extract::{CandidateFact, extract_facts, llm_facts};
use storage::sql::MemoryType;

const CONVERSATION: &str = "User: I love using React for building UIs\n\
Assistant: React is great for component-based UIs!\n\
User: I'm building a budgeting app with it. Remind me to add dark mode.";

/// Answers every chat request with `content` (the model's reply text), keeping the requests.
#[derive(Clone)]
struct StandIn {
    content: String,
    status: u16,
    requests: Arc<Mutex<Vec<Value>>>,
}

async fn completions(
    State(stand_in): State<StandIn>,
    Json(request): Json<Value>,
) -> (axum::http::StatusCode, Json<Value>) {
    stand_in.requests.lock().unwrap().push(request.clone());
    let status = axum::http::StatusCode::from_u16(stand_in.status).unwrap();
    if !status.is_success() {
        return (status, Json(json!({"error": {"message": "the model is overloaded"}})));
    }
    let reply = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": request["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": stand_in.content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    });
    (status, Json(reply))
}

async fn start(content: Value, status: u16) -> (LlmClient, StandIn) {
    let stand_in = StandIn { content: content.to_string(), status, requests: Arc::default() };
    let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = LlmClient::new(&url, "stand-in-model", None, Duration::from_secs(5), 0).unwrap();
    (client, stand_in)
}

fn facts_reply() -> Value {
    json!({"facts": [
        {"content": "User loves using React for building UIs", "type": "preference", "confidence": 0.95,
         "tags": ["React", "ui"], "turn_start": 0, "turn_end": 0},
        {"content": "User is building a budgeting app with React", "type": "project", "confidence": 0.8,
         "tags": ["budgeting", "react"], "turn_start": 0, "turn_end": 2},
        {"content": "User needs to add dark mode to the budgeting app", "type": "task", "confidence": 3,
         "tags": [], "turn_start": 2, "turn_end": 2},
        {"content": "User might like Vue", "type": "preference", "confidence": 0.2, "turn_start": 0, "turn_end": 0},
        {"content": "user loves using react for building UIs", "type": "preference", "confidence": 0.6,
         "turn_start": 0, "turn_end": 0},
        {"content": "The assistant praised React", "type": "opinion", "confidence": 0.9},
        {"content": "", "type": "fact"},
        {"content": "User said something in turn 7", "type": "fact", "turn_start": 7, "turn_end": 7},
        {"type": "fact", "confidence": 0.9},
        "User likes React"
    ]})
}

fn summary(facts: &[CandidateFact]) -> Vec<(&str, MemoryType, f64, usize, usize)> {
    facts
        .iter()
        .map(|f| (f.content.as_str(), f.memory_type, f.confidence, f.turn_start, f.turn_end))
        .collect()
}

#[tokio::test]
async fn llm_facts_keeps_valid_items_and_drops_malformed_ones() {
    let (client, stand_in) = start(facts_reply(), 200).await;
    let facts = llm_facts(&client, CONVERSATION).await.unwrap();
    assert_eq!(
        summary(&facts),
        [
            ("User loves using React for building UIs", MemoryType::Preference, 0.95, 0, 0),
            ("User is building a budgeting app with React", MemoryType::Project, 0.8, 0, 2),
            ("User needs to add dark mode to the budgeting app", MemoryType::Task, 1.0, 2, 2),
            ("User might like Vue", MemoryType::Preference, 0.2, 0, 0),
            ("user loves using react for building UIs", MemoryType::Preference, 0.6, 0, 0),
        ]
    );
    assert_eq!(facts[0].tags, ["react", "ui"]);

    let requests = stand_in.requests.lock().unwrap();
    let [request] = &requests[..] else { panic!("one request") };
    assert_eq!(request["model"], "stand-in-model");
    assert_eq!(request["response_format"]["type"], "json_object");
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("\"facts\"") && system.contains("turn_start"), "{system}");
    let user = request["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("[0] User: I love using React for building UIs"), "{user}");
    assert!(user.contains("[1] Assistant: React is great"), "{user}");
    assert!(user.contains("[2] User: I'm building a budgeting app"), "{user}");
}

#[tokio::test]
async fn extract_facts_keeps_confident_distinct_facts() {
    let (client, _) = start(facts_reply(), 200).await;
    let facts = extract_facts(Some(&client), CONVERSATION).await.unwrap();
    let contents: Vec<&str> = facts.iter().map(|f| f.content.as_str()).collect();
    assert_eq!(
        contents,
        [
            "User loves using React for building UIs",
            "User is building a budgeting app with React",
            "User needs to add dark mode to the budgeting app",
        ],
        "0.2 dropped, the case-only duplicate merged into the more confident one"
    );
}

#[tokio::test]
async fn no_facts_and_empty_conversations_are_fine() {
    let (client, stand_in) = start(json!({"facts": []}), 200).await;
    assert!(llm_facts(&client, CONVERSATION).await.unwrap().is_empty());
    assert!(llm_facts(&client, "  \n ").await.unwrap().is_empty());
    assert_eq!(stand_in.requests.lock().unwrap().len(), 1, "an empty conversation asks nothing");
}

#[tokio::test]
async fn a_failing_model_is_an_error_not_an_empty_answer() {
    let (client, _) = start(json!({}), 503).await;
    let err = extract_facts(Some(&client), CONVERSATION).await.unwrap_err();
    assert!(matches!(err, LlmError::Unavailable { status: 503, .. }), "{err}");

    let (client, stand_in) = start(json!({"memories": []}), 200).await;
    let err = llm_facts(&client, CONVERSATION).await.unwrap_err();
    assert!(matches!(err, LlmError::InvalidJson { .. }), "{err}");
    assert_eq!(stand_in.requests.lock().unwrap().len(), 2, "one repair request");
}

#[tokio::test]
async fn without_an_llm_the_rules_find_the_seed_preference() {
    let facts = extract_facts(None, CONVERSATION).await.unwrap();
    assert_eq!(
        summary(&facts),
        [
            ("User loves using React for building UIs", MemoryType::Preference, 0.9, 0, 0),
            ("User is building a budgeting app with it", MemoryType::Project, 0.85, 2, 2),
            ("User needs to add dark mode", MemoryType::Task, 0.9, 2, 2),
        ]
    );
}
