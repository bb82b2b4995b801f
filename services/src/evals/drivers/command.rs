//! The command driver, for an agent Engram has no driver of its own for. Two ways to talk:
//!
//! - **line**: one long-lived process; Engram writes one JSON object a line to its stdin,
//!   `{"type":"user","text":…}` for a turn and `{"type":"compact"}` to ask for compaction,
//!   and reads JSON lines from its stdout until `{"type":"result"}` ends the turn:
//!   `{"type":"text","text":…}` (the reply, in pieces), `{"type":"tool_call","name":…,"input":…}`,
//!   `{"type":"compacted","trigger":"auto"|"manual","tokens_before":…,"tokens_after":…,
//!   "summary":…}`, `{"type":"error","message":…}`; `result` may carry
//!   `"usage":{"input_tokens":…,"output_tokens":…}`. Other lines are kept as raw events.
//! - **per turn**: a fresh process per turn from an argument template whose `{prompt}` is the
//!   turn's text; its stdout is the reply. Such an agent remembers only what it keeps itself,
//!   and it reports no compaction: asking it to compact sends its `compact_prompt`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::evals::session::{AgentSession, Compaction, ExitReport, SessionError, ToolCall, TurnOutcome};
use crate::process::{BoundedLines, ChildCommand, ProcessGroup, read_lines};

/// The most a turn's output may hold, in bytes; past it the turn fails.
pub const MAX_TURN_OUTPUT: usize = 8 * 1024 * 1024;
/// Lines of stderr kept for the exit report.
const STDERR_TAIL: usize = 50;
/// How long a closing agent has to exit by itself.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How the command driver talks to its agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Line,
    PerTurn,
}

/// An agent run through the command driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandAgent {
    /// The program and its arguments; with `per_turn`, `{prompt}` stands for the turn's text.
    pub command: Vec<String>,
    pub protocol: Protocol,
    /// With `per_turn`: the turn that asks the agent to compact (none: it cannot be asked).
    #[serde(default)]
    pub compact_prompt: Option<String>,
}

/// Where and how an agent's process runs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Its `HOME` (and `TMPDIR`).
    pub home: PathBuf,
    /// Its working directory: the run's copy of the checkout.
    pub workdir: PathBuf,
    /// Variables set on purpose (model endpoint, keys meant for the agent); nothing else of
    /// the server's environment reaches it.
    pub env: Vec<(String, String)>,
    pub turn_timeout: Duration,
}

impl Launch {
    fn command(&self, argv: &[String]) -> Result<tokio::process::Command, SessionError> {
        let (program, args) = argv.split_first().ok_or_else(|| SessionError::Start("no command".into()))?;
        let mut command = ChildCommand::new(program).args(args);
        for (key, value) in &self.env {
            command = command.env(key, value);
        }
        Ok(command.build_at(&self.home, &self.workdir))
    }
}

/// Starts a session with `agent` as `launch` says.
pub async fn start(agent: &CommandAgent, launch: Launch) -> Result<Box<dyn AgentSession>, SessionError> {
    match agent.protocol {
        Protocol::Line => Ok(Box::new(LineSession::start(agent, launch)?)),
        Protocol::PerTurn => Ok(Box::new(PerTurnSession { agent: agent.clone(), launch, last_exit: None })),
    }
}

/// The last lines a stream wrote, filled by a task reading it to its end.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == STDERR_TAIL {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

struct LineSession {
    child: Child,
    /// Killed, with everything the agent started, when the session is dropped.
    group: ProcessGroup,
    stdin: Option<ChildStdin>,
    stdout: BoundedLines<ChildStdout>,
    stderr: Tail,
    turn_timeout: Duration,
}

impl LineSession {
    fn start(agent: &CommandAgent, launch: Launch) -> Result<Self, SessionError> {
        let mut command = launch.command(&agent.command)?;
        let mut child = command
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| SessionError::Start(format!("{}: {e}", agent.command[0])))?;
        let group = ProcessGroup::of(&child);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| SessionError::Start("no stdout".into()))?;
        let stderr = Tail::default();
        let tail = stderr.clone();
        let err = child.stderr.take();
        tokio::spawn(async move { read_lines(err, |line| tail.push(line)).await });
        Ok(Self {
            child,
            group,
            stdin,
            stdout: BoundedLines::new(stdout),
            stderr,
            turn_timeout: launch.turn_timeout,
        })
    }

    async fn send(&mut self, message: Value) -> Result<TurnOutcome, SessionError> {
        let stdin = self.stdin.as_mut().ok_or_else(|| SessionError::Exited("stdin is closed".into()))?;
        let mut line = message.to_string();
        line.push('\n');
        if let Err(e) = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await
        {
            return Err(SessionError::Exited(format!(
                "cannot write the turn: {e}; {}",
                self.stderr.lines().join(" / ")
            )));
        }
        let timeout = self.turn_timeout;
        match tokio::time::timeout(timeout, read_turn(&mut self.stdout)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(SessionError::Exited(why))) => {
                Err(SessionError::Exited(format!("{why}; stderr: {}", self.stderr.lines().join(" / "))))
            }
            Ok(Err(other)) => Err(other),
            Err(_) => Err(SessionError::TimedOut(timeout.as_secs())),
        }
    }
}

