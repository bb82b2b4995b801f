//! A client for any OpenAI-compatible chat endpoint (a self-hosted server such as Ollama or
//! vLLM, OpenRouter, OpenAI), chosen by `storage::config::LlmConfig`. `LlmClient::chat` sends
//! one conversation with retries and backoff; `LlmClient::chat_json` asks for JSON and parses
//! it into a type, with one repair round. No configured provider means no client: callers
//! then use their rule-based stand-ins.

mod client;
mod error;
mod json;
mod message;

pub use client::LlmClient;
pub use error::LlmError;
pub use json::{extract_json, parse_json_reply};
pub use message::{ChatMessage, ChatReply, ChatRequest, Role, Usage};
