//! Which backend carries the job queue: Redis when `REDIS_URL` is set, otherwise the SQL
//! database: PostgreSQL in scale-out (apalis' tables in their own `apalis` schema), or in
//! the embedded default a SQLite file of its own beside Engram's (`<name>.queue.db`), since
//! apalis-sqlite's `Jobs` and `Workers` tables would collide with Engram's `jobs` and
//! `workers`, and a second file gives the queue its own write lock.

use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use storage::Config;
use storage::config::DatabaseConfig;
use storage::sql::{Database, open_sqlite};

use crate::delivery::QueueBackend;

impl QueueBackend {
    pub async fn connect(config: &Config, database: &Database) -> anyhow::Result<Self> {
        match &config.backends.redis_url {
            None => match (database, &config.backends.database) {
                (Database::Postgres(pool), _) => Ok(QueueBackend::Postgres(pool.clone())),
                (Database::Sqlite(_), DatabaseConfig::Sqlite { path }) => {
                    Ok(QueueBackend::Sqlite(open_sqlite(&path.with_extension("queue.db")).await?))
                }
                (Database::Sqlite(_), DatabaseConfig::Postgres { .. }) => {
                    anyhow::bail!("the database and its configuration disagree")
                }
            },
            Some(url) => {
                let client = redis::Client::open(url.expose())
                    .with_context(|| format!("REDIS_URL {} is not usable", url.masked()))?;
                let manager = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within 5 s"))
                    .and_then(|r| r.map_err(Into::into))
                    .with_context(|| format!("cannot connect to Redis at {}", url.masked()))?;
                Ok(QueueBackend::Redis(manager, config.backends.redis_prefix.clone()))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            QueueBackend::Sqlite(_) => "sqlite",
            QueueBackend::Postgres(_) => "postgres",
            QueueBackend::Redis(..) => "redis",
        }
    }

    /// One round trip to the queue's store, for health checks.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            QueueBackend::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            QueueBackend::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            QueueBackend::Redis(manager, _) => {
                let mut connection = manager.clone();
                let _: String = redis::cmd("PING").query_async(&mut connection).await?;
            }
        }
        Ok(())
    }
}
