//! Git memory (DiffMem): where working copies live, how large a repo may grow, which URL
//! schemes a remote may use, and how often repos sync with their remote.

use std::path::{Path, PathBuf};

use super::{ConfigError, RawConfig, parse_number};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("REPO_CACHE_DIR", "working copies of git memory repos"),
    ("MAX_REPO_SIZE_MB", "largest git memory repo accepted"),
    ("REPO_URL_SCHEMES", "comma-separated URL schemes memory repos may be cloned from (default https)"),
    ("SYNC_INTERVAL_MINUTES", "how often git memory repos sync with their remote"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitMemoryConfig {
    pub repo_cache_dir: PathBuf,
    pub max_repo_size_mb: u64,
    /// Schemes a memory repo's `repo_url` may use.
    pub repo_url_schemes: Vec<String>,
    pub sync_interval_minutes: u64,
}

impl GitMemoryConfig {
    pub(super) fn from_raw(raw: &RawConfig, data_dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            repo_cache_dir: raw
                .get("REPO_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("repos")),
            max_repo_size_mb: parse_number(raw, "MAX_REPO_SIZE_MB", 100, 1, 1_000_000)?,
            repo_url_schemes: parse_repo_url_schemes(raw.get("REPO_URL_SCHEMES").unwrap_or("https"))?,
            sync_interval_minutes: parse_number(raw, "SYNC_INTERVAL_MINUTES", 5, 1, 10_080)?,
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("REPO_CACHE_DIR", Some(self.repo_cache_dir.display().to_string())),
            ("MAX_REPO_SIZE_MB", Some(self.max_repo_size_mb.to_string())),
            ("REPO_URL_SCHEMES", Some(self.repo_url_schemes.join(","))),
            ("SYNC_INTERVAL_MINUTES", Some(self.sync_interval_minutes.to_string())),
        ]
    }
}

/// `REPO_URL_SCHEMES`: only `https` and `http` can carry a token; `file`, `ssh` and `git`
/// would reach the server's own files or keys.
fn parse_repo_url_schemes(value: &str) -> Result<Vec<String>, ConfigError> {
    let schemes: Vec<String> =
        value.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
    match schemes.iter().find(|s| !matches!(s.as_str(), "https" | "http")) {
        Some(other) => Err(ConfigError::new(
            "REPO_URL_SCHEMES",
            format!("{other:?} is not allowed; use https and/or http"),
        )),
        None if schemes.is_empty() => Err(ConfigError::new("REPO_URL_SCHEMES", "names no scheme; use https")),
        None => Ok(schemes),
    }
}
