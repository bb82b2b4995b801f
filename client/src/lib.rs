//! The `engram` command-line client: talks to an Engram server over HTTP and shares no code
//! with it. Today it holds `engram sync` (two-way sync of a directory with the caller's blob
//! store); more commands come as modules beside it.

pub mod sync;

use md5::{Digest, Md5};

/// Lowercase hex MD5 of `body`: the etag and `X-Content-MD5` the blob protocol speaks.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Installs the process-wide TLS provider (aws-lc-rs) reqwest's rustls uses; later calls
/// are no-ops.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Resolves on SIGINT or SIGTERM: the end of `engram sync --watch`.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    }
}
