//! The job engine as the API sees it: submit (validated against the kind and against what
//! the requester may submit), cancel, retry, and schedules. Workers run what it submits (see
//! `runner` and `worker`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;
use storage::events::EventBus;
use storage::sql::{Job, JobStore, NewJob, Schedule, ScheduleStore};

use crate::cron::{CronError, CronSpec};
use crate::delivery::{Delivery, DeliveryTask};
use crate::events::{CANCEL_TOPIC, CancelRequest};
use crate::kind::{Access, ErasedKind, Kind, PayloadError, Registry};
use crate::kinds::SYSTEM_OWNER;

/// On whose authority a job is submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// A tenant through the job routes: only `Access::Tenant` kinds acting for the owner, at
    /// no more than the kind's default priority, within the owner's queued-job cap.
    Tenant,
    /// An administrator through the job routes: any registered kind, any priority, no cap.
    Administrator,
    /// Engram on the owner's behalf (a service route that checked its caller, a schedule
    /// firing): any kind and priority, within the owner's queued-job cap.
    Engram,
}

/// Limits on what one owner may have queued.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnerCaps {
    /// Most jobs waiting (queued, or failed awaiting a retry) per owner; 0 = none.
    pub max_queued: u64,
}

/// How long a submitter past its queued cap is told to wait before trying again.
pub const QUEUE_FULL_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// A job to submit.
#[derive(Debug, Clone)]
pub struct Submit {
    pub kind: String,
    pub payload: Value,
    pub owner: String,
    pub run_at: Option<DateTime<Utc>>,
    pub priority: Option<i32>,
    pub idempotency_key: Option<String>,
    pub parent_id: Option<String>,
    pub requester: Requester,
}