/// Reads one turn's lines up to its `result`.
async fn read_turn(stdout: &mut BoundedLines<ChildStdout>) -> Result<TurnOutcome, SessionError> {
    let mut outcome = TurnOutcome::default();
    let mut bytes = 0usize;
    loop {
        let Some((line, _cut)) = stdout.next_line().await else {
            return Err(SessionError::Exited("its output ended".into()));
        };
        bytes += line.len() + 1;
        if bytes > MAX_TURN_OUTPUT {
            return Err(SessionError::Failed(format!("the turn's output passed {MAX_TURN_OUTPUT} bytes")));
        }
        let event: Option<Value> = serde_json::from_str(&line).ok();
        outcome.events.push(line);
        let Some(event) = event else { continue };
        let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_string);
        let number = |key: &str| event.get(key).and_then(Value::as_u64);
        match event.get("type").and_then(Value::as_str) {
            Some("text") => outcome.reply.push_str(&text("text").unwrap_or_default()),
            Some("tool_call") => outcome.tool_calls.push(ToolCall {
                name: text("name").unwrap_or_default(),
                input: event.get("input").cloned().unwrap_or(Value::Null),
            }),
            Some("compacted") => outcome.compactions.push(Compaction {
                trigger: text("trigger").unwrap_or_else(|| "auto".into()),
                tokens_before: number("tokens_before"),
                tokens_after: number("tokens_after"),
                summary: text("summary"),
            }),
            Some("error") => {
                return Err(SessionError::Failed(text("message").unwrap_or_else(|| "unnamed error".into())));
            }
            Some("result") => {
                let usage = event.get("usage");
                let used = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
                outcome.input_tokens = used("input_tokens");
                outcome.output_tokens = used("output_tokens");
                return Ok(outcome);
            }
            _ => {}
        }
    }
}

#[async_trait]
impl AgentSession for LineSession {
    async fn turn(&mut self, text: &str) -> Result<TurnOutcome, SessionError> {
        self.send(json!({"type": "user", "text": text})).await
    }

    async fn compact(&mut self) -> Result<TurnOutcome, SessionError> {
        self.send(json!({"type": "compact"})).await
    }

    async fn close(mut self: Box<Self>) -> ExitReport {
        drop(self.stdin.take());
        let code = match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        };
        let report = ExitReport { code, stderr_tail: self.stderr.lines() };
        // Killed, then reaped: once the session is closed its agent is gone, not dying.
        drop(self.group);
        let _ = tokio::time::timeout(EXIT_GRACE, self.child.wait()).await;
        report
    }

    fn process_group(&self) -> Option<u32> {
        self.group.id()
    }
}

struct PerTurnSession {
    agent: CommandAgent,
    launch: Launch,
    last_exit: Option<ExitReport>,
}

impl PerTurnSession {
    async fn run(&mut self, prompt: &str) -> Result<TurnOutcome, SessionError> {
        let argv: Vec<String> =
            self.agent.command.iter().map(|arg| arg.replace("{prompt}", prompt)).collect();
        let mut child = self
            .launch
            .command(&argv)?
            .spawn()
            .map_err(|e| SessionError::Start(format!("{}: {e}", argv[0])))?;
        let group = ProcessGroup::of(&child);
        let stderr = Tail::default();
        let tail = stderr.clone();
        let err = child.stderr.take();
        let reading_err = tokio::spawn(async move { read_lines(err, |line| tail.push(line)).await });
        let mut stdout = child.stdout.take().ok_or_else(|| SessionError::Start("no stdout".into()))?;
        let timeout = self.launch.turn_timeout;
        let finished = tokio::time::timeout(timeout, async {
            let mut reply = Vec::new();
            (&mut stdout).take(MAX_TURN_OUTPUT as u64 + 1).read_to_end(&mut reply).await.ok();
            (reply, child.wait().await)
        })
        .await;
        drop(group);
        let _ = tokio::time::timeout(Duration::from_secs(1), reading_err).await;
        let (reply, status) = finished.map_err(|_| SessionError::TimedOut(timeout.as_secs()))?;
        let code = status.ok().and_then(|s| s.code());
        self.last_exit = Some(ExitReport { code, stderr_tail: stderr.lines() });
        if reply.len() > MAX_TURN_OUTPUT {
            return Err(SessionError::Failed(format!("the turn's output passed {MAX_TURN_OUTPUT} bytes")));
        }
        if code != Some(0) {
            return Err(SessionError::Exited(format!(
                "exit status {code:?}; stderr: {}",
                stderr.lines().join(" / ")
            )));
        }
        let reply = String::from_utf8_lossy(&reply).trim().to_string();
        Ok(TurnOutcome { events: vec![reply.clone()], reply, ..TurnOutcome::default() })
    }
}

#[async_trait]
impl AgentSession for PerTurnSession {
    async fn turn(&mut self, text: &str) -> Result<TurnOutcome, SessionError> {
        self.run(text).await
    }

    async fn compact(&mut self) -> Result<TurnOutcome, SessionError> {
        let Some(prompt) = self.agent.compact_prompt.clone() else {
            return Ok(TurnOutcome::default());
        };
        let mut outcome = self.run(&prompt).await?;
        outcome.compactions.push(Compaction {
            trigger: "manual".into(),
            tokens_before: None,
            tokens_after: None,
            summary: Some(outcome.reply.clone()),
        });
        Ok(outcome)
    }

    async fn close(self: Box<Self>) -> ExitReport {
        self.last_exit.unwrap_or(ExitReport { code: Some(0), stderr_tail: Vec::new() })
    }

    /// A process lives only for its turn.
    fn process_group(&self) -> Option<u32> {
        None
    }
}
