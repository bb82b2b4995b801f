//! `services::llm::LlmClient` over real HTTP against a scripted OpenAI-compatible stand-in on
//! 127.0.0.1:0: request shape, JSON mode and repair, retries, timeouts and bad replies.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use services::llm::{ChatMessage, ChatRequest, LlmClient, LlmError, Role, Usage};
use storage::config::{Config, RawConfig, Secret};

/// One scripted answer of the stand-in.
#[derive(Clone)]
struct Step {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: String,
    delay: Duration,
}

fn completion(content: &str) -> Step {
    let body = json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "stand-in-model-2025",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    });
    raw(200, &body.to_string())
}

fn raw(status: u16, body: &str) -> Step {
    Step { status, headers: Vec::new(), body: body.to_string(), delay: Duration::ZERO }
}

fn error(status: u16, message: &str) -> Step {
    raw(status, &json!({"error": {"message": message, "type": "test"}}).to_string())
}

/// A request the stand-in received.
#[derive(Debug, Clone)]
struct Received {
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    received: Vec<Received>,
}

struct StandIn {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl StandIn {
    async fn start(steps: impl IntoIterator<Item = Step>) -> Self {
        let script =
            Arc::new(Mutex::new(Script { steps: steps.into_iter().collect(), received: Vec::new() }));
        let app = Router::new().route("/v1/chat/completions", post(completions)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, script }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// A client with a 1 s timeout, `retries` retries and millisecond backoff.
    fn client(&self, retries: u32) -> LlmClient {
        LlmClient::new(
            &self.base_url(),
            "test-model",
            Some(Secret::new("sk-test")),
            Duration::from_secs(1),
            retries,
        )
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

async fn completions(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: Bytes) -> Response {
    let step = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        script.steps.pop_front().unwrap_or_else(|| error(500, "script exhausted"))
    };
    tokio::time::sleep(step.delay).await;
    let mut response = (StatusCode::from_u16(step.status).unwrap(), step.body).into_response();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    for (name, value) in step.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn question() -> ChatRequest {
    ChatRequest::new([
        ChatMessage::system("You summarise."),
        ChatMessage::user("Summarise: the sky is blue."),
    ])
}

#[derive(Debug, serde::Deserialize, PartialEq)]
struct Summary {
    title: String,
    tags: Vec<String>,
}

#[tokio::test]
async fn plain_chat_returns_content_model_and_usage() {
    let server = StandIn::start([completion("The sky is blue.")]).await;
    let reply = server.client(2).chat(question().with_temperature(0.2).with_max_tokens(64)).await.unwrap();
    assert_eq!(reply.content, "The sky is blue.");
    assert_eq!(reply.model, "stand-in-model-2025");
    assert_eq!(reply.usage, Some(Usage { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 }));
    assert_eq!((reply.finish_reason.as_deref(), reply.attempts), (Some("stop"), 1));

    let [sent] = &server.received()[..] else { panic!("one request") };
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(sent.body["model"], "test-model");
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "system", "content": "You summarise."},
            {"role": "user", "content": "Summarise: the sky is blue."}
        ])
    );
    assert_eq!((sent.body["temperature"].as_f64(), sent.body["max_tokens"].as_u64()), (Some(0.2), Some(64)));
    assert!(sent.body.get("response_format").is_none(), "{}", sent.body);
}

#[tokio::test]
async fn no_key_sends_no_authorization_and_usage_is_optional() {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}).to_string();
    let server = StandIn::start([raw(200, &body)]).await;
    let client = LlmClient::new(&server.base_url(), "local", None, Duration::from_secs(1), 0).unwrap();
    let reply = client.chat(question()).await.unwrap();
    assert_eq!((reply.content.as_str(), reply.model.as_str(), reply.usage), ("hi", "local", None));
    assert_eq!(server.received()[0].authorization, None);
}

