//! Agent runs through the command driver against a real agent process (`fixtures/line_agent.py`,
//! which compacts its context by its own rule and can be told to forget a fact in its
//! summary): the phases, the compaction it reports, the baseline and post answers and the
//! deterministic judge's verdict; a crash, a hang, an agent that never compacts, and the
//! per-turn protocol. No agent process outlives its session.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use services::evals::Dimension;
use services::evals::drivers::command::{self, CommandAgent, Launch, Protocol};
use services::evals::judge::{Judgement, judge_deterministically};
use services::evals::run::{Budget, Phase, RunObserver, run_phases};
use services::evals::scenario::Scenario;
use services::evals::session::TurnOutcome;

/// The Python interpreter itself (not a version manager's shim, which needs the real `HOME`).
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/services/fixtures/line_agent.py")
        .display()
        .to_string()
}

/// The scenario both agent-run tests follow (`fixtures/line_agent_scenario.json`).
fn scenario() -> Scenario {
    Scenario::from_json(include_bytes!("fixtures/line_agent_scenario.json")).unwrap()
}

/// A fresh home and checkout (with the scenario's files) for one run; `marker` is passed to
/// the agent as an argument so the test can look for its process afterwards.
fn launch(env: &[(&str, &str)], timeout: Duration) -> (Launch, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (home, workdir) = (dir.path().join("home"), dir.path().join("checkout"));
    std::fs::create_dir_all(&home).unwrap();
    for (path, content) in scenario().files() {
        let path = workdir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    (Launch { home, workdir, env, turn_timeout: timeout }, dir)
}

fn line_agent(marker: &str) -> CommandAgent {
    CommandAgent {
        command: vec![python(), script(), marker.to_string()],
        protocol: Protocol::Line,
        compact_prompt: None,
    }
}

/// Processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

#[derive(Default)]
struct Phases(Vec<Phase>);

#[async_trait]
impl RunObserver for Phases {
    async fn phase_started(&mut self, phase: Phase) {
        self.0.push(phase);
    }

    async fn turn_finished(&mut self, _phase: Phase, _turn: usize, _outcome: &TurnOutcome) {}
}

const BUDGET: Budget = Budget { max_deep_dive_turns: 20, max_context_tokens: None };

#[tokio::test]
async fn a_summary_that_drops_a_fact_breaks_exactly_that_probe() {
    let marker = format!("marker-{}", ulid::Ulid::generate());
    let (launch, _dir) = launch(
        &[("LINE_AGENT_FORGET", "frankfurt"), ("LINE_AGENT_COMPACT_AT", "200")],
        Duration::from_secs(20),
    );
    let mut session = command::start(&line_agent(&marker), launch).await.unwrap();
    let mut phases = Phases::default();
    let (record, result) = run_phases(session.as_mut(), &scenario(), BUDGET, &mut phases).await;
    let exit = session.close().await;
    result.unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert!(processes_with(&marker).is_empty());

    assert_eq!(
        phases.0,
        [
            Phase::Init,
            Phase::PreCompression,
            Phase::Baseline,
            Phase::DeepDive,
            Phase::MemoryOnly,
            Phase::Evaluation
        ]
    );
    let compaction = &record.compactions[0];
    assert_eq!((compaction.phase, compaction.compaction.trigger.as_str()), (Phase::DeepDive, "auto"));
    assert!(compaction.compaction.tokens_before.unwrap() > compaction.compaction.tokens_after.unwrap());
    assert!(!compaction.compaction.summary.as_deref().unwrap().contains("Frankfurt"));
    assert!(record.deep_dive_turns >= 1 && record.deep_dive_turns < BUDGET.max_deep_dive_turns);
    assert_eq!(record.tool_calls, 1, "the port came through the agent's read tool");
    assert!(record.events.iter().any(|e| e.contains("\"compacted\"")));
    assert!(record.transcript.iter().any(|t| t.role == "assistant" && t.text.contains("Bluefin")));

    let pre: Vec<&str> = record.answers.iter().map(|a| a.pre.as_str()).collect();
    assert!(
        pre[0].contains("Bluefin")
            && pre[1].contains("7443")
            && pre[2].contains("Frankfurt")
            && pre[3].contains("Marlin"),
        "{pre:?}"
    );
    let post: Vec<&str> = record.answers.iter().map(|a| a.post.as_str()).collect();
    assert!(
        post[0].contains("Bluefin") && post[1].contains("7443") && post[3].contains("Marlin"),
        "{post:?}"
    );
    assert!(!post[2].contains("Frankfurt"), "{post:?}");

    let rubric =
        [Dimension::AccurateRetrieval, Dimension::LongRangeUnderstanding, Dimension::SelectiveForgetting];
    let Judgement::Scored(verdict) = judge_deterministically(&rubric, &scenario().probes, &record.answers)
    else {
        panic!("scored");
    };
    assert_eq!(verdict.scores[&Dimension::AccurateRetrieval], 1.0);
    assert_eq!(verdict.scores[&Dimension::LongRangeUnderstanding], 0.0, "the dropped fact");
    assert_eq!(verdict.scores[&Dimension::SelectiveForgetting], 1.0);
}

#[tokio::test]
async fn a_crash_a_hang_and_no_compaction_end_the_run_with_the_reason() {
    let marker = format!("marker-{}", ulid::Ulid::generate());
    let (launch_crash, _a) = launch(&[("LINE_AGENT_CRASH_AT_TURN", "3")], Duration::from_secs(20));
    let mut session = command::start(&line_agent(&marker), launch_crash).await.unwrap();
    let (record, result) = run_phases(session.as_mut(), &scenario(), BUDGET, &mut Phases::default()).await;
    let failure = result.unwrap_err();
    assert_eq!(failure.phase, "pre_compression");
    assert!(failure.reason.contains("exited") && failure.reason.contains("crashing on purpose"), "{failure}");
    assert_eq!(record.turns, 2, "the turns before the crash are kept");
    assert_eq!(session.close().await.code, Some(3));

    let (launch_hang, _b) = launch(&[("LINE_AGENT_HANG_AT_TURN", "2")], Duration::from_secs(1));
    let mut session = command::start(&line_agent(&marker), launch_hang).await.unwrap();
    let (_, result) = run_phases(session.as_mut(), &scenario(), BUDGET, &mut Phases::default()).await;
    assert!(result.unwrap_err().reason.contains("did not finish a turn within 1 s"));
    assert!(!processes_with(&marker).is_empty(), "still hanging before the session closes");
    session.close().await;
    assert!(processes_with(&marker).is_empty(), "the hung agent is killed: {:?}", processes_with(&marker));

    let (launch_stubborn, _c) = launch(&[("LINE_AGENT_NEVER_COMPACT", "1")], Duration::from_secs(20));
    let mut session = command::start(&line_agent(&marker), launch_stubborn).await.unwrap();
    let budget = Budget { max_deep_dive_turns: 3, max_context_tokens: None };
    let (record, result) = run_phases(session.as_mut(), &scenario(), budget, &mut Phases::default()).await;
    let failure = result.unwrap_err();
    assert_eq!(failure.phase, "deep_dive");
    assert!(failure.reason.contains("did not compact"), "{failure}");
    assert_eq!(record.deep_dive_turns, 3);
    session.close().await;

    let missing = CommandAgent {
        command: vec!["/nonexistent/agent".into()],
        protocol: Protocol::Line,
        compact_prompt: None,
    };
    let (launch_missing, _d) = launch(&[], Duration::from_secs(5));
    assert!(command::start(&missing, launch_missing).await.is_err());
}

#[tokio::test]
async fn a_per_turn_agent_is_asked_to_compact_with_its_prompt() {
    let agent = CommandAgent {
        command: vec![python(), script(), "--per-turn".into(), "{prompt}".into()],
        protocol: Protocol::PerTurn,
        compact_prompt: Some("/compact".into()),
    };
    let (launch, _dir) = launch(&[("LINE_AGENT_FORGET", "frankfurt")], Duration::from_secs(20));
    let mut session = command::start(&agent, launch).await.unwrap();
    let budget = Budget { max_deep_dive_turns: 2, max_context_tokens: None };
    let (record, result) = run_phases(session.as_mut(), &scenario(), budget, &mut Phases::default()).await;
    result.unwrap();
    assert_eq!(record.compactions.len(), 1);
    assert_eq!(record.compactions[0].compaction.trigger, "manual");
    assert_eq!(record.deep_dive_turns, 2, "the whole budget, then the compact prompt");
    assert!(record.answers[0].post.contains("Bluefin") && !record.answers[2].post.contains("Frankfurt"));
    assert_eq!(session.close().await.code, Some(0));
}
