//! Engram's typed configuration: read once from the process environment, an optional `.env`
//! file and an optional `engram.toml`, validated, and passed down. The loader works on a map,
//! so tests never touch the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

mod auth;
pub use auth::{AuthConfig, RATE_WINDOW, Registration};
mod llm;
pub use llm::{LlmConfig, LlmProvider, LlmProviderKind};
mod embedding;
pub use embedding::{DEFAULT_EMBEDDING_MODEL, EmbeddingConfig, EmbeddingProvider};
mod jobs;
pub use jobs::JobsConfig;

/// Every key Engram reads, with what it is for (account settings are in `auth::KEYS`, LLM
/// settings in `llm::KEYS`, embedding settings in `embedding::KEYS`, job caps in
/// `jobs::KEYS`).
/// `engram.toml` may hold only these keys.
pub const KNOWN_KEYS: &[(&str, &str)] = &[
    ("ENGRAM_DATA_DIR", "where runtime data lives (SQLite file, blobs, repos, indexes)"),
    ("ENGRAM_BIND", "address the HTTP server listens on"),
    ("DATABASE_URL", "postgres:// URL for the scale-out database; unset = SQLite in the data dir"),
    ("REDIS_URL", "redis:// URL for the job queue and event bus; unset = in-process"),
    ("ENGRAM_REDIS_PREFIX", "prefix of Redis keys and event channels, so deployments can share a server"),
    ("S3_BUCKET", "S3 bucket for blobs; unset = files in the data dir"),
    ("S3_PREFIX", "key prefix inside the bucket"),
    ("S3_ENDPOINT_URL", "S3-compatible endpoint (path-style addressing)"),
    ("AWS_ACCESS_KEY_ID", "S3 access key; unset = the AWS default credential chain"),
    ("AWS_SECRET_ACCESS_KEY", "S3 secret key"),
    ("AWS_REGION", "S3 region"),
    ("JWT_SECRET", "HS256 secret for access tokens; unset = generated once into the data dir"),
    ("API_KEY", "static admin API key accepted as a Bearer token"),
    ("SSO_ENABLED", "trust SSO gateway headers from trusted proxies"),
    ("SSO_TRUSTED_PROXIES", "comma-separated addresses or CIDR ranges whose SSO headers are trusted"),
    ("SSO_SHARED_SECRET", "secret an SSO gateway sends in X-SSO-Secret to have its headers trusted"),
    (
        "GITHUB_API_URL",
        "GitHub API base URL for /auth/github token checks (GitHub Enterprise: https://host/api/v3)",
    ),
    ("REPO_CACHE_DIR", "working copies of git memory repos"),
    ("MAX_REPO_SIZE_MB", "largest git memory repo accepted"),
    ("REPO_URL_SCHEMES", "comma-separated URL schemes memory repos may be cloned from (default https)"),
    ("SYNC_INTERVAL_MINUTES", "how often git memory repos sync with their remote"),
    ("ENGRAM_MODEL_DIR", "files of the all-MiniLM-L6-v2 embedding model"),
    ("ENGRAM_CORS_ORIGINS", "comma-separated allowed origins, or *; unset = no CORS"),
    ("ENGRAM_BODY_LIMIT_MB", "largest request body accepted"),
    ("BLOB_MAX_MB", "largest blob-sync file accepted (at most ENGRAM_BODY_LIMIT_MB applies too)"),
    ("BLOB_VERSIONS", "versions kept per blob-sync path, the current one included"),
    ("TOMBSTONE_RETENTION_DAYS", "days a blob-sync tombstone is kept before tombstone_gc purges it"),
    (
        "SYSTEM_SCHEDULES",
        "create the platform's upkeep schedules (tombstone_gc, blob_repair, index_memory_vectors) at start",
    ),
    ("FEDERATION_RATE_LIMIT", "federation requests (push, pull, agents) per minute per API key or user"),
    ("MEMORY_SEARCH_RATE_LIMIT", "memory searches per minute per user"),
    ("MEMORY_INGEST_RATE_LIMIT", "conversation ingests per hour per user"),
    ("MEMORY_IMPORT_RATE_LIMIT", "memory imports per hour per user"),
    ("ENGRAM_REQUEST_TIMEOUT_SECS", "longest a request may take before 408"),
    ("ENGRAM_WORKER_CONCURRENCY", "jobs one process runs at once"),
    ("ENGRAM_WORKER_HEARTBEAT_SECS", "seconds between worker heartbeats"),
    ("ENGRAM_WORKER_STALE_SECS", "seconds without a heartbeat before a worker's jobs are re-queued"),
    ("ENGRAM_WORKER_DRAIN_SECS", "seconds running jobs get to finish on shutdown"),
    ("LOG_LEVEL", "trace, debug, info, warn, error, or a tracing filter directive"),
    ("LOG_FORMAT", "text (human-readable) or json (one JSON object per line)"),
];

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
        let mut known =
            KNOWN_KEYS.iter().chain(auth::KEYS).chain(llm::KEYS).chain(embedding::KEYS).chain(jobs::KEYS);
        if !known.any(|(k, _)| *k == key) {
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// The embedded default: one SQLite file.
    Sqlite { path: PathBuf },
    /// The scale-out database.
    Postgres { url: ConnectionUrl },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Normalised: empty, or ending with `/`.
    pub prefix: String,
    pub endpoint_url: Option<String>,
    pub region: String,
    pub credentials: Option<(String, Secret)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    None,
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub database: DatabaseConfig,
    pub redis_url: Option<ConnectionUrl>,
    pub redis_prefix: String,
    pub s3: Option<S3Config>,
    pub jwt_secret: Option<Secret>,
    pub api_key: Option<Secret>,
    pub sso_enabled: bool,
    pub sso_trusted_proxies: Vec<IpRange>,
    pub sso_shared_secret: Option<Secret>,
    pub auth: AuthConfig,
    pub github_api_url: ConnectionUrl,
    pub llm: LlmConfig,
    /// Where memory embeddings come from; no provider means the local model.
    pub embedding: EmbeddingConfig,
    pub repo_cache_dir: PathBuf,
    pub max_repo_size_mb: u64,
    /// Schemes a memory repo's `repo_url` may use.
    pub repo_url_schemes: Vec<String>,
    pub sync_interval_minutes: u64,
    pub model_dir: PathBuf,
    pub cors_origins: CorsOrigins,
    pub body_limit_bytes: usize,
    /// Blob sync: largest file, versions kept per path, tombstone retention.
    pub blob_max_bytes: usize,
    pub blob_versions: u32,
    pub tombstone_retention_days: u32,
    /// Whether start-up creates the platform's own upkeep schedules.
    pub system_schedules: bool,
    /// Federation requests per minute per API key (or per user for sessions).
    pub federation_rate_limit: u64,
    pub memory_limits: MemoryLimits,
    pub request_timeout: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
    pub worker: WorkerConfig,
    pub jobs: JobsConfig,
}

