//! Which backends Engram runs on: SQLite or PostgreSQL, in-process or Redis, files or S3.
//! Unset means the embedded default of each.

use std::path::{Path, PathBuf};

use super::{ConfigError, ConnectionUrl, RawConfig, Secret, parse_url, parse_with};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres:// URL for the scale-out database; unset = SQLite in the data dir"),
    ("REDIS_URL", "redis:// URL for the job queue and event bus; unset = in-process"),
    ("ENGRAM_REDIS_PREFIX", "prefix of Redis keys and event channels, so deployments can share a server"),
    ("S3_BUCKET", "S3 bucket for blobs; unset = files in the data dir"),
    ("S3_PREFIX", "key prefix inside the bucket"),
    ("S3_ENDPOINT_URL", "S3-compatible endpoint (path-style addressing)"),
    ("AWS_ACCESS_KEY_ID", "S3 access key; unset = the AWS default credential chain"),
    ("AWS_SECRET_ACCESS_KEY", "S3 secret key"),
    ("AWS_REGION", "S3 region"),
];

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendsConfig {
    pub database: DatabaseConfig,
    pub redis_url: Option<ConnectionUrl>,
    pub redis_prefix: String,
    pub s3: Option<S3Config>,
}

impl BackendsConfig {
    pub(super) fn from_raw(raw: &RawConfig, data_dir: &Path) -> Result<Self, ConfigError> {
        let database = match raw.get("DATABASE_URL") {
            None => DatabaseConfig::Sqlite { path: data_dir.join("engram.db") },
            Some(value) => parse_database_url(value)?,
        };
        let redis_url = raw
            .get("REDIS_URL")
            .map(|v| parse_url(v, "REDIS_URL", &["redis", "rediss"], "redis://host:6379"))
            .transpose()?;
        let redis_prefix = parse_with(
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
        )?;
        Ok(Self { database, redis_url, redis_prefix, s3: parse_s3(raw)? })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        let (s3_key, s3_secret) = match self.s3.as_ref().and_then(|s| s.credentials.as_ref()) {
            Some((key, _)) => (Some(key.clone()), Some("****".to_string())),
            None => (None, None),
        };
        let database = match &self.database {
            DatabaseConfig::Sqlite { path } => format!("(unset: SQLite at {})", path.display()),
            DatabaseConfig::Postgres { url } => url.masked(),
        };
        vec![
            ("DATABASE_URL", Some(database)),
            ("REDIS_URL", self.redis_url.as_ref().map(ConnectionUrl::masked)),
            ("ENGRAM_REDIS_PREFIX", Some(self.redis_prefix.clone())),
            ("S3_BUCKET", self.s3.as_ref().map(|s| s.bucket.clone())),
            ("S3_PREFIX", self.s3.as_ref().map(|s| s.prefix.clone())),
            ("S3_ENDPOINT_URL", self.s3.as_ref().and_then(|s| s.endpoint_url.clone())),
            ("AWS_ACCESS_KEY_ID", s3_key),
            ("AWS_SECRET_ACCESS_KEY", s3_secret),
            ("AWS_REGION", self.s3.as_ref().map(|s| s.region.clone())),
        ]
    }

    /// Backend names for logs, `/health` and the dashboard.
    pub fn summary(&self) -> String {
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
