//! Engram's typed configuration: read once from the process environment, an optional `.env`
//! file and an optional `engram.toml`, validated, and passed down. The loader works on a map,
//! so tests never touch the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use url::Url;

mod auth;
mod backends;
mod blob_sync;
mod embedding;
mod evals;
mod git_memory;
mod http;
mod jobs;
mod limits;
mod llm;
mod log;
mod worker;

pub use auth::{AuthConfig, DEFAULT_GITHUB_API_URL, RATE_WINDOW, Registration};
pub use backends::{BackendsConfig, DatabaseConfig, S3Config};
pub use blob_sync::BlobSyncConfig;
pub use embedding::{DEFAULT_EMBEDDING_MODEL, EmbeddingConfig, EmbeddingProvider};
pub use evals::EvalsConfig;
pub use git_memory::GitMemoryConfig;
pub use http::{CorsOrigins, HttpConfig};
pub use jobs::JobsConfig;
pub use limits::RateLimits;
pub use llm::{LlmConfig, LlmProvider, LlmProviderKind};
pub use log::{LogConfig, LogFormat};
pub use worker::WorkerConfig;

/// The keys of no one area: where data and the embedding model live, and whether start-up
/// creates the upkeep schedules.
const KEYS: &[(&str, &str)] = &[
    ("ENGRAM_DATA_DIR", "where runtime data lives (SQLite file, blobs, repos, indexes)"),
    ("ENGRAM_MODEL_DIR", "files of the all-MiniLM-L6-v2 embedding model"),
    (
        "SYSTEM_SCHEDULES",
        "create the platform's upkeep schedules (tombstone_gc, blob_repair, index_memory_vectors) at start",
    ),
];

/// Every key Engram reads, area by area, with what it is for; `engram.toml` may hold only
/// these.
pub fn known_keys() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    [
        KEYS,
        backends::KEYS,
        http::KEYS,
        auth::KEYS,
        git_memory::KEYS,
        blob_sync::KEYS,
        limits::KEYS,
        llm::KEYS,
        embedding::KEYS,
        evals::KEYS,
        worker::KEYS,
        jobs::KEYS,
        log::KEYS,
    ]
    .into_iter()
    .flatten()
}

/// Where a configuration value came from, shown by `engram-api config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Env,
    DotEnv,
    Toml,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Env => "environment",
            Origin::DotEnv => ".env",
            Origin::Toml => "engram.toml",
        })
    }
}

/// The raw key/value pairs from every source, highest precedence first applied.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    values: BTreeMap<String, (String, Origin)>,
}

impl RawConfig {
    /// Layers sources: the environment beats `.env`, which beats `engram.toml`.
    pub fn layered(
        env: impl IntoIterator<Item = (String, String)>,
        dotenv: impl IntoIterator<Item = (String, String)>,
        toml: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut values = BTreeMap::new();
        for (origin, source) in [
            (Origin::Toml, toml.into_iter().collect::<Vec<_>>()),
            (Origin::DotEnv, dotenv.into_iter().collect()),
            (Origin::Env, env.into_iter().collect()),
        ] {
            for (key, value) in source {
                values.insert(key, (value, origin));
            }
        }
        Self { values }
    }

    /// Reads the process environment, `./.env` and `engram.toml` (or `$ENGRAM_CONFIG`).
    pub fn from_process() -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let dotenv = read_dotenv(Path::new(".env"))?;
        let toml_path = env.iter().find(|(k, _)| k == "ENGRAM_CONFIG").map(|(_, v)| PathBuf::from(v));
        let toml = match &toml_path {
            Some(path) => read_toml(path, true)?,
            None => read_toml(Path::new("engram.toml"), false)?,
        };
        Ok(Self::layered(env, dotenv, toml))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.trim()).filter(|v| !v.is_empty())
    }

    pub fn origin(&self, key: &str) -> Option<Origin> {
        self.values.get(key).map(|(_, o)| *o)
    }
}

fn read_dotenv(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let iter = dotenvy::from_path_iter(path)
        .map_err(|e| ConfigError::new(".env", format!("cannot read {}: {e}", path.display())))?;
    iter.map(|item| item.map_err(|e| ConfigError::new(".env", format!("{e}; fix the line")))).collect()
}

fn read_toml(path: &Path, required: bool) -> Result<Vec<(String, String)>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::new("ENGRAM_CONFIG", format!("cannot read {}: {e}", path.display())));
        }
    };
    parse_toml(&text)
}

/// `engram.toml` is a flat table using the same names as the environment variables.
fn parse_toml(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::new("engram.toml", format!("{}; fix the syntax", e.message()))
    })?;
    let mut out = Vec::new();
    for (key, value) in table {
        if !known_keys().any(|(k, _)| *k == key) {
            return Err(ConfigError::new(
                "engram.toml",
                format!("unknown key {key}; use one of the names listed by `engram-api config`"),
            ));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            _ => {
                return Err(ConfigError::new(
                    "engram.toml",
                    format!("{key} must be a string, number or boolean"),
                ));
            }
        };
        out.push((key, value));
    }
    Ok(out)
}

/// A configuration value that is wrong, naming the variable and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

/// A value that must never reach a log line or an error body.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// A connection URL whose password is masked when shown.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl(Url);

impl ConnectionUrl {
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    pub fn masked(&self) -> String {
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("****"));
        }
        url.to_string()
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionUrl({})", self.masked())
    }
}

