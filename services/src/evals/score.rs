//! A run's score against its task's rubric, as the original computed it: the overall score is
//! the mean of the dimension scores, a dimension breaks when it scores below its threshold
//! (0.7 unless the task sets one), and the run passes when none breaks. Also the checks of a
//! task's `rubric` and `rubric_thresholds` as clients send them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::judge::Verdict;
use super::{Dimension, FieldError};

/// The threshold of a dimension the task sets none for.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub overall_score: f64,
    pub dimension_scores: BTreeMap<Dimension, f64>,
    pub passed: bool,
    /// The dimensions below their threshold, in rubric order.
    pub breaking_dimensions: Vec<Dimension>,
    /// For each breaking dimension, as the original wrote it: `AR: 0.55 < 0.70 (FAILED)`.
    pub breaking_details: BTreeMap<Dimension, String>,
    /// The threshold each dimension was held to.
    pub thresholds_used: BTreeMap<Dimension, f64>,
}

/// Scores `verdict` against `thresholds` (dimensions not named there: [`DEFAULT_THRESHOLD`]).
pub fn score(verdict: &Verdict, thresholds: &BTreeMap<Dimension, f64>) -> Score {
    let thresholds_used: BTreeMap<Dimension, f64> = verdict
        .scores
        .keys()
        .map(|d| (*d, thresholds.get(d).copied().unwrap_or(DEFAULT_THRESHOLD)))
        .collect();
    let breaking: Vec<(Dimension, String)> = verdict
        .scores
        .iter()
        .filter(|(d, score)| **score < thresholds_used[*d])
        .map(|(d, score)| (*d, format!("{d}: {score:.2} < {:.2} (FAILED)", thresholds_used[d])))
        .collect();
    let overall_score = if verdict.scores.is_empty() {
        0.0
    } else {
        verdict.scores.values().sum::<f64>() / verdict.scores.len() as f64
    };
    Score {
        overall_score,
        dimension_scores: verdict.scores.clone(),
        passed: breaking.is_empty(),
        breaking_dimensions: breaking.iter().map(|(d, _)| *d).collect(),
        breaking_details: breaking.into_iter().collect(),
        thresholds_used,
    }
}

/// A task's rubric as sent (`["AR", "SF"]`): known codes, each once; empty means all four.
pub fn parse_rubric(codes: &[String]) -> Result<Vec<Dimension>, FieldError> {
    if codes.is_empty() {
        return Ok(Dimension::ALL.to_vec());
    }
    let mut rubric = Vec::with_capacity(codes.len());
    for (i, code) in codes.iter().enumerate() {
        let dimension = Dimension::parse(code).ok_or_else(|| {
            FieldError::new(format!("rubric[{i}]"), format!("{code:?} is not AR, TTL, LRU or SF"))
        })?;
        if rubric.contains(&dimension) {
            return Err(FieldError::new(format!("rubric[{i}]"), format!("{code} is named twice")));
        }
        rubric.push(dimension);
    }
    Ok(rubric)
}

/// A task's `rubric_thresholds` as sent: dimensions of the rubric, each a number from 0 to 1.
pub fn parse_thresholds(
    rubric: &[Dimension],
    sent: &BTreeMap<String, f64>,
) -> Result<BTreeMap<Dimension, f64>, FieldError> {
    sent.iter()
        .map(|(code, &threshold)| {
            let field = format!("rubric_thresholds.{code}");
            let dimension = Dimension::parse(code)
                .filter(|d| rubric.contains(d))
                .ok_or_else(|| FieldError::new(&field, "is not a dimension of the task's rubric"))?;
            if !(0.0..=1.0).contains(&threshold) {
                return Err(FieldError::new(&field, "must be from 0 to 1"));
            }
            Ok((dimension, threshold))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evals::judge::JudgeType;

    fn verdict(scores: &[(Dimension, f64)]) -> Verdict {
        Verdict {
            scores: scores.iter().copied().collect(),
            rationale: String::new(),
            judge_type: JudgeType::Deterministic,
            judge_model: None,
            probes: Vec::new(),
        }
    }

    #[test]
    fn dimensions_below_their_threshold_break_the_run() {
        let thresholds = [(Dimension::AccurateRetrieval, 0.8)].into_iter().collect();
        let scored = score(
            &verdict(&[(Dimension::AccurateRetrieval, 0.55), (Dimension::SelectiveForgetting, 0.75)]),
            &thresholds,
        );
        assert!((scored.overall_score - 0.65).abs() < 1e-9);
        assert!(!scored.passed);
        assert_eq!(scored.breaking_dimensions, [Dimension::AccurateRetrieval]);
        assert_eq!(scored.breaking_details[&Dimension::AccurateRetrieval], "AR: 0.55 < 0.80 (FAILED)");
        assert_eq!(scored.thresholds_used[&Dimension::SelectiveForgetting], DEFAULT_THRESHOLD);

        let passing = score(&verdict(&[(Dimension::AccurateRetrieval, 0.8)]), &thresholds);
        assert!(passing.passed, "a score equal to its threshold passes");
    }

    #[test]
    fn rubrics_and_thresholds_are_checked_by_field() {
        assert_eq!(parse_rubric(&[]).unwrap(), Dimension::ALL);
        let codes = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_rubric(&codes(&["SF", "AR"])).unwrap(),
            [Dimension::SelectiveForgetting, Dimension::AccurateRetrieval]
        );
        assert_eq!(parse_rubric(&codes(&["AR", "XX"])).unwrap_err().field, "rubric[1]");
        assert_eq!(parse_rubric(&codes(&["AR", "AR"])).unwrap_err().field, "rubric[1]");

        let rubric = [Dimension::AccurateRetrieval];
        let sent = |pairs: &[(&str, f64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(
            parse_thresholds(&rubric, &sent(&[("AR", 0.9)])).unwrap()[&Dimension::AccurateRetrieval],
            0.9
        );
        assert_eq!(
            parse_thresholds(&rubric, &sent(&[("AR", 1.2)])).unwrap_err().field,
            "rubric_thresholds.AR"
        );
        assert_eq!(
            parse_thresholds(&rubric, &sent(&[("SF", 0.5)])).unwrap_err().field,
            "rubric_thresholds.SF"
        );
    }
}
