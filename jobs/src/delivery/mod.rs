//! How job ids reach workers. Engram's `jobs` table is the truth; a delivery backend only
//! carries "job X is due at T" to a worker of that kind. Pushing twice is harmless (a claim
//! succeeds once), so a sweep re-pushes anything that may have been lost.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One job to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryTask {
    pub job_id: String,
    pub kind: String,
    pub run_at: DateTime<Utc>,
    pub priority: i32,
}

#[async_trait]
pub trait Delivery: Send + Sync {
    async fn push(&self, tasks: &[DeliveryTask]) -> anyhow::Result<()>;
}

mod apalis;

pub use self::apalis::{JobRef, QueueBackend};
