//! `Evals`, the agent evaluation service: creating a task from what a client sent (checked,
//! each fault named by its field), and running one agent of a task from start to score — its
//! own home and copy of the scenario's files, its session through the run's phases, its
//! artifacts into the blob store, the judge, and the task's end once its last run ends.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use storage::StoreError;
use storage::blob::{BlobKey, BlobStore, Condition};
use storage::sql::{EvalStore, EvalTask, RunJudgement, RunStatus, RunUpdate, TaskSpec, TaskStatus};

use super::agents::{Agents, Driver};
use super::drivers::command::{self, Launch};
use super::judge::{Judgement, LlmJudge, judge_deterministically, untested};
use super::reaper;
use super::run::{Budget, Phase, RunObserver, RunRecord, run_phases};
use super::scenario::{self, Scenario};
use super::score::{parse_rubric, parse_thresholds, score};
use super::session::{ExitReport, TurnOutcome};
use super::{Dimension, FieldError};

/// Agents one task may name at most.
pub const MAX_AGENTS: usize = 10;
/// `max_files` bounds, as the original's.
pub const MAX_FILES: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum EvalsError {
    /// A field of the request is wrong (422).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The request names something this deployment cannot do (400, as the original).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the scenario of a new task is.
#[derive(Debug, Clone)]
pub enum ScenarioChoice {
    Builtin(String),
    Document(Value),
}

/// A task as a client asks for it.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub pr_url: Option<String>,
    pub scenario: Option<ScenarioChoice>,
    pub agents: Vec<String>,
    pub rubric: Vec<String>,
    pub rubric_thresholds: BTreeMap<String, f64>,
    pub max_files: i64,
}

/// Who a task is for.
#[derive(Debug, Clone, Default)]
pub struct TaskOwner {
    pub owner: String,
    pub team_id: Option<String>,
    pub org_id: Option<String>,
    pub project_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// How a run ended, for the job's result.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// Done and judged (`None`: unscored, with the reason in the run).
    Scored(Option<f64>),
    /// The agent failed: `phase: reason`.
    Failed(String),
    /// The run had ended already (cancelled, or finished by an earlier attempt).
    AlreadyEnded,
}

pub struct Evals {
    pub store: Arc<dyn EvalStore>,
    blobs: Arc<dyn BlobStore>,
    pub agents: Agents,
    judge: Option<LlmJudge>,
    /// Each run's home and checkout live under here.
    runs_dir: PathBuf,
    limits: RunLimits,
    /// The longest one agent's run may take.
    pub run_timeout: Duration,
}

/// The bounds of one agent's run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    pub turn_timeout: Duration,
    pub run_timeout: Duration,
    pub max_deep_dive_turns: usize,
}

impl Evals {
    pub fn new(
        store: Arc<dyn EvalStore>,
        blobs: Arc<dyn BlobStore>,
        agents: Agents,
        judge: Option<LlmJudge>,
        runs_dir: PathBuf,
        limits: RunLimits,
    ) -> Self {
        Self { store, blobs, agents, judge, runs_dir, run_timeout: limits.run_timeout, limits }
    }

    /// Kills the agents a dead worker left running in this machine's run directories.
    pub fn reap_orphaned_agents(&self) -> usize {
        reaper::reap(&self.runs_dir)
    }

