//! Supervised consumers. Each lane's apalis worker (its consumer) runs under a supervisor
//! that notices when it ends, fails or stops asking the queue for work, logs why, and starts
//! a fresh one after a backoff. apalis 1.0 gives up on a worker whose backend fails once (a
//! busy SQLite file, a dropped connection, a task it cannot decode): without this, that kind
//! would never run again in the process while every other kind kept working (README, the
//! apalis workarounds). What each consumer is doing is kept in a `ConsumerProbe`, which the
//! worker's heartbeat reports (`ConsumerLiveness`) for `GET /api/v1/workers` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::error::WorkerError;
use apalis_core::worker::context::WorkerContext;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use storage::sql::ConsumerLiveness;
use tokio_util::sync::CancellationToken;

/// A consumer that has not asked the queue for work for this long, while it had room for a
/// task or was not even driven, is stuck: it is dropped and replaced. A healthy idle consumer
/// asks every 100–500 ms and is driven at least every apalis heartbeat (2 s).
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// How often the supervisor looks at its consumer.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The first restart waits this long; each further one twice as long, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A consumer that ran this long before it ended starts the backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

fn now_millis() -> i64 {
    Utc::now().timestamp_millis()
}

/// What one lane's consumer is doing, updated by its backend (`Watched`) and handler, read by
/// its supervisor and the worker's heartbeat.
#[derive(Debug)]
pub struct ConsumerProbe {
    pub kind: String,
    pub lane: String,
    alive: AtomicBool,
    /// When the consumer last polled its backend at all (readiness, heartbeats, acks).
    last_driven: AtomicI64,
    /// When the consumer last asked its backend for a task; 0 = never.
    last_fetch: AtomicI64,
    in_flight: AtomicU32,
    restarts: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ConsumerProbe {
    pub fn new(kind: &str, lane: &str) -> Arc<Self> {
        Arc::new(Self {
            kind: kind.to_string(),
            lane: lane.to_string(),
            alive: AtomicBool::new(false),
            last_driven: AtomicI64::new(0),
            last_fetch: AtomicI64::new(0),
            in_flight: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    fn started(&self) {
        let now = now_millis();
        self.last_driven.store(now, Ordering::Relaxed);
        self.last_fetch.store(now, Ordering::Relaxed);
        self.alive.store(true, Ordering::Relaxed);
    }

    fn ended(&self, why: String) {
        self.alive.store(false, Ordering::Relaxed);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn driven(&self) {
        self.last_driven.store(now_millis(), Ordering::Relaxed);
    }

    fn asked_for_work(&self) {
        let now = now_millis();
        self.last_driven.store(now, Ordering::Relaxed);
        self.last_fetch.store(now, Ordering::Relaxed);
    }

    /// Counts a delivery as running until the guard drops.
    pub fn running(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Why the consumer is stuck, if it is: it has not asked for work for `STALL_AFTER`
    /// although it had room for a task (or was not driven at all).
    fn stalled(&self, concurrency: usize, now: i64) -> Option<String> {
        let quiet_for =
            |at: &AtomicI64| Duration::from_millis((now - at.load(Ordering::Relaxed)).max(0) as u64);
        let (fetch_quiet, driven_quiet) = (quiet_for(&self.last_fetch), quiet_for(&self.last_driven));
        let in_flight = self.in_flight.load(Ordering::Relaxed) as usize;
        if fetch_quiet < STALL_AFTER {
            return None;
        }
        if in_flight < concurrency {
            return Some(format!(
                "it has not asked the queue for work for {} s with {in_flight} of {concurrency} deliveries running",
                fetch_quiet.as_secs()
            ));
        }
        (driven_quiet >= STALL_AFTER)
            .then(|| format!("it has not polled its queue for {} s", driven_quiet.as_secs()))
    }
}

/// A running delivery of a lane (see `ConsumerProbe::running`).
pub struct InFlight(Arc<ConsumerProbe>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The consumers of one worker process.
#[derive(Clone, Default)]
pub struct Consumers {
    probes: Arc<Mutex<Vec<Arc<ConsumerProbe>>>>,
}

impl Consumers {
    pub fn probe(&self, kind: &str, lane: &str) -> Arc<ConsumerProbe> {
        let probe = ConsumerProbe::new(kind, lane);
        self.probes.lock().unwrap_or_else(|p| p.into_inner()).push(probe.clone());
        probe
    }

    /// Per kind: alive when every lane's consumer is; the oldest of the lanes' last fetches.
    pub fn liveness(&self) -> Vec<ConsumerLiveness> {
        let probes = self.probes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut kinds: BTreeMap<&str, ConsumerLiveness> = BTreeMap::new();
        for probe in &probes {
            let fetched = probe.last_fetch.load(Ordering::Relaxed);
            let fetched = (fetched > 0).then(|| DateTime::from_timestamp_millis(fetched)).flatten();
            let error = probe.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let entry = kinds.entry(&probe.kind).or_insert_with(|| ConsumerLiveness {
                kind: probe.kind.clone(),
                alive: true,
                last_fetch_at: fetched,
                in_flight: 0,
                restarts: 0,
                last_error: None,
            });
            entry.alive &= probe.alive.load(Ordering::Relaxed);
            entry.last_fetch_at = entry.last_fetch_at.min(fetched);
            entry.in_flight += probe.in_flight.load(Ordering::Relaxed);
            entry.restarts += probe.restarts();
            entry.last_error = error.or(entry.last_error.take());
        }
        kinds.into_values().collect()
    }
}

/// A backend that tells its lane's probe when it is polled and asked for tasks.
pub struct Watched<B> {
    inner: B,
    probe: Arc<ConsumerProbe>,
}

impl<B> Watched<B> {
    pub fn new(inner: B, probe: Arc<ConsumerProbe>) -> Self {
        Self { inner, probe }
    }
}

impl<B: Backend> Backend for Watched<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        self.probe.driven();
        self.inner.poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.probe.asked_for_work();
        self.inner.poll_next(cx, worker)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_close(cx, worker)
    }
}

impl<B: BackendConfig> BackendConfig for Watched<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.inner.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.inner.middleware(worker)
    }
}

impl<B: WireFormatBackend> WireFormatBackend for Watched<B> {
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        self.inner.codec()
    }
}

/// Starts one consumer of a lane: its apalis worker named `name`, which drains and returns
/// once `stop` is cancelled.
pub type StartConsumer =
    Box<dyn Fn(String, CancellationToken) -> BoxFuture<'static, Result<(), WorkerError>> + Send + Sync>;

/// How one consumer run ended.
enum Ended {
    /// `stop` was cancelled and the consumer drained.
    Stopped,
    Failed(String),
}

/// Runs a lane's consumers one after another until `stop`: whenever one ends by itself,
/// fails or stalls, it is logged and replaced after a backoff. Each consumer has a name of
/// its own (`<worker>:<lane>`, then `…:r<n>`): apalis refuses a name heartbeated moments ago,
/// and the tasks a dropped consumer held are handed back by apalis' orphan recovery (Engram's
/// jobs table is the truth; a duplicate delivery claims nothing).
pub async fn supervise(
    probe: Arc<ConsumerProbe>,
    worker_name: String,
    concurrency: usize,
    start: StartConsumer,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    for run in 0u64.. {
        let name = match run {
            0 => format!("{worker_name}:{}", probe.lane),
            n => format!("{worker_name}:{}:r{n}", probe.lane),
        };
        probe.started();
        let started = tokio::time::Instant::now();
        let ended = watch(&probe, concurrency, start(name.clone(), stop.clone()), &stop).await;
        let why = match ended {
            Ended::Stopped => {
                probe.alive.store(false, Ordering::Relaxed);
                return;
            }
            Ended::Failed(why) => why,
        };
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(
            kind = %probe.kind,
            consumer = %name,
            restarts = probe.restarts() + 1,
            retry_in_ms = backoff.as_millis() as u64,
            "the job consumer stopped: {why}; starting a new one"
        );
        probe.ended(why);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Drives one consumer until it ends, or until it stalls (then it is dropped).
async fn watch(
    probe: &ConsumerProbe,
    concurrency: usize,
    consumer: BoxFuture<'static, Result<(), WorkerError>>,
    stop: &CancellationToken,
) -> Ended {
    tokio::pin!(consumer);
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            ended = &mut consumer => {
                return match ended {
                    _ if stop.is_cancelled() => Ended::Stopped,
                    Ok(()) => Ended::Failed("it ended by itself (its queue stream closed)".into()),
                    Err(e) => Ended::Failed(format!("it failed: {e}")),
                };
            }
            _ = check.tick() => {
                if stop.is_cancelled() {
                    continue;
                }
                if let Some(why) = probe.stalled(concurrency, now_millis()) {
                    return Ended::Failed(why);
                }
            }
        }
    }
}
