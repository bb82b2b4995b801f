//! What a handler gets besides its payload: its job's id and attempt, progress and log
//! reporting, and cooperative cancellation (including killing child processes).

use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use services::process::{ChildCommand, ProcessGroup, read_lines};
use storage::Backends;
use storage::sql::{JobStore, LogLine};
use tokio_util::sync::CancellationToken;

use crate::error::JobError;
use crate::events::JobEvent;
use crate::logs::LogWriter;

pub struct JobContext {
    backends: Backends,
    job_id: String,
    owner: String,
    attempt: i32,
    cancel: CancellationToken,
    next_seq: AtomicI64,
    logs: LogWriter,
    jobs: Arc<dyn JobStore>,
}

impl JobContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backends: Backends,
        job_id: String,
        owner: String,
        attempt: i32,
        last_log_seq: i64,
        cancel: CancellationToken,
        logs: LogWriter,
        jobs: Arc<dyn JobStore>,
    ) -> Self {
        Self {
            backends,
            job_id,
            owner,
            attempt,
            cancel,
            next_seq: AtomicI64::new(last_log_seq + 1),
            logs,
            jobs,
        }
    }

    /// The stores a handler works with.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Whether this attempt logged any line.
    pub(crate) fn logged_any(&self, first_seq: i64) -> bool {
        self.next_seq.load(Ordering::SeqCst) > first_seq
    }

    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The user the job belongs to (who submitted it): handlers act on this user's data.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// 1 for the first attempt.
    pub fn attempt(&self) -> i32 {
        self.attempt
    }

    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// `Err(JobError::Cancelled)` once cancellation was requested: `ctx.check_cancelled()?`.
    pub fn check_cancelled(&self) -> Result<(), JobError> {
        if self.cancel.is_cancelled() { Err(JobError::Cancelled) } else { Ok(()) }
    }

    /// Records progress (0–100) with a message; stored and sent to live viewers.
    pub async fn progress(&self, percent: i32, message: impl Into<String>) -> Result<(), JobError> {
        let message = crate::nul::scrub_text(message.into());
        let percent = percent.clamp(0, 100);
        self.jobs
            .set_progress(&self.job_id, percent, Some(&message))
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        self.logs.publish(&self.job_id, JobEvent::Progress { progress: percent, message });
        Ok(())
    }

    pub fn info(&self, line: impl Into<String>) {
        self.log("info", line.into());
    }

    pub fn warn(&self, line: impl Into<String>) {
        self.log("warn", line.into());
    }

    pub fn error(&self, line: impl Into<String>) {
        self.log("error", line.into());
    }

    fn log(&self, level: &str, line: String) {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let line = crate::nul::scrub_text(line);
        self.logs.append(&self.job_id, LogLine { seq, at: Utc::now(), level: level.to_string(), line });
    }

    /// Sleeps, or returns `Err(JobError::Cancelled)` as soon as cancellation is requested.
    pub async fn sleep(&self, duration: Duration) -> Result<(), JobError> {
        tokio::select! {
            _ = tokio::time::sleep(duration) => Ok(()),
            _ = self.cancel.cancelled() => Err(JobError::Cancelled),
        }
    }

    /// Runs a child process to completion (see `services::process` for what it may see), its output
    /// logged; on cancellation, or when the attempt times out and this future is dropped,
    /// its whole process group is killed.
    pub async fn run_child(&self, command: ChildCommand) -> Result<ExitStatus, JobError> {
        let scratch = tempfile::Builder::new()
            .prefix("engram-job-")
            .tempdir()
            .map_err(|e| JobError::Failed(format!("cannot make the child's scratch directory: {e}")))?;
        let mut child = command
            .build(scratch.path())
            .spawn()
            .map_err(|e| JobError::Failed(format!("cannot start the child process: {e}")))?;
        let group = ProcessGroup::of(&child);
        if let Some(pid) = child.id() {
            self.info(format!("started child process {pid}"));
        }
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let reading = futures::future::join(
            read_lines(stdout, |line| self.info(line)),
            read_lines(stderr, |line| self.warn(line)),
        );
        tokio::pin!(reading);
        let mut read_all = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = &mut reading, if !read_all => read_all = true,
                _ = self.cancel.cancelled() => return Err(JobError::Cancelled),
            }
        };
        // What the child left running goes now; its last output is read briefly.
        drop(group);
        if !read_all {
            let _ = tokio::time::timeout(Duration::from_secs(1), reading).await;
        }
        status.map_err(|e| JobError::Failed(format!("child process: {e}")))
    }
}
