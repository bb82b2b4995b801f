//! `noop`: does nothing but what its payload asks, for tests and benchmarks: sleep, log,
//! fail a number of times, run a child process, or panic.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use storage::sql::Expect;

use crate::context::JobContext;
use crate::error::JobError;
use crate::kind::{Access, Kind, Policy};
use services::process::ChildCommand;

/// Where `record_effect` writes.
pub const EFFECTS_NAMESPACE: &str = "noop-effects";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopPayload {
    /// Sleep this long (cancellable).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Log this many lines.
    #[serde(default)]
    pub log_lines: u32,
    /// Pause between log lines (cancellable).
    #[serde(default)]
    pub log_interval_ms: u64,
    /// Fail the first N attempts.
    #[serde(default)]
    pub fail_attempts: i32,
    /// Panic in the first N attempts.
    #[serde(default)]
    pub panic_attempts: i32,
    /// Run this program with these arguments as a child process (killed on cancel), with
    /// the environment `child` allows.
    #[serde(default)]
    pub command: Vec<String>,
    /// Attempt timeout instead of the kind's 60 s.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Record that this job ran, idempotently (key = job id), in the key/value store's
    /// `noop-effects` namespace: a side effect that tests can count.
    #[serde(default)]
    pub record_effect: bool,
    /// Echoed into the result.
    #[serde(default)]
    pub echo: Value,
}

pub struct Noop;

#[async_trait]
impl Kind for Noop {
    type Payload = NoopPayload;
    const NAME: &'static str = "noop";
    const ACCESS: Access = Access::Test;

    fn policy(&self) -> Policy {
        Policy {
            timeout: Duration::from_secs(60),
            max_attempts: 3,
            backoff_base: Duration::from_millis(200),
            ..Policy::default()
        }
    }

    fn timeout(&self, payload: &NoopPayload) -> Duration {
        payload.timeout_ms.map(Duration::from_millis).unwrap_or(self.policy().timeout)
    }

    async fn run(&self, payload: NoopPayload, ctx: &JobContext) -> Result<Value, JobError> {
        for i in 0..payload.log_lines {
            if i > 0 && payload.log_interval_ms > 0 {
                ctx.sleep(Duration::from_millis(payload.log_interval_ms)).await?;
            }
            ctx.info(format!("line {}", i + 1));
        }
        if ctx.attempt() <= payload.panic_attempts {
            panic!("noop asked to panic in attempt {}", ctx.attempt());
        }
        if ctx.attempt() <= payload.fail_attempts {
            return Err(JobError::Failed(format!("noop asked to fail attempt {}", ctx.attempt())));
        }
        if payload.sleep_ms > 0 {
            ctx.sleep(Duration::from_millis(payload.sleep_ms)).await?;
        }
        if let Some((program, args)) = payload.command.split_first() {
            let status = ctx.run_child(ChildCommand::new(program).args(args)).await?;
            ctx.info(format!("child exited with {status}"));
        }
        if payload.record_effect {
            let effect = json!({"attempt": ctx.attempt()});
            ctx.backends()
                .key_values
                .put(EFFECTS_NAMESPACE, ctx.job_id(), &effect, Expect::Any)
                .await
                .map_err(|e| JobError::Failed(e.to_string()))?;
        }
        Ok(json!({"attempt": ctx.attempt(), "echo": payload.echo}))
    }
}
