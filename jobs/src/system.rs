//! The job system of one process: the engine the API submits through, and the worker
//! runtime that registers, heartbeats (with its consumers' liveness), runs delivered jobs,
//! rescues the jobs of workers that stopped heartbeating, re-pushes jobs left waiting past the
//! stall bound, fires schedules, and drains on shutdown.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use storage::Backends;
use storage::config::JobsConfig;
use storage::sql::{Job, WorkerRecord, WorkerStore};
use tokio_util::sync::CancellationToken;

use crate::delivery::{Consumers, Delivery, DeliveryTask, QueueBackend};
use crate::engine::{JobEngine, OwnerCaps};
use crate::events::{CANCEL_TOPIC, CancelRequest};
use crate::kind::Registry;
use crate::kinds::{
    AgentRun, BlobRepair, CommitSession, ImportMemories, IndexMemoryVectors, IngestConversation, Noop,
    ProcessSession, RebuildIndex, RepoSync, TombstoneGc,
};
use crate::logs::LogWriter;
use crate::runner::{Runner, RunnerParts, RunningJobs};
use services::Services;

/// Every kind this process runs; the test kinds only when `test_kinds`
/// (`ENGRAM_ENABLE_TEST_KINDS`).
pub fn all_kinds(services: &Services, test_kinds: bool) -> Registry {
    let memory = &services.git_memory;
    let registry = if test_kinds { Registry::new().with(Noop) } else { Registry::new() };
    registry
        .with(TombstoneGc {
            sync: services.blob_sync.clone(),
            default_retention_days: services.tombstone_retention_days,
        })
        .with(BlobRepair(services.blob_sync.clone()))
        .with(ProcessSession(memory.clone()))
        .with(CommitSession(memory.clone()))
        .with(RepoSync(memory.clone()))
        .with(RebuildIndex(memory.clone()))
        .with(IngestConversation { memories: services.memories.clone(), llm: services.llm.clone() })
        .with(ImportMemories(services.memories.clone()))
        .with(IndexMemoryVectors(services.memories.clone()))
        .with(AgentRun(services.evals.clone()))
}

/// How a worker runtime behaves.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Jobs run at once by this process, over all kinds.
    pub concurrency: usize,
    /// Kinds taken by this process; every kind when empty.
    pub kinds: Vec<String>,
    pub heartbeat: Duration,
    /// A worker not heard from for this long is presumed dead and its jobs re-queued.
    pub stale_after: Duration,
    /// On shutdown, how long running jobs may take to finish before they are re-queued.
    pub drain: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self::from_config(&storage::config::WorkerConfig::default())
    }
}

impl WorkerOptions {
    pub fn from_config(config: &storage::config::WorkerConfig) -> Self {
        Self {
            concurrency: config.concurrency as usize,
            kinds: Vec::new(),
            heartbeat: Duration::from_secs(config.heartbeat_secs),
            stale_after: Duration::from_secs(config.stale_after_secs),
            drain: Duration::from_secs(config.drain_secs),
        }
    }
}

#[derive(Clone)]
pub struct JobSystem {
    pub engine: JobEngine,
    /// What the handlers of this process work with, shared with the API's routes.
    pub services: Services,
    backends: Backends,
    pub workers: Arc<dyn WorkerStore>,
    queue: QueueBackend,
    logs: LogWriter,
    limits: JobsConfig,
}

impl JobSystem {
    /// Sets up the queue's tables (SQL backends) and the engine over it.
    pub async fn connect(
        backends: &Backends,
        queue: &QueueBackend,
        services: &Services,
        limits: &JobsConfig,
    ) -> anyhow::Result<Self> {
        queue.setup().await?;
        let jobs = backends.database.job_store();
        Ok(Self {
            services: services.clone(),
            engine: JobEngine {
                jobs: jobs.clone(),
                schedules: backends.database.schedule_store(),
                events: backends.events.clone(),
                kinds: all_kinds(services, limits.test_kinds),
                delivery: Arc::new(queue.clone()),
                caps: OwnerCaps { max_queued: limits.max_queued_per_owner },
            },
            workers: backends.database.worker_store(),
            backends: backends.clone(),
            logs: LogWriter::spawn(jobs, backends.events.clone()),
            queue: queue.clone(),
            limits: *limits,
        })
    }

