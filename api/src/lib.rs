//! engram-api: the HTTP server. Routes parse, authorise, call one function of `jobs` or
//! `storage`, and shape the reply; errors render per route family (see `error`).

pub mod auth;
pub mod error;
pub mod http;
pub mod startup;
pub mod state;

pub use startup::Application;

/// Makes aws-lc-rs (already linked for S3 and JWTs) the process's TLS provider, which
/// reqwest's HTTPS needs: it is built without a provider of its own, so as not to link a
/// second crypto library. Call before building an HTTP client; later calls do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
