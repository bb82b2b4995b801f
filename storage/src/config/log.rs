//! Logging: the level (or a tracing filter directive) and the line format.

use super::{ConfigError, RawConfig};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("LOG_LEVEL", "trace, debug, info, warn, error, or a tracing filter directive"),
    ("LOG_FORMAT", "text (human-readable) or json (one JSON object per line)"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl LogConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let format = match raw.get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is not a log format; set it to text or json"),
                ));
            }
        };
        Ok(Self { level: raw.get("LOG_LEVEL").unwrap_or("info").to_string(), format })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        let format = match self.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        vec![("LOG_LEVEL", Some(self.level.clone())), ("LOG_FORMAT", Some(format.to_string()))]
    }
}
