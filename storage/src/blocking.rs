//! The one way server code runs blocking or CPU-heavy work (git2, tantivy, file I/O, argon2,
//! big parses, the embedding model): on tokio's blocking pool, inside the caller's tracing
//! span so its log lines still name the request or job they belong to.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinError;

/// Runs `work` on the blocking pool within the current span. Errs only when the work
/// panicked or the runtime is shutting down.
pub async fn spawn_blocking_in_span<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, JoinError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work)).await
}

/// A bounded share of the blocking pool: at most `limit` of its jobs run at once, the rest
/// wait their turn. For work that saturates a core each (the embedding model), so a burst
/// of requests cannot take every blocking thread or every core.
#[derive(Clone, Debug)]
pub struct BoundedPool {
    permits: Arc<Semaphore>,
}

impl BoundedPool {
    pub fn new(limit: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(limit.max(1))) }
    }

    /// One per core the machine has: what CPU-bound work can use.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// [`spawn_blocking_in_span`] once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JoinError> {
        let permit =
            self.permits.clone().acquire_owned().await.expect("the pool's semaphore is never closed");
        spawn_blocking_in_span(move || {
            let _permit = permit;
            work()
        })
        .await
    }
}