    /// Runs jobs until `shutdown` resolves, then drains.
    pub async fn run_worker(
        &self,
        options: WorkerOptions,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let kinds = self.engine.kinds.only(&options.kinds).map_err(|e| anyhow::anyhow!(e))?;
        let reaped = self.services.evals.reap_orphaned_agents();
        if reaped > 0 {
            tracing::warn!(reaped, "killed agents that a dead worker left running");
        }
        let host = hostname();
        let worker_id = format!("{host}-{}-{}", std::process::id(), &storage::ids::new_id()[20..]);
        let record = WorkerRecord {
            id: worker_id.clone(),
            host,
            pid: std::process::id() as i32,
            kinds: kinds.names().map(str::to_string).collect(),
            concurrency: options.concurrency as i32,
            started_at: Utc::now(),
            last_seen: Utc::now(),
            stopping: false,
            running_jobs: Vec::new(),
            consumers: Vec::new(),
        };
        self.workers.register(&record).await?;
        let runner = Runner::new(RunnerParts {
            backends: self.backends.clone(),
            worker_id: worker_id.clone(),
            jobs: self.engine.jobs.clone(),
            kinds,
            logs: self.logs.clone(),
            delivery: Arc::new(self.queue.clone()),
            concurrency: options.concurrency,
            max_running_per_owner: self.limits.max_running_per_owner,
        });
        let stop = CancellationToken::new();
        let consumers = Consumers::default();
        let housekeeping = tokio::spawn(housekeep(
            self.clone(),
            record,
            Liveness { running: runner.running.clone(), consumers: consumers.clone() },
            options.clone(),
            stop.clone(),
        ));
        let canceller = tokio::spawn(listen_for_cancels(
            self.engine.events.clone(),
            runner.running.clone(),
            stop.clone(),
        ));
        tracing::info!(worker_id, concurrency = options.concurrency, "job worker started");
        let draining = runner.clone();
        let shutdown = async move {
            shutdown.await;
            draining.stop_claiming();
        };
        let result = self
            .queue
            .run_workers(runner.clone(), &consumers, &worker_id, options.concurrency, options.drain, shutdown)
            .await;
        stop.cancel();
        let _ = tokio::join!(housekeeping, canceller);
        // Whatever did not finish within the drain deadline goes back to the queue.
        let requeued = self.engine.jobs.requeue_worker_jobs(&worker_id).await?;
        self.redeliver(&requeued).await?;
        self.workers.remove(&worker_id).await?;
        tracing::info!(worker_id, requeued = requeued.len(), "job worker stopped");
        result
    }

    async fn redeliver(&self, jobs: &[Job]) -> anyhow::Result<()> {
        let tasks: Vec<DeliveryTask> = jobs.iter().map(DeliveryTask::due_now).collect();
        self.queue.push(&tasks).await
    }

    /// Re-queues the jobs of every worker not heard from since `stale_after` ago.
    pub async fn rescue_orphans(&self, own_id: &str, stale_after: Duration) -> anyhow::Result<usize> {
        let before = Utc::now() - chrono::Duration::from_std(stale_after)?;
        let mut rescued = 0;
        for worker in self.workers.stale(before).await? {
            if worker == own_id {
                continue;
            }
            let jobs = self.engine.jobs.requeue_worker_jobs(&worker).await?;
            self.redeliver(&jobs).await?;
            self.workers.remove(&worker).await?;
            if !jobs.is_empty() {
                tracing::warn!(
                    worker,
                    jobs = jobs.len(),
                    "re-queued the jobs of a worker that stopped heartbeating"
                );
            }
            rescued += jobs.len();
        }
        Ok(rescued)
    }
}

/// What a heartbeat reports and checks of this process: its running jobs (for cancel requests
/// whose event was missed) and its consumers.
struct Liveness {
    running: RunningJobs,
    consumers: Consumers,
}

