//! `LlmClient`: one HTTP client per configured endpoint. Sends chat requests through
//! `crate::provider_http` (which retries timeouts, broken connections, 408, 429 and 5xx with
//! backoff and caps reply sizes), and logs each call's model, token counts and timing, never
//! its content or key.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use storage::config::{LlmConfig, Secret};
use tracing::{debug, info};

use super::error::{LlmError, provider_message};
use super::message::{ChatReply, ChatRequest, WireReply, WireRequest};
use crate::provider_http::{self, Failure, Post, Profile};

/// How chat requests go: replies up to 4 MiB, `Retry-After` honoured up to a minute.
const PROFILE: Profile = Profile {
    name: "llm",
    max_reply_bytes: 4 * 1024 * 1024,
    retry_after_cap: Duration::from_secs(60),
    redirect_message: |location| {
        location.map(|location| {
            format!("redirects to {location}; set the base URL to the address the endpoint lives at")
        })
    },
    error_message: provider_message,
};
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
        let http = provider_http::client(base_url, timeout, |url| {
            let mut headers = HeaderMap::new();
            if url.host_str().is_some_and(|h| h == "openrouter.ai" || h.ends_with(".openrouter.ai")) {
                headers.insert("X-Title", HeaderValue::from_static("Engram"));
            }
            headers
        })
        .map_err(LlmError::Setup)?;
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
        let post = Post::new(&self.http, &self.endpoint, self.api_key.as_ref(), &self.model, &PROFILE);
        match post.send(&body, self.max_retries, |failed| self.backoff(failed)).await {
            Ok((reply, attempts)) => self.finish(&reply, attempts, started),
            Err((failure, attempts)) => Err(final_error(failure, attempts, self.timeout)),
        }
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
        provider_http::backoff(self.backoff_base, self.backoff_max, failed_attempts)
    }
}

/// What the last attempt's failure means for the caller.
fn final_error(failure: Failure, attempts: u32, timeout: Duration) -> LlmError {
    match failure {
        Failure::Unauthorized { status, message } => LlmError::Unauthorized { status, message },
        Failure::Rejected { status, message } => LlmError::Rejected { status, message },
        Failure::Unavailable { status, message, .. } => LlmError::Unavailable { status, message, attempts },
        Failure::Timeout(_) => LlmError::Timeout { attempts, timeout },
        Failure::Network(message) => LlmError::Network { attempts, message },
        Failure::Setup(message) => LlmError::Setup(message),
        Failure::TooLarge(cap) => LlmError::InvalidResponse(format!("the reply is larger than {cap} bytes")),
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
