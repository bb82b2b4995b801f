//! How work reaches workers. Engram's `jobs` table is the truth; a delivery backend only
//! carries "a job of kind K is due at T" to a worker of that kind, which then claims the
//! kind's next job in turn (see `JobStore::claim_next`): deliveries are interchangeable, so
//! one owner's backlog ahead in the queue never delays another owner's job. Pushing twice is
//! harmless (a delivery with nothing to claim does nothing), so a sweep re-pushes anything
//! that may have been lost.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// One delivery: the job it was pushed for (for tracing), its kind, when it is due and its
/// priority (which delivery backends order by).
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryTask {
    pub job_id: String,
    pub kind: String,
    pub run_at: DateTime<Utc>,
    pub priority: i32,
}

impl DeliveryTask {
    /// A delivery of `job` due at once.
    pub fn due_now(job: &storage::sql::Job) -> Self {
        Self { job_id: job.id.clone(), kind: job.kind.clone(), run_at: Utc::now(), priority: job.priority }
    }
}

#[async_trait]
pub trait Delivery: Send + Sync {
    async fn push(&self, tasks: &[DeliveryTask]) -> anyhow::Result<()>;
}

mod apalis;
pub mod consumers;

pub use self::apalis::{JobRef, QueueBackend};
pub use self::consumers::Consumers;