/// Heartbeats, cancellation checks, orphan rescue, the re-delivery watchdog and schedules,
/// until `stop`.
async fn housekeep(
    system: JobSystem,
    record: WorkerRecord,
    liveness: Liveness,
    options: WorkerOptions,
    stop: CancellationToken,
) {
    let mut heartbeat = tokio::time::interval(options.heartbeat);
    let mut schedules = tokio::time::interval(Duration::from_secs(1));
    let mut watchdog = tokio::time::interval((system.limits.stall_after() / 5).max(Duration::from_secs(1)));
    let mut unpark = tokio::time::interval(UNPARK_EVERY);
    let mut vacuum = tokio::time::interval_at(tokio::time::Instant::now() + VACUUM_EVERY, VACUUM_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = vacuum.tick() => {
                match system.queue.vacuum(&record.kinds, VACUUM_EVERY).await {
                    Ok(removed) => tracing::debug!(removed, "vacuumed finished deliveries"),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "vacuuming the queue failed"),
                }
            }
            _ = watchdog.tick() => {
                if let Err(e) = redeliver_stalled(&system).await {
                    tracing::warn!(error = %format!("{e:#}"), "the re-delivery watchdog failed");
                }
            }
            _ = unpark.tick() => {
                if let Err(e) = unpark_with_room(&system).await {
                    tracing::warn!(error = %format!("{e:#}"), "delivering parked jobs failed");
                }
            }
            _ = heartbeat.tick() => {
                if let Err(e) = heartbeat_once(&system, &record, &liveness, &options).await {
                    tracing::warn!(error = %format!("{e:#}"), "worker heartbeat failed");
                }
            }
            _ = schedules.tick() => {
                if let Err(e) = system.engine.fire_due_schedules(Utc::now()).await {
                    tracing::warn!(error = %format!("{e:#}"), "firing schedules failed");
                }
                if let Err(e) = system.queue.maintain(&record.kinds).await {
                    tracing::warn!(error = %format!("{e:#}"), "queue upkeep failed");
                }
            }
        }
    }
}

async fn heartbeat_once(
    system: &JobSystem,
    record: &WorkerRecord,
    liveness: &Liveness,
    options: &WorkerOptions,
) -> anyhow::Result<()> {
    let consumers = liveness.consumers.liveness();
    if !system.workers.heartbeat(&record.id, false, &consumers).await? {
        system.workers.register(&WorkerRecord { consumers, ..record.clone() }).await?;
    }
    // A cancel request whose bus event was missed is still honoured.
    let running = &liveness.running;
    for id in running.ids() {
        if system.engine.jobs.get(&id).await?.is_some_and(|j| j.cancel_requested) {
            running.cancel(&id);
        }
    }
    system.rescue_orphans(&record.id, options.stale_after).await?;
    Ok(())
}

/// How often, and after how long, finished deliveries are removed from the queue.
const VACUUM_EVERY: Duration = Duration::from_secs(600);

/// How often parked jobs whose owner has room are delivered again, for the rare park that
/// raced with its owner's last attempt ending (attempt ends deliver them otherwise).
const UNPARK_EVERY: Duration = Duration::from_secs(2);

async fn unpark_with_room(system: &JobSystem) -> anyhow::Result<()> {
    let unparked = system.engine.jobs.unpark(None, system.limits.max_running_per_owner).await?;
    if !unparked.is_empty() {
        tracing::debug!(jobs = unparked.len(), "delivering parked jobs whose owners have room");
        system.redeliver(&unparked).await?;
    }
    Ok(())
}

/// Most jobs one watchdog sweep re-pushes.
const WATCHDOG_BATCH: u32 = 1000;

/// The watchdog: a due job nobody picked up within the stall bound has probably lost its
/// delivery (a crash between recording and pushing, a queue flushed, a consumer that died
/// holding it), so it is pushed again — once per due time, whichever worker sweeps first. A
/// duplicate delivery is harmless: only one claim of a job succeeds.
async fn redeliver_stalled(system: &JobSystem) -> anyhow::Result<()> {
    let before = Utc::now() - chrono::Duration::from_std(system.limits.stall_after())?;
    let stalled = system.engine.jobs.take_for_redelivery(before, WATCHDOG_BATCH).await?;
    if let Some(oldest) = stalled.first() {
        let mut kinds: Vec<&str> = stalled.iter().map(|j| j.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        tracing::warn!(
            jobs = stalled.len(),
            kinds = %kinds.join(","),
            oldest = %oldest.id,
            waited_secs = (Utc::now() - oldest.run_at).num_seconds(),
            "pushing jobs that waited past the stall bound to the queue again"
        );
        system.redeliver(&stalled).await?;
    }
    Ok(())
}

async fn listen_for_cancels(
    events: Arc<dyn storage::events::EventBus>,
    running: RunningJobs,
    stop: CancellationToken,
) {
    let mut requests = match events.subscribe(CANCEL_TOPIC).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for cancel requests; relying on heartbeats");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = requests.next() => match next {
                Some(event) => {
                    if let Ok(request) = serde_json::from_value::<CancelRequest>(event.payload) {
                        running.cancel(&request.job_id);
                    }
                }
                None => return,
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}