/// Per-user limits of the costly semantic memory routes (AIBrain's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    pub search_per_minute: u64,
    pub ingest_per_hour: u64,
    pub import_per_hour: u64,
}

/// Defaults for job workers (in-process and `engram-worker`, whose flags override them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub concurrency: u64,
    pub heartbeat_secs: u64,
    pub stale_after_secs: u64,
    pub drain_secs: u64,
}

impl Config {
    /// Reads and validates every source of the running process.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_raw(&RawConfig::from_process()?)
    }

    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let data_dir = PathBuf::from(raw.get("ENGRAM_DATA_DIR").unwrap_or("./data"));
        let bind = parse_with(
            raw,
            "ENGRAM_BIND",
            "127.0.0.1:8000",
            |v| v.parse::<SocketAddr>().ok(),
            "set it to host:port such as 127.0.0.1:8000",
        )?;
        let database = match raw.get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite { path: data_dir.join("engram.db") },
            Some(value) => parse_database_url(value)?,
        };
        let redis_url = raw
            .get("REDIS_URL")
            .map(|v| parse_url(v, "REDIS_URL", &["redis", "rediss"], "redis://host:6379"))
            .transpose()?;
        let s3 = parse_s3(raw)?;
        let repo_cache_dir =
            raw.get("REPO_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| data_dir.join("repos"));
        let model_dir = raw
            .get("ENGRAM_MODEL_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join("models").join("all-MiniLM-L6-v2"));
        let body_limit_mb: u64 = parse_number(raw, "ENGRAM_BODY_LIMIT_MB", 16, 1, 4096)?;
        let timeout_secs: u64 = parse_number(raw, "ENGRAM_REQUEST_TIMEOUT_SECS", 30, 1, 3600)?;
        let log_format = match raw.get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("{other:?} is not a log format; set it to text or json"),
                ));
            }
        };
        if parse_bool(raw, "SSO_ENABLED", false)?
            && raw.get("SSO_TRUSTED_PROXIES").is_none_or(|v| v.trim().is_empty())
            && raw.get("SSO_SHARED_SECRET").is_none_or(str::is_empty)
        {
            return Err(ConfigError::new(
                "SSO_ENABLED",
                "is true but nothing says whose SSO headers to trust; set SSO_TRUSTED_PROXIES or SSO_SHARED_SECRET",
            ));
        }
        let worker = Self::parse_worker(raw)?;
        let jobs = JobsConfig::from_raw(raw, worker.concurrency)?;
        Ok(Self {
            bind,
            database,
            redis_url,
            redis_prefix: parse_with(
                raw,
                "ENGRAM_REDIS_PREFIX",
                "engram",
                |v| {
                    (!v.is_empty()
                        && v.len() <= 64
                        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
                    .then(|| v.to_string())
                },
                "use 1-64 letters, digits, '-', '_', '.' or ':'",
            )?,
            s3,
            jwt_secret: raw.get("JWT_SECRET").map(Secret::new),
            api_key: raw.get("API_KEY").map(Secret::new),
            sso_enabled: parse_bool(raw, "SSO_ENABLED", false)?,
            sso_trusted_proxies: parse_ip_ranges(
                "SSO_TRUSTED_PROXIES",
                raw.get("SSO_TRUSTED_PROXIES").unwrap_or(""),
            )?,
            sso_shared_secret: raw.get("SSO_SHARED_SECRET").filter(|s| !s.is_empty()).map(Secret::new),
            auth: AuthConfig::from_raw(raw)?,
            github_api_url: parse_url(
                raw.get("GITHUB_API_URL").unwrap_or(DEFAULT_GITHUB_API_URL),
                "GITHUB_API_URL",
                &["https", "http"],
                DEFAULT_GITHUB_API_URL,
            )?,
            llm: LlmConfig::from_raw(raw)?,
            embedding: EmbeddingConfig::from_raw(raw)?,
            repo_cache_dir,
            max_repo_size_mb: parse_number(raw, "MAX_REPO_SIZE_MB", 100, 1, 1_000_000)?,
            repo_url_schemes: parse_repo_url_schemes(raw.get("REPO_URL_SCHEMES").unwrap_or("https"))?,
            sync_interval_minutes: parse_number(raw, "SYNC_INTERVAL_MINUTES", 5, 1, 10_080)?,
            model_dir,
            cors_origins: parse_cors(raw.get("ENGRAM_CORS_ORIGINS")),
            body_limit_bytes: usize::try_from(body_limit_mb * 1024 * 1024).unwrap_or(usize::MAX),
            blob_max_bytes: usize::try_from(parse_number(raw, "BLOB_MAX_MB", 10, 1, 4096)? * 1024 * 1024)
                .unwrap_or(usize::MAX),
            blob_versions: u32::try_from(parse_number(raw, "BLOB_VERSIONS", 10, 1, 1000)?).unwrap_or(10),
            system_schedules: parse_bool(raw, "SYSTEM_SCHEDULES", true)?,
            tombstone_retention_days: u32::try_from(parse_number(
                raw,
                "TOMBSTONE_RETENTION_DAYS",
                30,
                1,
                36_500,
            )?)
            .unwrap_or(30),
            federation_rate_limit: parse_number(raw, "FEDERATION_RATE_LIMIT", 600, 1, 10_000_000)?,
            memory_limits: MemoryLimits {
                search_per_minute: parse_number(raw, "MEMORY_SEARCH_RATE_LIMIT", 50, 1, 10_000_000)?,
                ingest_per_hour: parse_number(raw, "MEMORY_INGEST_RATE_LIMIT", 20, 1, 10_000_000)?,
                import_per_hour: parse_number(raw, "MEMORY_IMPORT_RATE_LIMIT", 5, 1, 10_000_000)?,
            },
            request_timeout: Duration::from_secs(timeout_secs),
            log_level: raw.get("LOG_LEVEL").unwrap_or("info").to_string(),
            log_format,
            worker,
            jobs,
            data_dir,
        })
    }

    fn parse_worker(raw: &RawConfig) -> Result<WorkerConfig, ConfigError> {
        let d = Self::default_worker();
        Ok(WorkerConfig {
            concurrency: parse_number(raw, "ENGRAM_WORKER_CONCURRENCY", d.concurrency, 1, 1024)?,
            heartbeat_secs: parse_number(raw, "ENGRAM_WORKER_HEARTBEAT_SECS", d.heartbeat_secs, 1, 300)?,
            stale_after_secs: parse_number(raw, "ENGRAM_WORKER_STALE_SECS", d.stale_after_secs, 2, 3600)?,
            drain_secs: parse_number(raw, "ENGRAM_WORKER_DRAIN_SECS", d.drain_secs, 0, 3600)?,
        })
    }

    /// The effective configuration as `KEY = value  # origin` lines, secrets masked.
    pub fn describe(&self, raw: &RawConfig) -> Vec<(String, String, String)> {
        let masked = |s: &Option<Secret>| s.as_ref().map(|_| "****".to_string());
        let (s3_key, s3_secret) = match self.s3.as_ref().and_then(|s| s.credentials.as_ref()) {
            Some((key, _)) => (Some(key.clone()), Some("****".to_string())),
            None => (None, None),
        };
        let database = match &self.database {
            DatabaseConfig::Sqlite { path } => format!("(unset: SQLite at {})", path.display()),
            DatabaseConfig::Postgres { url } => url.masked(),
        };
        let jwt = match &self.jwt_secret {
            Some(_) => "****".to_string(),
            None => format!("(unset: generated into {})", self.data_dir.join(JWT_SECRET_FILE).display()),
        };
        let mut values: Vec<(&str, Option<String>)> = vec![
            ("ENGRAM_DATA_DIR", Some(self.data_dir.display().to_string())),
            ("ENGRAM_BIND", Some(self.bind.to_string())),
            ("DATABASE_URL", Some(database)),
            ("REDIS_URL", self.redis_url.as_ref().map(ConnectionUrl::masked)),
            ("ENGRAM_REDIS_PREFIX", Some(self.redis_prefix.clone())),
            ("S3_BUCKET", self.s3.as_ref().map(|s| s.bucket.clone())),
            ("S3_PREFIX", self.s3.as_ref().map(|s| s.prefix.clone())),
            ("S3_ENDPOINT_URL", self.s3.as_ref().and_then(|s| s.endpoint_url.clone())),
            ("AWS_ACCESS_KEY_ID", s3_key),
            ("AWS_SECRET_ACCESS_KEY", s3_secret),
            ("AWS_REGION", self.s3.as_ref().map(|s| s.region.clone())),
            ("JWT_SECRET", Some(jwt)),
            ("API_KEY", masked(&self.api_key)),
            ("SSO_ENABLED", Some(self.sso_enabled.to_string())),
            (
                "SSO_TRUSTED_PROXIES",
                Some(self.sso_trusted_proxies.iter().map(IpRange::to_string).collect::<Vec<_>>().join(",")),
            ),
            ("SSO_SHARED_SECRET", masked(&self.sso_shared_secret)),
            ("GITHUB_API_URL", Some(self.github_api_url.masked())),
            ("REPO_CACHE_DIR", Some(self.repo_cache_dir.display().to_string())),
            ("MAX_REPO_SIZE_MB", Some(self.max_repo_size_mb.to_string())),
            ("REPO_URL_SCHEMES", Some(self.repo_url_schemes.join(","))),
            ("SYNC_INTERVAL_MINUTES", Some(self.sync_interval_minutes.to_string())),
            ("ENGRAM_MODEL_DIR", Some(self.model_dir.display().to_string())),
            (
                "ENGRAM_CORS_ORIGINS",
                Some(match &self.cors_origins {
                    CorsOrigins::None => "(unset: no CORS)".to_string(),
                    CorsOrigins::Any => "*".to_string(),
                    CorsOrigins::List(list) => list.join(","),
                }),
            ),
            ("ENGRAM_BODY_LIMIT_MB", Some((self.body_limit_bytes / (1024 * 1024)).to_string())),
            ("BLOB_MAX_MB", Some((self.blob_max_bytes / (1024 * 1024)).to_string())),
            ("BLOB_VERSIONS", Some(self.blob_versions.to_string())),
            ("TOMBSTONE_RETENTION_DAYS", Some(self.tombstone_retention_days.to_string())),
            ("SYSTEM_SCHEDULES", Some(self.system_schedules.to_string())),
            ("FEDERATION_RATE_LIMIT", Some(self.federation_rate_limit.to_string())),
            ("MEMORY_SEARCH_RATE_LIMIT", Some(self.memory_limits.search_per_minute.to_string())),
            ("MEMORY_INGEST_RATE_LIMIT", Some(self.memory_limits.ingest_per_hour.to_string())),
            ("MEMORY_IMPORT_RATE_LIMIT", Some(self.memory_limits.import_per_hour.to_string())),
            ("ENGRAM_REQUEST_TIMEOUT_SECS", Some(self.request_timeout.as_secs().to_string())),
            ("ENGRAM_WORKER_CONCURRENCY", Some(self.worker.concurrency.to_string())),
            ("ENGRAM_WORKER_HEARTBEAT_SECS", Some(self.worker.heartbeat_secs.to_string())),
            ("ENGRAM_WORKER_STALE_SECS", Some(self.worker.stale_after_secs.to_string())),
            ("ENGRAM_WORKER_DRAIN_SECS", Some(self.worker.drain_secs.to_string())),
            ("LOG_LEVEL", Some(self.log_level.clone())),
            (
                "LOG_FORMAT",
                Some(match self.log_format {
                    LogFormat::Text => "text".to_string(),
                    LogFormat::Json => "json".to_string(),
                }),
            ),
        ];
        values.extend(self.auth.describe());
        values.extend(self.llm.describe());
        values.extend(self.embedding.describe());
        values.extend(self.jobs.describe());
        values
            .into_iter()
            .map(|(key, value)| {
                let origin = raw.origin(key).map(|o| o.to_string()).unwrap_or_else(|| "default".to_string());
                (key.to_string(), value.unwrap_or_else(|| "(unset)".into()), origin)
            })
            .collect()
    }

    /// Worker defaults when nothing is configured.
    pub fn default_worker() -> WorkerConfig {
        WorkerConfig { concurrency: 4, heartbeat_secs: 5, stale_after_secs: 30, drain_secs: 30 }
    }

    /// Backend names for logs, `/health` and the dashboard.
    pub fn backend_summary(&self) -> String {
        let db = match self.database {
            DatabaseConfig::Sqlite { .. } => "sqlite",
            DatabaseConfig::Postgres { .. } => "postgres",
        };
        let blobs = if self.s3.is_some() { "s3" } else { "filesystem" };
        let bus = match (&self.redis_url, &self.database) {
            (Some(_), _) => "redis",
            (None, DatabaseConfig::Postgres { .. }) => "postgres",
            (None, DatabaseConfig::Sqlite { .. }) => "in-process",
        };
        format!("database={db} blob_store={blobs} event_bus={bus}")
    }
}

