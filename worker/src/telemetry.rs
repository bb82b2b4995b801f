//! Logging for both binaries: `tracing` to stderr, human-readable or JSON lines.

use std::io::IsTerminal;

use storage::config::{ConfigError, LogFormat};
use tracing_subscriber::EnvFilter;

/// Dependencies that are chatty at `info`.
const QUIET_DEPENDENCIES: &str = "sqlx=warn,hyper=warn,hyper_util=warn,h2=warn,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,redis=warn";

/// Installs the global subscriber. `level` is a level (`info`) or a full filter directive
/// (`info,storage=debug`).
pub fn init(level: &str, format: LogFormat) -> Result<(), ConfigError> {
    let directive = if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("{level},{QUIET_DEPENDENCIES}")
    };
    let filter = EnvFilter::builder().parse(&directive).map_err(|e| ConfigError {
        key: "LOG_LEVEL".into(),
        message: format!("{level:?} is not a level or filter ({e}); set it to info, debug, warn, …"),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests building several apps) keeps the first subscriber.
    let _ = result;
    Ok(())
}
