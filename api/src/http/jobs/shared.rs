//! What the job routes, the log stream and the schedule routes share.

use serde_json::Value;
use storage::sql::Job;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// The job `id` when the caller may see it; 404 alike for a missing job and another tenant's.
pub(crate) async fn find_job(state: &AppState, caller: &Caller, id: &str) -> Result<Job, ApiError> {
    let job = state.engine.jobs.get(id).await?.filter(|job| caller.owns(&job.owner));
    job.ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// A missing payload is an empty object, so kinds whose fields all have defaults need none.
pub(crate) fn empty_object() -> Value {
    Value::Object(Default::default())
}