    /// Checks `new` and creates its task, with a queued run per agent.
    pub async fn create_task(&self, owner: &TaskOwner, new: NewTask) -> Result<EvalTask, EvalsError> {
        if new.pr_url.is_some() {
            return Err(EvalsError::Unavailable(
                "tasks on a pull request (pr_url) are not supported by this deployment yet; send a scenario"
                    .into(),
            ));
        }
        let scenario = match new.scenario {
            None => return Err(FieldError::new("scenario", "name a built-in scenario or send one").into()),
            Some(ScenarioChoice::Builtin(name)) => scenario::builtin(&name).ok_or_else(|| {
                FieldError::new(
                    "scenario",
                    format!(
                        "no built-in scenario {name:?} (there are {})",
                        scenario::builtin_names().join(", ")
                    ),
                )
            })?,
            Some(ScenarioChoice::Document(document)) => Scenario::from_json(document.to_string().as_bytes())?,
        };
        if new.agents.is_empty() || new.agents.len() > MAX_AGENTS {
            return Err(FieldError::new("agents", format!("name 1 to {MAX_AGENTS} agents")).into());
        }
        for (i, agent) in new.agents.iter().enumerate() {
            if new.agents[..i].contains(agent) {
                return Err(FieldError::new(format!("agents[{i}]"), format!("{agent} is named twice")).into());
            }
            if self.agents.get(agent).is_none() {
                return Err(EvalsError::Unavailable(format!(
                    "One or more requested agents are not available: {agent} (available: {})",
                    self.agents.names().join(", ")
                )));
            }
        }
        let rubric = parse_rubric(&new.rubric)?;
        let thresholds = parse_thresholds(&rubric, &new.rubric_thresholds)?;
        if let Some(dimension) = untested(&rubric, &scenario.probes).first() {
            return Err(FieldError::new(
                "rubric",
                format!("no probe of scenario {} tests {dimension}", scenario.name),
            )
            .into());
        }
        if !(1..=MAX_FILES).contains(&new.max_files) {
            return Err(FieldError::new("max_files", format!("must be 1 to {MAX_FILES}")).into());
        }
        let spec = TaskSpec {
            owner: owner.owner.clone(),
            team_id: owner.team_id.clone(),
            org_id: owner.org_id.clone(),
            project_id: owner.project_id.clone(),
            created_by_email: owner.email.clone(),
            created_by_name: owner.name.clone(),
            pr: None,
            scenario_name: Some(scenario.name.clone()),
            scenario: Some(serde_json::to_value(&scenario).map_err(|e| StoreError::backend("evals", e))?),
            agents: new.agents,
            rubric: rubric.iter().map(|d| d.code().to_string()).collect(),
            rubric_thresholds: thresholds.iter().map(|(d, t)| (d.code().to_string(), *t)).collect(),
            max_files: new.max_files,
        };
        Ok(self.store.create_task(&spec, Utc::now()).await?)
    }

    /// Runs `agent` of task `task_id` from the start: its session through every phase, its
    /// artifacts stored, then judged. An agent that fails leaves its run `error` with the
    /// phase and reason; only a failure of Engram's own (the store, the blob store) is an `Err`.
    pub async fn run_agent(
        &self,
        task_id: &str,
        agent: &str,
        observer: &mut dyn RunObserver,
    ) -> Result<RunEnd, EvalsError> {
        let task = self
            .store
            .task(task_id)
            .await?
            .ok_or_else(|| EvalsError::NotFound(format!("no task {task_id}")))?;
        let run = self
            .store
            .run(task_id, agent)
            .await?
            .ok_or_else(|| EvalsError::NotFound(format!("task {task_id} has no agent {agent}")))?;
        if run.status.is_final() || task.status.is_final() {
            return Ok(RunEnd::AlreadyEnded);
        }
        let started = RunUpdate {
            status: Some(RunStatus::Running),
            milestones: Some(json!({})),
            ..RunUpdate::default()
        };
        if self.store.update_run(task_id, agent, &started, Utc::now()).await?.is_none() {
            return Ok(RunEnd::AlreadyEnded);
        }
        self.store.set_task_status(task_id, TaskStatus::Running, None, Utc::now()).await?;

        let ran = match task_scenario(&task) {
            Ok(scenario) => {
                self.prepare_and_run(&task, &scenario, agent, observer).await.map(|ran| (scenario, ran))
            }
            Err(failure) => Err(failure),
        };
        let end = match ran {
            Ok((scenario, ran)) => {
                // What the agent did is kept, whether it got to the end or not.
                let artifacts = self.put_record(&task.id, agent, &ran.record, &ran.exit.stderr_tail).await?;
                match ran.result {
                    Ok(()) => {
                        self.finish(&task, &scenario, agent, ran.record, ran.exit.code, artifacts).await?
                    }
                    Err(failure) => self.fail(task_id, agent, failure, Some(artifacts)).await?,
                }
            }
            Err(failure) => self.fail(task_id, agent, failure, None).await?,
        };
        self.end_task_when_done(task_id).await?;
        Ok(end)
    }

