//! The error type every store in this crate returns.

/// What went wrong in a store, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write or delete whose condition did not hold.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A key or name that the store refuses (too long, `..`, control characters, …).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The backend could not be reached or answered with an error.
    #[error("{backend} failed: {source:#}")]
    Backend {
        backend: &'static str,
        #[source]
        source: anyhow::Error,
    },
}

impl StoreError {
    pub fn backend(backend: &'static str, source: impl Into<anyhow::Error>) -> Self {
        Self::Backend { backend, source: source.into() }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::backend("database", e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;
