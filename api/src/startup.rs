//! Building and running the server: connect every backend, bind the listener, serve until a
//! shutdown future fires, then drain. Tests build it on port 0 with a data dir of their own.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use jobs::WorkerOptions;
use storage::{Backends, Config};
use tokio::net::TcpListener;

use crate::state::AppState;

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// In-process job workers, unless `--no-worker`.
    worker: Option<WorkerOptions>,
}

impl Application {
    /// Connects to every configured backend (migrating the database) and binds
    /// `config.http.bind`; fails with a one-line cause when anything is unusable.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let backends = Backends::connect(&config).await?;
        let jwt_secret = storage::jwt_secret(&config)?;
        let queue = jobs::QueueBackend::connect(&config, &backends.database).await?;
        let services = services::Services::new(&config, &backends, jwt_secret.expose())?;
        let job_system = jobs::JobSystem::connect(&backends, &queue, &services, &config.jobs).await?;
        if config.system_schedules {
            jobs::kinds::ensure_upkeep_schedules(&job_system.engine)
                .await
                .context("cannot schedule the upkeep jobs")?;
        }
        let listener = TcpListener::bind(config.http.bind)
            .await
            .with_context(|| format!("cannot listen on {} (ENGRAM_BIND)", config.http.bind))?;
        tracing::info!(backends = %config.backend_summary(), queue = queue.backend_name(), "backends connected");
        Ok(Self {
            listener,
            state: AppState::new(config, backends, queue, job_system, jwt_secret.expose().as_bytes()),
            worker: Some(WorkerOptions::default()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Runs no job workers in this process (`engram-api --no-worker`).
    pub fn without_worker(mut self) -> Self {
        self.worker = None;
        self
    }

    /// Runs in-process job workers with these options.
    pub fn with_worker(mut self, options: WorkerOptions) -> Self {
        self.worker = Some(options);
        self
    }

    /// Serves until `shutdown` resolves, then stops taking connections, lets in-flight
    /// requests finish and closes the database.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let state = self.state.clone();
        let router = crate::http::router(self.state.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let worker = self.worker.map(|options| {
            let (jobs, stop) = (state.jobs.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = jobs.run_worker(options, async move { stop.cancelled().await }).await {
                    tracing::error!(error = %format!("{e:#}"), "in-process job worker failed");
                }
            })
        });
        let draining = state.clone();
        let stop_workers = stop.clone();
        let result = axum::serve(self.listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                shutdown.await;
                draining.start_draining();
                stop_workers.cancel();
            })
            .await;
        stop.cancel();
        if let Some(worker) = worker {
            let _ = worker.await;
        }
        state.backends.database.close().await;
        result
    }
}