    /// Ends a run that failed with `failure` (`phase: reason`), with what it stored.
    async fn fail(
        &self,
        task_id: &str,
        agent: &str,
        failure: String,
        artifacts: Option<Value>,
    ) -> Result<RunEnd, StoreError> {
        let update = RunUpdate {
            status: Some(RunStatus::Error),
            error_message: Some(failure.clone()),
            artifacts,
            ..RunUpdate::default()
        };
        self.store.update_run(task_id, agent, &update, Utc::now()).await?;
        Ok(RunEnd::Failed(failure))
    }

    /// The run's home and checkout, fresh, with the scenario's files; the session through
    /// the phases. `Err` is why no session could run.
    async fn prepare_and_run(
        &self,
        task: &EvalTask,
        scenario: &Scenario,
        agent: &str,
        observer: &mut dyn RunObserver,
    ) -> Result<Ran, String> {
        let definition =
            self.agents.get(agent).ok_or_else(|| format!("agent {agent} is no longer declared"))?;
        let dir = self.runs_dir.join(&task.id).join(agent);
        let (home, workdir) = (dir.join("home"), dir.join("checkout"));
        let setup = || -> std::io::Result<()> {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&home)?;
            std::fs::create_dir_all(&workdir)?;
            for (path, content) in scenario.files() {
                let path = workdir.join(path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(path, content)?;
            }
            Ok(())
        };
        setup().map_err(|e| format!("init: cannot prepare the run's directory: {e}"))?;
        let launch =
            Launch { home, workdir, env: definition.env.clone(), turn_timeout: self.limits.turn_timeout };
        let Driver::Command(command_agent) = &definition.driver;
        let mut session = command::start(command_agent, launch).await.map_err(|e| format!("init: {e}"))?;
        if let Some(pgid) = session.process_group()
            && let Err(e) = reaper::record(&dir, pgid)
        {
            tracing::warn!(error = %e, dir = %dir.display(), "could not record the agent's process group");
        }
        let budget =
            Budget { max_deep_dive_turns: self.limits.max_deep_dive_turns, max_context_tokens: None };
        let mut milestones = Milestones {
            store: self.store.as_ref(),
            task_id: &task.id,
            agent,
            inner: observer,
            seen: json!({}),
        };
        let (record, result) = run_phases(session.as_mut(), scenario, budget, &mut milestones).await;
        let exit = session.close().await;
        reaper::forget(&dir);
        Ok(Ran { record, exit, result: result.map_err(|failure| failure.to_string()) })
    }

    async fn put_artifact(
        &self,
        task_id: &str,
        agent: &str,
        name: &str,
        body: Vec<u8>,
    ) -> Result<String, StoreError> {
        let key = format!("evals/{task_id}/{agent}/{name}");
        self.blobs.put(&BlobKey::parse(&key)?, body.into(), Condition::None).await?;
        Ok(key)
    }

    /// Stores the run's transcript, raw events, stderr, compactions and answers; their keys by name.
    async fn put_record(
        &self,
        task_id: &str,
        agent: &str,
        record: &RunRecord,
        stderr: &[String],
    ) -> Result<Value, StoreError> {
        let transcript: String = record
            .transcript
            .iter()
            .map(|t| format!("[{}] {}: {}\n=====\n", t.phase.as_str(), t.role.to_uppercase(), t.text))
            .collect();
        let json = |e: serde_json::Error| StoreError::backend("evals", e);
        let files: [(&str, Vec<u8>); 5] = [
            ("transcript.txt", transcript.into_bytes()),
            ("events.jsonl", record.events.join("\n").into_bytes()),
            ("stderr.txt", stderr.join("\n").into_bytes()),
            ("compactions.json", serde_json::to_vec_pretty(&record.compactions).map_err(json)?),
            ("answers.json", serde_json::to_vec_pretty(&record.answers).map_err(json)?),
        ];
        let mut keys = serde_json::Map::new();
        for (name, body) in files {
            keys.insert(
                name.to_string(),
                Value::String(self.put_artifact(task_id, agent, name, body).await?),
            );
        }
        Ok(Value::Object(keys))
    }

