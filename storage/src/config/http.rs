//! The HTTP server: where it listens, which origins may call it from a browser, the largest
//! body and the longest request it accepts.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, RawConfig, parse_number, parse_with};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("ENGRAM_BIND", "address the HTTP server listens on"),
    ("ENGRAM_CORS_ORIGINS", "comma-separated allowed origins, or *; unset = no CORS"),
    ("ENGRAM_BODY_LIMIT_MB", "largest request body accepted"),
    ("ENGRAM_REQUEST_TIMEOUT_SECS", "longest a request may take before 408"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    None,
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub bind: SocketAddr,
    pub cors_origins: CorsOrigins,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

impl HttpConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let bind = parse_with(
            raw,
            "ENGRAM_BIND",
            "127.0.0.1:8000",
            |v| v.parse::<SocketAddr>().ok(),
            "set it to host:port such as 127.0.0.1:8000",
        )?;
        let body_limit_mb = parse_number(raw, "ENGRAM_BODY_LIMIT_MB", 16, 1, 4096)?;
        let timeout_secs = parse_number(raw, "ENGRAM_REQUEST_TIMEOUT_SECS", 30, 1, 3600)?;
        Ok(Self {
            bind,
            cors_origins: parse_cors(raw.get("ENGRAM_CORS_ORIGINS")),
            body_limit_bytes: usize::try_from(body_limit_mb * 1024 * 1024).unwrap_or(usize::MAX),
            request_timeout: Duration::from_secs(timeout_secs),
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        let cors = match &self.cors_origins {
            CorsOrigins::None => "(unset: no CORS)".to_string(),
            CorsOrigins::Any => "*".to_string(),
            CorsOrigins::List(list) => list.join(","),
        };
        vec![
            ("ENGRAM_BIND", Some(self.bind.to_string())),
            ("ENGRAM_CORS_ORIGINS", Some(cors)),
            ("ENGRAM_BODY_LIMIT_MB", Some((self.body_limit_bytes / (1024 * 1024)).to_string())),
            ("ENGRAM_REQUEST_TIMEOUT_SECS", Some(self.request_timeout.as_secs().to_string())),
        ]
    }
}

fn parse_cors(value: Option<&str>) -> CorsOrigins {
    match value {
        None => CorsOrigins::None,
        Some("*") => CorsOrigins::Any,
        Some(list) => CorsOrigins::List(
            list.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        ),
    }
}
