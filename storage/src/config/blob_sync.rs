//! Blob sync (the memory proxy): the largest file, the versions kept per path, and how long
//! a tombstone is kept.

use super::{ConfigError, RawConfig, parse_number};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("BLOB_MAX_MB", "largest blob-sync file accepted (at most ENGRAM_BODY_LIMIT_MB applies too)"),
    ("BLOB_VERSIONS", "versions kept per blob-sync path, the current one included"),
    ("TOMBSTONE_RETENTION_DAYS", "days a blob-sync tombstone is kept before tombstone_gc purges it"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobSyncConfig {
    pub max_file_bytes: usize,
    pub versions: u32,
    pub tombstone_retention_days: u32,
}

impl BlobSyncConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let max_mb = parse_number(raw, "BLOB_MAX_MB", 10, 1, 4096)?;
        Ok(Self {
            max_file_bytes: usize::try_from(max_mb * 1024 * 1024).unwrap_or(usize::MAX),
            versions: u32::try_from(parse_number(raw, "BLOB_VERSIONS", 10, 1, 1000)?).unwrap_or(10),
            tombstone_retention_days: u32::try_from(parse_number(
                raw,
                "TOMBSTONE_RETENTION_DAYS",
                30,
                1,
                36_500,
            )?)
            .unwrap_or(30),
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("BLOB_MAX_MB", Some((self.max_file_bytes / (1024 * 1024)).to_string())),
            ("BLOB_VERSIONS", Some(self.versions.to_string())),
            ("TOMBSTONE_RETENTION_DAYS", Some(self.tombstone_retention_days.to_string())),
        ]
    }
}
