//! `LlmError`, what a chat call can fail with, and the provider's own error message cut to the
//! length an `LlmError` keeps.

use std::time::Duration;

/// Why a chat call failed. Messages never hold keys or prompt text.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The client could not be built (bad base URL, TLS setup).
    #[error("llm client setup failed: {0}")]
    Setup(String),
    /// 401 or 403: the key is missing, wrong or lacks access; not retried.
    #[error("llm provider refused the credentials ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    /// Any other 4xx (or a redirect): the request itself is wrong; not retried.
    #[error("llm provider rejected the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 408, 429 or 5xx on every attempt.
    #[error("llm provider still answered {status} after {attempts} attempts: {message}")]
    Unavailable { status: u16, message: String, attempts: u32 },
    /// The last attempt took longer than the per-request timeout.
    #[error("llm request timed out after {attempts} attempts of at most {timeout:?} each")]
    Timeout { attempts: u32, timeout: Duration },
    /// The provider could not be reached, or the connection broke, on the last attempt.
    #[error("llm provider unreachable after {attempts} attempts: {message}")]
    Network { attempts: u32, message: String },
    /// A success status with a body that is not a chat completion (not JSON, no choices, no
    /// content, too large); not retried.
    #[error("llm provider sent an unusable reply: {0}")]
    InvalidResponse(String),
    /// `chat_json`: the reply was not valid JSON for the asked type, also after one repair
    /// request. `reply` is the last reply, for the caller to inspect; it is not displayed.
    #[error("llm reply is not the JSON asked for, even after a repair request: {message}")]
    InvalidJson { message: String, reply: String },
}

/// The longest provider message kept in an error.
const MESSAGE_LIMIT: usize = 500;

/// The provider's own explanation from an error body (see
/// [`crate::provider_http::provider_message`]), cut to [`MESSAGE_LIMIT`] bytes.
pub(super) fn provider_message(body: &[u8]) -> String {
    truncate(&crate::provider_http::provider_message(body), MESSAGE_LIMIT)
}

/// `text` cut to at most `limit` bytes on a character boundary, marked when cut.
pub(super) fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let end = (0..=limit).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_messages_are_found_in_the_usual_shapes() {
        assert_eq!(provider_message(br#"{"error":{"message":"bad key","type":"x"}}"#), "bad key");
        assert_eq!(provider_message(br#"{"error":"model not found"}"#), "model not found");
        assert_eq!(provider_message(br#"{"message":"slow down"}"#), "slow down");
        assert_eq!(provider_message(b"<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
        assert_eq!(provider_message(b""), "(no message)");
        let long = "é".repeat(600);
        assert!(provider_message(long.as_bytes()).len() <= MESSAGE_LIMIT + "…".len());
    }
}
