//! The state every handler can reach: cheap to clone, built once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jobs::QueueBackend;
use storage::{Backends, Config};

use crate::http::metrics::HttpMetrics;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub backends: Backends,
    pub queue: QueueBackend,
    pub metrics: Arc<HttpMetrics>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(config: Config, backends: Backends, queue: QueueBackend) -> Self {
        Self {
            config: Arc::new(config),
            backends,
            queue,
            metrics: Arc::new(HttpMetrics::new()),
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the process as shutting down: `/ready` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
