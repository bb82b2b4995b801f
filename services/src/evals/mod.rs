//! Agent evaluations (Memory-Break): what an agent is asked to remember and then asked about
//! (`scenario`), an agent CLI driven as a session (`session`, `drivers`) through the run's
//! phases (`run`), how its answers before and after its context is compacted are judged
//! (`judge`: an LLM judge, or the deterministic one offline), the score a run gets against its
//! rubric's thresholds (`score`) and the leaderboards over many runs (`leaderboard`).
//!
//! The rubric's dimensions are MemoryAgentBench's four competencies, as the original named them.

pub mod agents;
pub mod drivers;
pub mod judge;
pub mod leaderboard;
pub mod reaper;
pub mod run;
pub mod scenario;
pub mod score;
pub mod service;
pub mod session;

pub use service::{Evals, EvalsError};

use std::fmt;

use serde::{Deserialize, Serialize};

/// One dimension of the rubric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dimension {
    /// Accurate Retrieval: recalling specific details and facts.
    #[serde(rename = "AR")]
    AccurateRetrieval,
    /// Test-Time Learning: applying what was taught in the session to a new case.
    #[serde(rename = "TTL")]
    TestTimeLearning,
    /// Long-Range Understanding: connecting facts stated far apart.
    #[serde(rename = "LRU")]
    LongRangeUnderstanding,
    /// Selective Forgetting: answering with a corrected fact rather than the stale one.
    #[serde(rename = "SF")]
    SelectiveForgetting,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::AccurateRetrieval,
        Dimension::TestTimeLearning,
        Dimension::LongRangeUnderstanding,
        Dimension::SelectiveForgetting,
    ];

    /// The abbreviation the API and the original use (`AR`, `TTL`, `LRU`, `SF`).
    pub fn code(self) -> &'static str {
        match self {
            Dimension::AccurateRetrieval => "AR",
            Dimension::TestTimeLearning => "TTL",
            Dimension::LongRangeUnderstanding => "LRU",
            Dimension::SelectiveForgetting => "SF",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Dimension::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The dimension's name and what it asks, as the judge is told.
    pub fn description(self) -> &'static str {
        match self {
            Dimension::AccurateRetrieval => {
                "Accurate Retrieval - How well can the agent recall specific details and facts?"
            }
            Dimension::TestTimeLearning => {
                "Test-Time Learning - How well can the agent adapt and apply knowledge to new scenarios?"
            }
            Dimension::LongRangeUnderstanding => {
                "Long-Range Understanding - How well can the agent understand connections and broader context?"
            }
            Dimension::SelectiveForgetting => {
                "Selective Forgetting - How well can the agent update/modify its understanding when needed?"
            }
        }
    }
}

/// What is wrong with an evaluation's input, and where: the path of the field at fault, as
/// `turns[3].file` or `rubric_thresholds.AR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_round_trip_their_codes() {
        for dimension in Dimension::ALL {
            assert_eq!(Dimension::parse(dimension.code()), Some(dimension));
            let json = serde_json::to_string(&dimension).unwrap();
            assert_eq!(json, format!("\"{}\"", dimension.code()));
        }
        assert_eq!(Dimension::parse("ar"), None);
    }
}
