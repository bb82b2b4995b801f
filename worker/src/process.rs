//! What every Engram process does around its real work: load config or exit 2 with one line,
//! report a fatal start-up error in one line and exit 1, and wait for SIGINT or SIGTERM.

use storage::Config;
use storage::config::RawConfig;

/// Exit code for invalid configuration.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code for a start-up failure (a backend unreachable, bad credentials, …).
pub const EXIT_STARTUP: i32 = 1;

/// Loads and validates the configuration, installs logging, or exits 2 naming the variable.
pub fn load_config_or_exit() -> (Config, RawConfig) {
    let loaded = RawConfig::from_process().and_then(|raw| Ok((Config::from_raw(&raw)?, raw)));
    let (config, raw) = loaded.unwrap_or_else(|e| exit_with(EXIT_CONFIG, &e.to_string()));
    if let Err(e) = crate::telemetry::init(&config.log.level, config.log.format) {
        exit_with(EXIT_CONFIG, &e.to_string());
    }
    (config, raw)
}

/// Prints one line to stderr and exits; `{:#}` joins an anyhow chain with `: `.
pub fn exit_with(code: i32, message: &str) -> ! {
    let line = message.replace('\n', " ");
    eprintln!("engram: {line}");
    std::process::exit(code)
}

/// Installs SIGINT and SIGTERM handlers now (so a signal that arrives during start-up is not
/// fatal) and returns a future that resolves on the first of them.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    }
}