    /// Records a run that went through every phase, judges it and stores the judgement.
    async fn finish(
        &self,
        task: &EvalTask,
        scenario: &Scenario,
        agent: &str,
        record: RunRecord,
        exit_code: Option<i32>,
        artifacts: Value,
    ) -> Result<RunEnd, EvalsError> {
        let stats = json!({
            "turns": record.turns,
            "deep_dive_iterations": record.deep_dive_turns,
            "tool_calls": record.tool_calls,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "compression_detected": !record.compactions.is_empty(),
            "compactions": record.compactions,
            "phase_seconds": record.phase_seconds,
            "exit_code": exit_code,
        });
        let qa = serde_json::to_value(&record.answers).map_err(|e| StoreError::backend("evals", e))?;
        let done = RunUpdate {
            status: Some(RunStatus::Done),
            stats: Some(stats),
            artifacts: Some(artifacts),
            qa: Some(qa),
            ..RunUpdate::default()
        };
        if self.store.update_run(&task.id, agent, &done, Utc::now()).await?.is_none() {
            return Ok(RunEnd::AlreadyEnded);
        }
        let judgement = self.judge(task, scenario, &record).await;
        let (stored, end) = match &judgement {
            Judgement::Scored(verdict) => {
                let thresholds: BTreeMap<Dimension, f64> = task
                    .spec
                    .rubric_thresholds
                    .iter()
                    .filter_map(|(code, t)| Some((Dimension::parse(code)?, *t)))
                    .collect();
                let scored = score(verdict, &thresholds);
                let value = json!({"score": scored, "verdict": verdict});
                let end = RunEnd::Scored(Some(scored.overall_score));
                (
                    RunJudgement::Scored {
                        score: value,
                        overall_score: scored.overall_score,
                        passed: scored.passed,
                    },
                    end,
                )
            }
            Judgement::Unscored { reason } => {
                (RunJudgement::Unscored { reason: reason.clone() }, RunEnd::Scored(None))
            }
        };
        self.store.judge_run(&task.id, agent, &stored, Utc::now()).await?;
        Ok(end)
    }

    async fn judge(&self, task: &EvalTask, scenario: &Scenario, record: &RunRecord) -> Judgement {
        let rubric: Vec<Dimension> = task.spec.rubric.iter().filter_map(|c| Dimension::parse(c)).collect();
        match &self.judge {
            Some(judge) => judge.judge(&rubric, &scenario.probes, &record.answers).await,
            None => judge_deterministically(&rubric, &scenario.probes, &record.answers),
        }
    }

    /// Ends the task once none of its runs is still to run.
    async fn end_task_when_done(&self, task_id: &str) -> Result<(), StoreError> {
        let runs = self.store.runs(task_id).await?;
        if runs.iter().all(|r| r.status.is_final()) {
            self.store.set_task_status(task_id, TaskStatus::Done, None, Utc::now()).await?;
        }
        Ok(())
    }
}

/// The scenario a task's runs follow, as it was stored.
fn task_scenario(task: &EvalTask) -> Result<Scenario, String> {
    let stored = task.spec.scenario.clone().ok_or("init: the task has no scenario")?;
    serde_json::from_value(stored).map_err(|e| format!("init: the task's scenario does not parse: {e}"))
}

/// A session that ran: what it recorded, how the agent exited, and whether it got to the end.
struct Ran {
    record: RunRecord,
    exit: ExitReport,
    result: Result<(), String>,
}

/// Records each phase's start in the run's milestones, then tells the job's observer.
struct Milestones<'a> {
    store: &'a dyn EvalStore,
    task_id: &'a str,
    agent: &'a str,
    inner: &'a mut dyn RunObserver,
    seen: Value,
}

#[async_trait]
impl RunObserver for Milestones<'_> {
    async fn phase_started(&mut self, phase: Phase) {
        self.seen[phase.as_str()] = json!(Utc::now().to_rfc3339());
        let status = match phase {
            Phase::MemoryOnly => Some(RunStatus::MemoryOnly),
            Phase::Evaluation => Some(RunStatus::Evaluating),
            _ => None,
        };
        let update = RunUpdate { status, milestones: Some(self.seen.clone()), ..RunUpdate::default() };
        if let Err(e) = self.store.update_run(self.task_id, self.agent, &update, Utc::now()).await {
            tracing::warn!(error = %e, task = self.task_id, agent = self.agent, "could not record a milestone");
        }
        self.inner.phase_started(phase).await;
    }

    async fn turn_finished(&mut self, phase: Phase, turn: usize, outcome: &TurnOutcome) {
        self.inner.turn_finished(phase, turn, outcome).await;
    }
}
