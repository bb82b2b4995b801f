//! Federation (the agmem coordinator): agents push summaries of what they know, and pull the
//! merge of every agent's latest summary. Each tenant has a federation of its own; this
//! module checks a push's body and stamps its arrival, the store keeps and merges.

pub mod summary;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use storage::StoreError;
use storage::blocking::spawn_blocking_in_span;
use storage::sql::{AgentRecord, FederationStore, MergedView, PushOutcome, from_millis, to_millis};

pub use summary::parse_push;

/// A push body that is not a summary: the message names the field at fault, e.g.
/// `summary.topic_counts.foo: must be a non-negative integer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSummary(pub String);

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error(transparent)]
    Invalid(#[from] InvalidSummary),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// What a push did: the agent it came from, when it arrived, and whether it was stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub agent_id: String,
    pub received: DateTime<Utc>,
    pub outcome: PushOutcome,
}

/// The federation service over its store.
#[derive(Clone)]
pub struct Federation {
    store: Arc<dyn FederationStore>,
}

/// Now, to the millisecond the database keeps.
fn now() -> DateTime<Utc> {
    from_millis(to_millis(Utc::now()))
}

impl Federation {
    pub fn new(store: Arc<dyn FederationStore>) -> Self {
        Self { store }
    }

    /// Checks `body` (`{"summary": {…}}`) and stores it as its agent's latest summary in
    /// `tenant`'s federation, unless that agent already has a later one.
    pub async fn push(&self, tenant: &str, body: Bytes) -> Result<Pushed, FederationError> {
        // Up to 100,000 hashes: parse and check them off the async threads.
        let summary = spawn_blocking_in_span(move || parse_push(&body))
            .await
            .map_err(|e| FederationError::Internal(format!("checking a summary failed: {e}")))??;
        let received = now();
        let outcome = self.store.push(tenant, &summary, received).await?;
        Ok(Pushed { agent_id: summary.agent_id, received, outcome })
    }

    /// The merge of `tenant`'s latest summaries, or with `since` what changed after that cursor.
    pub async fn pull(&self, tenant: &str, since: Option<i64>) -> Result<MergedView, FederationError> {
        Ok(self.store.pull(tenant, since).await?)
    }

    /// `tenant`'s agents with their latest summaries.
    pub async fn agents(&self, tenant: &str) -> Result<Vec<AgentRecord>, FederationError> {
        Ok(self.store.agents(tenant).await?)
    }
}
