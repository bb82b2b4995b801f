//! `agent_run`: one agent of an evaluation task, from its first turn to its score (see
//! `services::evals::Evals::run_agent`). Submitted by the tasks API, one per agent, for the
//! task's owner; tenants cannot submit it themselves, as it starts the agent programs the
//! deployment declares. Cancelling the job, or its attempt timing out, drops the run, which
//! kills the agent's whole process group.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use services::evals::run::{Phase, RunObserver};
use services::evals::service::RunEnd;
use services::evals::session::TurnOutcome;
use services::evals::{Evals, EvalsError};

use crate::context::JobContext;
use crate::error::JobError;
use crate::kind::{Access, Kind, Policy};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRunPayload {
    pub task_id: String,
    pub agent: String,
}

pub struct AgentRun(pub Arc<Evals>);

/// Logs the run's phases and turns to the job's log.
struct JobLog<'a>(&'a JobContext);

#[async_trait]
impl RunObserver for JobLog<'_> {
    async fn phase_started(&mut self, phase: Phase) {
        self.0.info(format!("phase {}", phase.as_str()));
    }

    async fn turn_finished(&mut self, phase: Phase, turn: usize, outcome: &TurnOutcome) {
        for compaction in &outcome.compactions {
            self.0.info(format!(
                "turn {turn} ({}): the agent compacted its context ({}, {:?} → {:?} tokens)",
                phase.as_str(),
                compaction.trigger,
                compaction.tokens_before,
                compaction.tokens_after
            ));
        }
        self.0.info(format!("turn {turn} ({}): {} characters back", phase.as_str(), outcome.reply.len()));
    }
}

#[async_trait]
impl Kind for AgentRun {
    type Payload = AgentRunPayload;
    const NAME: &'static str = "agent_run";
    const ACCESS: Access = Access::Admin;

    fn policy(&self) -> Policy {
        Policy { timeout: self.0.run_timeout, max_attempts: 2, ..Policy::default() }
    }

    async fn run(&self, payload: AgentRunPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let task = self.0.store.task(&payload.task_id).await.map_err(|e| JobError::Failed(e.to_string()))?;
        if task.is_none_or(|task| task.spec.owner != ctx.owner()) {
            return Err(JobError::Permanent(format!("task {} is not this job owner's", payload.task_id)));
        }
        ctx.info(format!("running agent {} of task {}", payload.agent, payload.task_id));
        let mut log = JobLog(ctx);
        let run = self.0.run_agent(&payload.task_id, &payload.agent, &mut log);
        let end = tokio::select! {
            end = run => end,
            _ = ctx.cancellation().cancelled() => return Err(JobError::Cancelled),
        };
        match end {
            Ok(RunEnd::Scored(score)) => Ok(json!({"status": "done", "overall_score": score})),
            Ok(RunEnd::Failed(reason)) => {
                ctx.warn(format!("the agent's run failed: {reason}"));
                Ok(json!({"status": "error", "error": reason}))
            }
            Ok(RunEnd::AlreadyEnded) => Ok(json!({"status": "ended before this attempt"})),
            Err(EvalsError::NotFound(why)) => Err(JobError::Permanent(why)),
            Err(e) => Err(JobError::Failed(e.to_string())),
        }
    }
}
