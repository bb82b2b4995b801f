//! Which backend carries the job queue: Redis when `REDIS_URL` is set, otherwise the SQL
//! database (SQLite in the embedded default, PostgreSQL in scale-out).

use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use storage::Config;
use storage::sql::Database;

#[derive(Clone)]
pub enum QueueBackend {
    Sql(Database),
    Redis(ConnectionManager),
}

impl QueueBackend {
    pub async fn connect(config: &Config, database: &Database) -> anyhow::Result<Self> {
        match &config.redis_url {
            None => Ok(QueueBackend::Sql(database.clone())),
            Some(url) => {
                let client = redis::Client::open(url.expose())
                    .with_context(|| format!("REDIS_URL {} is not usable", url.masked()))?;
                let manager = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within 5 s"))
                    .and_then(|r| r.map_err(Into::into))
                    .with_context(|| format!("cannot connect to Redis at {}", url.masked()))?;
                Ok(QueueBackend::Redis(manager))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            QueueBackend::Sql(database) => database.backend_name(),
            QueueBackend::Redis(_) => "redis",
        }
    }

    /// One round trip to the queue's store, for health checks.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            QueueBackend::Sql(database) => database.ping().await,
            QueueBackend::Redis(manager) => {
                let mut connection = manager.clone();
                let _: String = redis::cmd("PING").query_async(&mut connection).await?;
                Ok(())
            }
        }
    }
}
