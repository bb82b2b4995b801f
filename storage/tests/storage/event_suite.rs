//! The event bus conformance suite, run in-process and on Redis.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use storage::events::{Event, EventBus, EventStream, LocalEventBus, RedisEventBus};

storage::store_suite!(
    local => local, redis => redis, postgres => postgres;
    [
        subscribers_get_events_in_order,
        topics_are_apart,
        every_subscriber_gets_every_event,
        a_second_connection_sees_the_first_ones_events,
        a_batch_arrives_in_order_on_every_topic,
    ]
);

/// Opens a bus; called twice by the cross-connection case. The in-process bus shares one.
type Open = Box<dyn Fn() -> futures::future::BoxFuture<'static, Arc<dyn EventBus>> + Send + Sync>;

async fn local() -> Option<Open> {
    let bus: Arc<dyn EventBus> = Arc::new(LocalEventBus::new());
    Some(Box::new(move || {
        let bus = bus.clone();
        Box::pin(async move { bus })
    }))
}

async fn redis() -> Option<Open> {
    let url = storage::testing::redis_url()?;
    Some(Box::new(move || {
        let url = url.clone();
        Box::pin(async move {
            Arc::new(RedisEventBus::connect(&url, "engram-test").await.unwrap()) as Arc<dyn EventBus>
        })
    }))
}

/// Two buses on one database stand for two processes; the first call creates the database.
async fn postgres() -> Option<Open> {
    storage::testing::service_var("ENGRAM_TEST_POSTGRES_URL")?;
    let url = std::sync::Arc::new(tokio::sync::OnceCell::new());
    Some(Box::new(move || {
        let url = url.clone();
        Box::pin(async move {
            let url = url
                .get_or_init(|| async { storage::testing::fresh_postgres_url().await.unwrap() })
                .await
                .clone();
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            Arc::new(storage::events::PostgresEventBus::connect(pool, "engram-test").await.unwrap())
                as Arc<dyn EventBus>
        })
    }))
}

fn topic() -> String {
    format!("test-{}", ulid::Ulid::generate())
}

async fn next(stream: &mut EventStream) -> serde_json::Value {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream stays open")
        .payload
}

async fn subscribers_get_events_in_order(open: Open) {
    let bus = open().await;
    bus.check().await.unwrap();
    let topic = topic();
    let mut stream = bus.subscribe(&topic).await.unwrap();
    for i in 0..100 {
        bus.publish(&topic, json!({"seq": i})).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(next(&mut stream).await, json!({"seq": i}));
    }
}

async fn topics_are_apart(open: Open) {
    let bus = open().await;
    let (a, b) = (topic(), topic());
    let mut stream_a = bus.subscribe(&a).await.unwrap();
    bus.publish(&b, json!("for b")).await.unwrap();
    bus.publish(&a, json!("for a")).await.unwrap();
    assert_eq!(next(&mut stream_a).await, json!("for a"));
}

async fn every_subscriber_gets_every_event(open: Open) {
    let bus = open().await;
    let topic = topic();
    let mut first = bus.subscribe(&topic).await.unwrap();
    let mut second = bus.subscribe(&topic).await.unwrap();
    bus.publish(&topic, json!({"x": [1, 2]})).await.unwrap();
    assert_eq!(next(&mut first).await, json!({"x": [1, 2]}));
    assert_eq!(next(&mut second).await, json!({"x": [1, 2]}));
    drop(first);
    bus.publish(&topic, json!(2)).await.unwrap();
    assert_eq!(next(&mut second).await, json!(2), "a dropped subscriber does not stop the others");
}

/// Two connections stand for two processes (API and worker) on Redis.
async fn a_second_connection_sees_the_first_ones_events(open: Open) {
    let (publisher, subscriber) = (open().await, open().await);
    let topic = topic();
    let mut stream = subscriber.subscribe(&topic).await.unwrap();
    publisher.publish(&topic, json!({"line": "hello"})).await.unwrap();
    assert_eq!(next(&mut stream).await, json!({"line": "hello"}));
}

/// `publish_many` from one connection: 600 events of ~100 bytes over two topics (more than
/// one NOTIFY holds) reach a subscriber on another connection in order. An event too large
/// for the PostgreSQL bus is dropped there without taking the rest of the batch with it.
async fn a_batch_arrives_in_order_on_every_topic(open: Open) {
    let (publisher, subscriber) = (open().await, open().await);
    let (a, b) = (topic(), topic());
    let mut stream_a = subscriber.subscribe(&a).await.unwrap();
    let mut stream_b = subscriber.subscribe(&b).await.unwrap();
    let padding = "x".repeat(80);
    let mut batch: Vec<Event> = (0..600)
        .map(|i| Event {
            topic: if i % 2 == 0 { a.clone() } else { b.clone() },
            payload: json!({"seq": i, "pad": padding}),
        })
        .collect();
    let huge = json!({"huge": "y".repeat(10_000)});
    batch.insert(300, Event { topic: a.clone(), payload: huge.clone() });
    publisher.publish_many(batch).await.unwrap();
    publisher.publish(&a, json!("after")).await.unwrap();
    let mut seen_a = Vec::new();
    loop {
        let payload = next(&mut stream_a).await;
        if payload == json!("after") {
            break;
        }
        seen_a.push(payload);
    }
    let huge_delivered = seen_a.contains(&huge);
    seen_a.retain(|p| p != &huge);
    let expected_a: Vec<_> = (0..600).step_by(2).map(|i| json!({"seq": i, "pad": padding})).collect();
    assert_eq!(seen_a, expected_a);
    assert_eq!(huge_delivered, publisher.backend_name() != "postgres", "only NOTIFY drops oversize events");
    for i in (1..600).step_by(2) {
        assert_eq!(next(&mut stream_b).await, json!({"seq": i, "pad": padding}));
    }
}
