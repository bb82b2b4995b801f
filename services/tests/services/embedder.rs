//! The local embedding model against the real all-MiniLM-L6-v2 files in `ENGRAM_MODEL_DIR`
//! (`scripts/test.sh` installs them; by hand:
//! `ENGRAM_MODEL_DIR=$(scripts/install-model.sh) cargo test -p services --test services embedder`), and
//! the remote embedder over real HTTP against an OpenAI-compatible stand-in on 127.0.0.1:0.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use services::embed::{
    DIMENSIONS, EmbedError, Embedder, LocalEmbedder, MAX_REMOTE_BATCH, MAX_TOKENS, RemoteEmbedder,
    RemoteError, cosine,
};
use storage::config::{Config, RawConfig, Secret};

fn shared_embedder() -> &'static Arc<LocalEmbedder> {
    static EMBEDDER: OnceLock<Arc<LocalEmbedder>> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = std::env::var_os("ENGRAM_MODEL_DIR").map(PathBuf::from).expect(
            "ENGRAM_MODEL_DIR is not set: run `ENGRAM_MODEL_DIR=$(scripts/install-model.sh) \
             cargo test -p services --test services embedder` (scripts/test.sh sets it)",
        );
        Arc::new(LocalEmbedder::load(&dir).unwrap_or_else(|err| panic!("{err}")))
    })
}

fn embedder() -> &'static LocalEmbedder {
    shared_embedder()
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tolerance, "dim {i}: {a} vs {e} (tolerance {tolerance})\n{actual:?}");
    }
}

