//! In-process event bus on tokio broadcast channels, one per topic.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{Event, EventBus, EventStream};
use crate::error::StoreResult;

/// Events a slow subscriber may fall behind by before it misses some.
const CAPACITY: usize = 1024;

#[derive(Default)]
pub struct LocalEventBus {
    topics: Mutex<HashMap<String, broadcast::Sender<Event>>>,
}

impl LocalEventBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl EventBus for LocalEventBus {
    fn backend_name(&self) -> &'static str {
        "in-process"
    }

    async fn publish_many(&self, events: Vec<Event>) -> StoreResult<()> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for event in events {
            let topic = event.topic.clone();
            if let Some(sender) = topics.get(&topic)
                && sender.send(event).is_err()
            {
                // Nobody listens any more: forget the channel.
                topics.remove(&topic);
            }
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> StoreResult<EventStream> {
        let receiver = {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            topics.entry(topic.to_string()).or_insert_with(|| broadcast::channel(CAPACITY).0).subscribe()
        };
        let topic = topic.to_string();
        Ok(BroadcastStream::new(receiver)
            .filter_map(move |item| {
                let topic = topic.clone();
                async move {
                    match item {
                        Ok(event) => Some(event),
                        Err(BroadcastStreamRecvError::Lagged(missed)) => {
                            tracing::warn!(topic, missed, "event subscriber fell behind");
                            None
                        }
                    }
                }
            })
            .boxed())
    }

    async fn check(&self) -> StoreResult<()> {
        Ok(())
    }
}
