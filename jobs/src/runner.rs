//! Running one delivery: claim the kind's next job in turn, run its kind's handler under the
//! kind's timeout with panics caught and cancellation wired in, record the outcome, and
//! schedule the retry. Whatever the handler does, the job never stays `running` after the
//! attempt ends. Claims and outcomes of concurrent attempts are written in batches (see
//! `batch`); an attempt's end gives its owner room under the running cap, so the owner's
//! parked jobs are delivered again.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use futures::FutureExt;
use serde_json::Value;
use storage::sql::{AttemptOutcome, Job, JobStatus, JobStore};
use tokio_util::sync::CancellationToken;

use crate::backoff::retry_delay;
use crate::batch::Batcher;
use crate::context::JobContext;
use crate::delivery::{Delivery, DeliveryTask};
use crate::error::JobError;
use crate::events::JobEvent;
use crate::kind::Registry;
use crate::logs::LogWriter;

/// Jobs running in this process, by id, with the token that cancels each.
#[derive(Clone, Default)]
pub struct RunningJobs {
    tokens: Arc<Mutex<HashMap<String, CancellationToken>>>,
}

impl RunningJobs {
    fn insert(&self, job_id: &str, token: CancellationToken) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.to_string(), token);
    }

    fn remove(&self, job_id: &str) {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).remove(job_id);
    }

    /// Cancels the job if it runs here; `false` otherwise.
    pub fn cancel(&self, job_id: &str) -> bool {
        match self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(job_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }
}

/// What happened to a delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// No job of the kind was due, or every due one's owner is at the running cap.
    Skipped,
    Finished(JobStatus),
    /// Ran, but the job was re-queued under it meanwhile; its outcome was dropped.
    Superseded,
}

/// Most claims, or outcomes, written by one statement.
const MAX_BATCH: usize = 256;

/// What a runner is built from.
#[derive(Clone)]
pub struct RunnerParts {
    pub backends: storage::Backends,
    pub worker_id: String,
    pub jobs: Arc<dyn JobStore>,
    pub kinds: Registry,
    pub logs: LogWriter,
    pub delivery: Arc<dyn Delivery>,
    /// Caps the jobs this process runs at once, over all kinds.
    pub concurrency: usize,
    /// Most jobs of one owner running at once over every worker; 0 = no cap.
    pub max_running_per_owner: u64,
}

#[derive(Clone)]
pub struct Runner {
    pub parts: RunnerParts,
    pub running: RunningJobs,
    slots: Arc<tokio::sync::Semaphore>,
    claims: Batcher<String, Option<Job>>,
    outcomes: Batcher<(String, AttemptOutcome), bool>,
    stop_claiming: CancellationToken,
}

/// Claims for a batch of deliveries, each naming its kind: one claim per kind.
async fn claim_in_turn(
    jobs: &dyn JobStore,
    kinds: Vec<String>,
    worker_id: &str,
    cap: u64,
) -> storage::StoreResult<Vec<Option<Job>>> {
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for kind in &kinds {
        *wanted.entry(kind.as_str()).or_default() += 1;
    }
    let mut claimed: HashMap<&str, std::vec::IntoIter<Job>> = HashMap::new();
    for (kind, count) in wanted {
        claimed.insert(kind, jobs.claim_next(kind, count, worker_id, cap).await?.into_iter());
    }
    Ok(kinds.iter().map(|kind| claimed.get_mut(kind.as_str()).and_then(Iterator::next)).collect())
}

