//! `LlmClient`: one HTTP client per configured endpoint. Sends chat requests, retries
//! timeouts, broken connections, 408, 429 and 5xx with backoff, caps reply sizes, and logs
//! each call's model, token counts and timing, never its content or key.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderValue};
use storage::config::{LlmConfig, Secret};
use tracing::{debug, info, warn};

use super::error::{LlmError, describe_reqwest, provider_message};
use super::message::{ChatReply, ChatRequest, WireReply, WireRequest};

/// Largest reply body read.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Largest error body read for its message.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Longest `Retry-After` honoured.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A chat client for one OpenAI-compatible endpoint and model. Cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    /// `<base>/chat/completions`.
    endpoint: String,
    model: String,
    api_key: Option<Secret>,
    timeout: Duration,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

impl LlmClient {
    /// The client for the configured provider; `None` when no LLM is configured.
    pub fn from_config(config: &LlmConfig) -> Result<Option<Self>, LlmError> {
        config
            .provider
            .as_ref()
            .map(|p| {
                Self::new(
                    p.base_url.expose(),
                    &p.model,
                    p.api_key.clone(),
                    config.timeout,
                    config.max_retries,
                )
            })
            .transpose()
    }

    /// A client for `base_url` (the part before `/chat/completions`, http or https).
    /// `timeout` bounds each attempt; `max_retries` counts attempts after the first.
    pub fn new(
        base_url: &str,
        model: impl Into<String>,
        api_key: Option<Secret>,
        timeout: Duration,
        max_retries: u32,
    ) -> Result<Self, LlmError> {
        let url = reqwest::Url::parse(base_url)
            .map_err(|e| LlmError::Setup(format!("base URL is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(LlmError::Setup("base URL must be http:// or https:// with a host".into()));
        }
        let mut headers = HeaderMap::new();
        if url.host_str().is_some_and(|h| h == "openrouter.ai" || h.ends_with(".openrouter.ai")) {
            headers.insert("X-Title", HeaderValue::from_static("Engram"));
        }
        ensure_tls_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("engram/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LlmError::Setup(describe_reqwest(e)))?;
        Ok(Self {
            http,
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.into(),
            api_key,
            timeout,
            max_retries,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
        })
    }

    /// Retry delays start near `base` and double up to `max` (defaults 1 s and 30 s).
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends one conversation and returns the first choice, retrying transient failures.
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatReply, LlmError> {
        let body = serde_json::to_vec(&WireRequest::new(&self.model, &request))
            .map_err(|e| LlmError::Setup(format!("cannot encode the request: {e}")))?;
        debug!(model = %self.model, messages = request.messages.len(), request_bytes = body.len(), "llm chat request");
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.send(&body).await {
                Ok(reply) => return self.finish(&reply, attempt, started),
                Err(failure) => failure,
            };
            if !failure.is_transient() || attempt > self.max_retries {
                return Err(failure.into_error(attempt, self.timeout));
            }
            let delay = failure.retry_after().unwrap_or_else(|| self.backoff(attempt));
            warn!(
                model = %self.model,
                attempt,
                status = failure.status(),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "llm request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP attempt: the success body, or why not.
    async fn send(&self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.map_err(Failure::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return read_capped(response, MAX_REPLY_BYTES).await;
        }
        let retry_after = retry_after(response.headers());
        let location =
            response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let message = match (status.is_redirection(), location) {
            (true, Some(location)) => {
                format!("redirects to {location}; set the base URL to the address the endpoint lives at")
            }
            _ => read_capped(response, MAX_ERROR_BYTES)
                .await
                .map_or_else(|_| "(unreadable error body)".to_string(), |b| provider_message(&b)),
        };
        Err(Failure::Status { status: status.as_u16(), message, retry_after })
    }

    fn finish(&self, body: &[u8], attempt: u32, started: Instant) -> Result<ChatReply, LlmError> {
        let wire: WireReply = serde_json::from_slice(body)
            .map_err(|e| LlmError::InvalidResponse(format!("the reply is not a chat completion ({e})")))?;
        let reply = wire.into_reply(&self.model, attempt).map_err(LlmError::InvalidResponse)?;
        info!(
            model = %reply.model,
            prompt_tokens = reply.usage.map(|u| u.prompt_tokens),
            completion_tokens = reply.usage.map(|u| u.completion_tokens),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            attempt,
            "llm chat completed"
        );
        debug!(reply_bytes = body.len(), content_bytes = reply.content.len(), finish_reason = ?reply.finish_reason, "llm chat reply");
        Ok(reply)
    }

    /// Exponential from `backoff_base`, capped, with jitter on the upper half.
    fn backoff(&self, failed_attempts: u32) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(20);
        let ceiling = self.backoff_base.saturating_mul(1 << exponent).min(self.backoff_max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    Timeout,
    Network(String),
    /// Not worth retrying; already the final error.
    Final(LlmError),
}

impl Failure {
    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Failure::Timeout
        } else if error.is_builder() {
            Failure::Final(LlmError::Setup(describe_reqwest(error)))
        } else {
            Failure::Network(describe_reqwest(error))
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Failure::Status { status, .. } => is_transient_status(*status),
            Failure::Timeout | Failure::Network(_) => true,
            Failure::Final(_) => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    fn into_error(self, attempts: u32, timeout: Duration) -> LlmError {
        match self {
            Failure::Status { status: status @ (401 | 403), message, .. } => {
                LlmError::Unauthorized { status, message }
            }
            Failure::Status { status, message, .. } if is_transient_status(status) => {
                LlmError::Unavailable { status, message, attempts }
            }
            Failure::Status { status, message, .. } => LlmError::Rejected { status, message },
            Failure::Timeout => LlmError::Timeout { attempts, timeout },
            Failure::Network(message) => LlmError::Network { attempts, message },
            Failure::Final(error) => error,
        }
    }
}

fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// `Retry-After` in seconds, capped; the HTTP-date form is left to the backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_CAP))
}

/// The whole body, refusing more than `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, Failure> {
    let too_large =
        || Failure::Final(LlmError::InvalidResponse(format!("the reply is larger than {cap} bytes")));
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::from_reqwest)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest is built without a default TLS provider; binaries install one at start
/// (`api::install_tls_provider`). Install the same one here if nothing has yet, so building a
/// client never panics.
fn ensure_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let client = LlmClient::new("http://127.0.0.1:9/v1", "m", None, Duration::from_secs(1), 3)
            .unwrap()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(350));
        for (attempt, ceiling) in [(1, 100), (2, 200), (3, 350), (30, 350)] {
            let ceiling = Duration::from_millis(ceiling);
            for _ in 0..20 {
                let delay = client.backoff(attempt);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempt}: {delay:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&headers), Some(RETRY_AFTER_CAP));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn bad_base_urls_are_setup_errors() {
        for base in ["not a url", "ftp://host/v1", "file:///tmp"] {
            let err = LlmClient::new(base, "m", None, Duration::from_secs(1), 0).unwrap_err();
            assert!(matches!(err, LlmError::Setup(_)), "{base}: {err}");
        }
        let client =
            LlmClient::new("http://h:1/v1/", "m", Some(Secret::new("sk-x")), Duration::from_secs(1), 0);
        let client = client.unwrap();
        assert_eq!(client.endpoint, "http://h:1/v1/chat/completions");
        assert!(!format!("{client:?}").contains("sk-x"));
    }
}