/// Engram's whole configuration, an area per field.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Files of the local embedding model.
    pub model_dir: PathBuf,
    /// Whether start-up creates the platform's own upkeep schedules.
    pub system_schedules: bool,
    pub backends: BackendsConfig,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub git_memory: GitMemoryConfig,
    pub blob_sync: BlobSyncConfig,
    pub limits: RateLimits,
    pub llm: LlmConfig,
    /// Where memory embeddings come from; no provider means the local model.
    pub embedding: EmbeddingConfig,
    /// Agent evaluations: the agents file, the judge, a run's bounds.
    pub evals: EvalsConfig,
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
    pub log: LogConfig,
}

impl Config {
    /// Reads and validates every source of the running process.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_raw(&RawConfig::from_process()?)
    }

    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(raw.get("ENGRAM_DATA_DIR").unwrap_or("./data"));
        let worker = WorkerConfig::from_raw(raw)?;
        Ok(Self {
            model_dir: raw
                .get("ENGRAM_MODEL_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| data_dir.join("models").join("all-MiniLM-L6-v2")),
            system_schedules: parse_bool(raw, "SYSTEM_SCHEDULES", true)?,
            backends: BackendsConfig::from_raw(raw, &data_dir)?,
            http: HttpConfig::from_raw(raw)?,
            auth: AuthConfig::from_raw(raw)?,
            git_memory: GitMemoryConfig::from_raw(raw, &data_dir)?,
            blob_sync: BlobSyncConfig::from_raw(raw)?,
            limits: RateLimits::from_raw(raw)?,
            llm: LlmConfig::from_raw(raw)?,
            embedding: EmbeddingConfig::from_raw(raw)?,
            evals: EvalsConfig::from_raw(raw)?,
            jobs: JobsConfig::from_raw(raw, worker.concurrency)?,
            worker,
            log: LogConfig::from_raw(raw)?,
            data_dir,
        })
    }

    /// The effective configuration as `(key, value, origin)`, area by area, secrets masked.
    pub fn describe(&self, raw: &RawConfig) -> Vec<(String, String, String)> {
        let mut values: Vec<(&str, Option<String>)> = vec![
            ("ENGRAM_DATA_DIR", Some(self.data_dir.display().to_string())),
            ("ENGRAM_MODEL_DIR", Some(self.model_dir.display().to_string())),
            ("SYSTEM_SCHEDULES", Some(self.system_schedules.to_string())),
        ];
        values.extend(self.backends.describe());
        values.extend(self.http.describe());
        values.extend(self.auth.describe(&self.data_dir.join(JWT_SECRET_FILE)));
        values.extend(self.git_memory.describe());
        values.extend(self.blob_sync.describe());
        values.extend(self.limits.describe());
        values.extend(self.llm.describe());
        values.extend(self.embedding.describe());
        values.extend(self.evals.describe());
        values.extend(self.worker.describe());
        values.extend(self.jobs.describe());
        values.extend(self.log.describe());
        values
            .into_iter()
            .map(|(key, value)| {
                let origin = raw.origin(key).map(|o| o.to_string()).unwrap_or_else(|| "default".to_string());
                (key.to_string(), value.unwrap_or_else(|| "(unset)".into()), origin)
            })
            .collect()
    }

    /// Backend names for logs, `/health` and the dashboard.
    pub fn backend_summary(&self) -> String {
        self.backends.summary()
    }
}

/// File in the data dir holding the generated JWT secret when `JWT_SECRET` is unset.
pub const JWT_SECRET_FILE: &str = "jwt_secret";

fn parse_with<T>(
    raw: &RawConfig,
    key: &str,
    default: &str,
    parse: impl Fn(&str) -> Option<T>,
    fix: &str,
) -> Result<T, ConfigError> {
    let value = raw.get(key).unwrap_or(default);
    parse(value).ok_or_else(|| ConfigError::new(key, format!("{value:?} is not valid; {fix}")))
}

fn parse_number(raw: &RawConfig, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    let Some(value) = raw.get(key) else {
        return Ok(default);
    };
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            key,
            format!("{value:?} is not a whole number from {min} to {max}; set one (default {default})"),
        )),
    }
}

/// An address or CIDR range, such as `10.0.0.0/8` or `::1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(item: &str) -> Result<Self, String> {
        let (address, prefix) = item.split_once('/').map_or((item, None), |(a, p)| (a, Some(p)));
        let network: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("{item:?} is not an IP address or CIDR range like 10.0.0.0/8"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{item:?} has a prefix length outside 0–{max}"))?,
        };
        Ok(IpRange { network, prefix })
    }
}

/// A comma-separated list of `IpRange`s read from `key`.
fn parse_ip_ranges(key: &str, value: &str) -> Result<Vec<IpRange>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().map_err(|why| ConfigError::new(key, why)))
        .collect()
}

fn parse_bool(raw: &RawConfig, key: &str, default: bool) -> Result<bool, ConfigError> {
    match raw.get(key).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => {
            Err(ConfigError::new(key, format!("{other:?} is not a boolean; set it to true or false")))
        }
    }
}

fn parse_url(value: &str, key: &str, schemes: &[&str], example: &str) -> Result<ConnectionUrl, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("is not a URL ({e}); set it like {example}")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::new(
            key,
            format!(
                "scheme {:?} is not supported; use {} (like {example})",
                url.scheme(),
                schemes.join(" or ")
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key, format!("has no host; set it like {example}")));
    }
    Ok(ConnectionUrl(url))
}

#[cfg(test)]
mod tests;