impl Runner {
    /// Builds the runner and starts its claim and outcome batch loops.
    pub fn new(parts: RunnerParts) -> Self {
        let (jobs, worker_id, cap) =
            (parts.jobs.clone(), parts.worker_id.clone(), parts.max_running_per_owner);
        let claims = Batcher::spawn(MAX_BATCH, move |kinds: Vec<String>| {
            let (jobs, worker_id) = (jobs.clone(), worker_id.clone());
            async move { claim_in_turn(jobs.as_ref(), kinds, &worker_id, cap).await }
        });
        let (jobs, worker_id) = (parts.jobs.clone(), parts.worker_id.clone());
        let outcomes = Batcher::spawn(MAX_BATCH, move |outcomes: Vec<(String, AttemptOutcome)>| {
            let (jobs, worker_id) = (jobs.clone(), worker_id.clone());
            async move { jobs.finish_attempts(&worker_id, &outcomes).await }
        });
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(parts.concurrency)),
            parts,
            running: RunningJobs::default(),
            claims,
            outcomes,
            stop_claiming: CancellationToken::new(),
        }
    }

    /// Claims the next job of `kind` in turn and runs it.
    ///
    /// Under a running cap, the slot then runs its owner's next parked job, if any, so an
    /// owner at the cap keeps its share without waiting for a delivery each time; parked jobs
    /// of kinds this process does not run are delivered again instead.
    pub async fn execute(&self, kind: &str) -> anyhow::Result<Executed> {
        let _slot = self.slots.acquire().await?;
        let Some(mut job) = self.claims.call(kind.to_string()).await? else {
            return Ok(Executed::Skipped);
        };
        let cap = self.parts.max_running_per_owner;
        let kinds: Vec<&str> = self.parts.kinds.names().collect();
        loop {
            let owner = job.owner.clone();
            let executed = self.run_claimed(job).await?;
            if cap == 0 {
                return Ok(executed);
            }
            let jobs = &self.parts.jobs;
            let next = match self.stop_claiming.is_cancelled() {
                false => jobs.claim_parked(&owner, &kinds, &self.parts.worker_id, cap).await?,
                true => None,
            };
            match next {
                Some(next) => job = next,
                None => {
                    let unparked = jobs.unpark(Some(std::slice::from_ref(&owner)), cap).await?;
                    let tasks: Vec<DeliveryTask> = unparked.iter().map(DeliveryTask::due_now).collect();
                    self.parts.delivery.push(&tasks).await?;
                    return Ok(executed);
                }
            }
        }
    }

    /// From now on, a slot whose attempt ended leaves its owner's parked jobs to deliveries
    /// (the process is draining).
    pub fn stop_claiming(&self) {
        self.stop_claiming.cancel();
    }

    /// Runs one claimed job and records how its attempt ended.
    async fn run_claimed(&self, job: Job) -> anyhow::Result<Executed> {
        self.parts.logs.publish(&job.id, JobEvent::Status { status: JobStatus::Running });
        let token = CancellationToken::new();
        self.running.insert(&job.id, token.clone());
        let (outcome, logged) = self.attempt(&job, token.clone()).await;
        self.running.remove(&job.id);
        if logged {
            // The job's lines are stored before its final status is.
            self.parts.logs.flush().await;
        }
        let recorded = self.outcomes.call((job.id.clone(), outcome.clone())).await?;
        if !recorded {
            return Ok(Executed::Superseded);
        }
        let status = match &outcome {
            AttemptOutcome::Succeeded(_) => JobStatus::Succeeded,
            AttemptOutcome::Failed { retry_at: Some(_), .. } => JobStatus::Failed,
            AttemptOutcome::Failed { retry_at: None, .. } => JobStatus::Dead,
            AttemptOutcome::Cancelled => JobStatus::Cancelled,
        };
        if let AttemptOutcome::Failed { retry_at: Some(run_at), .. } = outcome {
            let task = DeliveryTask {
                job_id: job.id.clone(),
                kind: job.kind.clone(),
                run_at,
                priority: job.priority,
            };
            self.parts.delivery.push(&[task]).await?;
        }
        let event = if status.is_final() { JobEvent::End { status } } else { JobEvent::Status { status } };
        self.parts.logs.publish(&job.id, event);
        Ok(Executed::Finished(status))
    }

    /// Runs the handler once and turns whatever it did into an outcome; also says whether
    /// the attempt logged any line.
    async fn attempt(&self, job: &Job, token: CancellationToken) -> (AttemptOutcome, bool) {
        let Some(kind) = self.parts.kinds.get(&job.kind).cloned() else {
            let error = format!("no handler for kind {:?}", job.kind);
            return (AttemptOutcome::Failed { error, retry_at: None }, false);
        };
        let policy = kind.policy();
        let timeout = kind.timeout(&job.payload);
        // Lines exist only from earlier attempts; the first attempt starts at 1.
        let last_seq =
            if job.attempt > 1 { self.parts.jobs.last_log_seq(&job.id).await.unwrap_or(0) } else { 0 };
        let ctx = JobContext::new(
            self.parts.backends.clone(),
            job.id.clone(),
            job.owner.clone(),
            job.attempt,
            last_seq,
            token.clone(),
            self.parts.logs.clone(),
            self.parts.jobs.clone(),
        );
        let run = AssertUnwindSafe(kind.run(job.payload.clone(), &ctx)).catch_unwind();
        let result: Result<Value, JobError> = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                Err(JobError::Failed(format!("the handler panicked: {}", panic_message(&panic))))
            }
            Err(_) => Err(JobError::Failed(format!("timed out after {timeout:?}"))),
        };
        let outcome = match result.map_err(|e| e.map_message(crate::nul::scrub_text)) {
            Ok(value) => AttemptOutcome::Succeeded(crate::nul::scrub(value)),
            Err(_) if token.is_cancelled() => AttemptOutcome::Cancelled,
            Err(JobError::Cancelled) => AttemptOutcome::Failed {
                error: "the handler stopped as cancelled without a cancellation request".into(),
                retry_at: None,
            },
            Err(JobError::Permanent(error)) => AttemptOutcome::Failed { error, retry_at: None },
            Err(JobError::Failed(error)) => {
                let retry_at =
                    (job.attempt < job.max_attempts).then(|| Utc::now() + retry_delay(&policy, job.attempt));
                AttemptOutcome::Failed { error, retry_at }
            }
        };
        match &outcome {
            AttemptOutcome::Failed { error, retry_at: Some(at) } => {
                ctx.warn(format!("attempt {} failed: {error}; retrying at {at}", job.attempt))
            }
            AttemptOutcome::Failed { error, retry_at: None } => {
                ctx.error(format!("attempt {} failed: {error}; no attempts left", job.attempt))
            }
            AttemptOutcome::Cancelled => ctx.warn("cancelled"),
            AttemptOutcome::Succeeded(_) => {}
        }
        (outcome, ctx.logged_any(last_seq + 1))
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}
