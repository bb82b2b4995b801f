//! Event bus on PostgreSQL LISTEN/NOTIFY, for scale-out deployments without Redis: one
//! listening connection per process receives every event and fans it out to this process's
//! subscribers. A notification carries an array of events (as many of a batch as fit). NOTIFY payloads are limited to 8,000 bytes; a larger event is not sent, and its
//! readers fall back on the durable state (for job logs, the `job_logs` table).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{Event, EventBus, EventStream, LocalEventBus};
use crate::error::{StoreError, StoreResult};

/// Largest NOTIFY payload PostgreSQL accepts, less a margin.
const MAX_PAYLOAD: usize = 7900;

pub struct PostgresEventBus {
    pool: PgPool,
    channel: String,
    local: Arc<LocalEventBus>,
    listener: tokio::task::JoinHandle<()>,
}

impl PostgresEventBus {
    /// Starts listening on `<prefix>:events`; events published by any process on the same
    /// database reach this process's subscribers.
    pub async fn connect(pool: PgPool, prefix: &str) -> anyhow::Result<Self> {
        let mut channel = format!("{prefix}:events");
        channel.truncate(63);
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(&channel).await?;
        let local = Arc::new(LocalEventBus::new());
        let fan_out = local.clone();
        let listener = tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => match serde_json::from_str::<Vec<Event>>(notification.payload()) {
                        Ok(events) => {
                            let _ = fan_out.publish_many(events).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable event notification"),
                    },
                    // The pool is closing (shutdown): give its connection back, or the
                    // close would wait for it forever.
                    Err(sqlx::Error::PoolClosed) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener lost its connection; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Self { pool, channel, local, listener })
    }
}

impl Drop for PostgresEventBus {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[async_trait]
impl EventBus for PostgresEventBus {
    fn backend_name(&self) -> &'static str {
        "postgres"
    }

    /// Packs the events into as few notifications as fit under the payload limit, all sent
    /// by one statement.
    async fn publish_many(&self, events: Vec<Event>) -> StoreResult<()> {
        let mut notifications: Vec<String> = Vec::new();
        let mut packed = String::new();
        for event in &events {
            let body = serde_json::to_string(event).map_err(|e| StoreError::backend("postgres", e))?;
            if body.len() + 2 > MAX_PAYLOAD {
                tracing::debug!(
                    topic = event.topic,
                    bytes = body.len(),
                    "event too large for NOTIFY; not sent"
                );
                continue;
            }
            if !packed.is_empty() && packed.len() + body.len() + 2 > MAX_PAYLOAD {
                notifications.push(std::mem::take(&mut packed) + "]");
            }
            packed.push(if packed.is_empty() { '[' } else { ',' });
            packed.push_str(&body);
        }
        if !packed.is_empty() {
            notifications.push(packed + "]");
        }
        if notifications.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, body) FROM unnest($2::text[]) AS body")
            .bind(&self.channel)
            .bind(notifications)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> StoreResult<EventStream> {
        self.local.subscribe(topic).await
    }

    async fn check(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
