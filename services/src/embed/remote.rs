//! [`RemoteEmbedder`]: embeddings from any OpenAI-compatible `/embeddings` endpoint (OpenAI,
//! Ollama, vLLM, a test stand-in), chosen by `EMBEDDING_BASE_URL`. Sends length-sorted
//! batches of at most [`MAX_REMOTE_BATCH`] inputs, retries 408, 429, 5xx, timeouts and broken
//! connections with a short backoff, checks every answer's shape and vector length, and
//! normalises vectors to unit length so [`super::cosine`] holds for every provider.
//!
//! The vector length is `EMBEDDING_DIMENSIONS` when configured, else learned from the first
//! answer; [`RemoteEmbedder::probe_dimensions`] learns it up front with one tiny request.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use storage::config::{EmbeddingConfig, Secret};
use tracing::debug;

use super::cache::QueryCache;
use crate::provider_http::{self, Failure, Post, Profile};

/// Most inputs sent in one request (OpenAI accepts up to 2,048; smaller requests fail and
/// retry more cheaply).
pub const MAX_REMOTE_BATCH: usize = 96;

/// Recent query embeddings kept by [`RemoteEmbedder::embed_query`].
const QUERY_CACHE_CAPACITY: usize = 1024;
/// Per request, connection included.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_RETRIES: u32 = 3;
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How embedding requests go: answers up to 32 MiB (96 vectors of 3,072 floats as JSON text
/// is about 6 MB), `Retry-After` honoured up to 30 s, redirects refused without reading them.
const PROFILE: Profile = Profile {
    name: "embedding",
    max_reply_bytes: 32 * 1024 * 1024,
    retry_after_cap: Duration::from_secs(30),
    redirect_message: |_| {
        Some("redirects elsewhere; set EMBEDDING_BASE_URL to the address the endpoint lives at".to_string())
    },
    error_message: provider_message,
};
/// Longest provider message kept in an error, in characters.
const MESSAGE_LIMIT: usize = 500;
/// What [`RemoteEmbedder::probe_dimensions`] embeds.
const PROBE_TEXT: &str = "dimension probe";

/// Why a remote embedding request failed. Messages never hold keys or input text.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The client could not be built (bad base URL, TLS setup).
    #[error("embedding client setup failed: {0}")]
    Setup(String),
    /// 401 or 403: the key is missing, wrong or lacks access; not retried.
    #[error("embedding service refused the credentials ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// Any other 4xx (or a redirect): the request itself is wrong; not retried.
    #[error("embedding service rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 408, 429 or 5xx on every attempt.
    #[error("embedding service still answered {status} after {attempts} attempts: {message}")]
    Unavailable { status: u16, message: String, attempts: u32 },
    /// Timeouts or broken connections on every attempt.
    #[error("embedding service unreachable after {attempts} attempts: {message}")]
    Network { attempts: u32, message: String },
    /// A success status with a body that is not the embeddings asked for; not retried.
    #[error("embedding service sent an unusable answer: {0}")]
    InvalidResponse(String),
    /// The vectors are not as long as configured or as earlier answers.
    #[error(
        "embedding model answered {actual}-dimensional vectors where {expected} were expected; \
         check EMBEDDING_MODEL and EMBEDDING_DIMENSIONS"
    )]
    Dimensions { expected: usize, actual: usize },
}

/// A client for one OpenAI-compatible embeddings endpoint and model. `Send + Sync`; share it
/// in an `Arc`.
pub struct RemoteEmbedder {
    http: reqwest::Client,
    /// `<base>/embeddings`.
    endpoint: String,
    model: String,
    api_key: Option<Secret>,
    /// 0 until known (configured, probed, or learned from the first answer).
    dimensions: AtomicUsize,
    max_retries: u32,
    backoff_base: Duration,
    queries: Mutex<QueryCache>,
}

impl fmt::Debug for RemoteEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteEmbedder")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(Deserialize)]
struct WireReply {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    index: usize,
    embedding: Vec<f32>,
}

impl RemoteEmbedder {
    /// The client for the configured provider; `None` when embeddings are local.
    pub fn from_config(config: &EmbeddingConfig) -> Result<Option<Self>, RemoteError> {
        config
            .provider
            .as_ref()
            .map(|p| Self::new(p.base_url.expose(), &p.model, p.api_key.clone(), p.dimensions))
            .transpose()
    }

