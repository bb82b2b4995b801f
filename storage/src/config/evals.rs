//! Agent evaluations: the agents file (which agent CLIs may be run, and how), the judge's
//! model, and the bounds of a run (per turn, per run, the deep dive's length).

use std::path::PathBuf;

use super::{ConfigError, RawConfig, parse_number};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("EVAL_AGENTS_FILE", "TOML file declaring the agents evaluations may run (see the README)"),
    ("JUDGE_MODEL", "model the LLM judge asks, on the LLM_* endpoint; unset: the LLM's own model"),
    ("EVAL_TURN_TIMEOUT_SECS", "longest one agent turn may take, in seconds"),
    ("EVAL_RUN_TIMEOUT_SECS", "longest one agent run may take, in seconds"),
    ("EVAL_MAX_DEEP_DIVE_TURNS", "deep-dive turns before an agent that has not compacted is asked to"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalsConfig {
    pub agents_file: Option<PathBuf>,
    pub judge_model: Option<String>,
    pub turn_timeout_secs: u64,
    pub run_timeout_secs: u64,
    pub max_deep_dive_turns: u64,
}

impl Default for EvalsConfig {
    fn default() -> Self {
        Self {
            agents_file: None,
            judge_model: None,
            turn_timeout_secs: 300,
            run_timeout_secs: 3600,
            max_deep_dive_turns: 100,
        }
    }
}

impl EvalsConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            agents_file: raw.get("EVAL_AGENTS_FILE").map(PathBuf::from),
            judge_model: raw.get("JUDGE_MODEL").map(str::to_string),
            turn_timeout_secs: parse_number(raw, "EVAL_TURN_TIMEOUT_SECS", d.turn_timeout_secs, 1, 86_400)?,
            run_timeout_secs: parse_number(raw, "EVAL_RUN_TIMEOUT_SECS", d.run_timeout_secs, 1, 7 * 86_400)?,
            max_deep_dive_turns: parse_number(
                raw,
                "EVAL_MAX_DEEP_DIVE_TURNS",
                d.max_deep_dive_turns,
                1,
                10_000,
            )?,
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("EVAL_AGENTS_FILE", self.agents_file.as_ref().map(|p| p.display().to_string())),
            ("JUDGE_MODEL", self.judge_model.clone()),
            ("EVAL_TURN_TIMEOUT_SECS", Some(self.turn_timeout_secs.to_string())),
            ("EVAL_RUN_TIMEOUT_SECS", Some(self.run_timeout_secs.to_string())),
            ("EVAL_MAX_DEEP_DIVE_TURNS", Some(self.max_deep_dive_turns.to_string())),
        ]
    }
}
