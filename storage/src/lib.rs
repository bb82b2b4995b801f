//! Everything persistent in Engram: configuration, the SQL database and its stores, blob
//! stores, and the event bus. Nothing here knows HTTP.

pub mod blob;
pub mod blocking;
pub mod config;
pub mod counters;
pub mod error;
pub mod events;
pub mod git_memory;
pub mod ids;
pub mod sql;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use anyhow::Context;

pub use config::Config;
pub use error::{StoreError, StoreResult};

use blob::{BlobStore, FilesystemBlobStore, S3BlobStore};
use config::{JWT_SECRET_FILE, Secret};
use counters::{Counters, MemoryCounters, RedisCounters};
use events::{EventBus, LocalEventBus, PostgresEventBus, RedisEventBus};
use sql::{Database, KeyValueStore};

/// Every store, connected and ready: what `engram-api` and `engram-worker` run on.
#[derive(Clone)]
pub struct Backends {
    pub database: Database,
    pub key_values: Arc<dyn KeyValueStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub events: Arc<dyn EventBus>,
    /// Rate-limit and lockout counts.
    pub counters: Arc<dyn Counters>,
}

impl Backends {
    /// Connects to every configured backend and proves each one usable, so a bad URL or
    /// credential stops start-up with one line naming it rather than failing later.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let database = Database::connect(&config.backends.database).await?;
        let blobs: Arc<dyn BlobStore> = match &config.backends.s3 {
            Some(s3) => {
                let store = S3BlobStore::connect(s3).await?;
                store.verify_access().await?;
                Arc::new(store)
            }
            None => Arc::new(FilesystemBlobStore::open(config.data_dir.join("blobs"))?),
        };
        let events: Arc<dyn EventBus> = match &config.backends.redis_url {
            Some(url) => Arc::new(
                RedisEventBus::connect(url.expose(), &config.backends.redis_prefix)
                    .await
                    .with_context(|| format!("cannot connect to Redis at {}", url.masked()))?,
            ),
            None => match &database {
                Database::Postgres(pool) => Arc::new(
                    PostgresEventBus::connect(pool.clone(), &config.backends.redis_prefix)
                        .await
                        .context("cannot listen for events on PostgreSQL")?,
                ),
                Database::Sqlite(_) => Arc::new(LocalEventBus::new()),
            },
        };
        let counters: Arc<dyn Counters> = match &config.backends.redis_url {
            Some(url) => Arc::new(
                RedisCounters::connect(url.expose(), &config.backends.redis_prefix)
                    .await
                    .with_context(|| format!("cannot connect to Redis at {}", url.masked()))?,
            ),
            None => Arc::new(MemoryCounters::new()),
        };
        Ok(Self { key_values: database.key_value_store(), database, blobs, events, counters })
    }
}

/// The JWT secret: `JWT_SECRET` when set, else one generated on first start and kept in the
/// data dir (mode 0600). Replicas of a scale-out deployment must share `JWT_SECRET`.
pub fn jwt_secret(config: &Config) -> anyhow::Result<Secret> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(secret.clone());
    }
    let path = config.data_dir.join(JWT_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(existing) if !existing.trim().is_empty() => return Ok(Secret::new(existing.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let secret = hex::encode(bytes);
    write_private_file(&path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "JWT_SECRET is unset: generated one and stored it in the data dir; set JWT_SECRET when running several API processes"
    );
    Ok(Secret::new(secret))
}

fn write_private_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
