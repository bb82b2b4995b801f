//! What travels on the event bus about jobs: per-job events (log lines, progress, status,
//! end) on `job:<id>`, and cancellation requests on `jobs:cancel`.

use serde::{Deserialize, Serialize};
use storage::sql::{JobStatus, LogLine};

pub const CANCEL_TOPIC: &str = "jobs:cancel";

pub fn job_topic(job_id: &str) -> String {
    format!("job:{job_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobEvent {
    Log(LogLine),
    Progress {
        progress: i32,
        message: String,
    },
    Status {
        status: JobStatus,
    },
    /// The job reached a final status; no more events follow.
    End {
        status: JobStatus,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    pub job_id: String,
}
