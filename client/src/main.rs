//! engram: the command-line client. `engram sync DIR --server URL --token T` keeps a local
//! directory in two-way sync with the caller's blob store on an Engram server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use client::sync::{self, Options};

#[derive(Parser)]
#[command(name = "engram", version, about = "Engram command-line client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sync DIR both ways with the server's blob store (state in DIR/.engram-sync.json).
    Sync(SyncArgs),
}

#[derive(Args)]
struct SyncArgs {
    /// The local directory to keep in sync (created if missing).
    dir: PathBuf,
    /// The server's base URL, e.g. http://127.0.0.1:8000.
    #[arg(long, env = "ENGRAM_SERVER")]
    server: String,
    /// An API key with the blobs:rw scope, or a session access token.
    #[arg(long, env = "ENGRAM_TOKEN", hide_env_values = true)]
    token: String,
    /// Keep syncing every --interval seconds until interrupted.
    #[arg(long)]
    watch: bool,
    /// Seconds between rounds with --watch.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Sync(args) = Cli::parse().command;
    let options = Options { dir: args.dir, server: args.server, token: args.token };
    if args.watch {
        let shutdown = client::shutdown_signal();
        sync::watch(options, Duration::from_secs(args.interval), shutdown).await
    } else {
        sync::once(options).await
    }
}
