//! LLM settings: which OpenAI-compatible chat endpoint Engram calls (a self-hosted server,
//! OpenRouter or OpenAI), with which model and key, and how patiently. No provider means
//! callers use their rule-based stand-ins.

use std::time::Duration;

use super::{ConfigError, ConnectionUrl, RawConfig, Secret, parse_number, parse_url};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    (
        "LLM_BASE_URL",
        "base URL of any OpenAI-compatible chat API, up to before /chat/completions \
         (e.g. http://127.0.0.1:11434/v1); needs LLM_MODEL",
    ),
    ("LLM_MODEL", "model asked for; default openai/gpt-4o-mini (OpenRouter) or gpt-4o-mini (OpenAI)"),
    ("LLM_API_KEY", "Bearer key for LLM_BASE_URL, if that server wants one"),
    ("OPENROUTER_API_KEY", "OpenRouter key for LLM calls when LLM_BASE_URL is unset"),
    ("OPENAI_API_KEY", "OpenAI key for LLM calls when neither LLM_BASE_URL nor OPENROUTER_API_KEY is set"),
    ("LLM_TIMEOUT_SECS", "longest one LLM request may take, in seconds"),
    ("LLM_MAX_RETRIES", "retries of an LLM request after timeouts, 408, 429 and 5xx answers"),
];

const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";
const OPENROUTER_DEFAULT_MODEL: &str = "openai/gpt-4o-mini";
const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
const OPENAI_DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Which service an `LlmProvider` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmProviderKind {
    /// `LLM_BASE_URL`: Ollama, vLLM, llama.cpp, a test stand-in, ...
    Custom,
    OpenRouter,
    OpenAi,
}

/// The endpoint LLM calls go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmProvider {
    pub kind: LlmProviderKind,
    /// The base before `/chat/completions`.
    pub base_url: ConnectionUrl,
    pub model: String,
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmConfig {
    /// `None`: no LLM configured; callers use rule-based stand-ins.
    pub provider: Option<LlmProvider>,
    pub openrouter_api_key: Option<Secret>,
    /// Also the key for OpenAI embeddings, whichever chat provider is chosen.
    pub openai_api_key: Option<Secret>,
    /// Per request.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

impl LlmConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let openrouter_api_key = raw.get("OPENROUTER_API_KEY").map(Secret::new);
        let openai_api_key = raw.get("OPENAI_API_KEY").map(Secret::new);
        let model = raw.get("LLM_MODEL").map(str::to_string);
        let provider = match (raw.get("LLM_BASE_URL"), &openrouter_api_key, &openai_api_key) {
            (Some(base_url), _, _) => Some(LlmProvider {
                kind: LlmProviderKind::Custom,
                base_url: parse_base_url(base_url)?,
                model: model.ok_or_else(|| {
                    ConfigError::new("LLM_MODEL", "is unset while LLM_BASE_URL is set; name the model to use")
                })?,
                api_key: raw.get("LLM_API_KEY").map(Secret::new),
            }),
            (None, Some(key), _) => Some(LlmProvider {
                kind: LlmProviderKind::OpenRouter,
                base_url: parse_base_url(OPENROUTER_BASE_URL)?,
                model: model.unwrap_or_else(|| OPENROUTER_DEFAULT_MODEL.to_string()),
                api_key: Some(key.clone()),
            }),
            (None, None, Some(key)) => Some(LlmProvider {
                kind: LlmProviderKind::OpenAi,
                base_url: parse_base_url(OPENAI_BASE_URL)?,
                model: model.unwrap_or_else(|| OPENAI_DEFAULT_MODEL.to_string()),
                api_key: Some(key.clone()),
            }),
            (None, None, None) => None,
        };
        if raw.get("LLM_API_KEY").is_some() && raw.get("LLM_BASE_URL").is_none() {
            return Err(ConfigError::new(
                "LLM_API_KEY",
                "is set while LLM_BASE_URL is unset; set LLM_BASE_URL, or use OPENROUTER_API_KEY or OPENAI_API_KEY",
            ));
        }
        Ok(Self {
            provider,
            openrouter_api_key,
            openai_api_key,
            timeout: Duration::from_secs(parse_number(raw, "LLM_TIMEOUT_SECS", 60, 1, 600)?),
            max_retries: u32::try_from(parse_number(raw, "LLM_MAX_RETRIES", 3, 0, 10)?).unwrap_or(10),
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        let masked = |s: &Option<Secret>| s.as_ref().map(|_| "****".to_string());
        let provider = self.provider.as_ref();
        let base_url = provider.map(|p| match p.kind {
            LlmProviderKind::Custom => p.base_url.masked(),
            LlmProviderKind::OpenRouter => format!("(unset: {} for OPENROUTER_API_KEY)", p.base_url.masked()),
            LlmProviderKind::OpenAi => format!("(unset: {} for OPENAI_API_KEY)", p.base_url.masked()),
        });
        let custom_key =
            provider.filter(|p| p.kind == LlmProviderKind::Custom).and_then(|p| masked(&p.api_key));
        vec![
            (
                "LLM_BASE_URL",
                Some(base_url.unwrap_or_else(|| "(unset: no LLM, rule-based stand-ins)".into())),
            ),
            ("LLM_MODEL", provider.map(|p| p.model.clone())),
            ("LLM_API_KEY", custom_key),
            ("OPENROUTER_API_KEY", masked(&self.openrouter_api_key)),
            ("OPENAI_API_KEY", masked(&self.openai_api_key)),
            ("LLM_TIMEOUT_SECS", Some(self.timeout.as_secs().to_string())),
            ("LLM_MAX_RETRIES", Some(self.max_retries.to_string())),
        ]
    }
}

fn parse_base_url(value: &str) -> Result<ConnectionUrl, ConfigError> {
    let url = parse_url(value, "LLM_BASE_URL", &["http", "https"], "http://127.0.0.1:11434/v1")?;
    if url.0.path().trim_end_matches('/').ends_with("/chat/completions") {
        return Err(ConfigError::new(
            "LLM_BASE_URL",
            "ends with /chat/completions; set only the base before it, like http://127.0.0.1:11434/v1",
        ));
    }
    Ok(url)
}
