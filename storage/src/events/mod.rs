//! The event bus: fire-and-forget messages on named topics, for SSE, WebSocket and cache
//! invalidation. In-process (tokio broadcast) by default, Redis pub/sub across processes.
//! Delivery is at-most-once to subscribers present at publish time; durable state lives in
//! the database, and the bus only says "look again".

mod local;
mod postgres;
mod redis;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use self::local::LocalEventBus;
pub use self::postgres::PostgresEventBus;
pub use self::redis::RedisEventBus;
use crate::error::StoreResult;

/// One message on a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub topic: String,
    pub payload: Value,
}

/// Events of one topic, in publish order, from the moment `subscribe` returned.
pub type EventStream = BoxStream<'static, Event>;

#[async_trait]
pub trait EventBus: Send + Sync {
    fn backend_name(&self) -> &'static str;

    async fn publish(&self, topic: &str, payload: Value) -> StoreResult<()> {
        self.publish_many(vec![Event { topic: topic.to_string(), payload }]).await
    }

    /// Publishes several events with as few round trips as the backend allows, in order.
    async fn publish_many(&self, events: Vec<Event>) -> StoreResult<()>;

    /// Subscribes; every event published after this returns is delivered (bar lag).
    async fn subscribe(&self, topic: &str) -> StoreResult<EventStream>;

    /// Proves the backend answers (for `/health`).
    async fn check(&self) -> StoreResult<()>;
}
