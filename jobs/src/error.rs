//! Why a job's attempt failed, as every handler reports it: retried while attempts remain,
//! except `Permanent`.

/// Why an attempt failed. Every failure is retried while attempts remain, except `Permanent`.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Failed(String),
    /// Retrying cannot help (a bad payload, a missing resource): the job goes dead at once.
    #[error("{0}")]
    Permanent(String),
    #[error("cancelled")]
    Cancelled,
}

impl JobError {
    /// The same error with its message passed through `f`.
    pub fn map_message(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            JobError::Failed(message) => JobError::Failed(f(message)),
            JobError::Permanent(message) => JobError::Permanent(f(message)),
            JobError::Cancelled => JobError::Cancelled,
        }
    }
}

impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        JobError::Failed(format!("{e:#}"))
    }
}
