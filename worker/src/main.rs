//! engram-worker: connects to the configured backends and runs job handlers until SIGTERM.

use clap::Parser;
use worker::process::{EXIT_STARTUP, exit_with, load_config_or_exit, shutdown_signal};

#[derive(Parser)]
#[command(name = "engram-worker", version, about = "Runs Engram's background jobs")]
struct Args {
    /// Jobs run at once by this process.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// Job kinds this process takes (comma-separated); all kinds when unset.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
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
    tracing::info!(
        backends = %config.backend_summary(),
        queue = queue.backend_name(),
        concurrency = args.concurrency,
        kinds = ?args.kinds,
        "engram-worker connected; waiting for shutdown"
    );
    shutdown.await;
    backends.database.close().await;
}
