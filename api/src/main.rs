//! engram-api: serve Engram over HTTP (default), or print the effective configuration.

use clap::{Parser, Subcommand};
use worker::process::{EXIT_STARTUP, exit_with, load_config_or_exit, shutdown_signal};

#[derive(Parser)]
#[command(name = "engram-api", version, about = "Engram: memory platform for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Serve HTTP only; leave jobs to separate engram-worker processes.
    #[arg(long, global = true)]
    no_worker: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server (the default).
    Serve,
    /// Print the effective configuration, secrets masked, and where each value came from.
    Config,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let (config, raw) = load_config_or_exit();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config => {
            for (key, value, origin) in config.describe(&raw) {
                println!("{key} = {value}  # {origin}");
            }
        }
        Command::Serve => {
            let shutdown = shutdown_signal();
            let config_is_text_logs = config.log.format == storage::config::LogFormat::Text;
            let mut app = api::Application::build(config)
                .await
                .unwrap_or_else(|e| exit_with(EXIT_STARTUP, &format!("{e:#}")));
            if cli.no_worker {
                app = app.without_worker();
            }
            let url = format!("http://{}", app.local_addr());
            tracing::info!(%url, in_process_workers = !cli.no_worker, "engram-api listening");
            if config_is_text_logs {
                eprintln!("Engram is up: dashboard {url}/  API docs {url}/docs  health {url}/health");
            }
            if let Err(e) = app.run_until(shutdown).await {
                exit_with(EXIT_STARTUP, &format!("server stopped: {e}"));
            }
        }
    }
}
