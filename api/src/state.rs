//! The state every handler can reach: cheap to clone, built once at start-up.

use std::sync::Arc;

use axum::extract::FromRef;
use std::sync::atomic::{AtomicBool, Ordering};

use jobs::engine::JobEngine;
use jobs::{JobSystem, QueueBackend};
use services::git_memory::GitMemory;
use storage::sql::WorkerStore;
use storage::{Backends, Config};

use crate::auth::Auth;
use crate::auth::github::GitHub;
use crate::auth::throttle::{Throttle, TrustedProxies};
use crate::auth::tokens::{AccessTokens, secret_hash};
use crate::http::metrics::registry::HttpMetrics;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub backends: Backends,
    pub queue: QueueBackend,
    pub jobs: JobSystem,
    pub engine: JobEngine,
    pub workers: Arc<dyn WorkerStore>,
    pub metrics: Arc<HttpMetrics>,
    pub auth: Auth,
    pub throttle: Throttle,
    pub github: GitHub,
    pub trusted_proxies: TrustedProxies,
    /// Git memory (DiffMem): repos, indexes and their writer leases.
    pub git_memory: Arc<GitMemory>,
    /// Blob sync (the memory proxy).
    pub blob_sync: Arc<services::blob_sync::BlobSync>,
    draining: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(
        config: Config,
        backends: Backends,
        queue: QueueBackend,
        jobs: JobSystem,
        jwt_secret: &[u8],
    ) -> Self {
        let config = Arc::new(config);
        let auth = Auth {
            identity: backends.database.identity_store(),
            access: AccessTokens::new(jwt_secret, config.auth.access_token_lifetime),
            refresh_lifetime: config.auth.refresh_token_lifetime,
            static_key_hash: config.auth.api_key.as_ref().map(|key| secret_hash(key.expose())),
            registration: config.auth.registration,
            invites: backends.database.invite_store(),
            config: config.clone(),
        };
        let github = GitHub::new(config.auth.github_api_url.expose());
        let throttle = Throttle::new(backends.counters.clone(), config.auth.clone());
        Self {
            auth,
            throttle,
            github,
            trusted_proxies: TrustedProxies(Arc::new(config.auth.trusted_proxies.clone())),
            config,
            backends,
            queue,
            engine: jobs.engine.clone(),
            git_memory: jobs.services.git_memory.clone(),
            blob_sync: jobs.services.blob_sync.clone(),
            workers: jobs.workers.clone(),
            jobs,
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

// What extractors take from the state: only their part, so they need not know `AppState`.
impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

impl FromRef<AppState> for TrustedProxies {
    fn from_ref(state: &AppState) -> Self {
        state.trusted_proxies.clone()
    }
}
