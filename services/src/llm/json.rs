//! JSON replies: finding the JSON in what a model wrote (bare, in a ```json fence, or inside
//! prose), parsing it into the caller's type, and `LlmClient::chat_json`, which asks once for
//! a repair when that fails.

use serde::de::{DeserializeOwned, IgnoredAny};
use tracing::debug;

use super::client::LlmClient;
use super::error::{LlmError, truncate};
use super::message::{ChatMessage, ChatRequest};

/// How many `{`/`[` positions are tried as the start of the JSON in prose.
const MAX_STARTS: usize = 32;
/// The longest parse error quoted back to the model.
const MAX_ERROR_IN_REPAIR: usize = 600;

impl LlmClient {
    /// Sends `request` in JSON mode and parses the reply into `T`. If the reply is not valid
    /// JSON for `T`, asks once more with the parse error; then fails with
    /// `LlmError::InvalidJson`. Say in the prompt what JSON shape you want.
    pub async fn chat_json<T: DeserializeOwned>(&self, request: ChatRequest) -> Result<T, LlmError> {
        let request = request.with_json(true);
        let reply = self.chat(request.clone()).await?;
        let error = match parse_json_reply::<T>(&reply.content) {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        debug!(model = %reply.model, reply_bytes = reply.content.len(), "llm reply is not the JSON asked for; asking for a repair");
        let mut repair = request;
        repair.messages.push(ChatMessage::assistant(reply.content));
        repair.messages.push(ChatMessage::user(format!(
            "That reply could not be used: {}. Reply again with only the corrected JSON, \
             without explanations or code fences.",
            truncate(&error, MAX_ERROR_IN_REPAIR)
        )));
        let repaired = self.chat(repair).await?;
        parse_json_reply(&repaired.content)
            .map_err(|message| LlmError::InvalidJson { message, reply: repaired.content })
    }
}

/// Parses the JSON in a model's reply into `T`; the error names the path that did not fit.
pub fn parse_json_reply<T: DeserializeOwned>(reply: &str) -> Result<T, String> {
    let json = match extract_json(reply) {
        Some(json) => json,
        // Parse from the first bracket anyway, for serde's account of what is wrong.
        None => match reply.find(['{', '[']) {
            Some(start) => &reply[start..],
            None => return Err("the reply holds no JSON object or array".to_string()),
        },
    };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." { inner.to_string() } else { format!("at {path}: {inner}") }
    })
}

/// The JSON in a model's reply: the whole reply if it is JSON, else the first ``` fenced
/// block that is, else the first balanced `{…}` or `[…]` in the text that is.
pub fn extract_json(reply: &str) -> Option<&str> {
    let reply = reply.trim();
    if is_json(reply) {
        return Some(reply);
    }
    if let Some(fenced) = fenced_blocks(reply).find(|block| is_json(block)) {
        return Some(fenced);
    }
    reply
        .match_indices(['{', '['])
        .take(MAX_STARTS)
        .filter_map(|(start, _)| balanced_end(reply, start).map(|end| &reply[start..end]))
        .find(|candidate| is_json(candidate))
}

fn is_json(text: &str) -> bool {
    !text.is_empty() && serde_json::from_str::<IgnoredAny>(text).is_ok()
}

/// The trimmed insides of the ``` fenced blocks, without their language tag line.
fn fenced_blocks(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let open = rest.find("```")?;
        let after_open = &rest[open + 3..];
        let body_start = after_open.find('\n').map_or(after_open.len(), |i| i + 1);
        let body = &after_open[body_start..];
        let close = body.find("```").unwrap_or(body.len());
        rest = body.get(close + 3..).unwrap_or("");
        Some(body[..close].trim())
    })
}

/// The end (exclusive) of the bracketed value starting at `start`, skipping strings.
fn balanced_end(text: &str, start: usize) -> Option<usize> {
    let mut closers = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (offset, byte) in text.as_bytes()[start..].iter().enumerate() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' => closers.push(b'}'),
            b'[' => closers.push(b']'),
            b'}' | b']' => {
                if closers.pop() != Some(*byte) {
                    return None;
                }
                if closers.is_empty() {
                    return Some(start + offset + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_found_bare_fenced_and_in_prose() {
        assert_eq!(extract_json(" {\"a\": 1} \n"), Some("{\"a\": 1}"));
        assert_eq!(extract_json("```json\n{\"a\": [1, 2]}\n```"), Some("{\"a\": [1, 2]}"));
        assert_eq!(extract_json("Here you go:\n```\n[1, 2]\n```\nAnything else?"), Some("[1, 2]"));
        assert_eq!(
            extract_json(
                "Sure {not json} — the answer is {\"s\": \"a } and {\", \"n\": {\"x\": []}} as asked."
            ),
            Some("{\"s\": \"a } and {\", \"n\": {\"x\": []}}")
        );
        assert_eq!(
            extract_json("{\"esc\": \"quote \\\" brace }\"} trailing"),
            Some("{\"esc\": \"quote \\\" brace }\"}")
        );
        assert_eq!(extract_json("no json here"), None);
        assert_eq!(extract_json("{\"cut\": [1, 2"), None);
        assert_eq!(extract_json("```json\n{\"unterminated\": 1}"), Some("{\"unterminated\": 1}"));
        assert_eq!(extract_json(""), None);
    }

    #[test]
    fn parse_errors_name_what_did_not_fit() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        struct Note {
            title: String,
            tags: Vec<String>,
        }
        let note: Note = parse_json_reply("```json\n{\"title\": \"t\", \"tags\": [\"a\"]}\n```").unwrap();
        assert_eq!(note, Note { title: "t".into(), tags: vec!["a".into()] });
        let err = parse_json_reply::<Note>("{\"title\": \"t\", \"tags\": [1]}").unwrap_err();
        assert!(err.contains("tags[0]"), "{err}");
        let err = parse_json_reply::<Note>("{\"title\": \"t\"}").unwrap_err();
        assert!(err.contains("tags"), "{err}");
        let err = parse_json_reply::<Note>("Here: {\"title\": \"t\", \"tags\": [").unwrap_err();
        assert!(err.contains("EOF"), "{err}");
        let err = parse_json_reply::<Note>("I cannot help with that.").unwrap_err();
        assert!(err.contains("no JSON"), "{err}");
    }

    #[test]
    fn odd_text_never_panics() {
        for text in
            ["{", "}", "]]]", "[{]}", "```", "``````", "```json", "\"", "{\"a\":\"é\\", "ünï{cödé}[\"ß\"]"]
        {
            let _ = extract_json(text);
            let _ = parse_json_reply::<serde_json::Value>(text);
        }
    }
}