/// File in the data dir holding the generated JWT secret when `JWT_SECRET` is unset.
pub const JWT_SECRET_FILE: &str = "jwt_secret";
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

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

fn parse_database_url(value: &str) -> Result<DatabaseConfig, ConfigError> {
    if let Some(path) = value.strip_prefix("sqlite://").or_else(|| value.strip_prefix("sqlite:")) {
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "sqlite URL has no file path; use sqlite:///path/to/engram.db or unset it",
            ));
        }
        return Ok(DatabaseConfig::Sqlite { path: PathBuf::from(path) });
    }
    let url = parse_url(
        value,
        "DATABASE_URL",
        &["postgres", "postgresql"],
        "postgres://user:password@host:5432/engram (or leave it unset for SQLite)",
    )?;
    Ok(DatabaseConfig::Postgres { url })
}

fn parse_s3(raw: &RawConfig) -> Result<Option<S3Config>, ConfigError> {
    let Some(bucket) = raw.get("S3_BUCKET") else {
        return Ok(None);
    };
    let valid_bucket = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_bucket {
        return Err(ConfigError::new(
            "S3_BUCKET",
            format!("{bucket:?} is not a bucket name; use 3-63 lowercase letters, digits, '-' or '.'"),
        ));
    }
    let endpoint_url = raw
        .get("S3_ENDPOINT_URL")
        .map(|v| parse_url(v, "S3_ENDPOINT_URL", &["http", "https"], "http://127.0.0.1:9000"))
        .transpose()?
        .map(|u| u.expose().trim_end_matches('/').to_string());
    let credentials = match (raw.get("AWS_ACCESS_KEY_ID"), raw.get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => Some((id.to_string(), Secret::new(secret))),
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "AWS_SECRET_ACCESS_KEY",
                "is unset while AWS_ACCESS_KEY_ID is set; set both or neither",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "AWS_ACCESS_KEY_ID",
                "is unset while AWS_SECRET_ACCESS_KEY is set; set both or neither",
            ));
        }
    };
    let prefix = raw.get("S3_PREFIX").unwrap_or("").trim_matches('/');
    Ok(Some(S3Config {
        bucket: bucket.to_string(),
        prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
        endpoint_url,
        region: raw.get("AWS_REGION").unwrap_or("us-east-1").to_string(),
        credentials,
    }))
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

#[cfg(test)]
mod tests;

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
