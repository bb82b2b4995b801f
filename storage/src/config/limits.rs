//! Per-user limits of the costly routes: semantic memory searches, ingests and imports
//! (AIBrain's defaults) and federation requests.

use super::{ConfigError, RawConfig, parse_number};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("FEDERATION_RATE_LIMIT", "federation requests (push, pull, agents) per minute per API key or user"),
    ("MEMORY_SEARCH_RATE_LIMIT", "memory searches per minute per user"),
    ("MEMORY_INGEST_RATE_LIMIT", "conversation ingests per hour per user"),
    ("MEMORY_IMPORT_RATE_LIMIT", "memory imports per hour per user"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Federation requests per minute per API key (or per user for sessions).
    pub federation_per_minute: u64,
    pub memory_search_per_minute: u64,
    pub memory_ingest_per_hour: u64,
    pub memory_import_per_hour: u64,
}

impl RateLimits {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            federation_per_minute: parse_number(raw, "FEDERATION_RATE_LIMIT", 600, 1, 10_000_000)?,
            memory_search_per_minute: parse_number(raw, "MEMORY_SEARCH_RATE_LIMIT", 50, 1, 10_000_000)?,
            memory_ingest_per_hour: parse_number(raw, "MEMORY_INGEST_RATE_LIMIT", 20, 1, 10_000_000)?,
            memory_import_per_hour: parse_number(raw, "MEMORY_IMPORT_RATE_LIMIT", 5, 1, 10_000_000)?,
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("FEDERATION_RATE_LIMIT", Some(self.federation_per_minute.to_string())),
            ("MEMORY_SEARCH_RATE_LIMIT", Some(self.memory_search_per_minute.to_string())),
            ("MEMORY_INGEST_RATE_LIMIT", Some(self.memory_ingest_per_hour.to_string())),
            ("MEMORY_IMPORT_RATE_LIMIT", Some(self.memory_import_per_hour.to_string())),
        ]
    }
}