#[tokio::test]
async fn json_mode_asks_for_an_object_and_parses_a_fenced_reply() {
    let fenced = "Here it is:\n```json\n{\"title\": \"Sky\", \"tags\": [\"weather\"]}\n```";
    let server = StandIn::start([completion(fenced)]).await;
    let summary: Summary = server.client(0).chat_json(question()).await.unwrap();
    assert_eq!(summary, Summary { title: "Sky".into(), tags: vec!["weather".into()] });
    let [sent] = &server.received()[..] else { panic!("one request") };
    assert_eq!(sent.body["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn invalid_json_gets_one_repair_round() {
    let server = StandIn::start([
        completion("{\"title\": \"Sky\", \"tags\": \"weather\"}"),
        completion("{\"title\": \"Sky\", \"tags\": [\"weather\"]}"),
    ])
    .await;
    let summary: Summary = server.client(0).chat_json(question()).await.unwrap();
    assert_eq!(summary.tags, ["weather"]);
    let received = server.received();
    assert_eq!(received.len(), 2);
    let messages = received[1].body["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 4, "the question, the bad reply and the repair request");
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": "{\"title\": \"Sky\", \"tags\": \"weather\"}"})
    );
    assert_eq!(messages[3]["role"], "user");
    assert!(messages[3]["content"].as_str().unwrap().contains("tags"), "{}", messages[3]);
    assert_eq!(received[1].body["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn json_still_invalid_after_repair_is_invalid_json() {
    let server = StandIn::start([completion("I cannot do that."), completion("Still no.")]).await;
    let err = server.client(0).chat_json::<Summary>(question()).await.unwrap_err();
    let LlmError::InvalidJson { message, reply } = &err else { panic!("{err}") };
    assert!(message.contains("no JSON"), "{message}");
    assert_eq!(reply, "Still no.");
    assert!(!err.to_string().contains("Still no."), "the reply is not in the message");
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn rate_limit_honours_retry_after_then_succeeds() {
    let mut limited = error(429, "slow down");
    limited.headers.push(("retry-after", "1"));
    let server = StandIn::start([limited, completion("ok")]).await;
    let started = Instant::now();
    let reply = server.client(3).chat(question()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
    assert_eq!((reply.content.as_str(), reply.attempts), ("ok", 2));
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_until_retries_run_out() {
    let server = StandIn::start(vec![error(500, "upstream down"); 5]).await;
    let err = server.client(2).chat(question()).await.unwrap_err();
    let LlmError::Unavailable { status, message, attempts } = &err else { panic!("{err}") };
    assert_eq!((*status, message.as_str(), *attempts), (500, "upstream down", 3));
    assert_eq!(server.received().len(), 3);
}

#[tokio::test]
async fn unauthorized_and_rejected_are_not_retried() {
    let server = StandIn::start([error(401, "Incorrect API key provided")]).await;
    let err = server.client(3).chat(question()).await.unwrap_err();
    assert!(
        matches!(&err, LlmError::Unauthorized { status: 401, message } if message == "Incorrect API key provided")
    );
    assert!(!err.to_string().contains("sk-test"));
    assert_eq!(server.received().len(), 1);

    let server = StandIn::start([error(400, "model `nope` does not exist")]).await;
    let err = server.client(3).chat(question()).await.unwrap_err();
    assert!(matches!(&err, LlmError::Rejected { status: 400, message } if message.contains("nope")), "{err}");
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let mut slow = completion("too late");
    slow.delay = Duration::from_secs(5);
    let server = StandIn::start(vec![slow; 2]).await;
    let client = LlmClient::new(&server.base_url(), "m", None, Duration::from_millis(300), 1)
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(10));
    let started = Instant::now();
    let err = client.chat(question()).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { attempts: 2, .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn unusable_replies_are_clear_errors() {
    let empty = json!({"object": "chat.completion", "model": "m", "choices": []}).to_string();
    let null_content = json!({"choices": [{"message": {"role": "assistant", "content": null}}]}).to_string();
    let wrong_types = json!({"choices": "many", "usage": {"prompt_tokens": "x"}}).to_string();
    let error_in_200 = json!({"error": {"message": "provider overloaded", "code": 502}}).to_string();
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    for (body, expected) in [
        (empty.as_str(), "empty list of choices"),
        (null_content.as_str(), "no message content"),
        (wrong_types.as_str(), "not a chat completion"),
        (error_in_200.as_str(), "provider overloaded"),
        ("<html>gateway</html>", "not a chat completion"),
        ("", "not a chat completion"),
        (huge.as_str(), "larger than"),
    ] {
        let server = StandIn::start([raw(200, body)]).await;
        let err = server.client(2).chat(question()).await.unwrap_err();
        let LlmError::InvalidResponse(message) = &err else { panic!("{err}") };
        assert!(message.contains(expected), "{expected}: {message}");
        assert_eq!(server.received().len(), 1, "{expected}: not retried");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = LlmClient::new(&format!("http://{addr}/v1"), "m", None, Duration::from_secs(1), 1)
        .unwrap()
        .with_backoff(Duration::from_millis(10), Duration::from_millis(10));
    let err = client.chat(question()).await.unwrap_err();
    assert!(matches!(&err, LlmError::Network { attempts: 2, .. }), "{err}");
}

#[tokio::test]
async fn the_client_follows_the_configuration() {
    let config = |pairs: &[(&str, &str)]| {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_raw(&RawConfig::layered(env, [], [])).unwrap().llm
    };
    assert!(LlmClient::from_config(&config(&[])).unwrap().is_none());

    let server = StandIn::start([completion("configured")]).await;
    let base_url = server.base_url();
    let llm = config(&[
        ("LLM_BASE_URL", &base_url),
        ("LLM_MODEL", "llama3.2"),
        ("LLM_API_KEY", "sk-local"),
        ("LLM_TIMEOUT_SECS", "2"),
        ("OPENAI_API_KEY", "sk-openai"),
    ]);
    let client = LlmClient::from_config(&llm).unwrap().unwrap();
    assert_eq!(client.model(), "llama3.2");
    let reply = client.chat(ChatRequest::new([ChatMessage::user("hi")])).await.unwrap();
    assert_eq!(reply.content, "configured");
    let [sent] = &server.received()[..] else { panic!("one request") };
    assert_eq!(sent.authorization.as_deref(), Some("Bearer sk-local"));
    assert_eq!(sent.body["model"], "llama3.2");
    assert_eq!(sent.body["messages"][0]["role"], json!(Role::User));
}
