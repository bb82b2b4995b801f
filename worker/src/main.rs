//! engram-worker: connects to the configured backends and runs job handlers until SIGTERM.

use clap::Parser;
use std::time::Duration;

use worker::process::{EXIT_CONFIG, EXIT_STARTUP, exit_with, load_config_or_exit, shutdown_signal};

#[derive(Parser)]
#[command(name = "engram-worker", version, about = "Runs Engram's background jobs")]
struct Args {
    /// Jobs run at once by this process [default: ENGRAM_WORKER_CONCURRENCY or 4].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: Option<u16>,
    /// Job kinds this process takes (comma-separated); all kinds when unset.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Seconds between heartbeats [default: ENGRAM_WORKER_HEARTBEAT_SECS or 5].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=300))]
    heartbeat_secs: Option<u64>,
    /// Seconds without a heartbeat before a worker's jobs are re-queued
    /// [default: ENGRAM_WORKER_STALE_SECS or 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..=3600))]
    stale_after_secs: Option<u64>,
    /// Seconds running jobs get to finish on SIGTERM before they are re-queued
    /// [default: ENGRAM_WORKER_DRAIN_SECS or 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_secs: Option<u64>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (config, _) = load_config_or_exit();
    let shutdown = shutdown_signal();
    let backends = storage::Backends::connect(&config)
        .await
        .unwrap_or_else(|e| exit_with(EXIT_STARTUP, &format!("{e:#}")));
    let queue = jobs::QueueBackend::connect(&config, &backends.database)
        .await
        .unwrap_or_else(|e| exit_with(EXIT_STARTUP, &format!("{e:#}")));
    let secret = storage::jwt_secret(&config).unwrap_or_else(|e| exit_with(EXIT_STARTUP, &format!("{e:#}")));
    let services = services::Services::new(&config, &backends, secret.expose())
        .unwrap_or_else(|e| exit_with(EXIT_STARTUP, &format!("{e:#}")));
    let system = jobs::JobSystem::connect(&backends, &queue, &services, &config.jobs)
        .await
        .unwrap_or_else(|e| exit_with(EXIT_STARTUP, &format!("{e:#}")));
    let defaults = &config.worker;
    let options = jobs::WorkerOptions {
        concurrency: args.concurrency.map_or(defaults.concurrency as usize, usize::from),
        kinds: args.kinds,
        heartbeat: Duration::from_secs(args.heartbeat_secs.unwrap_or(defaults.heartbeat_secs)),
        stale_after: Duration::from_secs(args.stale_after_secs.unwrap_or(defaults.stale_after_secs)),
        drain: Duration::from_secs(args.drain_secs.unwrap_or(defaults.drain_secs)),
    };
    if let Err(unknown) = system.engine.kinds.only(&options.kinds) {
        exit_with(EXIT_CONFIG, &format!("--kinds: {unknown}"));
    }
    tracing::info!(
        backends = %config.backend_summary(),
        queue = queue.backend_name(),
        concurrency = options.concurrency,
        kinds = ?options.kinds,
        "engram-worker connected"
    );
    let result = system.run_worker(options, shutdown).await;
    backends.database.close().await;
    if let Err(e) = result {
        exit_with(EXIT_STARTUP, &format!("{e:#}"));
    }
}
