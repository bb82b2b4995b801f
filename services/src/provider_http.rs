//! The HTTP mechanics the clients of OpenAI-compatible endpoints share ([`crate::llm::LlmClient`],
//! [`crate::embed::RemoteEmbedder`]): building the reqwest client, POSTing a JSON body with
//! retries and backoff, reading bodies up to a cap, classifying what went wrong ([`Failure`]),
//! honouring `Retry-After`, and finding the provider's own message in an error body. Each
//! client keeps its own error type and turns the last [`Failure`] into it.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap};
use storage::config::Secret;
use tracing::warn;

/// Largest error body read for its message.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Longest connection setup, whatever the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What differs in how the clients talk to their endpoints.
pub(crate) struct Profile {
    /// What the requests are for, in log lines ("llm", "embedding").
    pub name: &'static str,
    /// Largest success body read.
    pub max_reply_bytes: usize,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// The message for a redirect, given its `Location` if any; `None` reads the error body.
    pub redirect_message: fn(Option<&str>) -> Option<String>,
    /// The provider's message from an error body, cut to the client's length.
    pub error_message: fn(&[u8]) -> String,
}

/// A client for endpoints under `base_url` (http or https, with a host): the Engram user
/// agent, `headers(url)` on every request, `timeout` per request (connecting within at most
/// 10 s) and no redirects. The error says what is wrong, for the caller's setup error.
pub(crate) fn client(
    base_url: &str,
    timeout: Duration,
    headers: impl FnOnce(&Url) -> HeaderMap,
) -> Result<reqwest::Client, String> {
    let url = Url::parse(base_url).map_err(|e| format!("base URL is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("base URL must be http:// or https:// with a host".into());
    }
    ensure_tls_provider();
    reqwest::Client::builder()
        .user_agent(concat!("engram/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers(&url))
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(describe_reqwest)
}

/// reqwest is built without a default TLS provider; binaries install one at start
/// (`api::install_tls_provider`). Install the same one here if nothing has yet, so building a
/// client never panics.
fn ensure_tls_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

/// JSON POSTs to one endpoint of one client.
pub(crate) struct Post<'a> {
    http: &'a reqwest::Client,
    url: &'a str,
    api_key: Option<&'a Secret>,
    /// The model asked, for log lines.
    model: &'a str,
    profile: &'a Profile,
}

impl<'a> Post<'a> {
    pub(crate) fn new(
        http: &'a reqwest::Client,
        url: &'a str,
        api_key: Option<&'a Secret>,
        model: &'a str,
        profile: &'a Profile,
    ) -> Self {
        Self { http, url, api_key, model, profile }
    }

    /// Sends `body` until an attempt succeeds, one fails for good, or `max_retries` retries
    /// are spent, waiting the provider's `Retry-After` or else `backoff(failed attempts)`
    /// between attempts. Either way with the number of attempts made.
    pub(crate) async fn send(
        &self,
        body: &[u8],
        max_retries: u32,
        backoff: impl Fn(u32) -> Duration,
    ) -> Result<(Vec<u8>, u32), (Failure, u32)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(body).await {
                Ok(reply) => return Ok((reply, attempt)),
                Err(failure) => failure,
            };
            if !failure.is_transient() || attempt > max_retries {
                return Err((failure, attempt));
            }
            let delay = failure.retry_after().unwrap_or_else(|| backoff(attempt));
            warn!(
                model = %self.model,
                attempt,
                status = failure.status(),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "{} request failed; retrying",
                self.profile.name
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP attempt: the success body, or why not.
    async fn attempt(&self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut request = self
            .http
            .post(self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body.to_vec());
        if let Some(key) = self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.map_err(Failure::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return read_capped(response, self.profile.max_reply_bytes).await;
        }
        let retry_after = retry_after(response.headers(), self.profile.retry_after_cap);
        let redirect = status.is_redirection().then(|| {
            let location = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok());
            (self.profile.redirect_message)(location)
        });
        let message = match redirect.flatten() {
            Some(message) => message,
            None => read_capped(response, MAX_ERROR_BYTES)
                .await
                .map_or_else(|_| "(unreadable error body)".to_string(), |b| (self.profile.error_message)(&b)),
        };
        Err(Failure::from_status(status.as_u16(), message, retry_after))
    }
}

/// Why one attempt failed; after the last attempt, what the client's error says.
#[derive(Debug)]
pub(crate) enum Failure {
    /// 401 or 403: the key is missing, wrong or lacks access; not retried.
    Unauthorized { status: u16, message: String },
    /// Any other 4xx, or a redirect: the request itself is wrong; not retried.
    Rejected { status: u16, message: String },
    /// 408, 429 or 5xx; retried, after `retry_after` when the provider named a delay.
    Unavailable { status: u16, message: String, retry_after: Option<Duration> },
    /// The attempt took longer than the client's timeout.
    Timeout(String),
    /// The provider could not be reached, or the connection broke.
    Network(String),
    /// The request could not be built; not retried.
    Setup(String),
    /// The success body was larger than this many bytes; not retried.
    TooLarge(usize),
}

impl Failure {
    fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> Self {
        match status {
            401 | 403 => Failure::Unauthorized { status, message },
            408 | 429 | 500..=599 => Failure::Unavailable { status, message, retry_after },
            _ => Failure::Rejected { status, message },
        }
    }

    fn from_reqwest(error: reqwest::Error) -> Self {
        if error.is_timeout() {
            Failure::Timeout(describe_reqwest(error))
        } else if error.is_builder() {
            Failure::Setup(describe_reqwest(error))
        } else {
            Failure::Network(describe_reqwest(error))
        }
    }

    fn is_transient(&self) -> bool {
        matches!(self, Failure::Unavailable { .. } | Failure::Timeout(_) | Failure::Network(_))
    }

    fn status(&self) -> Option<u16> {
        match self {
            Failure::Unavailable { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `Retry-After` in seconds, at most `cap`; the HTTP-date form is left to the backoff.
fn retry_after(headers: &HeaderMap, cap: Duration) -> Option<Duration> {
    let seconds = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds).min(cap))
}

/// Exponential from `base`, capped at `max` (or `base` if larger), with jitter on the upper
/// half.
pub(crate) fn backoff(base: Duration, max: Duration, failed_attempts: u32) -> Duration {
    let exponent = failed_attempts.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1 << exponent).min(max.max(base));
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// The whole body, refusing more than `cap` bytes.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, Failure> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Failure::TooLarge(cap));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::from_reqwest)? {
        if body.len() + chunk.len() > cap {
            return Err(Failure::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The provider's own explanation from an error body, uncut: `{"error":{"message":..}}`,
/// `{"error":".."}` or `{"message":..}`, else the body as text, else "(no message)".
pub(crate) fn provider_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|value| {
        let error = value.get("error");
        error
            .and_then(|e| e.get("message"))
            .or(error.filter(|e| e.is_string()))
            .or(value.get("message"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    });
    let message = message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if message.is_empty() { "(no message)".to_string() } else { message }
}

/// A reqwest error with its causes, as one line ("error sending request: connection refused"),
/// without the URL, which may carry credentials.
pub(crate) fn describe_reqwest(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_is_seconds_and_capped() {
        const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, RETRY_AFTER_CAP), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers, RETRY_AFTER_CAP), Some(Duration::from_secs(2)));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&headers, RETRY_AFTER_CAP), Some(RETRY_AFTER_CAP));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers, RETRY_AFTER_CAP), None);
    }
}
