//! What goes to and comes back from `/chat/completions`: the public request and reply types,
//! and their OpenAI wire shapes.

use serde::{Deserialize, Serialize};

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

/// One chat completion request; the model is the client's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// `None`: the provider's default.
    pub temperature: Option<f32>,
    /// `None`: the provider's default.
    pub max_tokens: Option<u32>,
    /// Ask for a JSON object (`response_format: {"type": "json_object"}`). OpenAI refuses this
    /// unless a message mentions JSON, so say what JSON you want in the prompt.
    pub json: bool,
}

impl ChatRequest {
    pub fn new(messages: impl IntoIterator<Item = ChatMessage>) -> Self {
        Self { messages: messages.into_iter().collect(), ..Self::default() }
    }

    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    pub fn with_json(mut self, json: bool) -> Self {
        self.json = json;
        self
    }
}

/// Token counts the provider reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// The assistant's answer to a `ChatRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatReply {
    pub content: String,
    /// The model that answered, as the provider names it (the asked model if it does not say).
    pub model: String,
    /// `None` when the provider reports no usage.
    pub usage: Option<Usage>,
    /// `stop`, `length` (cut off at `max_tokens`), ... when the provider says.
    pub finish_reason: Option<String>,
    /// HTTP attempts this reply took, 1 when the first succeeded.
    pub attempts: u32,
}

/// The request body sent.
#[derive(Debug, Serialize)]
pub(super) struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
}

#[derive(Debug, Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl<'a> WireRequest<'a> {
    pub(super) fn new(model: &'a str, request: &'a ChatRequest) -> Self {
        Self {
            model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            response_format: request.json.then_some(ResponseFormat { kind: "json_object" }),
        }
    }
}

/// The reply body received; every field optional so odd providers yield clear errors.
#[derive(Debug, Deserialize)]
pub(super) struct WireReply {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct WireChoice {
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl WireReply {
    /// The first choice as a `ChatReply`, or why there is none.
    pub(super) fn into_reply(self, asked_model: &str, attempts: u32) -> Result<ChatReply, String> {
        if let Some(error) = &self.error {
            let body = serde_json::json!({ "error": error }).to_string();
            return Err(format!(
                "the provider answered with an error: {}",
                super::error::provider_message(body.as_bytes())
            ));
        }
        let choice = self
            .choices
            .ok_or("the reply has no choices")?
            .into_iter()
            .next()
            .ok_or("the reply has an empty list of choices")?;
        let content = choice
            .message
            .and_then(|m| m.content)
            .ok_or("the reply's first choice has no message content")?;
        let usage = self.usage.map(|u| {
            let prompt_tokens = u.prompt_tokens.unwrap_or(0);
            let completion_tokens = u.completion_tokens.unwrap_or(0);
            Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: u.total_tokens.unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
            }
        });
        Ok(ChatReply {
            content,
            model: self.model.filter(|m| !m.is_empty()).unwrap_or_else(|| asked_model.to_string()),
            usage,
            finish_reason: choice.finish_reason,
            attempts,
        })
    }
}