fn norm(vector: &[f32]) -> f32 {
    vector.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn matches_the_sentence_transformers_reference_vectors() {
    let vectors = embedder().embed(&["This is an example sentence", "Each sentence is converted."]).unwrap();
    assert_close(
        &vectors[0][..6],
        &[0.06765693, 0.06349593, 0.04871314, 0.07930495, 0.03744806, 0.00265273],
        1e-6,
    );
    assert_close(
        &vectors[1][..6],
        &[0.07853645, 0.08856265, -0.00209270, -0.00717247, -0.01252624, 0.01881747],
        1e-6,
    );
}

#[test]
fn vectors_are_unit_length_and_384_wide() {
    let texts = ["short", "a somewhat longer sentence about memory and agents", "Grüße aus Köln 🚲 日本語"];
    for vector in embedder().embed(&texts).unwrap() {
        assert_eq!(vector.len(), DIMENSIONS);
        assert!((norm(&vector) - 1.0).abs() < 1e-5, "norm {}", norm(&vector));
        assert!(vector.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_by_one() {
    // More than one internal batch, of mixed lengths, so sorting and padding are exercised.
    let texts: Vec<String> =
        (0..40).map(|i| format!("sentence number {i} {}", "with some more words ".repeat(i % 7))).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = embedder().embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (text, vector) in texts.iter().zip(&batched) {
        let single = embedder().embed(&[text]).unwrap().remove(0);
        assert_close(vector, &single, 1e-5);
    }
}

#[test]
fn similar_meanings_are_closer() {
    let [jogging, running, taxes] = <[Vec<f32>; 3]>::try_from(
        embedder()
            .embed(&["I went jogging this morning", "running exercise", "quarterly tax filing"])
            .unwrap(),
    )
    .unwrap();
    let near = cosine(&jogging, &running);
    let far = cosine(&jogging, &taxes);
    assert!(near > far + 0.1, "jogging~running {near}, jogging~taxes {far}");
}

#[test]
fn inputs_longer_than_the_model_window_are_truncated() {
    let long = "memory ".repeat(MAX_TOKENS * 4);
    let truncated = "memory ".repeat(MAX_TOKENS - 2); // 256 tokens with [CLS] and [SEP]
    let vectors = embedder().embed(&[&long, &truncated]).unwrap();
    assert_eq!(vectors[0].len(), DIMENSIONS);
    assert_close(&vectors[0], &vectors[1], 1e-5);
}

#[test]
fn empty_and_blank_inputs_get_a_valid_vector() {
    let vectors = embedder().embed(&["", "   "]).unwrap();
    for vector in &vectors {
        assert_eq!(vector.len(), DIMENSIONS);
        assert!((norm(vector) - 1.0).abs() < 1e-5);
    }
    assert!(embedder().embed(&[]).unwrap().is_empty());
}

#[test]
fn query_embeddings_are_cached_and_match_embed() {
    let first = embedder().embed_query("where did I park the car").unwrap();
    let again = embedder().embed_query("where did I park the car").unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the second call is answered from the cache");
    let direct = embedder().embed(&["where did I park the car"]).unwrap().remove(0);
    assert_close(&first, &direct, 1e-6);
}

#[test]
fn the_embedder_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LocalEmbedder>();
    let reference = embedder().embed(&["shared across threads"]).unwrap().remove(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..2).map(|_| scope.spawn(|| embedder().embed(&["shared across threads"]).unwrap())).collect();
        for handle in handles {
            assert_close(&handle.join().unwrap()[0], &reference, 1e-6);
        }
    });
}

#[test]
fn loading_from_a_missing_dir_names_the_dir_and_the_install_script() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("all-MiniLM-L6-v2");
    let err = LocalEmbedder::load(&model_dir).err().expect("no model there");
    assert!(matches!(err, EmbedError::ModelMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&model_dir.display().to_string()), "{message}");
    assert!(message.contains("scripts/install-model.sh"), "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
}

#[tokio::test]
async fn the_local_embedder_gives_the_same_vectors_through_embedder() {
    let local = Embedder::Local(shared_embedder().clone());
    assert_eq!((local.dimensions(), local.model_name()), (DIMENSIONS, "all-MiniLM-L6-v2"));
    assert_eq!(local.probe_dimensions().await.unwrap(), DIMENSIONS);
    let texts = ["I went jogging this morning", "quarterly tax filing", ""];
    let direct = embedder().embed(&texts).unwrap();
    let through = local.embed(texts.iter().map(|t| t.to_string()).collect()).await.unwrap();
    assert_eq!(through.len(), direct.len());
    for (a, b) in through.iter().zip(&direct) {
        assert_close(a, b, 1e-6);
    }
    let query = local.embed_query("running exercise").await.unwrap();
    assert_close(&query, &embedder().embed(&["running exercise"]).unwrap()[0], 1e-6);
    assert!(Arc::ptr_eq(&query, &local.embed_query("running exercise").await.unwrap()), "cached");
    assert!(local.embed(Vec::new()).await.unwrap().is_empty());
    let configured = Embedder::from_config(&Default::default(), Some(shared_embedder().clone())).unwrap();
    assert!(matches!(configured, Some(Embedder::Local(_))), "no EMBEDDING_BASE_URL: the local model");
}

// The remote embedder against a stand-in of OpenAI's `/v1/embeddings`.

/// Vector length the stand-in answers with.
const STAND_IN_DIMENSIONS: usize = 3;

/// What the stand-in embeds `text` as, before the client normalises it: distinct per text,
/// so order mistakes show.
fn stand_in_vector(text: &str) -> Vec<f32> {
    let checksum = text.bytes().map(u32::from).sum::<u32>() % 997;
    vec![text.len() as f32 + 1.0, checksum as f32, 1.0]
}

fn unit(vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.into_iter().map(|x| x / norm).collect()
}

/// A request the stand-in received.
#[derive(Debug, Clone)]
struct Received {
    authorization: Option<String>,
    body: Value,
}

/// Answers with scripted failures first, then embeddings (in reverse index order, as the
/// protocol allows).
#[derive(Default)]
struct Script {
    failures: Vec<(u16, Value)>,
    received: Vec<Received>,
}

struct EmbeddingsStandIn {
    base_url: String,
    script: Arc<Mutex<Script>>,
}

impl EmbeddingsStandIn {
    async fn start(failures: Vec<(u16, Value)>) -> Self {
        let script = Arc::new(Mutex::new(Script { failures, received: Vec::new() }));
        let app = Router::new().route("/v1/embeddings", post(embeddings)).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base_url, script }
    }

    /// A client with `key`, 3 retries and millisecond backoff.
    fn client(&self, key: Option<&str>, dimensions: Option<usize>) -> RemoteEmbedder {
        RemoteEmbedder::new(&self.base_url, "stand-in-embed", key.map(Secret::new), dimensions)
            .unwrap()
            .with_retries(3, Duration::from_millis(5))
    }

    fn embedder(&self) -> Embedder {
        Embedder::Remote(Arc::new(self.client(Some("sk-embed"), None)))
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

async fn embeddings(State(script): State<Arc<Mutex<Script>>>, headers: HeaderMap, body: String) -> Response {
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let failure = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
            body: request.clone(),
        });
        (!script.failures.is_empty()).then(|| script.failures.remove(0))
    };
    if let Some((status, body)) = failure {
        return (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    }
    let inputs = request["input"].as_array().cloned().unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, text)| {
            json!({"object": "embedding", "index": index, "embedding": stand_in_vector(text.as_str().unwrap())})
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": request["model"],
                      "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
    .into_response()
}