    /// A client for `base_url` (the part before `/embeddings`, http or https). `dimensions`
    /// is the vector length every answer must have; `None` learns it from the first answer.
    pub fn new(
        base_url: &str,
        model: impl Into<String>,
        api_key: Option<Secret>,
        dimensions: Option<usize>,
    ) -> Result<Self, RemoteError> {
        let http = provider_http::client(base_url, DEFAULT_TIMEOUT, |_| HeaderMap::new())
            .map_err(RemoteError::Setup)?;
        Ok(Self {
            http,
            endpoint: format!("{}/embeddings", base_url.trim_end_matches('/')),
            model: model.into(),
            api_key,
            dimensions: AtomicUsize::new(dimensions.unwrap_or(0)),
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            queries: Mutex::new(QueryCache::new(QUERY_CACHE_CAPACITY)),
        })
    }

    /// Retries after the first attempt (default 3), and the first retry's delay, which
    /// doubles per retry up to 8 s (default 500 ms).
    pub fn with_retries(mut self, max_retries: u32, backoff_base: Duration) -> Self {
        self.max_retries = max_retries;
        self.backoff_base = backoff_base;
        self
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The vector length: configured, or learned from an answer; `None` before the first
    /// answer when `EMBEDDING_DIMENSIONS` is unset.
    pub fn dimensions(&self) -> Option<usize> {
        match self.dimensions.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    /// The vector length, asking the model once (one short input) if it is not known yet.
    /// Call it at start-up to fail early on a wrong URL, key or model.
    pub async fn probe_dimensions(&self) -> Result<usize, RemoteError> {
        if let Some(n) = self.dimensions() {
            return Ok(n);
        }
        let vector = self.embed_batch(&[PROBE_TEXT]).await?.swap_remove(0);
        Ok(vector.len())
    }

    /// Embeds each text into a unit vector, in input order: length-sorted requests of at
    /// most [`MAX_REMOTE_BATCH`] inputs, one after another.
    pub async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, RemoteError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&index| texts[index].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in order.chunks(MAX_REMOTE_BATCH) {
            let inputs: Vec<&str> = batch.iter().map(|&index| texts[index]).collect();
            for (&index, vector) in batch.iter().zip(self.embed_batch(&inputs).await?) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    /// Embeds one search query, answering repeated queries from a cache of the last
    /// 1,024 distinct ones.
    pub async fn embed_query(&self, text: &str) -> Result<Arc<[f32]>, RemoteError> {
        if let Some(vector) = self.queries.lock().unwrap_or_else(PoisonError::into_inner).get(text) {
            return Ok(vector);
        }
        let vector: Arc<[f32]> = self.embed_batch(&[text]).await?.swap_remove(0).into();
        self.queries.lock().unwrap_or_else(PoisonError::into_inner).insert(text, vector.clone());
        Ok(vector)
    }

    /// One request (with retries) for at most [`MAX_REMOTE_BATCH`] inputs.
    async fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, RemoteError> {
        let body = serde_json::to_vec(&WireRequest { model: &self.model, input: inputs })
            .map_err(|e| RemoteError::Setup(format!("cannot encode the request: {e}")))?;
        let post = Post::new(&self.http, &self.endpoint, self.api_key.as_ref(), &self.model, &PROFILE);
        let backoff = |failed| provider_http::backoff(self.backoff_base, BACKOFF_MAX, failed);
        let (reply, attempt) = post
            .send(&body, self.max_retries, backoff)
            .await
            .map_err(|(failure, attempts)| final_error(failure, attempts))?;
        debug!(model = %self.model, inputs = inputs.len(), attempt, "embedding request answered");
        self.check_reply(&reply, inputs.len())
    }

    /// The vectors of a success body in input order, checked and normalised.
    fn check_reply(&self, body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, RemoteError> {
        let invalid = RemoteError::InvalidResponse;
        let reply: WireReply =
            serde_json::from_slice(body).map_err(|e| invalid(format!("not an embeddings answer ({e})")))?;
        if reply.data.len() != expected {
            return Err(invalid(format!("{} vectors for {expected} inputs", reply.data.len())));
        }
        let mut data = reply.data;
        data.sort_by_key(|item| item.index);
        if data.iter().enumerate().any(|(position, item)| item.index != position) {
            return Err(invalid(format!("the indexes are not 0 to {}", expected - 1)));
        }
        let mut vectors = Vec::with_capacity(expected);
        for item in data {
            let mut vector = item.embedding;
            if vector.is_empty() || !vector.iter().all(|x| x.is_finite()) {
                return Err(invalid(format!("vector {} is empty or not finite", item.index)));
            }
            self.check_dimensions(vector.len())?;
            normalise(&mut vector);
            vectors.push(vector);
        }
        Ok(vectors)
    }

    /// Learns the length from the first answer; later answers must match it.
    fn check_dimensions(&self, actual: usize) -> Result<(), RemoteError> {
        match self.dimensions.compare_exchange(0, actual, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(()),
            Err(expected) if expected == actual => Ok(()),
            Err(expected) => Err(RemoteError::Dimensions { expected, actual }),
        }
    }
}

/// Scales to unit length (a zero vector stays as it is).
fn normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// What the last attempt's failure means for the caller (timeouts count as network failures).
fn final_error(failure: Failure, attempts: u32) -> RemoteError {
    match failure {
        Failure::Unauthorized { status, message } => RemoteError::Unauthorized { status, message },
        Failure::Rejected { status, message } => RemoteError::Rejected { status, message },
        Failure::Unavailable { status, message, .. } => {
            RemoteError::Unavailable { status, message, attempts }
        }
        Failure::Timeout(message) | Failure::Network(message) => RemoteError::Network { attempts, message },
        Failure::Setup(message) => RemoteError::Setup(message),
        Failure::TooLarge(cap) => {
            RemoteError::InvalidResponse(format!("the answer is larger than {cap} bytes"))
        }
    }
}

/// The provider's own explanation from an error body (see
/// [`crate::provider_http::provider_message`]), cut to [`MESSAGE_LIMIT`] characters.
fn provider_message(body: &[u8]) -> String {
    let message = provider_http::provider_message(body);
    match message.char_indices().nth(MESSAGE_LIMIT) {
        Some((end, _)) => format!("{}…", &message[..end]),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(dimensions: Option<usize>) -> RemoteEmbedder {
        RemoteEmbedder::new("http://127.0.0.1:9/v1/", "m", Some(Secret::new("sk-x")), dimensions).unwrap()
    }

    #[test]
    fn answers_are_sorted_by_index_checked_and_normalised() {
        let embedder = client(None);
        let body = br#"{"data":[{"index":1,"embedding":[0.0,2.0]},{"index":0,"embedding":[3.0,4.0]}]}"#;
        let vectors = embedder.check_reply(body, 2).unwrap();
        assert_eq!(vectors, vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
        assert_eq!(embedder.dimensions(), Some(2), "learned from the answer");
        let wider = br#"{"data":[{"index":0,"embedding":[1.0,0.0,0.0]}]}"#;
        let err = embedder.check_reply(wider, 1).unwrap_err();
        assert!(matches!(err, RemoteError::Dimensions { expected: 2, actual: 3 }), "{err}");
    }

    #[test]
    fn malformed_answers_are_invalid_responses() {
        for body in [
            &br#"{"data":[]}"#[..],
            br#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#,
            br#"{"data":[{"index":0,"embedding":[]},{"index":1,"embedding":[1.0]}]}"#,
            br#"{"object":"list"}"#,
            b"<html>ok</html>",
        ] {
            let err = client(None).check_reply(body, 2).unwrap_err();
            assert!(matches!(err, RemoteError::InvalidResponse(_)), "{err}");
        }
    }

    #[test]
    fn configured_dimensions_are_enforced_from_the_start() {
        let embedder = client(Some(3));
        assert_eq!(embedder.dimensions(), Some(3));
        let err = embedder.check_reply(br#"{"data":[{"index":0,"embedding":[1.0,0.0]}]}"#, 1).unwrap_err();
        assert!(err.to_string().contains("EMBEDDING_DIMENSIONS"), "{err}");
    }

    #[test]
    fn setup_checks_the_base_url_and_debug_hides_the_key() {
        for base in ["not a url", "ftp://host/v1"] {
            let err = RemoteEmbedder::new(base, "m", None, None).unwrap_err();
            assert!(matches!(err, RemoteError::Setup(_)), "{base}: {err}");
        }
        let embedder = client(None);
        assert_eq!(embedder.endpoint, "http://127.0.0.1:9/v1/embeddings");
        assert!(!format!("{embedder:?}").contains("sk-x"));
    }

    #[test]
    fn provider_messages_are_found_and_cut() {
        assert_eq!(provider_message(br#"{"error":{"message":"bad input"}}"#), "bad input");
        assert_eq!(provider_message(br#"{"error":"no such model"}"#), "no such model");
        assert_eq!(provider_message(b""), "(no message)");
        assert_eq!(provider_message("é".repeat(600).as_bytes()).chars().count(), MESSAGE_LIMIT + 1);
    }
}
