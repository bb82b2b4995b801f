//! Leaderboards: agents ranked by their runs' scores. Per agent: the mean overall score with
//! a 95 % confidence interval (Student's t over the scored runs), the mean of each dimension,
//! the pass rate, and how many runs were scored or left unscored. Unscored runs never count
//! as a score of their own.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Dimension;
use super::score::Score;

/// One run to rank: its agent and, when it was scored, its score.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult<'a> {
    pub agent: &'a str,
    pub score: Option<&'a Score>,
}

/// An agent's place on a leaderboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    pub rank: usize,
    pub agent: String,
    /// Runs that were scored, which every figure below is over.
    pub runs_scored: usize,
    pub runs_unscored: usize,
    /// `None` when no run was scored.
    pub mean_score: Option<f64>,
    /// The 95 % confidence interval of the mean score, within 0 to 1; `None` under two runs.
    pub confidence_interval: Option<[f64; 2]>,
    pub dimension_means: BTreeMap<Dimension, f64>,
    pub pass_rate: Option<f64>,
}

/// Student's t at 97.5 % for 1 to 30 degrees of freedom.
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
    2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// Student's t at 97.5 % for `df` degrees of freedom (past 30, within 0.002 of the table's).
fn t_975(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T_975[df - 1],
        _ => 1.96 + 2.5 / df as f64,
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The 95 % confidence interval of the mean of `values`, clipped to 0 to 1.
fn confidence_interval(values: &[f64]) -> Option<[f64; 2]> {
    if values.len() < 2 {
        return None;
    }
    let n = values.len() as f64;
    let m = mean(values)?;
    let variance = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    let half = t_975(values.len() - 1) * (variance / n).sqrt();
    Some([(m - half).max(0.0), (m + half).min(1.0)])
}

/// The agents of `runs` ranked by mean score (then pass rate, then name); agents with no
/// scored run come last.
pub fn standings(runs: &[RunResult<'_>]) -> Vec<Standing> {
    let mut by_agent: BTreeMap<&str, Vec<Option<&Score>>> = BTreeMap::new();
    for run in runs {
        by_agent.entry(run.agent).or_default().push(run.score);
    }
    let mut standings: Vec<Standing> = by_agent
        .into_iter()
        .map(|(agent, results)| {
            let scored: Vec<&Score> = results.iter().flatten().copied().collect();
            let overall: Vec<f64> = scored.iter().map(|s| s.overall_score).collect();
            let mut per_dimension: BTreeMap<Dimension, Vec<f64>> = BTreeMap::new();
            for score in &scored {
                for (dimension, value) in &score.dimension_scores {
                    per_dimension.entry(*dimension).or_default().push(*value);
                }
            }
            let passed = scored.iter().filter(|s| s.passed).count();
            Standing {
                rank: 0,
                agent: agent.to_string(),
                runs_scored: scored.len(),
                runs_unscored: results.len() - scored.len(),
                mean_score: mean(&overall),
                confidence_interval: confidence_interval(&overall),
                dimension_means: per_dimension
                    .into_iter()
                    .filter_map(|(d, v)| Some((d, mean(&v)?)))
                    .collect(),
                pass_rate: (!scored.is_empty()).then(|| passed as f64 / scored.len() as f64),
            }
        })
        .collect();
    standings.sort_by(|a, b| {
        let key = |s: &Standing| (s.mean_score.unwrap_or(-1.0), s.pass_rate.unwrap_or(-1.0));
        let (a_key, b_key) = (key(a), key(b));
        b_key.0.total_cmp(&a_key.0).then(b_key.1.total_cmp(&a_key.1)).then_with(|| a.agent.cmp(&b.agent))
    });
    for (i, standing) in standings.iter_mut().enumerate() {
        standing.rank = i + 1;
    }
    standings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(overall: f64, ar: f64, passed: bool) -> Score {
        Score {
            overall_score: overall,
            dimension_scores: [(Dimension::AccurateRetrieval, ar)].into_iter().collect(),
            passed,
            breaking_dimensions: Vec::new(),
            breaking_details: BTreeMap::new(),
            thresholds_used: BTreeMap::new(),
        }
    }

    #[test]
    fn agents_rank_by_mean_with_an_interval_and_unscored_runs_apart() {
        let (a1, a2, a3) = (score(0.9, 1.0, true), score(0.7, 0.5, true), score(0.8, 0.75, false));
        let b1 = score(0.95, 1.0, true);
        let runs = [
            RunResult { agent: "claude", score: Some(&a1) },
            RunResult { agent: "claude", score: Some(&a2) },
            RunResult { agent: "claude", score: Some(&a3) },
            RunResult { agent: "claude", score: None },
            RunResult { agent: "codex", score: Some(&b1) },
            RunResult { agent: "gemini", score: None },
        ];
        let board = standings(&runs);
        let order: Vec<(&str, usize)> = board.iter().map(|s| (s.agent.as_str(), s.rank)).collect();
        assert_eq!(order, [("codex", 1), ("claude", 2), ("gemini", 3)]);

        let claude = &board[1];
        assert_eq!((claude.runs_scored, claude.runs_unscored), (3, 1));
        assert!((claude.mean_score.unwrap() - 0.8).abs() < 1e-9);
        assert!((claude.pass_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((claude.dimension_means[&Dimension::AccurateRetrieval] - 0.75).abs() < 1e-9);
        // sd 0.1, n 3: 0.8 ± 4.303 · 0.1 / √3.
        let [low, high] = claude.confidence_interval.unwrap();
        assert!((low - (0.8 - 0.24843)).abs() < 1e-4 && (high - 1.0).abs() < 1e-9, "{low} {high}");

        assert_eq!(board[0].confidence_interval, None, "one run has no interval");
        assert_eq!((board[2].mean_score, board[2].pass_rate), (None, None));
    }

    #[test]
    fn t_quantiles_continue_smoothly_past_the_table() {
        assert_eq!(t_975(1), 12.706);
        assert!((t_975(31) - 2.04).abs() < 0.005);
        assert!((t_975(120) - 1.980).abs() < 0.002);
    }
}