fn openai_error(message: &str) -> Value {
    json!({"error": {"message": message, "type": "invalid_request_error"}})
}

#[tokio::test]
async fn remote_inputs_go_in_sorted_batches_and_come_back_in_order() {
    let server = EmbeddingsStandIn::start(Vec::new()).await;
    let embedder = server.embedder();
    assert_eq!(embedder.dimensions(), 0, "unknown before the first answer");
    assert_eq!(embedder.model_name(), "stand-in-embed");
    let texts: Vec<String> = (0..200).map(|i| format!("text {i} {}", "x".repeat((i * 37) % 50))).collect();
    let vectors = embedder.embed(texts.clone()).await.unwrap();
    assert_eq!(vectors.len(), texts.len());
    for (text, vector) in texts.iter().zip(&vectors) {
        assert_close(vector, &unit(stand_in_vector(text)), 1e-6);
    }
    assert_eq!(embedder.dimensions(), STAND_IN_DIMENSIONS, "learned from the answer");

    let received = server.received();
    let sizes: Vec<usize> = received.iter().map(|r| r.body["input"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [MAX_REMOTE_BATCH, MAX_REMOTE_BATCH, 200 - 2 * MAX_REMOTE_BATCH]);
    let lengths: Vec<usize> = received
        .iter()
        .flat_map(|r| r.body["input"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().len()))
        .collect();
    assert!(lengths.is_sorted(), "inputs are sent shortest first");
    for request in &received {
        assert_eq!(request.body["model"], "stand-in-embed");
        assert_eq!(request.authorization.as_deref(), Some("Bearer sk-embed"));
    }
}

#[tokio::test]
async fn without_a_key_no_authorization_is_sent() {
    let server = EmbeddingsStandIn::start(Vec::new()).await;
    let embedder = server.client(None, None);
    assert_eq!(embedder.probe_dimensions().await.unwrap(), STAND_IN_DIMENSIONS);
    assert_eq!(embedder.dimensions(), Some(STAND_IN_DIMENSIONS));
    assert_eq!(embedder.probe_dimensions().await.unwrap(), STAND_IN_DIMENSIONS, "known: no request");
    let [request] = &server.received()[..] else { panic!("one probe request") };
    assert_eq!(request.authorization, None);
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried() {
    let failures = vec![(500, openai_error("boom")), (429, openai_error("slow down")), (503, json!({}))];
    let server = EmbeddingsStandIn::start(failures).await;
    let vectors = server.embedder().embed(vec!["retry me".into()]).await.unwrap();
    assert_close(&vectors[0], &unit(stand_in_vector("retry me")), 1e-6);
    assert_eq!(server.received().len(), 4, "three failures, then the answer");
}

#[tokio::test]
async fn retries_end_with_an_error_naming_the_status() {
    let failures = vec![(502, openai_error("bad gateway")); 2];
    let server = EmbeddingsStandIn::start(failures).await;
    let embedder = server.client(Some("k"), None).with_retries(1, Duration::from_millis(1));
    let err = embedder.embed(&["a"]).await.unwrap_err();
    assert!(matches!(err, RemoteError::Unavailable { status: 502, attempts: 2, .. }), "{err}");
    assert!(err.to_string().contains("bad gateway"), "{err}");
}

#[tokio::test]
async fn a_rejected_request_surfaces_without_retries() {
    let server = EmbeddingsStandIn::start(vec![(400, openai_error("input is too long"))]).await;
    let err = server.embedder().embed(vec!["too long".into()]).await.unwrap_err();
    let EmbedError::Remote(RemoteError::Rejected { status, message }) = &err else { panic!("{err:?}") };
    assert_eq!((*status, message.as_str()), (400, "input is too long"));
    assert!(err.to_string().contains("rejected the request (400): input is too long"), "{err}");
    assert_eq!(server.received().len(), 1, "4xx is not retried");

    let server = EmbeddingsStandIn::start(vec![(401, openai_error("bad key"))]).await;
    let err = server.embedder().embed_query("q").await.unwrap_err();
    assert!(matches!(err, EmbedError::Remote(RemoteError::Unauthorized { status: 401, .. })), "{err}");
}

#[tokio::test]
async fn repeated_queries_are_answered_from_the_cache() {
    let server = EmbeddingsStandIn::start(Vec::new()).await;
    let embedder = server.embedder();
    let first = embedder.embed_query("where did I park the car").await.unwrap();
    let again = embedder.embed_query("where did I park the car").await.unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    assert_close(&first, &unit(stand_in_vector("where did I park the car")), 1e-6);
    assert_eq!(server.received().len(), 1, "the second query made no request");
    embedder.embed_query("another query").await.unwrap();
    assert_eq!(server.received().len(), 2);
}

#[tokio::test]
async fn a_configured_dimension_is_checked_against_the_answers() {
    let server = EmbeddingsStandIn::start(Vec::new()).await;
    let embedder = Embedder::Remote(Arc::new(server.client(None, Some(1536))));
    assert_eq!(embedder.dimensions(), 1536, "known before any request");
    let err = embedder.embed(vec!["x".into()]).await.unwrap_err();
    assert!(
        matches!(err, EmbedError::Remote(RemoteError::Dimensions { expected: 1536, actual: 3 })),
        "{err:?}"
    );
    assert!(err.to_string().contains("EMBEDDING_DIMENSIONS"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let embedder =
        RemoteEmbedder::new(&base_url, "m", None, None).unwrap().with_retries(1, Duration::from_millis(1));
    let err = embedder.embed(&["a"]).await.unwrap_err();
    assert!(matches!(err, RemoteError::Network { attempts: 2, .. }), "{err}");
}

#[tokio::test]
async fn the_configuration_picks_remote_then_local() {
    let server = EmbeddingsStandIn::start(Vec::new()).await;
    let config = |pairs: &[(&str, &str)]| {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_raw(&RawConfig::layered(env, [], [])).unwrap().embedding
    };
    let remote = config(&[
        ("EMBEDDING_BASE_URL", &server.base_url),
        ("EMBEDDING_MODEL", "configured-model"),
        ("EMBEDDING_API_KEY", "sk-configured"),
    ]);
    let embedder = Embedder::from_config(&remote, None).unwrap().expect("remote");
    assert!(matches!(embedder, Embedder::Remote(_)));
    assert_eq!(embedder.model_name(), "configured-model");
    embedder.embed(vec!["hello".into()]).await.unwrap();
    let [request] = &server.received()[..] else { panic!("one request") };
    assert_eq!(request.authorization.as_deref(), Some("Bearer sk-configured"));
    assert_eq!(request.body["model"], "configured-model");

    assert!(Embedder::from_config(&config(&[]), None).unwrap().is_none(), "no model at all");
}
