//! One agent's run through a scenario, phase by phase: init → pre-compression (the scenario's
//! turns) → baseline (the probes, answered before compaction) → deep dive (its prompts, round
//! and round, until the agent compacts by itself; at the end of the budget it is asked to)
//! → memory only → evaluation (the same probes again). The record keeps the transcript, the
//! protocol's raw events, every compaction with the turn it came on, tokens and tool calls,
//! and each probe's two answers for the judge.

use std::collections::BTreeMap;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::judge::ProbeAnswers;
use super::scenario::Scenario;
use super::session::{AgentSession, Compaction, SessionError, TurnOutcome};

/// What the agent is told first.
pub const INIT_PROMPT: &str = "We are going to work together in this repository for a while. Along the way \
     I will tell you a few things I will ask you about later, so keep track of them.";
/// What the agent is told before the probes are asked again.
pub const MEMORY_ONLY_PROMPT: &str = "From here on, answer only from what you remember of our conversation: \
     do not open files, search, or run any tools.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Init,
    PreCompression,
    Baseline,
    DeepDive,
    MemoryOnly,
    Evaluation,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::PreCompression => "pre_compression",
            Phase::Baseline => "baseline",
            Phase::DeepDive => "deep_dive",
            Phase::MemoryOnly => "memory_only",
            Phase::Evaluation => "evaluation",
        }
    }
}

/// How long the deep dive may go on before the agent is asked to compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_deep_dive_turns: usize,
    /// Input tokens of one turn (the agent's context) past which the deep dive stops.
    pub max_context_tokens: Option<u64>,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub phase: Phase,
    /// `user` or `assistant`.
    pub role: String,
    pub text: String,
}

/// A compaction and when it came.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionRecord {
    /// The turn (counting from 1 over the whole run) it came on.
    pub turn: usize,
    pub phase: Phase,
    #[serde(flatten)]
    pub compaction: Compaction,
}

/// What a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub answers: Vec<ProbeAnswers>,
    pub transcript: Vec<TranscriptEntry>,
    /// The protocol's lines, in order.
    pub events: Vec<String>,
    pub compactions: Vec<CompactionRecord>,
    pub turns: usize,
    pub deep_dive_turns: usize,
    pub tool_calls: usize,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Seconds spent in each phase that started.
    pub phase_seconds: BTreeMap<String, f64>,
}

/// Why a run stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{phase}: {reason}")]
pub struct RunFailure {
    pub phase: &'static str,
    pub reason: String,
}

/// Told as the run goes, so a job can log it and record milestones.
#[async_trait]
pub trait RunObserver: Send {
    async fn phase_started(&mut self, phase: Phase);
    async fn turn_finished(&mut self, phase: Phase, turn: usize, outcome: &TurnOutcome);
}

struct Run<'a> {
    session: &'a mut dyn AgentSession,
    observer: &'a mut dyn RunObserver,
    record: RunRecord,
    /// The phase under way and when it started.
    current: Option<(Phase, Instant)>,
}

impl Run<'_> {
    async fn turn(&mut self, phase: Phase, text: &str) -> Result<TurnOutcome, RunFailure> {
        let outcome = self.session.turn(text).await.map_err(|e| failure(phase, e))?;
        self.record.transcript.push(TranscriptEntry { phase, role: "user".into(), text: text.to_string() });
        self.note(phase, outcome).await
    }

    async fn compact(&mut self, phase: Phase) -> Result<TurnOutcome, RunFailure> {
        let outcome = self.session.compact().await.map_err(|e| failure(phase, e))?;
        self.record.transcript.push(TranscriptEntry { phase, role: "user".into(), text: "(compact)".into() });
        self.note(phase, outcome).await
    }

    async fn note(&mut self, phase: Phase, outcome: TurnOutcome) -> Result<TurnOutcome, RunFailure> {
        let record = &mut self.record;
        record.turns += 1;
        record.tool_calls += outcome.tool_calls.len();
        record.input_tokens += outcome.input_tokens.unwrap_or(0);
        record.output_tokens += outcome.output_tokens.unwrap_or(0);
        record.events.extend(outcome.events.iter().cloned());
        for compaction in &outcome.compactions {
            record.compactions.push(CompactionRecord {
                turn: record.turns,
                phase,
                compaction: compaction.clone(),
            });
        }
        record.transcript.push(TranscriptEntry {
            phase,
            role: "assistant".into(),
            text: outcome.reply.clone(),
        });
        self.observer.turn_finished(phase, record.turns, &outcome).await;
        Ok(outcome)
    }

    /// Starts `phase`, ending the one before (its time goes into the record).
    async fn begin(&mut self, phase: Phase) {
        self.end_phase();
        self.observer.phase_started(phase).await;
        self.current = Some((phase, Instant::now()));
    }

    fn end_phase(&mut self) {
        if let Some((phase, started)) = self.current.take() {
            self.record.phase_seconds.insert(phase.as_str().to_string(), started.elapsed().as_secs_f64());
        }
    }
}

fn failure(phase: Phase, error: SessionError) -> RunFailure {
    RunFailure { phase: phase.as_str(), reason: error.to_string() }
}

/// Drives `session` through `scenario`'s phases. The record holds what happened up to the end
/// or up to the failure.
pub async fn run_phases(
    session: &mut dyn AgentSession,
    scenario: &Scenario,
    budget: Budget,
    observer: &mut dyn RunObserver,
) -> (RunRecord, Result<(), RunFailure>) {
    let mut run = Run { session, observer, record: RunRecord::default(), current: None };
    let result = phases(&mut run, scenario, budget).await;
    run.end_phase();
    (run.record, result)
}

async fn phases(run: &mut Run<'_>, scenario: &Scenario, budget: Budget) -> Result<(), RunFailure> {
    run.begin(Phase::Init).await;
    run.turn(Phase::Init, INIT_PROMPT).await?;

    run.begin(Phase::PreCompression).await;
    for turn in &scenario.turns {
        run.turn(Phase::PreCompression, &turn.message()).await?;
    }

    run.begin(Phase::Baseline).await;
    let mut baseline = Vec::with_capacity(scenario.probes.len());
    for probe in &scenario.probes {
        baseline.push(run.turn(Phase::Baseline, &probe.question).await?.reply);
    }

    run.begin(Phase::DeepDive).await;
    for prompt in scenario.deep_dive.iter().cycle().take(budget.max_deep_dive_turns) {
        let outcome = run.turn(Phase::DeepDive, prompt).await?;
        run.record.deep_dive_turns += 1;
        let full = budget.max_context_tokens.is_some_and(|max| outcome.input_tokens.unwrap_or(0) >= max);
        if !outcome.compactions.is_empty() || full {
            break;
        }
    }
    if run.record.compactions.is_empty() {
        run.compact(Phase::DeepDive).await?;
    }
    if run.record.compactions.is_empty() {
        return Err(RunFailure {
            phase: Phase::DeepDive.as_str(),
            reason: "the agent did not compact its context, not even when asked to".into(),
        });
    }

    run.begin(Phase::MemoryOnly).await;
    run.turn(Phase::MemoryOnly, MEMORY_ONLY_PROMPT).await?;

    run.begin(Phase::Evaluation).await;
    for (probe, pre) in scenario.probes.iter().zip(baseline) {
        let post = run.turn(Phase::Evaluation, &probe.question).await?.reply;
        run.record.answers.push(ProbeAnswers { probe_id: probe.id.clone(), pre, post });
    }
    Ok(())
}
