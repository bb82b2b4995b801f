//! Event bus on Redis pub/sub, so an event published by any process reaches subscribers in
//! every other. Channels are named `<prefix>:events:<topic>`.

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::ConnectionManager;

use super::{Event, EventBus, EventStream};
use crate::error::{StoreError, StoreResult};

pub struct RedisEventBus {
    client: redis::Client,
    publisher: ConnectionManager,
    channel_prefix: String,
}

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::backend("redis", e)
}

impl RedisEventBus {
    /// Connects; channels are named `<prefix>:events:<topic>`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let publisher =
            tokio::time::timeout(std::time::Duration::from_secs(5), ConnectionManager::new(client.clone()))
                .await
                .map_err(|_| anyhow::anyhow!("no answer within 5 s"))??;
        Ok(Self { client, publisher, channel_prefix: format!("{prefix}:events:") })
    }
}

#[async_trait]
impl EventBus for RedisEventBus {
    fn backend_name(&self) -> &'static str {
        "redis"
    }

    async fn publish_many(&self, events: Vec<Event>) -> StoreResult<()> {
        let mut pipeline = redis::pipe();
        for event in &events {
            let body = serde_json::to_string(&event.payload).map_err(|e| StoreError::backend("redis", e))?;
            pipeline.publish(format!("{}{}", self.channel_prefix, event.topic), body).ignore();
        }
        let mut connection = self.publisher.clone();
        let () = pipeline.query_async(&mut connection).await.map_err(redis_error)?;
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> StoreResult<EventStream> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(redis_error)?;
        // Returns once Redis has confirmed the subscription.
        pubsub.subscribe(format!("{}{topic}", self.channel_prefix)).await.map_err(redis_error)?;
        let topic = topic.to_string();
        Ok(pubsub
            .into_on_message()
            .filter_map(move |message| {
                let topic = topic.clone();
                async move {
                    let body: String = match message.get_payload() {
                        Ok(body) => body,
                        Err(e) => {
                            tracing::warn!(topic, error = %e, "unreadable event payload");
                            return None;
                        }
                    };
                    match serde_json::from_str(&body) {
                        Ok(payload) => Some(Event { topic, payload }),
                        Err(e) => {
                            tracing::warn!(topic, error = %e, "event payload is not JSON");
                            None
                        }
                    }
                }
            })
            .boxed())
    }

    async fn check(&self) -> StoreResult<()> {
        let mut connection = self.publisher.clone();
        let _: String = redis::cmd("PING").query_async(&mut connection).await.map_err(redis_error)?;
        Ok(())
    }
}