impl Submit {
    /// A job of kind `K` for `owner` on `requester`'s authority, at the kind's defaults: how
    /// Engram's own code submits, so a kind is named only by `K::NAME` and its payload typed.
    pub fn of<K: Kind>(payload: &K::Payload, owner: impl Into<String>, requester: Requester) -> Self {
        Self {
            kind: K::NAME.to_string(),
            // Payloads are plain structs of strings, numbers and flags: always JSON.
            payload: serde_json::to_value(payload).expect("a job payload serialises to JSON"),
            owner: owner.into(),
            run_at: None,
            priority: None,
            idempotency_key: None,
            parent_id: None,
            requester,
        }
    }

    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// Where a job stood when [`JobEngine::wait`] stopped waiting for it.
#[derive(Debug, Clone)]
pub enum Waited {
    /// It reached a final status (succeeded, dead or cancelled).
    Ended(Job),
    /// Still queued or running when the bound passed.
    Running(Job),
}

/// Why a submission was refused, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("kind: unknown job kind {0:?}")]
    UnknownKind(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The requester may not submit this (a kind or priority for administrators, a payload
    /// acting for another user).
    #[error("{0}")]
    Forbidden(String),
    /// The owner has as many jobs waiting as `OwnerCaps::max_queued` allows.
    #[error("{owner_jobs} jobs are waiting already, the most one owner may have queued is {cap}")]
    QueueFull { owner_jobs: u64, cap: u64 },
    #[error(transparent)]
    Cron(#[from] CronError),
    #[error(transparent)]
    Store(#[from] storage::StoreError),
    #[error("the queue refused the job: {0:#}")]
    Delivery(anyhow::Error),
}

#[derive(Clone)]
pub struct JobEngine {
    pub jobs: Arc<dyn JobStore>,
    pub schedules: Arc<dyn ScheduleStore>,
    pub events: Arc<dyn EventBus>,
    pub kinds: Registry,
    pub delivery: Arc<dyn Delivery>,
    pub caps: OwnerCaps,
}

/// Validates `payload` against `kind` and refuses what `requester` may not submit for
/// `owner`: a tenant learns nothing of a kind's payload that it may not submit.
fn check_submission(
    kind: &dyn ErasedKind,
    payload: &Value,
    requester: Requester,
    owner: &str,
    priority: Option<i32>,
) -> Result<(), SubmitError> {
    if requester != Requester::Tenant {
        kind.check_payload(payload)?;
        return Ok(());
    }
    let name = kind.name();
    match kind.access() {
        Access::Tenant => {}
        Access::Admin => {
            return Err(SubmitError::Forbidden(format!("kind: {name} jobs are for administrators only")));
        }
        Access::Test => {
            return Err(SubmitError::Forbidden(format!(
                "kind: {name} exists for tests and is for administrators only"
            )));
        }
    }
    let acts_for = kind.check_payload(payload)?;
    if acts_for.is_some_and(|user| user != owner) {
        return Err(SubmitError::Forbidden("payload.user_id: a job may act only for its owner".into()));
    }
    let default = kind.policy().priority;
    if priority.is_some_and(|p| p > default) {
        return Err(SubmitError::Forbidden(format!(
            "priority: above the kind's default ({default}) is for administrators"
        )));
    }
    Ok(())
}

impl JobEngine {
    fn new_job(&self, submit: Submit) -> Result<NewJob, SubmitError> {
        let kind =
            self.kinds.get(&submit.kind).ok_or_else(|| SubmitError::UnknownKind(submit.kind.clone()))?;
        check_submission(kind.as_ref(), &submit.payload, submit.requester, &submit.owner, submit.priority)?;
        let policy = kind.policy();
        Ok(NewJob {
            id: storage::ids::new_id(),
            kind: submit.kind,
            owner: submit.owner,
            payload: submit.payload,
            max_attempts: policy.max_attempts,
            priority: submit.priority.unwrap_or(policy.priority),
            run_at: submit.run_at.unwrap_or_else(Utc::now),
            parent_id: submit.parent_id,
            idempotency_key: submit.idempotency_key,
        })
    }

    /// Records and enqueues one job; with an idempotency key already used by the same
    /// owner, returns that job instead (`false`).
    pub async fn submit(&self, submit: Submit) -> Result<(Job, bool), SubmitError> {
        let mut created = self.submit_many(vec![submit]).await.map_err(|(_, e)| e)?;
        Ok(created.pop().expect("one in, one out"))
    }

    /// Records and enqueues many jobs at once; the error names the index of the first bad one.
    pub async fn submit_many(&self, submits: Vec<Submit>) -> Result<Vec<(Job, bool)>, (usize, SubmitError)> {
        let requesters: Vec<Requester> = submits.iter().map(|s| s.requester).collect();
        let new_jobs = submits
            .into_iter()
            .enumerate()
            .map(|(i, s)| self.new_job(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_queued_caps(&new_jobs, &requesters).await.map_err(|e| (0, e))?;
        let created = self.jobs.create_many(new_jobs).await.map_err(|e| (0, e.into()))?;
        let tasks: Vec<DeliveryTask> = created
            .iter()
            .filter(|(_, fresh)| *fresh)
            .map(|(job, _)| DeliveryTask {
                job_id: job.id.clone(),
                kind: job.kind.clone(),
                run_at: job.run_at,
                priority: job.priority,
            })
            .collect();
        // A push lost here is repaired by the workers' sweep of due queued jobs.
        self.delivery.push(&tasks).await.map_err(|e| (0, SubmitError::Delivery(e)))?;
        Ok(created)
    }

    /// Refuses submissions that would take an owner past `OwnerCaps::max_queued`; an
    /// administrator's submissions and Engram's own upkeep (`SYSTEM_OWNER`) are not counted.
    async fn check_queued_caps(&self, jobs: &[NewJob], requesters: &[Requester]) -> Result<(), SubmitError> {
        let cap = self.caps.max_queued;
        if cap == 0 {
            return Ok(());
        }
        let mut adding: std::collections::BTreeMap<&str, u64> = Default::default();
        for (job, requester) in jobs.iter().zip(requesters) {
            if *requester != Requester::Administrator && job.owner != SYSTEM_OWNER {
                *adding.entry(job.owner.as_str()).or_default() += 1;
            }
        }
        for (owner, count) in adding {
            let waiting = self.jobs.waiting_count(owner).await?;
            if waiting + count > cap {
                return Err(SubmitError::QueueFull { owner_jobs: waiting, cap });
            }
        }
        Ok(())
    }

    /// Waits up to `bound` for job `id` to end, polling its record (10 ms at first, backing
    /// off to 200 ms). `None` when there is no such job.
    pub async fn wait(&self, id: &str, bound: Duration) -> Result<Option<Waited>, storage::StoreError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let Some(job) = self.jobs.get(id).await? else { return Ok(None) };
            if job.status.is_final() {
                return Ok(Some(Waited::Ended(job)));
            }
            if started.elapsed() + pause > bound {
                return Ok(Some(Waited::Running(job)));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Cancels a queued job, or asks the worker running it to stop.
    pub async fn cancel(&self, id: &str) -> Result<Option<Job>, storage::StoreError> {
        let job = self.jobs.cancel(id).await?;
        if job.as_ref().is_some_and(|j| j.cancel_requested) {
            let request = serde_json::to_value(CancelRequest { job_id: id.to_string() }).expect("serialises");
            self.events.publish(CANCEL_TOPIC, request).await?;
        }
        Ok(job)
    }

    /// Puts a failed, dead or cancelled job back in the queue.
    pub async fn retry(&self, id: &str) -> Result<Option<Job>, SubmitError> {
        let Some(job) = self.jobs.retry(id).await? else { return Ok(None) };
        let task = DeliveryTask {
            job_id: job.id.clone(),
            kind: job.kind.clone(),
            run_at: job.run_at,
            priority: job.priority,
        };
        self.delivery.push(&[task]).await.map_err(SubmitError::Delivery)?;
        Ok(Some(job))
    }

    /// Validates and stores a schedule, computing its first tick.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_schedule(
        &self,
        requester: Requester,
        owner: &str,
        kind: &str,
        payload: Value,
        cron: &str,
        timezone: &str,
        paused: bool,
    ) -> Result<Schedule, SubmitError> {
        let handler = self.kinds.get(kind).ok_or_else(|| SubmitError::UnknownKind(kind.to_string()))?;
        check_submission(handler.as_ref(), &payload, requester, owner, None)?;
        let spec = CronSpec::parse(cron, timezone)?;
        let now = Utc::now();
        let schedule = Schedule {
            id: storage::ids::new_id(),
            owner: owner.to_string(),
            kind: kind.to_string(),
            payload,
            cron: cron.to_string(),
            timezone: timezone.to_string(),
            paused,
            next_run_at: spec.next_after(now),
            last_run_at: None,
            created_at: now,
            updated_at: now,
        };
        self.schedules.create(&schedule).await?;
        Ok(schedule)
    }

    /// Re-validates an edited schedule and recomputes its next tick.
    pub async fn update_schedule(
        &self,
        requester: Requester,
        mut schedule: Schedule,
    ) -> Result<Option<Schedule>, SubmitError> {
        let handler =
            self.kinds.get(&schedule.kind).ok_or_else(|| SubmitError::UnknownKind(schedule.kind.clone()))?;
        check_submission(handler.as_ref(), &schedule.payload, requester, &schedule.owner, None)?;
        let spec = CronSpec::parse(&schedule.cron, &schedule.timezone)?;
        schedule.next_run_at = spec.next_after(Utc::now());
        Ok(self.schedules.update(&schedule).await?.then_some(schedule))
    }

    /// Enqueues every due tick of every schedule, each once however many processes call
    /// this: the tick is claimed by moving the schedule forward, and the job's idempotency
    /// key names the tick.
    pub async fn fire_due_schedules(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut fired = 0;
        for schedule in self.schedules.due(now, 100).await? {
            let Some(tick) = schedule.next_run_at else { continue };
            let next =
                CronSpec::parse(&schedule.cron, &schedule.timezone).ok().and_then(|s| s.next_after(now));
            if !self.schedules.advance(&schedule.id, tick, next).await? {
                continue;
            }
            let submit = Submit {
                kind: schedule.kind.clone(),
                payload: schedule.payload.clone(),
                owner: schedule.owner.clone(),
                run_at: None,
                priority: None,
                idempotency_key: Some(format!("schedule:{}:{}", schedule.id, tick.timestamp_millis())),
                parent_id: None,
                requester: Requester::Engram,
            };
            match self.submit(submit).await {
                Ok(_) => fired += 1,
                Err(e) => tracing::error!(schedule = %schedule.id, error = %e, "a scheduled job was refused"),
            }
        }
        Ok(fired)
    }
}
