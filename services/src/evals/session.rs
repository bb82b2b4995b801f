//! One agent's conversation as the evaluation drives it: a session sends a user turn and
//! returns the agent's reply with what happened during the turn (tokens, tool calls, the
//! compactions the agent reported by its own signal, its raw event lines). Each driver
//! (`drivers`) speaks one CLI's protocol behind this trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The agent compacted its context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// `auto` (the agent decided) or `manual` (asked to).
    pub trigger: String,
    pub tokens_before: Option<u64>,
    pub tokens_after: Option<u64>,
    /// What the agent kept of the conversation, when it says.
    pub summary: Option<String>,
}

/// A tool the agent called during a turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    /// What the agent passed, as it reported it.
    pub input: serde_json::Value,
}

/// What one turn brought back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnOutcome {
    pub reply: String,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub tool_calls: Vec<ToolCall>,
    pub compactions: Vec<Compaction>,
    /// The protocol's lines as the agent sent them, for the run's raw event artifact.
    pub events: Vec<String>,
}

/// Why a turn failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The agent's process could not be started.
    #[error("the agent could not start: {0}")]
    Start(String),
    /// The agent exited (or closed its output) before finishing the turn.
    #[error("the agent exited during a turn: {0}")]
    Exited(String),
    #[error("the agent did not finish a turn within {0} s")]
    TimedOut(u64),
    /// The agent reported an error for the turn, or broke its protocol.
    #[error("the agent failed the turn: {0}")]
    Failed(String),
}

/// How the agent's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    /// `None` when it was killed by a signal or its status could not be read.
    pub code: Option<i32>,
    /// The last lines it wrote to stderr.
    pub stderr_tail: Vec<String>,
}

#[async_trait]
pub trait AgentSession: Send {
    /// Sends one user turn and waits for the agent to finish it.
    async fn turn(&mut self, text: &str) -> Result<TurnOutcome, SessionError>;

    /// Asks the agent to compact its context by its own command.
    async fn compact(&mut self) -> Result<TurnOutcome, SessionError>;

    /// Ends the session: the agent is asked to exit, then its process group is killed.
    async fn close(self: Box<Self>) -> ExitReport;

    /// The process group of the agent's long-lived process, when it has one.
    fn process_group(&self) -> Option<u32>;
}
