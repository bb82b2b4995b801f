//! Embedding settings: whether semantic memories are embedded by the local all-MiniLM-L6-v2
//! model (`ENGRAM_MODEL_DIR`, the default) or by an OpenAI-compatible `/embeddings` endpoint,
//! with which model, key and vector length.

use super::{ConfigError, ConnectionUrl, RawConfig, Secret, parse_url};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    (
        "EMBEDDING_BASE_URL",
        "base URL of any OpenAI-compatible embeddings API, up to before /embeddings \
         (e.g. https://api.openai.com/v1); unset = the local model in ENGRAM_MODEL_DIR",
    ),
    ("EMBEDDING_MODEL", "embedding model asked for at EMBEDDING_BASE_URL; default text-embedding-3-small"),
    (
        "EMBEDDING_API_KEY",
        "Bearer key for EMBEDDING_BASE_URL; default OPENAI_API_KEY when that URL is OpenAI's",
    ),
    (
        "EMBEDDING_DIMENSIONS",
        "length of the remote model's vectors, checked on every answer; unset = learned from the first answer",
    ),
];

/// The model asked for when `EMBEDDING_MODEL` is unset.
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

/// Host whose base URL may borrow `OPENAI_API_KEY`.
const OPENAI_HOST: &str = "api.openai.com";

/// The remote endpoint embeddings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingProvider {
    /// The base before `/embeddings`.
    pub base_url: ConnectionUrl,
    pub model: String,
    pub api_key: Option<Secret>,
    /// The vector length the model must answer with; `None` learns it from the first answer.
    pub dimensions: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmbeddingConfig {
    /// `None`: the local model in `ENGRAM_MODEL_DIR`.
    pub provider: Option<EmbeddingProvider>,
}

impl EmbeddingConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let Some(base_url) = raw.get("EMBEDDING_BASE_URL") else {
            for key in ["EMBEDDING_MODEL", "EMBEDDING_API_KEY", "EMBEDDING_DIMENSIONS"] {
                if raw.get(key).is_some() {
                    return Err(ConfigError::new(
                        key,
                        "is set while EMBEDDING_BASE_URL is unset; set EMBEDDING_BASE_URL to use a remote \
                         embedding model, or unset this to use the local one",
                    ));
                }
            }
            return Ok(Self { provider: None });
        };
        let base_url = parse_base_url(base_url)?;
        let is_openai = base_url.0.host_str() == Some(OPENAI_HOST);
        let api_key = raw
            .get("EMBEDDING_API_KEY")
            .or_else(|| raw.get("OPENAI_API_KEY").filter(|_| is_openai))
            .map(Secret::new);
        let dimensions = raw.get("EMBEDDING_DIMENSIONS").map(parse_dimensions).transpose()?;
        Ok(Self {
            provider: Some(EmbeddingProvider {
                base_url,
                model: raw.get("EMBEDDING_MODEL").unwrap_or(DEFAULT_EMBEDDING_MODEL).to_string(),
                api_key,
                dimensions,
            }),
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        let Some(provider) = &self.provider else {
            return vec![
                ("EMBEDDING_BASE_URL", Some("(unset: the local model in ENGRAM_MODEL_DIR)".into())),
                ("EMBEDDING_MODEL", Some("(unset: all-MiniLM-L6-v2, local)".into())),
                ("EMBEDDING_API_KEY", None),
                ("EMBEDDING_DIMENSIONS", Some("(unset: 384, the local model)".into())),
            ];
        };
        vec![
            ("EMBEDDING_BASE_URL", Some(provider.base_url.masked())),
            ("EMBEDDING_MODEL", Some(provider.model.clone())),
            ("EMBEDDING_API_KEY", provider.api_key.as_ref().map(|_| "****".to_string())),
            (
                "EMBEDDING_DIMENSIONS",
                Some(provider.dimensions.map_or_else(
                    || "(unset: learned from the model's first answer)".to_string(),
                    |n| n.to_string(),
                )),
            ),
        ]
    }
}

/// Longest vector length accepted; this only catches typos.
const MAX_DIMENSIONS: usize = 65_536;

fn parse_dimensions(value: &str) -> Result<usize, ConfigError> {
    value.parse::<usize>().ok().filter(|n| (1..=MAX_DIMENSIONS).contains(n)).ok_or_else(|| {
        ConfigError::new(
            "EMBEDDING_DIMENSIONS",
            format!(
                "{value:?} is not a whole number from 1 to {MAX_DIMENSIONS}; set the model's vector length \
                 (1536 for text-embedding-3-small) or unset it"
            ),
        )
    })
}

fn parse_base_url(value: &str) -> Result<ConnectionUrl, ConfigError> {
    let url = parse_url(value, "EMBEDDING_BASE_URL", &["http", "https"], "https://api.openai.com/v1")?;
    if url.0.path().trim_end_matches('/').ends_with("/embeddings") {
        return Err(ConfigError::new(
            "EMBEDDING_BASE_URL",
            "ends with /embeddings; set only the base before it, like https://api.openai.com/v1",
        ));
    }
    Ok(url)
}
