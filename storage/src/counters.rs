//! Fixed-window counters for rate limits and lockouts: in-process on one machine, in Redis
//! when `REDIS_URL` is set so that every API process counts together. A key's window opens
//! with its first hit and lasts the `window` that hit named; the count starts again after.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::error::{StoreError, StoreResult};

/// A key's hits in its current window and how long until that window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub hits: u64,
    pub resets_in: Duration,
}

impl Count {
    const NONE: Count = Count { hits: 0, resets_in: Duration::ZERO };
}

#[async_trait]
pub trait Counters: Send + Sync {
    fn backend_name(&self) -> &'static str;

    /// Adds a hit to `key`; a key with no open window opens one of `window`.
    async fn hit(&self, key: &str, window: Duration) -> StoreResult<Count>;

    /// `key`'s count without adding to it.
    async fn peek(&self, key: &str) -> StoreResult<Count>;

    /// Forgets `key`.
    async fn reset(&self, key: &str) -> StoreResult<()>;
}

/// Counters in this process's memory; closed windows are swept as the map grows.
pub struct MemoryCounters {
    windows: Mutex<Windows>,
}

struct Windows {
    /// Key → (hits, window end).
    open: HashMap<String, (u64, Instant)>,
    sweep_at: usize,
}

const FIRST_SWEEP: usize = 1024;

impl MemoryCounters {
    pub fn new() -> Self {
        Self { windows: Mutex::new(Windows { open: HashMap::new(), sweep_at: FIRST_SWEEP }) }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, Windows> {
        // A panic while holding the lock cannot leave a count half-written.
        self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for MemoryCounters {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Counters for MemoryCounters {
    fn backend_name(&self) -> &'static str {
        "in-process"
    }

    async fn hit(&self, key: &str, window: Duration) -> StoreResult<Count> {
        let now = Instant::now();
        let mut windows = self.windows();
        if windows.open.len() >= windows.sweep_at {
            windows.open.retain(|_, (_, ends)| *ends > now);
            windows.sweep_at = (windows.open.len() * 2).max(FIRST_SWEEP);
        }
        let entry = windows.open.entry(key.to_string()).or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        Ok(Count { hits: entry.0, resets_in: entry.1 - now })
    }

    async fn peek(&self, key: &str) -> StoreResult<Count> {
        let now = Instant::now();
        Ok(match self.windows().open.get(key) {
            Some(&(hits, ends)) if ends > now => Count { hits, resets_in: ends - now },
            _ => Count::NONE,
        })
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        self.windows().open.remove(key);
        Ok(())
    }
}

/// Counters as Redis keys `<prefix>:counters:<key>` that expire with their window.
pub struct RedisCounters {
    connection: ConnectionManager,
    key_prefix: String,
    hit: redis::Script,
}

/// INCR and the expiry in one step, so a key never outlives its window (and a key left
/// without an expiry by an older writer gets one).
const HIT: &str = r"
local hits = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if hits == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {hits, ttl}
";

fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::backend("redis", e)
}

impl RedisCounters {
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let connection = tokio::time::timeout(Duration::from_secs(5), ConnectionManager::new(client))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within 5 s"))??;
        Ok(Self { connection, key_prefix: format!("{prefix}:counters:"), hit: redis::Script::new(HIT) })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }
}

fn count(hits: i64, ttl_ms: i64) -> Count {
    Count { hits: hits.max(0) as u64, resets_in: Duration::from_millis(ttl_ms.max(0) as u64) }
}

#[async_trait]
impl Counters for RedisCounters {
    fn backend_name(&self) -> &'static str {
        "redis"
    }

    async fn hit(&self, key: &str, window: Duration) -> StoreResult<Count> {
        let window_ms = window.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut connection = self.connection.clone();
        let (hits, ttl): (i64, i64) = self
            .hit
            .key(self.key(key))
            .arg(window_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(count(hits, ttl))
    }

    async fn peek(&self, key: &str) -> StoreResult<Count> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        let (hits, ttl): (Option<i64>, i64) =
            redis::pipe().get(&key).pttl(&key).query_async(&mut connection).await.map_err(redis_error)?;
        Ok(match hits {
            Some(hits) if ttl > 0 => count(hits, ttl),
            _ => Count::NONE,
        })
    }

    async fn reset(&self, key: &str) -> StoreResult<()> {
        let mut connection = self.connection.clone();
        let _: i64 =
            redis::cmd("DEL").arg(self.key(key)).query_async(&mut connection).await.map_err(redis_error)?;
        Ok(())
    }
}
