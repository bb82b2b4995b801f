//! The rate-limit counter suite, run in-process and on Redis.

use std::sync::Arc;
use std::time::Duration;

use storage::counters::{Counters, MemoryCounters, RedisCounters};

storage::store_suite!(
    memory => memory, redis => redis;
    [
        hits_count_up_within_the_window,
        a_closed_window_starts_again,
        keys_are_apart_and_reset_forgets,
        concurrent_hits_are_each_counted_once,
    ]
);

async fn memory() -> Option<Arc<dyn Counters>> {
    Some(Arc::new(MemoryCounters::new()))
}

/// A prefix of its own per test, so cases share nothing through the server.
async fn redis() -> Option<Arc<dyn Counters>> {
    let url = storage::testing::redis_url()?;
    let prefix = format!("test-{}", ulid::Ulid::generate());
    Some(Arc::new(RedisCounters::connect(&url, &prefix).await.expect("Redis answers")))
}

const MINUTE: Duration = Duration::from_secs(60);

async fn hits_count_up_within_the_window(counters: Arc<dyn Counters>) {
    assert_eq!(counters.peek("login:ip:1").await.unwrap().hits, 0);
    for expected in 1..=3 {
        let count = counters.hit("login:ip:1", MINUTE).await.unwrap();
        assert_eq!(count.hits, expected);
        assert!(count.resets_in <= MINUTE && count.resets_in > MINUTE - Duration::from_secs(5), "{count:?}");
    }
    // A later hit naming another window does not move the open one.
    let count = counters.hit("login:ip:1", 10 * MINUTE).await.unwrap();
    assert_eq!(count.hits, 4);
    assert!(count.resets_in <= MINUTE, "{count:?}");
    assert_eq!(counters.peek("login:ip:1").await.unwrap().hits, 4, "peek adds nothing");
}

async fn a_closed_window_starts_again(counters: Arc<dyn Counters>) {
    let window = Duration::from_millis(300);
    counters.hit("short", window).await.unwrap();
    assert_eq!(counters.hit("short", window).await.unwrap().hits, 2);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(counters.peek("short").await.unwrap().hits, 0, "the window closed");
    let count = counters.hit("short", MINUTE).await.unwrap();
    assert_eq!(count.hits, 1);
    assert!(count.resets_in > Duration::from_secs(50), "a new window of the new length: {count:?}");
}

async fn keys_are_apart_and_reset_forgets(counters: Arc<dyn Counters>) {
    counters.hit("a", MINUTE).await.unwrap();
    counters.hit("a", MINUTE).await.unwrap();
    counters.hit("b", MINUTE).await.unwrap();
    assert_eq!(counters.peek("a").await.unwrap().hits, 2);
    assert_eq!(counters.peek("b").await.unwrap().hits, 1);
    counters.reset("a").await.unwrap();
    assert_eq!(counters.peek("a").await.unwrap().hits, 0);
    assert_eq!(counters.peek("b").await.unwrap().hits, 1, "only the named key");
    counters.reset("never-hit").await.unwrap();
}

async fn concurrent_hits_are_each_counted_once(counters: Arc<dyn Counters>) {
    let hits = (0..50).map(|_| {
        let counters = counters.clone();
        tokio::spawn(async move { counters.hit("busy", MINUTE).await.unwrap().hits })
    });
    let mut seen: Vec<u64> = futures::future::join_all(hits).await.into_iter().map(Result::unwrap).collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=50).collect::<Vec<_>>(), "every hit got its own number");
}
